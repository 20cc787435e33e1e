"""The detector's second stage: the patch classifier on any runner, proposals, detect -> NMS -> COCO eval,
the `edgeinc detect` command and the demo's detection stage."""

from __future__ import annotations

import csv
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.ops import box_iou

from edgeinc.cli import main
from edgeinc.data import build_transform, synthesize_patch_task, synthesize_scenes
from edgeinc.data.synth import OBJECT_AREA
from edgeinc.detect import (
    ROI_ALIGN_MEAN_TOLERANCE,
    PatchClassifier,
    PatchPreprocessing,
    PatchResult,
    ProposalError,
    SlidingWindows,
    check_boxes,
    coco_evaluate,
    detect,
    extract_patches,
    read_coco,
    read_proposals,
    selective_search,
)
from edgeinc.detect.pipeline import select_detections, suppress_inside
from edgeinc.models import get_variant
from export_helpers import CLASSES, workspace

# one session workspace (tests/export_helpers.py): its exports are made once, in one xdist worker
pytestmark = pytest.mark.xdist_group("export_workspace")

V79 = get_variant("inception_v3_79")
PRE79 = PatchPreprocessing(V79.input_size, V79.mean, V79.std, V79.crop_fraction, V79.interpolation)
COLOURS = {"red": (210, 30, 30), "green": (30, 170, 50), "blue": (30, 50, 210)}


class SpyRunner:
    """A runner stand-in that records what it is fed; its logit for class k is the mean of channel k % 3."""

    name = "spy"

    def __init__(self, labels: list[str], preprocessing: PatchPreprocessing = PRE79) -> None:
        self.labels = labels
        self.preprocessing = {"input_size": preprocessing.input_size, "mean": list(preprocessing.mean),
                              "std": list(preprocessing.std), "crop_fraction": preprocessing.crop_fraction,
                              "interpolation": preprocessing.interpolation}
        self.inputs: list[np.ndarray] = []

    def predict(self, x: np.ndarray) -> np.ndarray:
        assert x.dtype == np.float32 and x.ndim == 4 and x.shape[1] == 3
        self.inputs.append(x.copy())
        means = x.mean(axis=(2, 3))
        return np.stack([means[:, k % 3] for k in range(len(self.labels))], axis=1).astype(np.float32)


class OracleScorer:
    """A classifier stand-in that knows the answer: the class whose colour is at the box's centre,
    background elsewhere."""

    class_names = ("background", "blue", "green", "red")

    def classify(self, image, boxes, context=16, batch_size=None, strict=False) -> PatchResult:
        clipped, valid = check_boxes(boxes, image.shape[:2], strict=strict)
        probs = torch.full((len(clipped), 4), 0.02)
        for i, (x1, y1, x2, y2) in enumerate(clipped.tolist()):
            pixel = np.asarray(image[int((y1 + y2) / 2), int((x1 + x2) / 2)], dtype=float)
            name = min(COLOURS, key=lambda n: np.abs(pixel - COLOURS[n]).sum())
            k = self.class_names.index(name) if np.abs(pixel - COLOURS[name]).sum() < 60 else 0
            probs[i, k] = 0.94
        return PatchResult.from_probs(clipped, valid, probs, self.class_names)


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    return workspace(tmp_path_factory)


@pytest.fixture(scope="module")
def squares(tmp_path_factory) -> Path:
    """Three 96 x 96 images (one in a sub-folder) of coloured squares on light grey, and their COCO file
    (non-contiguous category ids, and 'gray' for the workspace model's fourth class)."""
    root = tmp_path_factory.mktemp("squares")
    rng = np.random.default_rng(0)
    layout = {"a.png": [("red", 10, 12, 30), ("blue", 55, 50, 28)],
              "sub/b.png": [("green", 30, 30, 34)],
              "c.png": [("blue", 8, 60, 24), ("green", 60, 8, 26), ("red", 58, 62, 22)]}
    categories = {"red": 3, "green": 7, "blue": 9, "gray": 11}
    images, annotations = [], []
    for i, (name, objects) in enumerate(layout.items()):
        pixels = np.clip(rng.normal(200, 6, (96, 96, 3)), 0, 255)
        for colour, x, y, side in objects:
            pixels[y:y + side, x:x + side] = COLOURS[colour]
            annotations.append({"id": len(annotations), "image_id": 100 + i, "category_id": categories[colour],
                                "bbox": [x, y, side, side], "area": side * side, "iscrowd": 0})
        (root / "images" / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels.astype(np.uint8)).save(root / "images" / name)
        images.append({"id": 100 + i, "file_name": name, "width": 96, "height": 96})
    (root / "ann.json").write_text(json.dumps({"images": images, "annotations": annotations,
                                               "categories": [{"id": v, "name": k} for k, v in categories.items()]}))
    return root


def _proposals(path: Path, coco_path: Path, shift: float = 0.0, key: str = "image_id") -> Path:
    coco = read_coco(coco_path)
    entries = []
    for a in coco.annotations:
        x, y, w, h = a.bbox
        ref = a.image_id if key == "image_id" else coco.image_by_id[a.image_id].file_name
        entries.append({key: ref, "bbox": [x + shift * w, y, w, h], "score": 0.9})
    path.write_text(json.dumps(entries))
    return path


# --- the patch classifier ---------------------------------------------------------------------------------


def test_the_runner_gets_what_eval_gives_for_the_training_patch_png(tmp_path):
    scenes = tmp_path / "scenes"
    synthesize_scenes(scenes, train=2, val=1, size=128, classes=3, seed=3, objects=(3, 5))
    patches = tmp_path / "patches"
    extract_patches(scenes / "annotations" / "train.json", scenes / "train", patches, size=79, context=16, seed=1)
    with open(patches / "boxes.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    coco = read_coco(scenes / "annotations" / "train.json")
    transform = build_transform(V79, train=False)  # what `edgeinc eval` applies to a patch file
    checked = 0
    for image in coco.images:
        mine = [r for r in rows if int(r["image_id"]) == image.id]
        spy = SpyRunner(["background", "a", "b"])
        boxes = [[float(r[k]) for k in ("x1", "y1", "x2", "y2")] for r in mine]
        PatchClassifier(spy).classify(Image.open(scenes / "train" / image.file_name), boxes, context=16, batch_size=7)
        fed = np.concatenate(spy.inputs)
        for row, x in zip(mine, fed):
            expected = transform(Image.open(patches / row["file"]).convert("RGB")).numpy()
            assert np.array_equal(x, expected), row["file"]  # tolerance 0: the same pixels, the same kernels
            checked += 1
    assert checked == len(rows) > 20


def test_torch_and_onnx_artifact_give_the_same_labels(ws):
    rng = np.random.default_rng(1)
    pixels = np.zeros((120, 120, 3))
    quadrants = {"red": (0, 0), "green": (60, 0), "blue": (0, 60), "gray": (60, 60)}
    colours = {"red": (200, 40, 40), "green": (40, 180, 60), "blue": (40, 60, 200), "gray": (128, 128, 128)}
    for name, (x, y) in quadrants.items():
        pixels[y:y + 60, x:x + 60] = np.array(colours[name]) + rng.normal(0, 30, (60, 60, 3))
    image = np.clip(pixels, 0, 255).astype(np.uint8)
    centred = [[x + 15, y + 15, x + 45, y + 45] for x, y in quadrants.values()]
    boxes = np.concatenate([centred, np.sort(rng.uniform(-10, 130, (20, 2, 2)), axis=1).reshape(20, 4)])
    torch_clf = PatchClassifier.load(ws.run, threads=1)
    onnx_clf = PatchClassifier.load(ws.export("onnx", "fp32").directory, threads=1)
    assert torch_clf.name == "torch" and onnx_clf.name == "onnxruntime"
    assert torch_clf.class_names == onnx_clf.class_names == tuple(CLASSES)
    a = torch_clf.classify(image, boxes, context=0)
    b = onnx_clf.classify(image, boxes, context=0)
    assert torch.equal(a.valid, b.valid) and torch.equal(a.labels, b.labels)
    assert torch.allclose(a.probs[a.valid], b.probs[b.valid], atol=1e-4)
    assert len(set(a.labels.tolist())) >= 2  # not one answer for everything: the comparison means something
    assert a.background_index is None and torch.isnan(a.background).all()  # this model has no background class


@pytest.mark.parametrize(
    "box, reason",
    [([float("nan"), 1, 20, 20], "not finite"), ([1, 1, float("inf"), 20], "not finite"), ([20, 1, 20, 30], "x2 <= x1"),
     ([25, 1, 20, 30], "x2 <= x1"), ([1, 30, 20, 30], "y2 <= y1"), ([70, 70, 90, 90], "entirely outside")],
)
def test_bad_boxes_are_not_classified_and_strict_names_the_first(box, reason):
    image = np.full((60, 64, 3), 90, np.uint8)
    boxes = [[2, 3, 30, 40], [-10, 20, 30, 80], box, [40, 5, 60, 25]]  # the second reaches outside: clipped
    spy = SpyRunner(["background", "red", "green", "blue"])
    result = PatchClassifier(spy).classify(image, boxes, context=8)
    assert result.valid.tolist() == [True, True, False, True]
    assert result.boxes[1].tolist() == [0.0, 20.0, 30.0, 60.0] and result.boxes[2].tolist() == [0.0] * 4
    assert result.labels[2] == -1 and math.isnan(result.scores[2]) and torch.isnan(result.probs[2]).all()
    assert math.isnan(result.background[2]) and not torch.isnan(result.background[[0, 1, 3]]).any()
    assert torch.allclose(result.probs[result.valid].sum(1), torch.ones(3))
    assert result.scores[0] == result.probs[0].max() and result.background[0] == result.probs[0, 0]
    assert sum(len(x) for x in spy.inputs) == 3  # the bad box never reached the runner
    with pytest.raises(ValueError, match=rf"box 2 .*{reason}"):
        PatchClassifier(spy).classify(image, boxes, strict=True)


def test_an_empty_box_list_gives_an_empty_result():
    spy = SpyRunner(["background", "x"])
    for empty in ([], np.zeros((0, 4)), torch.zeros(0, 4)):
        result = PatchClassifier(spy).classify(np.zeros((20, 20, 3), np.uint8), empty)
        assert len(result) == 0 and result.probs.shape == (0, 2) and result.labels.shape == (0,)
    assert spy.inputs == []
    with pytest.raises(ValueError, match=r"shape \[N, 4\]"):
        PatchClassifier(spy).classify(np.zeros((20, 20, 3), np.uint8), [[1, 2, 3]])


def test_thousands_of_boxes_run_in_batches_of_bounded_size():
    small = PatchPreprocessing(24, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), 0.875, "bilinear")
    spy = SpyRunner(["background", "a", "b"], small)
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 180, (3000, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(4, 40, (3000, 2))], axis=1)
    boxes[::500] = np.nan  # 6 bad ones
    image = rng.integers(0, 256, (200, 200, 3), dtype=np.uint8)
    result = PatchClassifier(spy).classify(image, boxes, context=4)
    sizes = [len(x) for x in spy.inputs]
    assert sum(sizes) == 2994 == int(result.valid.sum()) and max(sizes) == 64 and len(sizes) == math.ceil(2994 / 64)
    spy.inputs.clear()
    PatchClassifier(spy).classify(image, boxes[:1000], context=4, batch_size=300)
    assert [len(x) for x in spy.inputs] == [300, 300, 300, 98]
    with pytest.raises(ValueError, match="batch_size"):
        PatchClassifier(spy).classify(image, boxes[:10], batch_size=0)


def test_crop_paths_roi_align_on_request_within_its_tolerance():
    image = np.random.default_rng(4).integers(0, 256, (90, 110, 3), dtype=np.uint8)
    boxes = [[10, 12, 50, 60], [-5, 40, 30, 95], [60, 20, 100, 50]]
    exact, fast = SpyRunner(["a", "b"]), SpyRunner(["a", "b"])
    clf = PatchClassifier(exact)
    assert clf.crop_path(image) == "exact" and clf.crop_path(torch.from_numpy(image).permute(2, 0, 1)) == "exact"
    clf.classify(image, boxes)
    PatchClassifier(fast).classify(torch.from_numpy(image.copy()).permute(2, 0, 1), boxes, crop="roi_align")
    grey_levels = np.abs(exact.inputs[0] - fast.inputs[0]) * 0.5 * 255  # std 0.5: one unit is 127.5 levels
    assert 0 < grey_levels.mean() <= ROI_ALIGN_MEAN_TOLERANCE
    with pytest.raises(ValueError, match="crop must be"):
        clf.classify(image, boxes, crop="nearest")


def test_preprocessing_errors_name_the_field():
    good = {"input_size": 79, "mean": [0.5] * 3, "std": [0.5] * 3, "crop_fraction": 0.875, "interpolation": "bilinear"}
    assert PatchPreprocessing.from_dict(good) == PRE79
    for change, field in (({"input_size": 0}, "input_size"), ({"mean": [0.5]}, "mean"), ({"std": [0, 1, 1]}, "std"),
                          ({"crop_fraction": 1.5}, "crop_fraction"), ({"interpolation": "cubicle"}, "interpolation")):
        with pytest.raises(ValueError, match=rf"m\.preprocessing\.{field}"):
            PatchPreprocessing.from_dict({**good, **change}, "m.preprocessing")
    with pytest.raises(ValueError, match="'std' missing"):
        PatchPreprocessing.from_dict({k: v for k, v in good.items() if k != "std"})


# --- proposals ---------------------------------------------------------------------------------------------


def test_sliding_windows_cover_the_scenes_objects(tmp_path):
    scenes = tmp_path / "s"
    synthesize_scenes(scenes, train=1, val=4, size=256, classes=5, seed=0)
    coco = read_coco(scenes / "annotations" / "val.json")
    gt = torch.cat([coco.boxes(i.id)[0] for i in coco.images])
    windows = SlidingWindows()(((256, 256)))
    assert windows.dtype == torch.float32 and (windows[:, :2] >= 0).all() and (windows[:, 2:] <= 256).all()
    best = box_iou(gt, windows).max(dim=1).values
    assert (best >= 0.5).float().mean() >= 0.9 and len(gt) >= 16  # the default's recall, measured in proposals.py
    dense = SlidingWindows(stride=1 / 3)((256, 256))
    assert len(dense) > 2 * len(windows) and (box_iou(gt, dense).max(dim=1).values >= 0.5).all()
    one = SlidingWindows(sizes=(300.0,), aspect_ratios=(2.0,))((100, 200))  # larger than the image: one, clipped
    assert one.tolist() == [[0.0, 0.0, 200.0, 100.0]]
    with pytest.raises(ValueError, match="stride"):
        SlidingWindows(stride=0)
    with pytest.raises(ValueError, match="sizes"):
        SlidingWindows(sizes=(10.0, -1.0))


def test_selective_search_and_its_install_hint(squares, monkeypatch):
    pytest.importorskip("cv2")
    image = np.asarray(Image.fromarray(np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)).resize((64, 64)))
    boxes = selective_search(image, max_boxes=50)
    assert boxes.shape[1] == 4 and 0 < len(boxes) <= 50
    assert (boxes[:, 2:] > boxes[:, :2]).all() and (boxes[:, 2:] <= 64).all()
    found = detect(OracleScorer(), squares / "images" / "a.png", "selective-search")
    assert found.counts["proposals"] > 0 and {int(k) for k in found.images[0].labels} <= {1, 3}  # blue, red
    monkeypatch.setitem(sys.modules, "cv2", None)
    with pytest.raises(ImportError, match="opencv-contrib-python-headless"):
        selective_search(image)
    with pytest.raises(ImportError, match="opencv-contrib-python-headless"):
        detect(OracleScorer(), squares / "images" / "a.png", "selective-search")


@pytest.mark.parametrize(
    "content, message",
    [("{oops", r"not valid JSON \(line 1"),
     ({"images": [], "annotations": []}, r"top level: an annotation file"),
     ({"bbox": [1, 2, 3, 4]}, r"top level: expected a list"),
     (["x"], r"\[0\]: expected an object"),
     ([{"bbox": [1, 2, 3, 4]}], r"\[0\]: no 'image_id' or 'file_name'"),
     ([{"image_id": 1}], r"\[0\]\.bbox: missing"),
     ([{"image_id": 1, "bbox": [1, 2, 3, 4]}, {"image_id": 1, "bbox": [1, 2, "3", 4]}], r"\[1\]\.bbox: expected 4 finite"),
     ([{"image_id": 1, "bbox": [1, 2, 3]}], r"\[0\]\.bbox: expected 4 finite"),
     ([{"image_id": 1, "bbox": [1, 2, -3, 4]}], r"\[0\]\.bbox: width and height"),
     ([{"image_id": -1, "bbox": [1, 2, 3, 4]}], r"\[0\]\.image_id: expected a non-negative integer"),
     ([{"file_name": "", "bbox": [1, 2, 3, 4]}], r"\[0\]\.file_name"),
     ([{"image_id": 1, "bbox": [1, 2, 3, 4], "score": "high"}], r"\[0\]\.score: expected a finite number")],
)
def test_proposal_file_errors_name_the_file_and_the_field(tmp_path, content, message):
    path = tmp_path / "props.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    with pytest.raises(ProposalError, match=message) as e:
        read_proposals(path)
    assert str(path) in str(e.value)
    with pytest.raises(ProposalError, match="no such proposals file"):
        read_proposals(tmp_path / "nope.json")


def test_proposal_files_group_boxes_by_image(tmp_path):
    path = tmp_path / "p.json"
    path.write_text(json.dumps([{"image_id": 4, "bbox": [1, 2, 10, 20], "score": 0.5, "category_id": 3},
                                {"file_name": "sub/x.png", "bbox": [0, 0, 5, 5]}, {"image_id": 4, "bbox": [3, 3, 1, 1]}]))
    props = read_proposals(path)
    boxes, scores = props.lookup(4, "whatever.png")
    assert boxes.tolist() == [[1, 2, 11, 22], [3, 3, 4, 4]] and scores.tolist() == [0.5, 1.0]
    assert props.lookup(None, "sub/x.png")[0].tolist() == [[0, 0, 5, 5]] and props.lookup(None, "x.png") is None
    assert props.lookup(5, "y.png") is None and props.entries == 3


# --- detect -> NMS -> COCO eval ------------------------------------------------------------------------------


def test_ground_truth_proposals_and_a_perfect_classifier_score_ap_1(squares, tmp_path):
    ann = squares / "ann.json"
    result = detect(OracleScorer(), squares / "images", _proposals(tmp_path / "gt.json", ann), out=tmp_path / "out",
                    eval_ann=ann)
    m = result.metrics
    assert m["AP"] == pytest.approx(1.0) and m["AP50"] == pytest.approx(1.0) and m["AR100"] == pytest.approx(1.0)
    assert m.ground_truth == 6 and m.images == 3 and m.evaluator.startswith("pycocotools")
    assert m.per_class == {"red": pytest.approx(1.0), "green": pytest.approx(1.0), "blue": pytest.approx(1.0), "gray": None}
    written = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert written["AP"] == pytest.approx(1.0) and written["settings"]["score_thr"] == 0.3
    assert {"AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large", "AR100"} <= set(written)
    assert written["counts"]["proposals"] == 6 and written["class_agnostic"]["AP"] == pytest.approx(1.0)
    # The COCO results file: ids of the annotation file, categories mapped back by name, [x, y, w, h].
    detections = json.loads((tmp_path / "out" / "detections.json").read_text())
    coco = read_coco(ann)
    truth = {(a.image_id, a.category_id, tuple(a.bbox)) for a in coco.annotations}
    assert {(d["image_id"], d["category_id"], tuple(d["bbox"])) for d in detections} == truth
    assert all(set(d) == {"image_id", "category_id", "bbox", "score"} and d["score"] == pytest.approx(0.94)
               for d in detections)
    annotated = sorted(p.relative_to(tmp_path / "out" / "annotated").as_posix()
                       for p in (tmp_path / "out" / "annotated").rglob("*.png"))
    assert annotated == ["a.png", "c.png", "sub/b.png"]
    # Boxes shifted by a fifth of their width (IoU 2/3): matched at the IoU thresholds 0.5-0.65 of COCO's ten.
    shifted = detect(OracleScorer(), squares / "images", _proposals(tmp_path / "shift.json", ann, 0.2, "file_name"),
                     eval_ann=ann)
    assert shifted.metrics["AP50"] == pytest.approx(1.0) and shifted.metrics["AP75"] == 0.0
    assert shifted.metrics["AP"] == pytest.approx(0.4) and shifted.files == {}


def test_detect_without_annotations_numbers_images_and_categories(squares, tmp_path):
    result = detect(OracleScorer(), squares / "images", "sliding", out=tmp_path / "out",
                    windows=SlidingWindows((24.0, 34.0), stride=0.25), nms_iou=0.3)
    summary = json.loads((tmp_path / "out" / "detect.json").read_text())
    assert [i["file_name"] for i in summary["images"]] == ["a.png", "c.png", "sub/b.png"]
    assert [i["id"] for i in summary["images"]] == [1, 2, 3]
    assert summary["categories"] == [{"id": 1, "name": "blue"}, {"id": 2, "name": "green"}, {"id": 3, "name": "red"}]
    assert result.metrics is None and not (tmp_path / "out" / "metrics.json").exists()
    # every square is found (a window on it, the oracle's class) and nothing on the grey
    found = {(d["image_id"], d["category_id"]) for d in json.loads((tmp_path / "out" / "detections.json").read_text())}
    assert found == {(1, 3), (1, 1), (2, 1), (2, 2), (2, 3), (3, 2)}
    single = detect(OracleScorer(), squares / "images" / "a.png", "sliding", windows=SlidingWindows((24.0,), stride=0.5))
    assert [i.file_name for i in single.images] == ["a.png"]


def test_score_rules_nms_and_inside_suppression():
    boxes = torch.tensor([[0, 0, 40, 40], [2, 0, 42, 40], [10, 10, 20, 20], [60, 60, 80, 80]], dtype=torch.float32)
    probs = torch.tensor([[0.1, 0.6, 0.3], [0.2, 0.3, 0.5], [0.05, 0.9, 0.05], [0.7, 0.2, 0.1]])
    result = PatchResult.from_probs(boxes, torch.ones(4, dtype=torch.bool), probs, ("background", "a", "b"))
    b, s, lab = select_detections(result, 0.15, 0.5, 10, "object")  # per-class NMS keeps boxes 0 and 1 (other classes)
    assert lab.tolist() == [1, 1, 2, 1] and s.tolist() == pytest.approx([0.9, 0.6, 0.5, 0.2])
    b, s, lab = select_detections(result, 0.15, 0.5, 10, "argmax")  # box 3's argmax is background: dropped
    assert s.tolist() == pytest.approx([0.9, 0.6, 0.5])
    b, s, lab = select_detections(result, 0.15, 0.5, 10, "object", class_agnostic_nms=True, inside_thr=0.8)
    assert s.tolist() == pytest.approx([0.6, 0.2])  # box 1 overlaps box 0; box 2 lies inside box 0
    b, s, lab = select_detections(result, 0.25, 0.5, 10, "per-class")
    # every box for every class, then NMS per class: box 1 as "a" and box 0 as "b" are suppressed
    assert sorted(zip(lab.tolist(), [round(v, 2) for v in s.tolist()])) == [(1, 0.6), (1, 0.9), (2, 0.5)]
    assert select_detections(result, 0.0, 0.5, 2, "object")[0].shape == (2, 4)  # max_det
    assert suppress_inside(boxes, 0.8).tolist() == [True, True, False, True]


def test_coco_evaluate_refuses_unknown_images_and_categories(squares):
    coco = read_coco(squares / "ann.json")
    empty = coco_evaluate(coco, [])
    assert empty["AP"] == 0.0 and empty.detections == 0
    with pytest.raises(ValueError, match="image_id 5 is not an image"):
        coco_evaluate(coco, [{"image_id": 5, "category_id": 3, "bbox": [0, 0, 1, 1], "score": 1.0}])
    with pytest.raises(ValueError, match="category_id 4 is not a category"):
        coco_evaluate(coco, [{"image_id": 100, "category_id": 4, "bbox": [0, 0, 1, 1], "score": 1.0}])


# --- the command ------------------------------------------------------------------------------------------------


def test_cli_detect_with_a_real_runner_and_coco_eval(ws, squares, tmp_path, capsys):
    ann = squares / "ann.json"
    props = _proposals(tmp_path / "gt.json", ann)
    code = main(["detect", str(ws.run), str(squares / "images"), "--proposals", str(props), "--out", str(tmp_path / "o"),
                 "--eval", str(ann), "--context", "0", "--threads", "1", "--score-thr", "0.05"])
    text = capsys.readouterr().out
    assert code == 0, text
    assert "Average Precision" in text and "class-agnostic" in text
    metrics = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert 0.0 <= metrics["AP50"] <= 1.0 and metrics["settings"]["runner"] == "torch"
    assert metrics["counts"] == {"images": 3, "proposals": 6, "classified": 6, "not_valid": 0,
                                 "detections": len(json.loads((tmp_path / "o" / "detections.json").read_text()))}
    categories = {c["id"] for c in json.loads(ann.read_text())["categories"]}
    assert {d["category_id"] for d in json.loads((tmp_path / "o" / "detections.json").read_text())} <= categories


def _run(capsys, args) -> tuple[int, str]:
    code = main(args)
    text = capsys.readouterr().out
    assert "Traceback" not in text
    return code, text


def test_cli_detect_errors_exit_2_and_name_the_file(ws, squares, tmp_path, capsys):
    ann = squares / "ann.json"
    base = [str(ws.run)]
    code, text = _run(capsys, ["detect", *base, str(tmp_path / "missing"), "--out", str(tmp_path / "o")])
    assert code == 2 and "missing: no such image file or folder" in text
    bad = tmp_path / "bad.json"
    bad.write_text("[{\"image_id\": 100, ")
    code, text = _run(capsys, ["detect", *base, str(squares / "images"), "--proposals", str(bad), "--out", str(tmp_path / "o")])
    assert code == 2 and "bad.json: not valid JSON" in text
    bad.write_text(json.dumps([{"file_name": "a.png", "bbox": [1, 2, 3]}]))
    code, text = _run(capsys, ["detect", *base, str(squares / "images"), "--proposals", str(bad), "--out", str(tmp_path / "o")])
    assert code == 2 and "bad.json: [0].bbox: expected 4 finite numbers" in text
    code, text = _run(capsys, ["detect", *base, str(squares / "images"), "--proposals", "slidin", "--out", str(tmp_path / "o")])
    assert code == 2 and "not sliding or selective-search and no such file" in text
    ids = _proposals(tmp_path / "ids.json", ann)
    code, text = _run(capsys, ["detect", *base, str(squares / "images"), "--proposals", str(ids), "--out", str(tmp_path / "o")])
    assert code == 2 and "image_id" in text and "--eval" in text
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"images": [{"id": 1, "file_name": "zzz.png", "width": 96, "height": 96}],
                                 "annotations": [], "categories": [{"id": 1, "name": "red"}]}))
    code, text = _run(capsys, ["detect", *base, str(squares / "images"), "--eval", str(other), "--out", str(tmp_path / "o")])
    assert code == 2 and "other.json: images.file_name: 3 of the 3 given images are not in this annotation file" in text
    assert not (tmp_path / "o").exists()  # nothing written before the inputs are checked


# --- the demo's detection stage --------------------------------------------------------------------------------


def test_demo_context_gives_the_patch_task_object_scale(tmp_path):
    from edgeinc.demo import DETECT_CONTEXT

    # A shape fills part of its tight box; the patch shows the box over (S - 2 context) of its S pixels.
    scenes = tmp_path / "s"
    synthesize_scenes(scenes, train=1, val=6, size=160, classes=5, seed=0, objects=(3, 6))
    coco = read_coco(scenes / "annotations" / "val.json")
    fill = np.array([a.area / (a.bbox[2] * a.bbox[3]) for a in coco.annotations])
    covered = np.median(fill) * ((V79.input_size - 2 * DETECT_CONTEXT) / V79.input_size) ** 2
    assert OBJECT_AREA[0] <= covered <= OBJECT_AREA[1], covered


def test_demo_baseline_scorers_and_the_pass_rule(tmp_path):
    from edgeinc.demo import ColourHistogramScorer, DetectStageResult, RandomPatchScorer

    task = tmp_path / "task"
    synthesize_patch_task(task, classes=2, train=6, val=1, size=32)
    colour = ColourHistogramScorer(task / "train", 32, (0.5, 0.5, 0.5))
    assert colour.class_names == ("background", "circle", "triangle")
    image = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    boxes = [[5, 5, 30, 30], [float("nan"), 0, 1, 1], [20, 20, 60, 50]]
    for scorer in (colour, RandomPatchScorer(colour.class_names, seed=1)):
        result = scorer.classify(image, boxes, context=4)
        assert result.valid.tolist() == [True, False, True] and result.class_names == colour.class_names
        assert torch.allclose(result.probs[[0, 2]].sum(1), torch.ones(2), atol=1e-5)
    figures = {"AP": 0.02, "AP50": 0.05}
    ok = DetectStageResult(figures, {"AP": 0.01, "AP50": 0.02}, {"AP": 0.0, "AP50": 0.01}, "onnxruntime", 8, 30, 100, 1.0, None)
    assert ok.passed
    assert not DetectStageResult(figures, {"AP": 0.03, "AP50": 0.02}, {"AP": 0.0, "AP50": 0.01}, "x", 8, 30, 100, 1.0, None).passed
    assert not DetectStageResult(figures, {"AP": 0.01, "AP50": 0.02}, {"AP": 0.0, "AP50": 0.05}, "x", 8, 30, 100, 1.0, None).passed


def test_demo_detect_stage_runs_end_to_end_on_a_tiny_setting(tmp_path, monkeypatch):
    from rich.console import Console

    from edgeinc import demo
    from edgeinc.models import create_model, save_weights

    torch.manual_seed(0)
    labels = ["background", "circle", "cross", "square", "star", "triangle"]
    model = create_model("inception_v3_79", depth_multiplier=0.1, min_depth=8, num_classes=6, aux_logits=False)
    save_weights(model.eval(), tmp_path / "run" / "model.safetensors", metadata={"edgeinc.labels": labels})
    synthesize_patch_task(tmp_path / "patches", classes=5, train=2, val=1, size=32)
    monkeypatch.setattr(demo, "DETECT_SCENES", {"train": 1, "val": 1, "size": 96, "classes": 5, "seed": 0, "objects": (1, 2)})
    monkeypatch.setattr(demo, "DETECT_WINDOW_SIZES", (24.0, 48.0))
    console = Console(width=200, record=True)
    result = demo.detect_quickstart(tmp_path / "run", tmp_path / "patches", tmp_path / "no-artifacts", tmp_path / "out", console)
    text = console.export_text()
    assert "random scores" in text and "colour-histogram baseline" in text and "AP50" in text
    assert result.runner == "torch" and result.scenes == 1 and result.windows == 58
    for row in (result.network, result.random, result.colour):
        assert set(row) == {"AP", "AP50", "agnostic AP", "agnostic AP50"}
        assert all(v is None or 0.0 <= v <= 1.0 for v in row.values())
    out = tmp_path / "out" / "detect"
    assert (out / "detections.json").is_file() and (out / "metrics.json").is_file()
    assert (out / "baselines" / "random" / "metrics.json").is_file() and (out / "baselines" / "colour" / "metrics.json").is_file()
    assert result.annotated == out / "annotated" / "000000.png" and result.annotated.is_file()
