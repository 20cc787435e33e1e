"""edgeinc.data: ImageNet-layout folders, Inception transforms, GPU decoding, the synthetic patch task."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from edgeinc.cli import main
from edgeinc.data import (
    BACKGROUND,
    SHAPE_NAMES,
    BadImageError,
    CentralFractionCrop,
    DataError,
    ImageFolder,
    build_transform,
    collate_skip_bad,
    colour_histogram_baseline,
    find_split,
    gpu_decode_batch,
    load_rgb,
    synthesize_patch_task,
)
from edgeinc.data.folder import EncodedBatch, EncodedImage
from edgeinc.data.transforms import CROP_FIELDS, CropParams, Normalizer
from edgeinc.models import get_variant

V79 = get_variant("inception_v3_79")


def _save(path: Path, image: Image.Image, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **kw)
    return path


def _noise(seed: int, size: tuple[int, int] = (90, 70)) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """split/<class>/ with PNG, JPEG (upper-case extension, nested folder) and files that are no images."""
    root = tmp_path / "train"
    _save(root / "dog" / "a.png", _noise(0))
    _save(root / "dog" / "nested" / "b.JPG", _noise(1), quality=90)
    _save(root / "cat" / "c.jpeg", _noise(2), quality=90)
    _save(root / "cat" / "d.webp", _noise(3), lossless=True)
    _save(root / "cat" / "e.bmp", _noise(4))
    (root / "cat" / "notes.txt").write_text("not an image")
    _save(root / "cat" / ".hidden.png", _noise(5))
    return root


@pytest.fixture(scope="module")
def synth_task(tmp_path_factory) -> Path:
    """K=5 shapes + background, enough images for the colour baseline to be measured."""
    out = tmp_path_factory.mktemp("synth") / "patches"
    synthesize_patch_task(out, classes=5, train=30, val=20, size=48, seed=0)
    return out


# --- loader -----------------------------------------------------------------------------------------


def test_loader_reads_good_images(folder):
    ds = ImageFolder(folder, build_transform(V79, train=False))
    assert ds.classes == ["cat", "dog"]  # sorted
    names = [(Path(p).name, label) for p, label in ds.samples]
    assert names == [("c.jpeg", 0), ("d.webp", 0), ("e.bmp", 0), ("a.png", 1), ("b.JPG", 1)]
    for i in range(len(ds)):
        image, label = ds[i]
        assert image.shape == (3, 79, 79) and image.dtype == torch.float32
        assert label == ds.samples[i][1]
    images, labels = collate_skip_bad([ds[i] for i in range(len(ds))])
    assert images.shape == (5, 3, 79, 79) and labels.tolist() == [0, 0, 0, 1, 1]


def test_corrupt_images_skipped_with_warning_or_fatal(folder, caplog):
    garbage = folder / "dog" / "garbage.jpg"
    garbage.write_bytes(b"this is not a jpeg")
    truncated = folder / "dog" / "truncated.jpg"
    _save(folder / "tmp" / "full.jpg", _noise(6, (200, 200)), quality=95)
    truncated.write_bytes((folder / "tmp" / "full.jpg").read_bytes()[:2000])
    (folder / "tmp" / "full.jpg").unlink()
    (folder / "tmp").rmdir()

    ds = ImageFolder(folder, build_transform(V79, train=False), on_bad_image="skip")
    index = {Path(p).name: i for i, (p, _) in enumerate(ds.samples)}
    with caplog.at_level(logging.WARNING, logger="edgeinc.data"):
        batch = [ds[i] for i in range(len(ds))]
        assert ds[index["garbage.jpg"]] is None  # a second read: still skipped, not warned again
    assert batch[index["garbage.jpg"]] is None and batch[index["truncated.jpg"]] is None
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 2
    assert any(str(garbage) in m for m in warned) and any(str(truncated) in m for m in warned)
    images, labels = collate_skip_bad(batch)
    assert images.shape[0] == 5 and labels.tolist() == [0, 0, 0, 1, 1]  # the good ones, in order
    assert collate_skip_bad([None, None]) is None

    strict = ImageFolder(folder, build_transform(V79, train=False), on_bad_image="fail")
    with pytest.raises(BadImageError, match="truncated.jpg"):
        strict[index["truncated.jpg"]]
    with pytest.raises(BadImageError, match="garbage.jpg"):
        strict[index["garbage.jpg"]]


def test_odd_images_become_rgb(tmp_path):
    rng = np.random.default_rng(0)
    gray = _save(tmp_path / "gray.png", Image.fromarray(rng.integers(0, 256, (20, 30), dtype=np.uint8), "L"))
    cmyk = _save(tmp_path / "cmyk.jpg", Image.new("CMYK", (30, 20), (0, 255, 255, 0)), quality=95)  # red
    palette_image = Image.new("P", (30, 20), 1)
    palette_image.putpalette([0, 0, 0, 0, 0, 255] + [0] * 762)
    palette = _save(tmp_path / "palette.png", palette_image)
    rgba_pixels = np.zeros((20, 30, 4), dtype=np.uint8)
    rgba_pixels[:, :15] = (255, 0, 0, 255)  # left half opaque red, right half fully transparent green
    rgba_pixels[:, 15:] = (0, 255, 0, 0)
    rgba = _save(tmp_path / "rgba.png", Image.fromarray(rgba_pixels, "RGBA"))
    la = _save(tmp_path / "la.png", Image.fromarray(np.full((20, 30, 2), (200, 0), np.uint8), "LA"))
    deep = _save(tmp_path / "deep.png", Image.fromarray(np.full((20, 30), 65535, np.uint16)))

    for path in (gray, cmyk, palette, rgba, la, deep):
        image = load_rgb(path)
        assert image.mode == "RGB" and image.size == (30, 20), path
    g = np.asarray(load_rgb(gray))
    assert (g[..., 0] == g[..., 1]).all() and (g[..., 0] == np.asarray(Image.open(gray))).all()
    assert np.abs(np.asarray(load_rgb(cmyk)).astype(int) - (255, 0, 0)).max() <= 3
    assert (np.asarray(load_rgb(palette)) == (0, 0, 255)).all()
    composited = np.asarray(load_rgb(rgba))
    assert (composited[:, :15] == (255, 0, 0)).all() and (composited[:, 15:] == (128, 128, 128)).all()
    assert (np.asarray(load_rgb(la)) == 128).all()  # transparent: the grey background
    assert (np.asarray(load_rgb(deep)) == 255).all()  # 16-bit white is white, not clipped garbage


# --- transforms -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["inception_v3_79", "inception_v3_151"])
@pytest.mark.parametrize("train", [True, False])
def test_transform_shape_and_normalisation_from_variant(name, train):
    # Numbers that are not Inception's, so a transform that re-typed 0.5 would fail.
    variant = dataclasses.replace(get_variant(name), mean=(0.1, 0.2, 0.3), std=(0.5, 0.25, 0.125))
    colour = (255, 51, 0)
    out = build_transform(variant, train=train)(Image.new("RGB", (120, 100), colour))
    size = variant.input_size
    assert out.shape == (3, size, size) and out.dtype == torch.float32 and type(out) is torch.Tensor
    expected = (torch.tensor(colour) / 255 - torch.tensor(variant.mean)) / torch.tensor(variant.std)
    assert torch.allclose(out, expected[:, None, None].expand_as(out), atol=1e-5)


def test_eval_crop_is_central_fraction():
    # A 10-pixel red frame around a blue inside: the central 87.5% of 160 is exactly the inside.
    pixels = np.zeros((160, 160, 3), np.uint8)
    pixels[...] = (255, 0, 0)
    pixels[10:150, 10:150] = (0, 0, 255)
    out = build_transform(V79, train=False)(Image.fromarray(pixels))
    blue = (torch.tensor([0.0, 0.0, 1.0]) - 0.5) / 0.5
    assert torch.allclose(out, blue[:, None, None].expand_as(out), atol=1e-5)
    # An off-centre crop of the same size would include the frame:
    assert not torch.allclose(
        build_transform(dataclasses.replace(V79, crop_fraction=0.95), train=False)(Image.fromarray(pixels)),
        blue[:, None, None].expand_as(out), atol=1e-3,
    )
    # TF's central_crop arithmetic on odd sides: start = int((n - n * f) / 2), size = n - 2 * start.
    crop = CentralFractionCrop(0.875)(torch.zeros(3, 57, 99))
    assert tuple(crop.shape) == (3, 57 - 2 * int((57 - 57 * 0.875) / 2), 99 - 2 * int((99 - 99 * 0.875) / 2))


def test_train_transform_crops_randomly_with_given_scale():
    image = _noise(7, (96, 96))
    torch.manual_seed(0)
    a, b = build_transform(V79, train=True)(image), build_transform(V79, train=True)(image)
    assert a.shape == b.shape == (3, 79, 79) and not torch.equal(a, b)
    with pytest.raises(ValueError, match="scale"):
        build_transform(V79, train=True, scale=(0.5, 0.2))


@pytest.mark.parametrize("train", [True, False])
def test_uint8_transform_then_batched_normaliser_is_the_float_transform_bit_for_bit(train):
    """Workers ship uint8 and the device normalises the batch: the same numbers as the float transform."""
    variant = dataclasses.replace(V79, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))  # not 0.5: no shortcut
    images = [_noise(seed, size) for seed, size in enumerate([(90, 70), (300, 40), (64, 64), (120, 200)])]
    floats, pixels = [], []
    for seed, image in enumerate(images):
        torch.manual_seed(seed)
        floats.append(build_transform(variant, train=train)(image))
        torch.manual_seed(seed)
        pixels.append(build_transform(variant, train=train, normalize=False)(image))
    batch = torch.stack(pixels)
    assert batch.dtype == torch.uint8 and batch.shape == (4, 3, 79, 79) and type(batch) is torch.Tensor
    normalised = Normalizer(variant.mean, variant.std)(batch)
    assert normalised.dtype == torch.float32 and torch.equal(normalised, torch.stack(floats))
    with pytest.raises(TypeError, match="uint8"):
        Normalizer(variant.mean, variant.std)(normalised)
    with pytest.raises(ValueError, match="zero"):
        Normalizer((0.5,) * 3, (0.5, 0.0, 0.5))


@pytest.mark.parametrize("size", [(90, 70), (500, 375), (300, 20), (20, 300)])  # extreme aspects: the fallback crop
def test_crop_params_make_the_cpu_transforms_draws(size):
    """The worker's CropParams, given only the image size, draws the crop box and flip the CPU transform
    draws for that image under the same RNG state."""
    image = _noise(0, size)
    flips = 0
    for seed in range(40):
        transform = build_transform(V79, train=True, scale=(0.08, 1.0))
        crop, flip = transform.transforms[1], transform.transforms[2]
        seen = {"flip": False}
        make_params, apply_flip = crop.make_params, flip.transform
        crop.make_params = lambda flat: seen.setdefault("box", make_params(flat))  # records the CPU path's draw
        flip.transform = lambda inpt, params: (seen.__setitem__("flip", True), apply_flip(inpt, params))[1]
        torch.manual_seed(seed)
        transform(image)
        torch.manual_seed(seed)
        params = CropParams(V79)(size[1], size[0])
        assert params.dtype == torch.int64 and params.shape == (len(CROP_FIELDS),)
        box = seen["box"]
        assert params.tolist() == [box["top"], box["left"], box["height"], box["width"], int(seen["flip"]),
                                   size[1], size[0]], seed
        flips += seen["flip"]
    assert 0 < flips < 40  # both ways were exercised
    assert CropParams(V79, flip=False)(50, 60)[CROP_FIELDS.index("flip")] == 0


def test_encoded_samples_carry_their_crop_and_the_batch_applies_it(tmp_path):
    root = _encoded_folder(tmp_path)
    raw = ImageFolder(root, decode="none", crop_params=CropParams(V79))
    torch.manual_seed(3)
    samples = [raw[i] for i in range(len(raw))]
    assert all(isinstance(s[0], EncodedImage) for s in samples)
    for (path, _), (encoded, _) in zip(raw.samples, samples):
        width, height = Image.open(path).size  # the header's size travels with the crop
        assert encoded.params[5:].tolist() == [height, width]
        assert bytes(encoded.data.numpy()) == Path(path).read_bytes()
    batch, labels = collate_skip_bad(samples)
    assert isinstance(batch, EncodedBatch) and batch.params.shape == (4, len(CROP_FIELDS))
    assert labels.tolist() == [0, 0, 1, 1]
    # the CPU path under the same draws: decode, then the transform (whose draws the params replayed)
    torch.manual_seed(3)
    cpu = ImageFolder(root, build_transform(V79, train=True, normalize=False))
    expected = torch.stack([cpu[i][0] for i in range(len(cpu))])
    out = gpu_decode_batch(batch, V79, train=True, device="cpu", normalize=False)
    assert out.dtype == torch.uint8 and torch.equal(out, expected)  # CPU decoders: the same pixels
    assert torch.equal(gpu_decode_batch(batch, V79, True, "cpu"), Normalizer(V79.mean, V79.std)(expected))
    with pytest.raises(ValueError, match="crop_params go with decode='none'"):
        ImageFolder(root, crop_params=CropParams(V79))
    with pytest.raises(ValueError, match=r"params: expected int64 \(4, 7\)"):
        gpu_decode_batch(batch.data, V79, train=True, device="cpu", params=batch.params[:2])


def test_a_crop_that_does_not_fit_the_decoded_image_is_a_bad_image(tmp_path, caplog):
    root = _encoded_folder(tmp_path)
    raw = ImageFolder(root, decode="none", crop_params=CropParams(V79))
    batch, labels = collate_skip_bad([raw[i] for i in range(len(raw))])
    params = batch.params.clone()
    params[1, 5] += 7  # the header would have said another height
    paths = [p for p, _ in raw.samples]
    with pytest.raises(BadImageError, match=r"q.jpg: its header says 120x97 but it decodes to 120x90"):
        gpu_decode_batch(batch.data, V79, True, "cpu", params=params, paths=paths)
    with caplog.at_level(logging.WARNING, logger="edgeinc.data"):
        images, kept = gpu_decode_batch(batch.data, V79, True, "cpu", params=params, labels=labels, paths=paths,
                                        on_bad_image="skip")
    assert images.shape == (3, 3, 79, 79) and kept.tolist() == [0, 1, 1] and "q.jpg" in caplog.text


# --- layout errors ----------------------------------------------------------------------------------


def test_classes_given_vs_found(folder):
    ds = ImageFolder(folder, classes=["dog", "cat"])
    assert ds.classes == ["dog", "cat"]  # the given order, not sorted
    assert {label for path, label in ds.samples if "/dog/" in path} == {0}
    assert {label for path, label in ds.samples if "/cat/" in path} == {1}
    with pytest.raises(DataError, match=r"cat.*not in the class list"):
        ImageFolder(folder, classes=["dog"])
    with pytest.raises(DataError, match=r"no folder for class\(es\) \['bird'\]"):
        ImageFolder(folder, classes=["bird", "cat", "dog"])


def test_empty_and_missing_folders(tmp_path):
    with pytest.raises(DataError, match=f"{tmp_path / 'nope'} does not exist"):
        ImageFolder(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"empty has no class folders.*<class>/<image>"):
        ImageFolder(tmp_path / "empty")
    _save(tmp_path / "loose" / "x.png", _noise(0))
    with pytest.raises(DataError, match=r"no class folders \(it holds 1 images directly\)"):
        ImageFolder(tmp_path / "loose")
    (tmp_path / "hollow" / "cls").mkdir(parents=True)
    with pytest.raises(DataError, match=r"hollow/cls holds no images"):
        ImageFolder(tmp_path / "hollow")
    with pytest.raises(DataError, match=r"no val split at .*edgeinc data synth"):
        find_split(tmp_path, "val")
    (tmp_path / "val").mkdir()
    assert find_split(tmp_path, "val") == tmp_path / "val"


# --- GPU decoding path (run on the CPU here) ----------------------------------------------------------


def _encoded_folder(tmp_path: Path) -> Path:
    root = tmp_path / "val"
    _save(root / "a" / "p.png", _noise(0, (100, 80)))
    _save(root / "a" / "q.jpg", _noise(1, (120, 90)), quality=92)
    _save(root / "b" / "g.jpg", Image.fromarray(np.full((64, 64), 77, np.uint8), "L"), quality=92)
    _save(root / "b" / "k.jpg", Image.new("CMYK", (64, 64), (0, 255, 255, 0)), quality=92)
    return root


def _check_matches_cpu_path(tmp_path: Path, device: str) -> None:
    root = _encoded_folder(tmp_path)
    raw = ImageFolder(root, decode="none")
    encoded, labels = collate_skip_bad([raw[i] for i in range(len(raw))])
    assert isinstance(encoded, list) and all(e.dtype == torch.uint8 and e.dim() == 1 for e in encoded)
    cpu = ImageFolder(root, build_transform(V79, train=False))
    expected, expected_labels = collate_skip_bad([cpu[i] for i in range(len(cpu))])
    out = gpu_decode_batch(encoded, V79, train=False, device=device)
    assert out.shape == expected.shape == (4, 3, 79, 79) and out.device.type == torch.device(device).type
    png = [i for i, (p, _) in enumerate(raw.samples) if p.endswith(".png")]
    if device == "cpu":
        assert torch.equal(out[png], expected[png])  # same decoder, same ops: identical
    else:  # the same ops in CUDA kernels: rounding may differ by a grey level
        assert torch.allclose(out[png].cpu(), expected[png], atol=2.5 * 2 / 255)
    # JPEG decoders may round differently by a grey level or two (the whole range is 2.0 after normalising).
    assert (out.cpu() - expected).abs().mean() < 0.02
    assert labels.tolist() == expected_labels.tolist()
    torch.manual_seed(0)
    assert gpu_decode_batch(encoded, V79, train=True, device=device, scale=(0.5, 1.0)).shape == (4, 3, 79, 79)


def test_gpu_decode_batch_on_cpu_matches_cpu_path(tmp_path):
    _check_matches_cpu_path(tmp_path, "cpu")


def test_gpu_decode_batch_bad_image(tmp_path, caplog):
    root = _encoded_folder(tmp_path)
    (root / "a" / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0 then nothing useful")
    raw = ImageFolder(root, decode="none")
    encoded, labels = collate_skip_bad([raw[i] for i in range(len(raw))])
    paths = [p for p, _ in raw.samples]
    with pytest.raises(BadImageError, match="bad.jpg"):
        gpu_decode_batch(encoded, V79, train=False, device="cpu", paths=paths)
    with caplog.at_level(logging.WARNING, logger="edgeinc.data"):
        images, kept = gpu_decode_batch(encoded, V79, False, "cpu", labels=labels, paths=paths, on_bad_image="skip")
    assert images.shape[0] == 4 and kept.tolist() == [0, 0, 1, 1]
    assert "bad.jpg" in caplog.text


@pytest.mark.gpu
def test_gpu_decode_batch_on_cuda_matches_cpu_path(tmp_path):
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    _check_matches_cpu_path(tmp_path, "cuda")


# --- the synthetic patch task ------------------------------------------------------------------------


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_synth_layout_and_determinism(tmp_path):
    info = synthesize_patch_task(tmp_path / "a", classes=3, train=3, val=2, size=48, seed=1)
    names = sorted([*SHAPE_NAMES[:3], BACKGROUND])
    assert info.classes == names and info.written == 4 * 5 and info.reused == 0
    for split, count in (("train", 3), ("val", 2)):
        ds = ImageFolder(find_split(tmp_path / "a", split))
        assert ds.classes == names and len(ds) == 4 * count
        assert all(Image.open(p).size == (48, 48) and Image.open(p).mode == "RGB" for p, _ in ds.samples)
    assert json.loads((tmp_path / "a" / "classes.json").read_text()) == names
    assert json.loads((tmp_path / "a" / "synth.json").read_text())["seed"] == 1

    synthesize_patch_task(tmp_path / "b", classes=3, train=3, val=2, size=48, seed=1)
    synthesize_patch_task(tmp_path / "c", classes=3, train=3, val=2, size=48, seed=2)
    a, b, c = (_tree(tmp_path / x) for x in "abc")
    assert a == b  # same seed: byte-identical
    images = [k for k in a if k.endswith(".png")]
    assert all(a[k] != c[k] for k in images)  # another seed: every image differs
    assert len({a[k] for k in images}) == len(images)  # and no two images are the same

    # An interrupted run is finished by rerunning it; a folder holding other parameters is refused.
    victim = tmp_path / "a" / "val" / "circle" / "000001.png"
    victim.unlink()
    again = synthesize_patch_task(tmp_path / "a", classes=3, train=3, val=2, size=48, seed=1)
    assert again.written == 1 and again.reused == 19 and _tree(tmp_path / "a") == b
    with pytest.raises(DataError, match=r"other parameters \(seed differ"):
        synthesize_patch_task(tmp_path / "a", classes=3, train=3, val=2, size=48, seed=3)
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x").write_text("")
    with pytest.raises(DataError, match="not empty"):
        synthesize_patch_task(tmp_path / "d")
    with pytest.raises(ValueError, match="classes must be between 1 and"):
        synthesize_patch_task(tmp_path / "e", classes=len(SHAPE_NAMES) + 1)


def test_synth_parallel_equals_serial(tmp_path):
    synthesize_patch_task(tmp_path / "serial", classes=2, train=4, val=2, size=40, seed=5)
    synthesize_patch_task(tmp_path / "parallel", classes=2, train=4, val=2, size=40, seed=5, workers=2)
    assert _tree(tmp_path / "serial") == _tree(tmp_path / "parallel")


def test_colour_baseline_near_chance_on_synth(synth_task):
    r = colour_histogram_baseline(synth_task / "train", synth_task / "val")
    assert r["num_classes"] == 6 and r["n_val"] == 120 and r["chance"] == pytest.approx(1 / 6)
    assert r["top1"] < 0.35, r  # chance is 0.167; a colour-solvable task would be near 1


def test_colour_baseline_solves_a_colour_task(tmp_path):
    # The positive control: the same baseline does find colour when colour is the label.
    rng = np.random.default_rng(0)
    hues = {"red": (200, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 200)}
    for split, n in (("train", 10), ("val", 5)):
        for name, rgb in hues.items():
            for i in range(n):
                pixels = np.clip(rng.normal(rgb, 40, (32, 32, 3)), 0, 255).astype(np.uint8)
                _save(tmp_path / split / name / f"{i}.png", Image.fromarray(pixels))
    r = colour_histogram_baseline(tmp_path / "train", tmp_path / "val")
    assert r["top1"] == 1.0


def test_cli_data_synth(tmp_path, capsys):
    out = tmp_path / "patches"
    assert main(["data", "synth", str(out), "--classes", "2", "--train", "2", "--val", "1", "--size", "40"]) == 0
    text = capsys.readouterr().out
    assert "wrote 9 40x40 PNG images" in text and str(out / "train") in text  # (2 shapes + background) x (2 + 1)
    assert "background" in text and "circle" in text and "triangle" in text
    assert len(list((out / "train").rglob("*.png"))) == 6 and len(list((out / "val").rglob("*.png"))) == 3
    assert main(["data", "synth", str(out), "--seed", "4"]) == 2  # other parameters: a clean error
    assert "error:" in capsys.readouterr().out
    assert main(["data", "baseline", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["num_classes"] == 3
