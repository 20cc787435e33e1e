"""Export: every target and precision that runs here, parity that can fail, the manifest, bad inputs.

All on a tiny inception_v3_79 (depth multiplier 0.1) with a fitted classifier (tests/export_helpers.py).
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from edgeinc.cli import main
from edgeinc.export import (
    TARGETS, ExportError, ManifestError, ParityError, TensorRTUnavailableError, check_target, export, load_manifest,
)
from edgeinc.artifact import Manifest
from edgeinc.scoring import TOLERANCES, compare_logits
from edgeinc.models import count_macs, count_parameters, load_source
from edgeinc.registry import UnknownNameError
from edgeinc.utils.io import sha256_file
from export_helpers import CLASSES, workspace


# one session workspace (tests/export_helpers.py): its exports are made once, in one xdist worker
pytestmark = pytest.mark.xdist_group("export_workspace")


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    return workspace(tmp_path_factory)


def initializers(model) -> dict[str, np.ndarray]:
    return {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}


def weight_dequantizers(model) -> list:
    inits = initializers(model)
    return [n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits]


# -- registry -------------------------------------------------------------------------------------


def test_targets_declare_their_precisions():
    assert set(TARGETS.names()) == {"onnx", "tflite", "tensorrt", "executorch"}
    for entry in TARGETS:
        assert set(entry.meta.precisions) <= {"fp32", "fp16", "int8"}
    with pytest.raises(ExportError, match=r"unknown precision 'int4' \(one of fp32, fp16, bf16, int8"):
        check_target("tflite", "int4")
    with pytest.raises(ExportError, match=r"does not support precision 'bf16'.*supports fp32, fp16, int8"):
        check_target("tflite", "bf16")  # bf16 is a runtime option, not a file
    with pytest.raises(UnknownNameError, match="did you mean 'onnx'"):
        check_target("onnxx", "fp32")


# -- ONNX ------------------------------------------------------------------------------------------


def test_onnx_fp32_manifest_metadata_and_parity(ws):
    result = ws.export("onnx", "fp32")
    manifest, folder = load_manifest(result.directory)  # validates the schema and the sha256
    assert folder == result.directory and result.artifact.name == "inception_v3_79_fp32.onnx"
    assert manifest.artifact_sha256 == sha256_file(result.artifact)
    assert manifest.artifact_bytes == result.artifact.stat().st_size
    source = load_source(ws.run)
    assert manifest.source.sha256 == source.sha256 == sha256_file(ws.run / "model.safetensors")
    assert manifest.model.parameters == count_parameters(source.model, include_aux=False)
    assert manifest.model.multiply_adds == count_macs(source.model, 79)
    variant = source.model.variant
    assert manifest.preprocessing.mean == list(variant.mean) and manifest.preprocessing.input_size == 79
    assert manifest.model.variant_config.model_dump() == variant.to_dict()
    assert manifest.model.build.options == source.model.options  # rebuilds the network
    assert manifest.labels == CLASSES and manifest.recipe["data"]["root"] == str(ws.data)
    assert {"torch", "onnx", "onnxruntime", "onnxslim"} <= set(manifest.tools)
    assert manifest.conversion.seconds > 0 and manifest.conversion.steps["onnx_export"] > 0
    # parity measured against PyTorch through the ONNX Runtime runner, and recorded
    (parity,) = manifest.parity
    assert parity.passed and parity.top1_agreement == 1.0 and parity.runtime == "onnxruntime"
    assert parity.max_abs_error < 1e-3 * parity.reference_max_abs_logit
    # the graph: opset >= 17, dynamic batch, and the manifest's keys as metadata
    model = onnx.load(str(result.artifact))
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 17
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    props = {p.key: json.loads(p.value) for p in model.metadata_props}
    assert props["edgeinc.labels"] == CLASSES and props["edgeinc.precision"] == "fp32"
    assert props["edgeinc.model"]["multiply_adds"] == manifest.model.multiply_adds
    assert not any(p.name.startswith(".") for p in result.directory.parent.iterdir())  # no staging folder left


def test_onnx_fixed_batch_through_the_callable_module(ws):
    import edgeinc

    result = edgeinc.export(ws.run, "onnx", "fp32", batch=2, out=ws.root / "fixed", calib_size=16, threads=1)
    assert result.manifest.input.shape == [2, 3, 79, 79]
    model = onnx.load(str(result.artifact))
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 2
    assert result.manifest.parity[-1].passed


def test_onnx_fp16(ws):
    result = ws.export("onnx", "fp16")
    model = onnx.load(str(result.artifact))
    dtypes = {i.data_type for i in model.graph.initializer if len(i.dims) == 4}
    assert dtypes == {onnx.TensorProto.FLOAT16}  # conv weights in float16
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # float32 IO
    assert [c.check for c in result.manifest.parity] == ["fp32 ONNX vs PyTorch", "fp16 ONNX vs PyTorch"]
    assert result.manifest.parity[-1].passed and result.manifest.parity[-1].tolerance.rtol == TOLERANCES["fp16"].rtol
    assert result.artifact.stat().st_size < 0.6 * ws.export("onnx", "fp32").artifact.stat().st_size


def test_onnx_int8_nncf_qdq(ws):
    result = ws.export("onnx", "int8")
    m = result.manifest
    assert result.artifact.name == "inception_v3_79_int8_qdq.onnx"
    model = onnx.load(str(result.artifact))
    inits = initializers(model)
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    dq_weights = weight_dequantizers(model)
    assert len(dq_weights) >= len(convs)  # every conv weight is int8 behind a DequantizeLinear
    for node in dq_weights:
        w, scale, zp = (inits[name] for name in node.input)
        assert w.dtype == np.int8 and not zp.any()  # symmetric
        if w.ndim == 4:
            assert scale.shape == (w.shape[0],)  # per output channel
    q = m.quantization
    assert q.quantizer == "nncf" and q.kept_in_float == [] and q.activations.endswith("0 with a nonzero zero point")
    acc = q.accuracy
    assert acc.split.images == 4 * 8 and acc.fp32.top1 >= 90 and acc.int8_runtime == "onnxruntime"
    assert acc.top1_drop_points == pytest.approx(acc.fp32.top1 - acc.int8.top1)
    assert q.size.ratio == pytest.approx(q.size.fp32_bytes / q.size.int8_bytes) and q.size.ratio > 1.5
    assert m.parity[-1].passed and m.parity[-1].top1_agreement >= 0.9


def test_onnx_int8_accuracy_control(ws):
    result = ws.export("onnx", "int8", max_drop=1.0, out=ws.root / "maxdrop")
    q = result.manifest.quantization
    assert q.quantizer == "nncf-accuracy-control" and q.details["accuracy_control"]["max_drop_points"] == 1.0
    assert q.accuracy.top1_drop_points <= 1.0
    assert isinstance(q.kept_in_float, list)


def test_onnx_int8_qat(ws):
    result = ws.export("onnx", "int8", qat_steps=3, qat_images=32, out=ws.root / "qat")
    q = result.manifest.quantization
    assert result.artifact.name == "inception_v3_79_int8_qdq_qat.onnx"
    assert q.quantizer == "qat" and q.details["qat"]["steps"] == 3 and q.details["qat"]["folded_weight_quantizers"] > 0
    model = onnx.load(str(result.artifact))
    assert all(initializers(model)[n.input[0]].dtype == np.int8 for n in weight_dequantizers(model))
    assert not [n for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] in initializers(model)]
    assert result.manifest.parity[-1].passed and q.accuracy.int8.top1 >= 90


# -- parity that fails -----------------------------------------------------------------------------


def test_compare_logits_gates():
    ref = np.array([[5.0, 0.0, -1.0], [0.0, 4.0, 1.0]], np.float32)
    ok = compare_logits(ref, ref + 1e-4, TOLERANCES["fp32"], "x")
    assert ok.passed and ok.top1_agreement == 1.0
    bad = compare_logits(ref, ref + np.array([[0, 0, 0], [0, 0, 0.2]], np.float32), TOLERANCES["fp32"], "x")
    assert not bad.passed and "max abs error" in bad.problems[0]
    flipped = compare_logits(ref, np.roll(ref, 1, axis=1), TOLERANCES["int8"], "x")
    assert not flipped.passed and flipped.top1_agreement == 0.0
    assert not compare_logits(ref, ref * np.nan, TOLERANCES["int8"], "x").passed


def test_parity_gate_judges_agreement_only_on_decisive_images():
    rng = np.random.default_rng(0)
    # a random-weight model's near-flat logits, and an fp16 run of it: rounding noise well inside the
    # error bound swaps many near-tied top-1s, which says nothing about the export (issue 9)
    flat = (5 + rng.normal(0, 0.05, (64, 1000))).astype(np.float32)
    fp16 = flat + rng.normal(0, 0.005 * np.abs(flat).max(), flat.shape).astype(np.float32)
    figures = compare_logits(flat, fp16, TOLERANCES["fp16"], "fp16")
    assert figures.top1_agreement < 0.95 and figures.decisive_images == 0 and figures.passed, figures
    # the same noise on logits that separate the classes: every decisive top-1 must hold
    clear = flat.copy()
    clear[np.arange(64), rng.integers(0, 1000, 64)] += 5
    assert compare_logits(clear, clear + (fp16 - flat), TOLERANCES["fp16"], "fp16").decisive_images == 64
    flipped = clear.copy()
    flipped[:16] = np.roll(clear[:16], 1, axis=1)  # 16 decisive decisions changed
    bad = compare_logits(clear, flipped, TOLERANCES["int8"], "int8")
    assert not bad.passed and bad.decisive_top1_agreement == pytest.approx(48 / 64)
    assert "top-1 agreement 0.750 < 0.8 on the 64 images with a decisive top-1" in bad.problems[0]
    # INT8 has no error bound: with nothing decisive it cannot be judged, unless its bar is 0
    unjudged = compare_logits(flat, fp16, TOLERANCES["int8"], "int8")
    assert not unjudged.passed and "cannot be judged" in unjudged.problems[0]
    assert compare_logits(flat, fp16, type(TOLERANCES["int8"])(None, 0.0, 0.1), "int8").passed


def test_tampered_onnx_fails_parity_and_leaves_nothing(ws, monkeypatch):
    from edgeinc.export import onnx_target

    real = onnx_target.export_fp32_onnx

    def tampered(model, path, input_size, batch):
        real(model, path, input_size, batch)
        graph = onnx.load(str(path))
        weight = max(graph.graph.initializer, key=lambda t: np.prod(t.dims))  # the largest conv weight
        weight.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weight) * 1.5, weight.name))
        onnx.save(graph, str(path))
        return path

    monkeypatch.setattr(onnx_target, "export_fp32_onnx", tampered)
    out = ws.root / "tampered"
    with pytest.raises(ParityError, match="fp32 ONNX vs PyTorch: parity failed: max abs error"):
        export(ws.run, "onnx", "fp32", out=out, calib_size=16, threads=1)
    assert not out.exists() or list(out.iterdir()) == []


# -- TFLite ------------------------------------------------------------------------------------------


def test_tflite_fp32(ws):
    from edgeinc.export.tflite_target import onnx2tf_version

    result = ws.export("tflite", "fp32")
    m = result.manifest
    assert result.artifact.name == "inception_v3_79_fp32.tflite" and m.format == "tflite"
    assert m.input.layout == "NHWC" and m.input.shape == [1, 79, 79, 3] and m.input.dtype == "float32"
    assert m.parity[-1].passed and m.parity[-1].runtime == "litert" and m.parity[-1].top1_agreement == 1.0
    assert m.parity[-1].reference == "onnxruntime fp32 (the exported ONNX)"
    expected = "flatbuffer_direct" if int(onnx2tf_version().split(".")[0]) >= 2 else "tf_converter"
    assert m.conversion.backend == expected and m.conversion.steps["convert"] > 0


def test_tflite_full_int8(ws):
    from edgeinc.runtime.backends import litert_interpreter

    result = ws.export("tflite", "int8")
    m = result.manifest
    assert result.artifact.name == "inception_v3_79_full_int8_int8io.tflite"
    interpreter = litert_interpreter(result.artifact)
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    assert m.input.dtype == "int8" == np.dtype(inp["dtype"]).name and m.output.dtype == "int8"
    assert (m.input.quantization.scale, m.input.quantization.zero_point) == pytest.approx(inp["quantization"])
    assert (m.output.quantization.scale, m.output.quantization.zero_point) == pytest.approx(out["quantization"])
    # full integer: every conv weight is int8, no float compute left
    ops = {op["op_name"] for op in interpreter._get_ops_details()}
    assert "DEQUANTIZE" not in ops
    tensors = interpreter.get_tensor_details()
    assert not [t for t in tensors if t["dtype"] == np.float32 and len(t["shape"]) == 4]
    q = m.quantization
    assert q.quantizer == "tflite-full-int8" and q.details["io"]["dtype"] == "int8"
    assert q.accuracy.int8.top1 >= 90 and q.accuracy.int8_runtime == "litert" and q.size.ratio > 1.5
    assert m.parity[-1].passed


@pytest.mark.slow
def test_tflite_fp16(ws):
    result = ws.export("tflite", "fp16")
    m = result.manifest
    assert result.artifact.name == "inception_v3_79_fp16.tflite" and m.input.dtype == "float32"
    assert m.conversion.backend == "tf_converter" and m.parity[-1].passed
    assert result.artifact.stat().st_size < 0.6 * ws.export("tflite", "fp32").artifact.stat().st_size


# -- TensorRT without TensorRT ----------------------------------------------------------------------


def test_tensorrt_without_tensorrt_writes_onnx_and_command(ws):
    pytest.importorskip("onnxruntime")
    from edgeinc.runtime import tensorrt_available

    if tensorrt_available()[0]:
        pytest.skip("TensorRT is installed here: the engine is built instead")
    out = ws.root / "trt"
    with pytest.raises(TensorRTUnavailableError) as info:
        export(ws.run, "tensorrt", "int8", out=out, calib_size=32, threads=1)
    result = info.value.result
    message = str(info.value)
    assert str(result.artifact) in message and str(result.manifest_path) in message
    assert "deploy/build_trt_engine.py" in message and "trtexec" in message and "--stronglyTyped" in message
    assert "--minShapes=input:1x3x79x79" in message  # a dynamic batch: the profile's shapes
    manifest, _ = load_manifest(result.manifest_path)
    assert manifest.status == "needs_engine_build" and manifest.format == "onnx" and manifest.target == "tensorrt"
    assert manifest.engine.profile.min[0] == 1 and manifest.engine.profile.max[0] == 32
    # TensorRT's explicit quantization: int8 activations and weights, every zero point 0
    model = onnx.load(str(result.artifact))
    inits = initializers(model)
    zero_points = [inits[n.input[2]] for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert zero_points and all(z.dtype == np.int8 and not z.any() for z in zero_points)
    assert manifest.parity[-1].passed and manifest.parity[-1].runtime == "onnxruntime"  # checked here in ONNX Runtime
    assert manifest.quantization.quantizer == "tensorrt"
    # the logits stay float: no quantizer after the final Gemm (TensorRT's Q/DQ placement)
    producers = {o: n for n in model.graph.node for o in n.output}
    assert producers[model.graph.output[0].name].op_type == "Gemm"


def test_cli_tensorrt_exits_3_and_bad_pairs_exit_2(ws, capsys):
    from edgeinc.runtime import tensorrt_available

    if not tensorrt_available()[0]:
        code = main(["export", str(ws.run), "--target", "tensorrt", "--precision", "fp32", "--out", str(ws.root / "cli"),
                     "--calib-size", "8", "--threads", "1"])
        assert code == 3
        text = capsys.readouterr().out
        assert "manifest.json" in text and "build_trt_engine.py" in text
    assert main(["export", str(ws.run), "--target", "onnx", "--precision", "int4"]) == 2  # choices from the registry
    assert "invalid choice: 'int4'" in capsys.readouterr().err
    assert main(["export", str(ws.run), "--target", "onnxx"]) == 2
    assert "invalid choice: 'onnxx' (choose from 'onnx', 'tflite', 'tensorrt', 'executorch')" in capsys.readouterr().err


def test_the_deploy_script_is_the_package_engine_builder_itself():
    from pathlib import Path

    from edgeinc.deploy import build_trt_engine

    root = Path(__file__).resolve().parents[1]
    assert (root / "deploy/build_trt_engine.py").resolve() == Path(build_trt_engine.__file__).resolve()


# -- bad inputs ------------------------------------------------------------------------------------


def test_missing_and_corrupt_checkpoints(ws, tmp_path):
    with pytest.raises(ExportError, match="no such run directory or weights file"):
        export(tmp_path / "nothing", "onnx")
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"not a safetensors file at all")
    with pytest.raises(ExportError, match="corrupt.safetensors"):
        export(corrupt, "onnx", calib=ws.data)
    assert main(["export", str(tmp_path / "nothing"), "--target", "onnx"]) == 2


def test_empty_or_missing_calibration_folder(ws, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ExportError, match=f"{empty}: holds no images"):
        export(ws.run, "onnx", calib=empty, out=tmp_path / "o")
    with pytest.raises(ExportError, match="no such folder"):
        export(ws.run, "onnx", calib=tmp_path / "missing", out=tmp_path / "o")
    with pytest.raises(ExportError, match="needs a labelled validation split"):
        export(ws.run, "onnx", "int8", calib=ws.data / "train" / "red", out=tmp_path / "o", calib_size=8)
    assert not (tmp_path / "o").exists() or list((tmp_path / "o").iterdir()) == []


def test_option_errors(ws):
    with pytest.raises(ExportError, match="int8 exports only"):
        export(ws.run, "onnx", "fp32", max_drop=1.0)
    with pytest.raises(ExportError, match="--qat-steps"):
        export(ws.run, "tflite", "int8", qat_steps=3)


def test_manifest_detects_changed_artifact_and_bad_schema(ws, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(ws.export("onnx", "fp32").directory, copy)
    artifact = copy / "inception_v3_79_fp32.onnx"
    artifact.write_bytes(artifact.read_bytes()[:-10])  # truncated: a corrupt ONNX file
    with pytest.raises(ManifestError, match="does not match the manifest"):
        load_manifest(copy)
    data = json.loads((copy / "manifest.json").read_text())
    del data["input"]
    (copy / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(ManifestError, match="field 'input'"):
        load_manifest(copy, verify=False)
    assert "input" in Manifest.model_fields


def fake_tensorrt(version: str = "10.16.0", strongly_typed_value: int = 1, cache_mode: str = "ok"):
    """A stand-in for TensorRT's Python API (not installable here) that behaves like it where it matters:
    real enum values (STRONGLY_TYPED is 1 in 10.x, 0 and ignored in 11.x), False / None returns where
    the real API gives them (a timing cache from another GPU, no cache), bytes-like results."""
    import types

    calls: list = []

    class Cache:
        def __init__(self, data: bytes) -> None:
            self.data = data

        def serialize(self):
            return memoryview(b"CACHE")

    class Config:
        profiling_verbosity = None

        def set_memory_pool_limit(self, pool, size):
            calls.append(("set_memory_pool_limit", size))

        def clear_flag(self, flag):
            calls.append(("clear_flag", flag))

        def add_optimization_profile(self, profile):
            calls.append(("add_optimization_profile", profile.shapes))

        def create_timing_cache(self, data):
            return Cache(bytes(data))

        def set_timing_cache(self, cache, ignore_mismatch):
            calls.append(("set_timing_cache", cache.data))
            self.cache = cache
            return cache.data != b"FOREIGN"  # TensorRT returns False for another GPU's cache

        def get_timing_cache(self):
            return None if cache_mode == "none" else self.cache

    class Profile:
        def set_shape(self, name, lo, opt, hi):
            self.shapes = (name, lo, opt, hi)

    class Builder:
        def __init__(self, logger):
            pass

        def create_network(self, flags):
            calls.append(("create_network", flags))
            return object()

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            calls.append(("profiling_verbosity", config.profiling_verbosity))
            return memoryview(b"ENGINE")

    class OnnxParser:
        num_errors = 0

        def __init__(self, network, logger):
            pass

        def parse(self, data):
            return True

    trt = types.SimpleNamespace(
        __version__=version, Logger=type("Logger", (), {"WARNING": 2, "__init__": lambda self, level: None}),
        Builder=Builder, OnnxParser=OnnxParser, MemoryPoolType=types.SimpleNamespace(WORKSPACE=0),
        NetworkDefinitionCreationFlag=types.SimpleNamespace(STRONGLY_TYPED=strongly_typed_value),
        BuilderFlag=types.SimpleNamespace(TF32=6), ProfilingVerbosity=types.SimpleNamespace(DETAILED=2),
    )
    return trt, calls


@pytest.fixture
def trt_ready_onnx(ws, tmp_path):
    from edgeinc.runtime import tensorrt_available

    if tensorrt_available()[0]:
        pytest.skip("TensorRT is installed")
    with pytest.raises(TensorRTUnavailableError) as info:
        export(ws.run, "tensorrt", "fp32", out=tmp_path, calib_size=8, threads=1)
    return info.value.result


def test_engine_build_from_manifest_with_a_stand_in_tensorrt(trt_ready_onnx, tmp_path, monkeypatch):
    """The engine-build flow and the manifest update against the stand-in: the calls made, the profile
    from the manifest, TF32 cleared for fp32, per-layer precisions kept, the files written."""
    import sys

    from edgeinc.deploy import build_trt_engine

    result = trt_ready_onnx
    trt, calls = fake_tensorrt()
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    manifest = build_trt_engine.build_from_manifest(result.manifest_path, timing_cache=tmp_path / "timing.cache")
    engine = result.directory / "inception_v3_79_fp32.engine"
    assert engine.read_bytes() == b"ENGINE" and (tmp_path / "timing.cache").read_bytes() == b"CACHE"
    assert ("create_network", 1 << 1) in calls  # STRONGLY_TYPED, 10.x's enum value 1
    assert ("clear_flag", 6) in calls and ("profiling_verbosity", 2) in calls  # no TF32; detailed layer info
    profile = next(args for name, args in calls if name == "add_optimization_profile")
    assert profile == ("input", (1, 3, 79, 79), (8, 3, 79, 79), (32, 3, 79, 79))
    reloaded, _ = load_manifest(result.manifest_path)  # schema valid, engine sha256 matches
    assert reloaded.format == "tensorrt" and reloaded.status == "ok" and reloaded.artifact == engine.name
    assert reloaded.engine.tensorrt_version == "10.16.0" and reloaded.engine.built and reloaded.engine.finish_with is None
    assert reloaded.files["inception_v3_79_fp32.onnx"].role == "TensorRT-ready ONNX"
    assert reloaded.conversion.steps["engine_build"] >= 0 and manifest["tools"]["tensorrt"] == "10.16.0"


def test_engine_build_survives_a_foreign_or_missing_timing_cache_and_tensorrt_11(trt_ready_onnx, tmp_path, monkeypatch):
    import sys

    from edgeinc.deploy import build_trt_engine

    cache = tmp_path / "timing.cache"
    cache.write_bytes(b"FOREIGN")  # copied with the artifact folder from another GPU
    trt, calls = fake_tensorrt(version="11.1.0", strongly_typed_value=0)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    with pytest.warns(UserWarning, match="another GPU or TensorRT version: starting a fresh one"):
        manifest = build_trt_engine.build_from_manifest(trt_ready_onnx.manifest_path, timing_cache=cache)
    assert [args for name, args in calls if name == "set_timing_cache"] == [b"FOREIGN", b""]
    assert cache.read_bytes() == b"CACHE" and "another GPU" in manifest["engine"]["notes"][0]
    assert ("create_network", 1 << 0) in calls  # 11.x: the flag's value is 0, accepted and ignored
    trt, calls = fake_tensorrt(cache_mode="none")  # TensorRT handed back no cache: nothing written, no crash
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    cache.unlink()
    info = build_trt_engine.build_engine(trt_ready_onnx.artifact, tmp_path / "x.engine", "input", (1, 3, 79, 79),
                                         (1, 3, 79, 79), (1, 3, 79, 79), timing_cache=cache)
    assert not cache.exists() and "no timing cache" in info["notes"][0]


def test_trtexec_takes_shapes_only_for_a_dynamic_batch(tmp_path):
    from edgeinc.deploy.build_trt_engine import trtexec_command

    static = trtexec_command(tmp_path / "m.onnx", tmp_path / "m.engine", "input", (4, 3, 79, 79), (4, 3, 79, 79), (4, 3, 79, 79))
    assert "--stronglyTyped" in static and "Shapes" not in static  # trtexec refuses shapes for a static model
    dynamic = trtexec_command(tmp_path / "m.onnx", tmp_path / "m.engine", "input", (1, 3, 79, 79), (8, 3, 79, 79), (32, 3, 79, 79))
    assert "--minShapes=input:1x3x79x79 --optShapes=input:8x3x79x79 --maxShapes=input:32x3x79x79" in dynamic


def test_tflite_falls_back_when_the_fast_path_refuses(ws, tmp_path, monkeypatch):
    from edgeinc.export import tflite_target

    if tflite_target._plan("fp32", "auto") != ["flatbuffer_direct", "tf_converter"]:
        pytest.skip("onnx2tf < 2: no fast path to fall back from")
    good = ws.export("tflite", "fp32").artifact
    tried = []

    def fake_onnx2tf(onnx_path, out_dir, backend, precision, ctx):
        tried.append(backend)
        if backend == "flatbuffer_direct":
            raise ExportError("flatbuffer_direct fast path failed: Unsupported op PADV2")
        shutil.copy(good, out_dir / "model_float32.tflite")  # stands in for the TF converter's file
        return [out_dir / "model_float32.tflite"], 1.0

    monkeypatch.setattr(tflite_target, "run_onnx2tf", fake_onnx2tf)
    result = export(ws.run, "tflite", "fp32", out=tmp_path, calib_size=8, threads=1)
    attempts = result.manifest.conversion.attempts
    assert tried == ["flatbuffer_direct", "tf_converter"] and result.manifest.conversion.backend == "tf_converter"
    assert "PADV2" in attempts[0].error and attempts[1].error is None
    assert result.manifest.parity[-1].passed
