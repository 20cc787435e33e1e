"""The detector stage's data: crops with context (crop_patches, roi_align_patches, check_boxes), synthetic
detection scenes, the COCO reader and the training patches of a COCO split."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.ops import box_iou

from edgeinc.cli import main
from edgeinc.data import (
    SHAPE_NAMES,
    CentralFractionCrop,
    DataError,
    ImageFolder,
    build_transform,
    render_scene,
    synthesize_scenes,
)
from edgeinc.detect import (
    INCEPTION_MEAN,
    ROI_ALIGN_MAX_TOLERANCE,
    ROI_ALIGN_MEAN_TOLERANCE,
    ROI_ALIGN_P999_TOLERANCE,
    CocoFormatError,
    batch_slices,
    check_boxes,
    class_folder,
    context_regions,
    crop_patches,
    extract_patches,
    mean_fill,
    read_coco,
    roi_align_patches,
    sample_patch_boxes,
)
from edgeinc.models import get_variant, list_models

V79 = get_variant("inception_v3_79")


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _rows(folder: Path) -> list[dict]:
    with open(folder / "boxes.csv", newline="") as f:
        return list(csv.DictReader(f))


def _box(row: dict) -> list[float]:
    return [float(row[k]) for k in ("x1", "y1", "x2", "y2")]


def _write_coco(path: Path, images: list, annotations: list, categories: list) -> Path:
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return path


def _noise_image(path: Path, width: int, height: int, seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("scenes") / "s"
    synthesize_scenes(out, train=3, val=1, size=128, classes=3, seed=7, objects=(3, 6))
    return out


@pytest.fixture(scope="module")
def patches(scenes, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("patches") / "train"
    extract_patches(scenes / "annotations" / "train.json", scenes / "train", out, size=48, context=8, seed=3)
    return out


# --- crops -------------------------------------------------------------------------------------------


def test_training_patch_and_inference_crop_are_the_same_pixels(scenes, patches):
    rows = _rows(patches)
    assert {r["class"] for r in rows} >= {"background"} and len(rows) > 20
    coco = read_coco(scenes / "annotations" / "train.json")
    for row in rows[::7]:
        image = coco.image_by_id[int(row["image_id"])]
        pil = Image.open(scenes / "train" / image.file_name)
        as_array = np.asarray(pil.convert("RGB"))
        as_tensor = torch.from_numpy(as_array.copy()).permute(2, 0, 1)
        written = np.asarray(Image.open(patches / row["file"]))  # what training reads
        for source in (pil, as_array, as_tensor):  # what inference crops, from any image type
            again = crop_patches(source, [_box(row)], 48, context=8)
            assert again.shape == (1, 48, 48, 3) and again.dtype == np.uint8
            assert np.array_equal(again[0], written), row["file"]


def test_crop_patches_resizes_exactly_as_the_eval_transform():
    pixels = np.random.default_rng(1).integers(0, 256, (150, 170, 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    expected = build_transform(V79, train=False)(image)
    # The central crop's region as a box, no context: the same pixels, the same resize kernel.
    crop = CentralFractionCrop(V79.crop_fraction)(torch.zeros(1, 150, 170))
    top, left = (150 - crop.shape[1]) // 2, (170 - crop.shape[2]) // 2
    box = [left, top, left + crop.shape[2], top + crop.shape[1]]
    patch = crop_patches(image, [box], V79.input_size, context=0, mean=V79.mean)[0]
    normalised = (torch.from_numpy(patch).permute(2, 0, 1) / 255 - torch.tensor(V79.mean)[:, None, None]) \
        / torch.tensor(V79.std)[:, None, None]
    assert torch.equal(normalised, expected) or torch.allclose(normalised, expected, atol=1e-6, rtol=0)


def test_defaults_are_the_variants_preprocessing():
    for name in list_models():
        variant = get_variant(name)
        assert tuple(variant.mean) == INCEPTION_MEAN and variant.interpolation == "bilinear", name
    assert mean_fill(INCEPTION_MEAN) == (128, 128, 128)  # 127.5 rounds up; normalises to 0.004
    assert mean_fill((0.2, 0.4, 0.6)) == (51, 102, 153)
    with pytest.raises(ValueError, match="mean must be 3 values"):
        mean_fill((0.5, 0.5))


def test_context_puts_the_box_at_the_expected_place():
    # 79 px patches, 16 px of context: the box maps to the central 47 px. A 47 px red box dilates to a
    # 79 px region, an identity resize; a 94 px box to 158 px, a 2x reduction that blurs a pixel.
    for side, blur in ((47, 0), (94, 1)):
        pixels = np.zeros((300, 300, 3), dtype=np.uint8)
        pixels[...] = (0, 0, 255)
        pixels[100:100 + side, 120:120 + side] = (255, 0, 0)
        patch = crop_patches(pixels, [[120, 100, 120 + side, 100 + side]], 79, context=16).astype(int)[0]
        inner = patch[16 + blur:63 - blur, 16 + blur:63 - blur]
        assert (inner == (255, 0, 0)).all(), side
        ring = np.ones((79, 79), bool)
        ring[16 - blur:63 + blur, 16 - blur:63 + blur] = False
        assert (patch[ring] == (0, 0, 255)).all(), side
    # Fractional boxes: the dilated edges round to the nearest pixel (halves up).
    regions = context_regions([[10.2, 10.0, 57.2, 57.0], [0.5, 0.5, 47.5, 47.5]], 79, 16)
    assert regions.tolist() == [[-6, -6, 73, 73], [-15, -15, 64, 64]]
    # x1 - 16 * 47 / 47 = -5.8 -> -6 and -15.5 -> -15 (half up); x2 = 73.2 -> 73, 63.5 -> 64.
    assert context_regions([[5, 5, 5.001, 5.001]], 79, 0).tolist() == [[5, 5, 6, 6]]  # at least a pixel


def test_outside_the_image_is_the_mean_colour():
    pixels = np.full((100, 80, 3), 30, dtype=np.uint8)
    # A 47 px box, half outside on the left: its 79 px region is x in [-40, 39), y in [-6, 73), resized
    # 1:1, so the patch is the mean colour left of column 40 and above row 6, and the image elsewhere.
    patch = crop_patches(pixels, [[-24, 10, 23, 57]], 79, context=16)[0].astype(int)
    assert (patch[:, :40] == 128).all() and (patch[:6] == 128).all() and (patch[6:, 40:] == 30).all()
    other_mean = crop_patches(pixels, [[-24, 10, 23, 57]], 79, context=16, mean=(0.2, 0.4, 0.6))[0]
    assert (other_mean[:, :40] == (51, 102, 153)).all()
    far = crop_patches(pixels, [[500, 500, 520, 530]], 79)[0]  # entirely outside: all mean
    assert (far == 128).all()
    assert crop_patches(pixels, np.zeros((0, 4)), 79).shape == (0, 79, 79, 3)


@pytest.mark.parametrize("size, context", [(79, -1), (79, 40), (32, 16), (79, 2.5)])
def test_context_must_leave_room_for_the_box(size, context):
    with pytest.raises(ValueError, match="context must be an integer with 0 <= context and 2 \\* context < size"):
        crop_patches(np.zeros((10, 10, 3), np.uint8), [[1, 1, 5, 5]], size, context=context)


def test_crop_patches_refuses_boxes_it_cannot_crop_and_odd_images():
    image = np.zeros((10, 10, 3), np.uint8)
    with pytest.raises(ValueError, match=r"box 1 .*finite with x2 > x1"):
        crop_patches(image, [[1, 1, 5, 5], [3, 1, 3, 5]], 79)
    with pytest.raises(ValueError, match="HxWx3"):
        crop_patches(np.zeros((10, 10), np.uint8), [[1, 1, 5, 5]], 79)
    with pytest.raises(ValueError, match="3xHxW"):
        crop_patches(torch.zeros(10, 10, 3, dtype=torch.uint8), [[1, 1, 5, 5]], 79)


def _tolerance_boxes(rng: np.random.Generator, side: tuple[float, float], where: str, n: int, extent: int) -> np.ndarray:
    s = rng.uniform(*side, (n, 2))
    if where == "inside":
        c = rng.uniform(np.minimum(s / 2, extent / 2), np.maximum(extent - s / 2, extent / 2))
    else:  # centres near an edge: a third of the box or more outside
        c = np.where(rng.random((n, 2)) < 0.5, rng.uniform(-s / 3, s / 3), extent + rng.uniform(-s / 3, s / 3))
    return np.concatenate([c - s / 2, c + s / 2], axis=1)


def test_roi_align_patches_match_crop_patches_within_the_stated_tolerance():
    image, _ = render_scene(np.random.default_rng([11]), 160, SHAPE_NAMES[:5], (6, 9))
    pixels = np.asarray(image)
    tensor = torch.from_numpy(pixels.copy()).permute(2, 0, 1)
    rng = np.random.default_rng(0)
    measured = {}
    for size, sides in ((79, {"up to 8x up": (4, 8), "up": (8, 40), "about 1x": (44, 52), "2x down": (90, 100),
                              "5x down": (220, 240)}), (151, {"up": (8, 40), "2x down": (170, 190)})):
        for kind, side in sides.items():
            for where in ("inside", "partly outside"):
                boxes = _tolerance_boxes(rng, side, where, 12, 160)
                reference = crop_patches(pixels, boxes, size, 16).astype(np.float32)
                fast = roi_align_patches(tensor, torch.from_numpy(boxes), size, 16).permute(0, 2, 3, 1).numpy()
                d = np.abs(reference - fast)
                measured[(size, kind, where)] = (d.mean(), np.percentile(d, 99.9), d.max())
    for key, (mean, p999, worst) in measured.items():
        assert mean <= ROI_ALIGN_MEAN_TOLERANCE and p999 <= ROI_ALIGN_P999_TOLERANCE \
            and worst <= ROI_ALIGN_MAX_TOLERANCE, (key, mean, p999, worst)
    # Not vacuous: the two differ, and most of the difference is far below the bounds.
    assert 0.05 < np.mean([m for m, _, _ in measured.values()]) < 1.5


def test_roi_align_patches_box_formats_dtype_and_mean_fill():
    a = torch.from_numpy(np.random.default_rng(2).integers(0, 256, (3, 60, 70), dtype=np.uint8))
    b = torch.from_numpy(np.random.default_rng(3).integers(0, 256, (3, 60, 70), dtype=np.uint8))
    boxes_a = torch.tensor([[5.0, 6.0, 30.0, 40.0], [-20.0, -20.0, 10.0, 10.0]])
    boxes_b = torch.tensor([[40.0, 10.0, 69.0, 59.0]])
    single = torch.cat([roi_align_patches(a, boxes_a, 39, 8), roi_align_patches(b, boxes_b, 39, 8)])
    listed = roi_align_patches(torch.stack([a, b]), [boxes_a, boxes_b], 39, 8)
    indexed = roi_align_patches(torch.stack([a, b]), torch.cat([torch.tensor([[0.0], [0.0], [1.0]]),
                                                                torch.cat([boxes_a, boxes_b])], dim=1), 39, 8)
    assert single.shape == (3, 3, 39, 39) and single.dtype == torch.float32
    # The same up to float rounding (the mean-coloured margin, and so the offsets, depend on the batch).
    assert torch.allclose(single, listed, atol=1e-3) and torch.allclose(single, indexed, atol=1e-3)
    rounded = roi_align_patches(a, boxes_a, 39, 8, dtype=torch.uint8)
    assert rounded.dtype == torch.uint8 and (rounded.float() - single[:2]).abs().max() <= 0.5 + 1e-3
    far = roi_align_patches(a, torch.tensor([[300.0, 300.0, 330.0, 340.0]]), 39, 8)
    assert torch.equal(far, torch.full_like(far, 128.0))
    assert roi_align_patches(a, torch.zeros(0, 4), 39).shape == (0, 3, 39, 39)
    with pytest.raises(ValueError, match=r"\[K, 5\]"):
        roi_align_patches(torch.stack([a, b]), boxes_a, 39)
    with pytest.raises(ValueError, match="uint8"):
        roi_align_patches(a.float(), boxes_a, 39)


@pytest.mark.gpu
def test_roi_align_patches_on_cuda_match_the_cpu():
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    image, _ = render_scene(np.random.default_rng([12]), 160, SHAPE_NAMES[:5], (6, 9))
    tensor = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)
    rng = np.random.default_rng(1)
    boxes = torch.from_numpy(np.concatenate([_tolerance_boxes(rng, (6, 200), w, 32, 160)
                                             for w in ("inside", "partly outside")]))
    cpu = roi_align_patches(tensor, boxes, 79)
    cuda = roi_align_patches(tensor.cuda(), boxes.cuda(), 79)
    assert cuda.device.type == "cuda" and torch.allclose(cuda.cpu(), cpu, atol=1e-2)


# --- check_boxes ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "box, reason",
    [
        ([float("nan"), 1, 5, 5], "not finite"),
        ([1, 1, float("inf"), 5], "not finite"),
        ([1, 1, -float("inf"), 5], "not finite"),
        ([5, 1, 5, 8], "x2 <= x1"),
        ([6, 1, 5, 8], "x2 <= x1"),
        ([1, 8, 5, 8], "y2 <= y1"),
        ([1, 9, 5, 2], "y2 <= y1"),
        ([40, 10, 60, 20], "entirely outside"),  # right of a 32-wide image: nothing left after clipping
        ([-10, -10, 0, 5], "entirely outside"),  # touching the left edge: zero area after clipping
    ],
)
def test_check_boxes_flags_each_bad_box_and_strict_names_it(box, reason):
    boxes = [[1, 1, 5, 5], box, [2, 2, 3, 3]]
    clipped, valid = check_boxes(boxes, (24, 32))
    assert valid.tolist() == [True, False, True]
    assert clipped.dtype == torch.float32 and clipped.shape == (3, 4)
    assert clipped[1].tolist() == [0, 0, 0, 0] and clipped[0].tolist() == [1, 1, 5, 5]
    with pytest.raises(ValueError, match=rf"box 1 .*{reason}"):
        check_boxes(boxes, (24, 32), strict=True)


def test_check_boxes_clips_boxes_partly_outside_and_accepts_empty_lists():
    clipped, valid = check_boxes(np.array([[-5.0, 3.0, 10.5, 40.0], [30.0, -2.0, 50.0, 10.0]]), (24, 32))
    assert valid.tolist() == [True, True]
    assert clipped.tolist() == [[0.0, 3.0, 10.5, 24.0], [30.0, 0.0, 32.0, 10.0]]  # (height, width) = (24, 32)
    assert check_boxes(clipped, (24, 32), strict=True)[0].tolist() == clipped.tolist()
    for empty in ([], np.zeros((0, 4)), torch.zeros(0, 4)):
        boxes, ok = check_boxes(empty, (24, 32), strict=True)
        assert boxes.shape == (0, 4) and ok.shape == (0,) and ok.dtype == torch.bool


@pytest.mark.parametrize("boxes", [[1, 2, 3, 4], [[1, 2, 3]], np.zeros((2, 5)), [[1, 2, 3, 4], [1, 2]]])
def test_check_boxes_wrong_shape_says_the_expected_one(boxes):
    with pytest.raises(ValueError, match=r"shape \[N, 4\]"):
        check_boxes(boxes, (24, 32))


def test_batch_slices_cover_every_box_once():
    assert [(s.start, s.stop) for s in batch_slices(10, 4)] == [(0, 4), (4, 8), (8, 10)]
    assert list(batch_slices(0, 4)) == []
    with pytest.raises(ValueError):
        list(batch_slices(3, 0))


# --- synthetic scenes -----------------------------------------------------------------------------------


def test_scenes_annotations_are_valid_coco(scenes):
    params = json.loads((scenes / "scenes.json").read_text())
    assert params["size"] == 128 and params["seed"] == 7 and params["shapes"] == list(SHAPE_NAMES[:3])
    touching = 0
    for split, count in (("train", 3), ("val", 1)):
        coco = read_coco(scenes / "annotations" / f"{split}.json")
        assert [c.name for c in coco.categories] == list(SHAPE_NAMES[:3]) and len(coco.images) == count
        for image in coco.images:
            assert (image.width, image.height) == (128, 128)
            assert Image.open(scenes / split / image.file_name).size == (128, 128)
            boxes = []
            for a in coco.annotations_by_image[image.id]:
                x, y, w, h = a.bbox
                assert x >= 0 and y >= 0 and x + w <= 128 and y + h <= 128 and not a.iscrowd
                assert 10 <= max(w, h) <= 80 and 0 < a.area <= w * h, a
                boxes.append((x, y, x + w, y + h))
            for i, p in enumerate(boxes):  # boxes that touch or overlap another (gap of a pixel at most)
                touching += any(p[0] <= q[2] + 1 and q[0] <= p[2] + 1 and p[1] <= q[3] + 1 and q[1] <= p[3] + 1
                                for q in boxes[i + 1:])
        assert len(coco.annotations) >= count
    assert touching >= 1


def test_scenes_are_deterministic_serial_or_parallel_and_resumable(tmp_path):
    kw = dict(train=2, val=1, size=96, classes=2, objects=(2, 4))
    synthesize_scenes(tmp_path / "a", seed=1, **kw)
    synthesize_scenes(tmp_path / "b", seed=1, workers=2, **kw)
    synthesize_scenes(tmp_path / "c", seed=2, **kw)
    a, b, c = (_tree(tmp_path / x) for x in "abc")
    assert a == b  # same bytes, whatever the number of workers
    assert all(a[k] != c[k] for k in a if k.endswith(".png"))
    (tmp_path / "a" / "train" / "000001.png").unlink()
    again = synthesize_scenes(tmp_path / "a", seed=1, **kw)
    assert again.written == 1 and again.reused == 2 and _tree(tmp_path / "a") == b
    with pytest.raises(DataError, match=r"other parameters \(seed differ"):
        synthesize_scenes(tmp_path / "a", seed=3, **kw)
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x").write_text("")
    with pytest.raises(DataError, match="not empty"):
        synthesize_scenes(tmp_path / "d", **kw)
    with pytest.raises(ValueError, match="objects must be"):
        synthesize_scenes(tmp_path / "e", objects=(3, 1))


# --- the COCO reader -------------------------------------------------------------------------------------

GOOD_IMAGE = {"id": 1, "file_name": "a.png", "width": 64, "height": 48}
GOOD_ANN = {"id": 1, "image_id": 1, "category_id": 3, "bbox": [1, 2, 10, 12], "area": 120, "iscrowd": 0}
GOOD_CAT = {"id": 3, "name": "cat"}


@pytest.mark.parametrize(
    "data, message",
    [
        ("{not json", r"not valid JSON \(line 1"),
        ([], r"top level: .*a results file"),
        ({"annotations": [], "categories": []}, r"images: missing"),
        ({"images": [], "categories": []}, r"annotations: missing"),
        ({"images": [], "annotations": []}, r"categories: missing"),
        ({"images": {}, "annotations": [], "categories": []}, r"images: expected a list"),
        ({"images": [{**GOOD_IMAGE, "width": 0}], "annotations": [], "categories": []}, r"images\[0\] \(id 1\)\.width"),
        ({"images": [GOOD_IMAGE, GOOD_IMAGE], "annotations": [], "categories": []}, r"images\[1\]\.id: image id 1 repeats"),
        ({"images": [{**GOOD_IMAGE, "file_name": ""}], "annotations": [], "categories": []}, r"file_name"),
        ({"images": [GOOD_IMAGE], "annotations": [], "categories": [{"id": 3}]}, r"categories\[0\]\.name: missing"),
        ({"images": [GOOD_IMAGE], "annotations": [{**GOOD_ANN, "bbox": [1, 2, 3]}], "categories": [GOOD_CAT]},
         r"annotations\[0\] \(id 1\)\.bbox: expected 4 finite numbers"),
        ({"images": [GOOD_IMAGE], "annotations": [{**GOOD_ANN, "bbox": [1, 2, "3", 4]}], "categories": [GOOD_CAT]},
         r"\.bbox: expected 4 finite numbers"),
        ({"images": [GOOD_IMAGE], "annotations": [{**GOOD_ANN, "bbox": [1, 2, float("nan"), 4]}],
          "categories": [GOOD_CAT]}, r"\.bbox: expected 4 finite numbers"),
        ({"images": [GOOD_IMAGE], "annotations": [{**GOOD_ANN, "bbox": [1, 2, -3, 4]}], "categories": [GOOD_CAT]},
         r"\.bbox: width and height must be >= 0"),
        ({"images": [GOOD_IMAGE], "annotations": [{**GOOD_ANN, "image_id": 9}], "categories": [GOOD_CAT]},
         r"annotations\[0\] \(id 1\)\.image_id: no image has id 9"),
        ({"images": [GOOD_IMAGE], "annotations": [{**GOOD_ANN, "category_id": 1}], "categories": [GOOD_CAT]},
         r"\.category_id: no category has id 1"),
        ({"images": [GOOD_IMAGE], "annotations": [GOOD_ANN, GOOD_ANN], "categories": [GOOD_CAT]},
         r"annotations\[1\] \(id 1\)\.id: annotation id 1 repeats"),
        ({"images": [GOOD_IMAGE], "annotations": [{**GOOD_ANN, "iscrowd": 2}], "categories": [GOOD_CAT]},
         r"\.iscrowd: expected 0 or 1"),
        ({"images": [GOOD_IMAGE], "annotations": [{**GOOD_ANN, "id": "7"}], "categories": [GOOD_CAT]},
         r"annotations\[0\]\.id: expected a non-negative integer"),
    ],
)
def test_coco_reader_errors_name_the_file_and_the_field(tmp_path, data, message):
    path = tmp_path / "bad.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    with pytest.raises(CocoFormatError, match=rf"{path}: .*{message}" if "JSON" not in message else message) as e:
        read_coco(path)
    assert str(path) in str(e.value)
    with pytest.raises(CocoFormatError, match="no such COCO annotation file"):
        read_coco(tmp_path / "nope.json")


def test_coco_reader_keeps_ids_and_converts_boxes(tmp_path):
    path = _write_coco(tmp_path / "ok.json", [GOOD_IMAGE], [GOOD_ANN, {**GOOD_ANN, "id": 5, "iscrowd": 1}],
                       [GOOD_CAT, {"id": 90, "name": "dog"}])
    coco = read_coco(path)
    boxes, categories, crowd, ids = coco.boxes(1)
    assert boxes.tolist() == [[1, 2, 11, 14]] * 2 and categories.tolist() == [3, 3]
    assert crowd.tolist() == [False, True] and ids.tolist() == [1, 5]
    assert coco.category_by_id[90].name == "dog" and coco.path == path


# --- training patches ------------------------------------------------------------------------------------


def test_patch_boxes_follow_the_iou_rules(scenes, patches):
    coco = read_coco(scenes / "annotations" / "train.json")
    rows = _rows(patches)
    positives = negatives = near = 0
    for image in coco.images:
        gt, _, _, ann_ids = coco.boxes(image.id)
        gt = check_boxes(gt, (image.height, image.width))[0]
        mine = [r for r in rows if int(r["image_id"]) == image.id]
        boxes = torch.tensor([_box(r) for r in mine], dtype=torch.float32)
        iou = box_iou(boxes, gt)
        for row, overlaps in zip(mine, iou):
            if row["class"] == "background":
                negatives += 1
                assert overlaps.max() < 0.3, row
                near += bool(overlaps.max() > 0)
            else:
                positives += 1
                own = ann_ids.tolist().index(int(row["annotation_id"]))
                assert overlaps[own] >= 0.7 and overlaps[own] == overlaps.max(), row
        n_pos = sum(r["class"] != "background" for r in mine)
        assert sum(r["class"] == "background" for r in mine) == 3 * n_pos  # neg_ratio per positive, per image
    assert positives == 3 * len(coco.annotations)  # each box and its 2 jittered copies
    assert near >= negatives // 3  # about half of the negatives partly overlap an object
    info = json.loads((patches / "patches.json").read_text())
    assert info["classes"] == json.loads((patches / "classes.json").read_text())
    ds = ImageFolder(patches)
    assert ds.classes == info["classes"] and len(ds) == len(rows) == sum(info["counts"].values())


def test_patches_are_deterministic_per_seed_and_resumable(scenes, patches, tmp_path):
    args = (scenes / "annotations" / "train.json", scenes / "train")
    again = extract_patches(*args, tmp_path / "again", size=48, context=8, seed=3)
    assert _tree(tmp_path / "again") == _tree(patches) and again.written == len(_rows(patches))
    other = extract_patches(*args, tmp_path / "other", size=48, context=8, seed=4)
    assert _rows(tmp_path / "other") != _rows(patches) and other.counts == again.counts
    victim = next((tmp_path / "again" / "background").iterdir())
    victim.unlink()
    resumed = extract_patches(*args, tmp_path / "again", size=48, context=8, seed=3)
    assert _tree(tmp_path / "again") == _tree(patches) and resumed.reused > 0 and resumed.written > 0
    with pytest.raises(DataError, match=r"other parameters \(context differ"):
        extract_patches(*args, tmp_path / "again", size=48, context=4, seed=3)


@pytest.fixture
def small_coco(tmp_path) -> tuple[Path, Path]:
    """Two noise images; non-contiguous category ids; a crowd region, a box reaching outside its image
    and boxes with no area."""
    images = tmp_path / "images"
    _noise_image(images / "a.jpg", 120, 90, 0)
    _noise_image(images / "sub" / "b.png", 100, 100, 1)
    anns = [
        {"id": 10, "image_id": 4, "category_id": 17, "bbox": [10, 10, 30, 25]},
        {"id": 11, "image_id": 4, "category_id": 90, "bbox": [100, 60, 40, 40]},  # clipped to 20 x 30
        {"id": 12, "image_id": 4, "category_id": 90, "bbox": [60, 5, 40, 30], "iscrowd": 1},
        {"id": 13, "image_id": 7, "category_id": 17, "bbox": [20, 20, 0, 30]},  # no area
        {"id": 14, "image_id": 7, "category_id": 17, "bbox": [150, 150, 10, 10]},  # outside: no area left
        {"id": 15, "image_id": 7, "category_id": 3, "bbox": [40, 40, 30, 30]},
    ]
    cats = [{"id": 3, "name": "traffic/light"}, {"id": 17, "name": "cat"}, {"id": 90, "name": "dog"},
            {"id": 91, "name": "unused"}]
    coco = _write_coco(tmp_path / "ann.json", [{"id": 4, "file_name": "a.jpg", "width": 120, "height": 90},
                                              {"id": 7, "file_name": "sub/b.png", "width": 100, "height": 100}],
                       anns, cats)
    return coco, images


def test_patches_from_any_coco_file(small_coco, tmp_path):
    coco, images = small_coco
    info = extract_patches(coco, images, tmp_path / "out", size=40, context=6, seed=0, jitter=1)
    assert info.classes == ["background", "cat", "dog", "traffic_light"]  # sanitised, sorted as ImageFolder does
    assert info.counts == {"background": 18, "cat": 2, "dog": 2, "traffic_light": 2}
    assert info.objects == 3 and info.clipped == 1 and info.skipped == {"crowd": 1, "no_area": 2}
    assert info.empty_categories == ["unused"] and not (tmp_path / "out" / "unused").exists()
    rows = _rows(tmp_path / "out")
    dog = [r for r in rows if r["annotation_id"] == "11"]
    assert _box(dog[0]) == [100, 60, 120, 90]  # the box reaching outside is clipped
    assert not any(r["annotation_id"] in ("12", "13", "14") for r in rows)  # crowd and empty boxes: no patches
    crowd = torch.tensor([[60.0, 5.0, 100.0, 35.0]])
    for r in rows:
        if r["class"] == "background" and r["image_id"] == "4":
            box = torch.tensor([_box(r)])
            inter = (torch.min(box[:, 2:], crowd[:, 2:]) - torch.max(box[:, :2], crowd[:, :2])).clamp(min=0).prod()
            assert inter <= 0.3 * (box[0, 2:] - box[0, :2]).prod()  # negatives keep out of crowd regions
    assert json.loads((tmp_path / "out" / "classes.json").read_text()) == info.classes
    assert ImageFolder(tmp_path / "out").classes == info.classes


def test_missing_images_are_named_before_anything_is_written(small_coco, tmp_path):
    coco, images = small_coco
    (images / "sub" / "b.png").unlink()
    (images / "a.jpg").unlink()
    with pytest.raises(DataError, match=r"2 of the 2 images listed in .*ann.json are missing from .*: a.jpg, sub/b.png"):
        extract_patches(coco, images, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    with pytest.raises(DataError, match="images folder .* does not exist"):
        extract_patches(coco, tmp_path / "nowhere", tmp_path / "out")


def test_image_whose_size_disagrees_with_its_annotation_is_refused(small_coco, tmp_path):
    coco, images = small_coco
    _noise_image(images / "a.jpg", 60, 90)
    with pytest.raises(DataError, match=r"a.jpg: the image is 60x90 but .*ann.json says 120x90"):
        extract_patches(coco, images, tmp_path / "out", size=40, context=6)


@pytest.mark.parametrize("names, clash", [(["a/b", "a_b"], "a_b"), (["Dog", "dog"], "dog"),
                                          (["Background"], "Background")])
def test_categories_sharing_a_folder_are_refused(tmp_path, names, clash):
    _noise_image(tmp_path / "a.png", 20, 20)
    cats = [{"id": i + 1, "name": n} for i, n in enumerate(names)]
    coco = _write_coco(tmp_path / "ann.json", [{"id": 1, "file_name": "a.png", "width": 20, "height": 20}], [], cats)
    with pytest.raises(DataError, match=rf"would share the class folder '{clash}'"):
        extract_patches(coco, tmp_path, tmp_path / "out")
    assert class_folder(" .hidden ") == "_hidden" and class_folder('a<b>:c"d|e?f*') == "a_b__c_d_e_f_"


def test_sampling_without_objects_gives_nothing_and_shortfalls_are_counted():
    empty = sample_patch_boxes(torch.zeros(0, 4), (50, 50), np.random.default_rng(0))
    assert empty.boxes.shape == (0, 4) and empty.gt_index.shape == (0,)
    # An object filling the image leaves no room for negatives: they are counted, not invented.
    full = sample_patch_boxes(torch.tensor([[0.0, 0.0, 50.0, 50.0]]), (50, 50), np.random.default_rng(0), neg_ratio=2)
    assert (full.gt_index >= 0).sum() == 3 and full.negative_shortfall == 6 - int((full.gt_index < 0).sum())
    assert full.negative_shortfall > 0


# --- CLI -----------------------------------------------------------------------------------------------


def test_cli_data_scenes_and_patches(tmp_path, capsys):
    out = tmp_path / "scenes"
    assert main(["data", "scenes", str(out), "--train", "1", "--val", "1", "--size", "96", "--classes", "2",
                 "--objects", "2,3", "--seed", "5"]) == 0
    text = capsys.readouterr().out
    assert "wrote 2 96x96 scenes" in text and (out / "annotations" / "val.json").exists()
    assert sorted(p.name for p in (out / "train").iterdir()) == ["000000.png"]
    patches = tmp_path / "patches" / "val"
    assert main(["data", "patches", "--coco", str(out / "annotations" / "val.json"), "--images", str(out / "val"),
                 "--out", str(patches), "--size", "40", "--context", "6", "--neg-ratio", "2"]) == 0
    text = capsys.readouterr().out
    assert "background" in text and str(patches / "classes.json") in text
    assert json.loads((patches / "patches.json").read_text())["params"]["neg_ratio"] == 2
    assert main(["data", "patches", "--coco", str(out / "annotations" / "val.json"), "--images",
                 str(tmp_path / "missing"), "--out", str(tmp_path / "p2")]) == 2
    text = capsys.readouterr().out
    assert "error:" in text and "--images" in text and "missing" in text and not (tmp_path / "p2").exists()
    assert main(["data", "patches", "--coco", str(tmp_path / "nope.json"), "--images", str(out / "val"),
                 "--out", str(tmp_path / "p3")]) == 2
    assert "no such COCO annotation file" in capsys.readouterr().out
