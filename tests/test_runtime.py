"""Runners: one protocol over PyTorch, ONNX Runtime, LiteRT, OpenVINO and TensorRT, fed from manifests."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from edgeinc.export import ManifestError
from edgeinc.scoring import TOLERANCES, compare_logits
from edgeinc.utils import cpu
from edgeinc.utils.cpu import bf16_unavailable_reason
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
    assert set(RUNNERS.names()) == {"torch", "onnxruntime", "litert", "openvino", "tensorrt", "executorch"}
    runner = load_runner(ws.run)
    assert isinstance(runner, Runner) and runner.name == "torch" and runner.labels == CLASSES
    with pytest.raises(UnknownNameError, match="did you mean 'openvino'"):
        load_runner(ws.export("onnx", "fp32").directory, "openvin")


@pytest.mark.parametrize(
    ("target", "precision", "backend", "executed"),
    [
        ("onnx", "fp32", "onnxruntime", "fp32"),
        ("onnx", "fp32", "openvino", "fp32"),  # f32 even where the CPU has bf16 (OpenVINO's default there)
        ("onnx", "fp16", "onnxruntime", "fp32"),  # x86 ONNX Runtime widens the fp16 weights at load
        ("onnx", "fp16", "openvino", "fp32"),
        ("onnx", "int8", "onnxruntime", "int8"),
        ("onnx", "int8", "openvino", "int8"),  # NNCF's Q/DQ: correct in OpenVINO too
        ("tflite", "fp32", "litert", "fp32"),
        ("tflite", "int8", "litert", "int8"),
    ],
)
def test_runner_executes_the_precision_it_names_and_matches_pytorch(ws, images, reference, target, precision, backend, executed):
    result = ws.export(target, precision)
    runner = load_runner(result.directory, backend, threads=1)
    assert isinstance(runner, Runner) and runner.name == backend and runner.threads == 1
    assert runner.precision == precision and runner.executed.main == executed, runner.executed
    logits = runner.predict(images)
    assert logits.dtype == np.float32 and logits.shape == (len(images), len(CLASSES))
    # the gate of the looser of the two: what the file stores and what the kernels ran
    looser = max(precision, executed, key=["fp32", "fp16", "bf16", "int8"].index)
    parity = compare_logits(reference, logits, TOLERANCES[looser], f"{target} {precision} in {backend}")
    assert parity.passed, parity


@pytest.mark.skipif(bf16_unavailable_reason() is not None, reason=str(bf16_unavailable_reason()))
@pytest.mark.parametrize("backend", ["openvino", "torch"])
def test_bf16_runs_natively_in_bf16_and_stays_close_to_fp32(ws, images, reference, backend):
    source = ws.run if backend == "torch" else ws.export("onnx", "fp32").directory
    runner = load_runner(source, backend, threads=1, precision="bf16")
    assert runner.precision == "bf16" and runner.executed.main == "bf16", runner.executed
    parity = compare_logits(reference, runner.predict(images), TOLERANCES["bf16"], f"bf16 in {backend}")
    assert parity.passed and parity.max_abs_error > 0, parity  # bf16 rounding shows, within the bound


def test_bf16_is_refused_where_the_cpu_or_the_runtime_cannot_run_it(ws, monkeypatch):
    with pytest.raises(RuntimeUnavailableError, match="cannot run a fp32 artifact in bf16"):
        load_runner(ws.export("onnx", "fp32").directory, "onnxruntime", precision="bf16")
    with pytest.raises(RuntimeUnavailableError, match="cannot run a int8 artifact in bf16"):
        load_runner(ws.export("onnx", "int8").directory, "openvino", precision="bf16")
    monkeypatch.setattr(cpu, "all_flags", lambda: frozenset({"avx2", "fma"}))  # an AVX2-only CPU
    with pytest.raises(RuntimeUnavailableError, match="no native bfloat16"):
        load_runner(ws.export("onnx", "fp32").directory, "openvino", precision="bf16")


@pytest.mark.parametrize(("source", "backend"), [("run", "torch"), ("onnx", "onnxruntime"), ("onnx", "openvino")])
def test_flushing_denormals_changes_no_decision(ws, images, source, backend):
    path = ws.run if source == "run" else ws.export("onnx", "fp32").directory
    flushed = load_runner(path, backend, threads=1)
    assert flushed.flush_denormals is True
    a = flushed.predict(images)
    kept = load_runner(path, backend, threads=1, flush_denormals=False)
    assert kept.flush_denormals is False
    b = kept.predict(images)
    assert (a.argmax(1) == b.argmax(1)).all() and np.abs(a - b).max() <= 1e-4 * np.abs(b).max()


def test_torch_runner_really_flushes_denormals(ws):
    code = (
        "import torch\nfrom edgeinc.runtime import load_runner\n"
        f"load_runner({str(ws.run)!r}, threads=1)\n"
        "x = torch.tensor([1e-39])\nprint(float(x * 1.0) == 0.0)\n"  # 1e-39 is a float32 denormal
    )
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", code], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                         check=True).stdout
    assert out.strip().endswith("True")


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


def test_tensorrt_runner_needs_tensorrt(ws):
    from edgeinc.runtime.backends import TensorRTRunner

    ok, why = tensorrt_available()
    if ok:
        pytest.skip("TensorRT is installed")
    spec = load_runner(ws.export("onnx", "fp32").directory).spec.model_copy(update={"format": "tensorrt"})
    with pytest.raises(RuntimeUnavailableError, match="cannot run the TensorRT engine"):
        TensorRTRunner(ws.root / "x.engine", spec)


def test_runners_cut_batches_to_what_the_runtime_accepts(ws, images):
    """A fixed-batch file gets padded chunks; a maximum (a TensorRT profile's) gets splits, never more."""
    from edgeinc.runtime.base import ManifestRunner

    seen = []

    class Bounded(ManifestRunner):
        name = "onnxruntime"

        @property
        def max_batch(self):
            return 3

        def _run(self, batch):
            seen.append(len(batch))
            return np.repeat(batch[:, :1, 0, 0], len(CLASSES), axis=1)

    spec = load_runner(ws.export("onnx", "fp32").directory).spec
    out = Bounded(ws.root / "x", spec).predict(images)  # 8 images
    assert seen == [3, 3, 2] and out.shape == (8, len(CLASSES))
    seen.clear()
    fixed = spec.model_copy(update={"input": spec.input.model_copy(update={"shape": [4, 3, 79, 79]})})
    Bounded.max_batch = ManifestRunner.max_batch  # the fixed batch itself
    Bounded(ws.root / "x", fixed).predict(images[:6])
    assert seen == [4, 4]  # the second chunk padded from 2 to 4


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
