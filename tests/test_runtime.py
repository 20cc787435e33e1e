"""Runners: one protocol over PyTorch, ONNX Runtime, LiteRT, OpenVINO and TensorRT, fed from manifests."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from edgeinc.export import ManifestError
from edgeinc.export.data import load_images
from edgeinc.models import get_variant
from edgeinc.registry import UnknownNameError
from edgeinc.runtime import RUNNERS, Runner, RuntimeUnavailableError, load_runner, normalize, tensorrt_available
from export_helpers import CLASSES, workspace


# one session workspace (tests/export_helpers.py): its exports are made once, in one xdist worker
pytestmark = pytest.mark.xdist_group("export_workspace")


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    return workspace(tmp_path_factory)


@pytest.fixture(scope="module")
def images(ws):
    return load_images(ws.data / "val", get_variant("inception_v3_79"), 8, CLASSES).images


@pytest.fixture(scope="module")
def reference(ws, images):
    return load_runner(ws.run, threads=1).predict(images)


def test_registry_and_protocol(ws):
    assert set(RUNNERS.names()) == {"torch", "onnxruntime", "litert", "openvino", "tensorrt"}
    runner = load_runner(ws.run)
    assert isinstance(runner, Runner) and runner.name == "torch" and runner.labels == CLASSES
    with pytest.raises(UnknownNameError, match="did you mean 'openvino'"):
        load_runner(ws.export("onnx", "fp32").directory, "openvin")


@pytest.mark.parametrize(
    ("target", "precision", "backend", "max_error"),
    [
        ("onnx", "fp32", "onnxruntime", 1e-3),
        ("onnx", "fp32", "openvino", 1e-3),
        ("onnx", "fp16", "onnxruntime", 3e-2),
        ("onnx", "int8", "onnxruntime", None),
        ("onnx", "int8", "openvino", None),  # NNCF's Q/DQ: correct in OpenVINO too
        ("tflite", "fp32", "litert", 1e-3),
        ("tflite", "int8", "litert", None),
    ],
)
def test_runner_matches_pytorch(ws, images, reference, target, precision, backend, max_error):
    result = ws.export(target, precision)
    runner = load_runner(result.directory, backend, threads=1)
    assert isinstance(runner, Runner) and runner.name == backend and runner.threads == 1
    logits = runner.predict(images)
    assert logits.dtype == np.float32 and logits.shape == (len(images), len(CLASSES))
    scale = np.abs(reference).max()
    if max_error is not None:
        assert np.abs(logits - reference).max() <= max_error * scale
    assert (logits.argmax(1) == reference.argmax(1)).mean() >= (1.0 if max_error else 0.9)


def test_tflite_int8_prepare_quantizes_nhwc_and_chunks_batches(ws, images, reference):
    runner = load_runner(ws.export("tflite", "int8").directory, threads=1)
    native = runner.prepare(images[:3])
    q = runner.input["quantization"]
    assert native.dtype == np.int8 and native.shape == (3, 79, 79, 3)
    expected = np.clip(np.round(images[:3].transpose(0, 2, 3, 1) / q["scale"] + q["zero_point"]), -128, 127)
    assert np.array_equal(native, expected.astype(np.int8))
    logits = runner.run(native)  # a batch of 3 through a batch-1 model
    assert logits.dtype == np.float32 and logits.shape == (3, len(CLASSES))
    assert (logits.argmax(1) == reference[:3].argmax(1)).all()


def test_normalize_pixels_matches_the_eval_transform(ws):
    from PIL import Image

    from edgeinc.data import build_transform

    variant = get_variant("inception_v3_79")
    path = next((ws.data / "val" / "red").iterdir())
    expected = build_transform(variant, train=False)(Image.open(path).convert("RGB")).numpy()
    # pixels already cropped and resized the way the transform does, given as uint8 NHWC
    pixels = np.clip(np.round((expected.transpose(1, 2, 0) * 0.5 + 0.5) * 255), 0, 255).astype(np.uint8)[None]
    runner = load_runner(ws.export("onnx", "fp32").directory)
    assert np.abs(normalize(pixels, runner.preprocessing)[0] - expected).max() < 1 / 127.5 + 1e-6


def test_openvino_refuses_the_tensorrt_flavour(ws):
    from edgeinc.export import TensorRTUnavailableError, export

    try:
        result = export(ws.run, "tensorrt", "int8", out=ws.root / "rt-trt", calib_size=32, threads=1)
    except TensorRTUnavailableError as e:
        result = e.result
    if result.manifest.format != "onnx":
        pytest.skip("TensorRT present: the artifact is an engine")
    assert load_runner(result.directory, "onnxruntime").predict  # ONNX Runtime runs it
    with pytest.raises(RuntimeUnavailableError, match="OpenVINO runs incorrectly"):
        load_runner(result.directory, "openvino")
    if not tensorrt_available()[0]:
        with pytest.raises(ValueError, match="cannot run a onnx artifact"):
            load_runner(result.directory, "tensorrt")


def test_tensorrt_runner_needs_tensorrt(ws, monkeypatch):
    from types import SimpleNamespace

    from edgeinc.runtime.backends import TensorRTRunner

    ok, why = tensorrt_available()
    if ok:
        pytest.skip("TensorRT is installed")
    manifest = load_runner(ws.export("onnx", "fp32").directory).manifest
    with pytest.raises(RuntimeUnavailableError, match="cannot run the TensorRT engine"):
        TensorRTRunner(ws.root / "x.engine", SimpleNamespace(**{**manifest.__dict__, "engine": {}}))


def test_bad_artifacts(ws, tmp_path, images):
    copy = tmp_path / "onnx"
    shutil.copytree(ws.export("onnx", "fp32").directory, copy)
    artifact = copy / "inception_v3_79_fp32.onnx"
    artifact.write_bytes(b"\0" * 100)  # corrupt
    with pytest.raises(ManifestError, match="does not match the manifest"):
        load_runner(copy)
    with pytest.raises(ManifestError, match="no manifest.json"):
        load_runner(tmp_path)
    with pytest.raises(ValueError, match="runners for tflite: litert"):
        load_runner(ws.export("tflite", "fp32").directory, "onnxruntime")
    with pytest.raises(ValueError, match="expected a normalised NCHW batch"):
        load_runner(ws.export("onnx", "fp32").directory).predict(images[0])
