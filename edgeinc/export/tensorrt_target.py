"""TensorRT: a TensorRT-ready ONNX, checked in ONNX Runtime, then an engine built with TensorRT's API.

Precision lives in the ONNX graph, built as a strongly typed network (TensorRT 10.x and 11.x alike;
11.x removed the FP16/INT8 builder flags and the implicit INT8 calibrators):
  fp32  the fp32 ONNX
  fp16  the fp16 ONNX (float16 tensors, float32 input/output)
  int8  ONNX Runtime's Q/DQ with TensorRT's settings (quantize.py, flavour "tensorrt")
Where TensorRT or a CUDA device is missing, the ONNX and its manifest are written and the export
fails with the command that finishes the build on a TensorRT machine (trt_engine.py).
"""

from __future__ import annotations

import shlex
import time
from pathlib import Path
from typing import Any

from .base import TARGETS, ExportContext, ParityError, TargetInfo, TargetOutput, compare_logits
from .manifest import file_entry
from .onnx_target import check_parity, fp32_onnx, io_specs, reference_logits, to_fp16

DEFAULT_OPT_BATCH = 8
DEFAULT_MAX_BATCH = 32


def batch_profile(ctx: ExportContext) -> dict[str, Any]:
    size = ctx.variant.input_size
    if ctx.batch:
        lo = opt = hi = ctx.batch
    else:
        hi = int(ctx.options.get("trt_max_batch", DEFAULT_MAX_BATCH))
        lo, opt = 1, min(DEFAULT_OPT_BATCH, hi)
    return {"input": "input", **{k: [b, 3, size, size] for k, b in (("min", lo), ("opt", opt), ("max", hi))}}


def finish_command(manifest_path: Path, profile: dict, onnx_path: Path) -> str:
    """The command that builds the engine on a TensorRT machine (and its trtexec equivalent)."""
    shape = lambda s: "x".join(map(str, s))  # noqa: E731
    trtexec = (
        f"trtexec --onnx={shlex.quote(str(onnx_path))} --stronglyTyped "
        f"--saveEngine={shlex.quote(str(onnx_path.with_suffix('.engine')))} "
        f"--minShapes=input:{shape(profile['min'])} --optShapes=input:{shape(profile['opt'])} "
        f"--maxShapes=input:{shape(profile['max'])}"
    )
    return f"python deploy/build_trt_engine.py {shlex.quote(str(manifest_path))}   (or: {trtexec})"


@TARGETS.register("tensorrt", meta=TargetInfo(("fp32", "fp16", "int8"), "TensorRT engine (strongly typed, from ONNX)", "tensorrt"))
def export_tensorrt(ctx: ExportContext, precision: str) -> TargetOutput:
    from ..runtime.backends import tensorrt_available

    path = fp32_onnx(ctx)
    _, export_seconds, parity = ctx._cache["fp32_onnx"]
    conversion: dict[str, Any] = {"onnx_export_seconds": export_seconds}
    quant = None
    if precision == "fp16":
        start = time.perf_counter()
        onnx_path = to_fp16(path, ctx.workdir / f"{ctx.stem}_fp16.onnx")
        conversion["fp16_seconds"] = time.perf_counter() - start
        parity = check_parity(ctx, onnx_path, "fp16", "fp16 ONNX (TensorRT-ready) vs PyTorch")
        path.unlink()
    elif precision == "int8":
        from .quantize import quantize_onnx_int8

        onnx_path, quant = quantize_onnx_int8(ctx, path, flavour="tensorrt")
        conversion["quantize_seconds"] = quant.pop("seconds")
        parity = check_parity(ctx, onnx_path, "int8", "int8 Q/DQ ONNX (TensorRT flavour) in ONNX Runtime vs PyTorch")
        path.unlink()
    else:
        onnx_path = path
    parity = {"onnx_in_onnxruntime": parity}
    profile = batch_profile(ctx)
    engine: dict[str, Any] = {"onnx": onnx_path.name, "profile": profile, "strongly_typed": True, "built": False}
    fields: dict[str, Any] = {**io_specs(ctx.batch, ctx.variant.input_size, ctx.source.model.num_classes),
                              "conversion": conversion, "quantization": quant, "engine": engine}
    available, why = tensorrt_available()
    if not available:
        manifest_path = ctx.final_dir / "manifest.json"
        engine["not_built_because"] = why
        engine["finish_with"] = finish_command(manifest_path, profile, ctx.final_dir / onnx_path.name)
        return TargetOutput(onnx_path, {**fields, "format": "onnx", "status": "needs_engine_build", "parity": parity})

    from .trt_engine import build_engine

    engine_path = onnx_path.with_suffix(".engine")
    info = build_engine(
        onnx_path, engine_path, "input", tuple(profile["min"]), tuple(profile["opt"]), tuple(profile["max"]),
        workspace_gib=float(ctx.options.get("trt_workspace_gib", 4.0)),
        timing_cache=ctx.options.get("trt_timing_cache"),
    )
    engine.update(info)
    conversion["engine_build_seconds"] = info["build_seconds"]
    parity["engine_in_tensorrt"] = _engine_parity(ctx, engine_path, fields, precision)
    return TargetOutput(engine_path, {**fields, "format": "tensorrt", "parity": parity,
                                      "files": {onnx_path.name: file_entry(onnx_path, "TensorRT-ready ONNX")}},
                        extra_files=[onnx_path])


def _engine_parity(ctx: ExportContext, engine_path: Path, fields: dict, precision: str) -> dict:
    from types import SimpleNamespace

    from ..runtime.backends import TensorRTRunner
    from .manifest import Preprocessing, TensorSpec

    v = ctx.variant
    stub = SimpleNamespace(
        labels=ctx.labels, input=TensorSpec(**fields["input"]), output=TensorSpec(**fields["output"]),
        preprocessing=Preprocessing(input_size=v.input_size, mean=list(v.mean), std=list(v.std),
                                    crop_fraction=v.crop_fraction, interpolation=v.interpolation),
        engine=None,
    )
    logits = TensorRTRunner(engine_path, stub).predict(ctx.parity_batch())
    figures = compare_logits(reference_logits(ctx), logits, ctx.tolerance(precision), f"{precision} TensorRT engine vs PyTorch")
    figures.update(reference="pytorch fp32", runtime="tensorrt")
    if not figures["passed"]:
        raise ParityError(f"{precision} TensorRT engine vs PyTorch: {'; '.join(figures['problems'])}")
    return figures
