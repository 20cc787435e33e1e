"""TensorRT: a TensorRT-ready ONNX, checked in ONNX Runtime, then an engine built with TensorRT's API.

Precision lives in the ONNX graph, built as a strongly typed network (TensorRT 10.x and 11.x alike;
11.x removed the FP16/INT8 builder flags and the implicit INT8 calibrators):
  fp32  the fp32 ONNX (TF32 cleared when the engine is built)
  fp16  the fp16 ONNX (float16 tensors, float32 input/output)
  int8  ONNX Runtime's Q/DQ with TensorRT's settings (quantize.py, quantizer "tensorrt")
Where TensorRT or a CUDA device is missing, the ONNX and its manifest are written and the export
fails with the command that finishes the build on a TensorRT machine (edgeinc/deploy/build_trt_engine.py).
"""

from __future__ import annotations

import shlex
from pathlib import Path

from ..artifact import BatchProfile, EngineInfo, Precision, file_entry
from ..deploy import build_trt_engine
from ..deploy.build_trt_engine import build_engine, trtexec_command
from ..runtime import tensorrt_available
from .base import ExportContext, TargetOutput
from .onnx_target import fp32_onnx, half_onnx, onnx_conversion
from .quantize import quantize_onnx_int8

DEFAULT_OPT_BATCH = 8


def batch_profile(ctx: ExportContext) -> BatchProfile:
    size = ctx.variant.input_size
    if ctx.batch:
        lo = opt = hi = ctx.batch
    else:
        hi = ctx.options.trt_max_batch
        lo, opt = 1, min(DEFAULT_OPT_BATCH, hi)
    return BatchProfile(input="input", **{k: [b, 3, size, size] for k, b in (("min", lo), ("opt", opt), ("max", hi))})


def finish_command(manifest_path: Path, profile: BatchProfile, onnx_path: Path) -> str:
    """The command that builds the engine on a TensorRT machine (and its trtexec equivalent)."""
    trtexec = trtexec_command(onnx_path, onnx_path.with_suffix(".engine"), profile.input, profile.min, profile.opt,
                              profile.max)
    # The builder is stand-alone (Python + TensorRT): carry this file to the device with the artifact folder.
    script = Path(build_trt_engine.__file__)
    return f"python {shlex.quote(str(script))} {shlex.quote(str(manifest_path))}   (or: {trtexec})"


def export_tensorrt(ctx: ExportContext, precision: Precision) -> TargetOutput:
    path, spec, parity = fp32_onnx(ctx)
    conversion = onnx_conversion(ctx)
    checks, quantization = [parity], None
    if precision == Precision.FP16:
        onnx_path, spec, half_parity, conversion["steps"]["fp16"] = half_onnx(ctx, path, "fp16 ONNX (TensorRT-ready) vs PyTorch")
        checks.append(half_parity)
        path.unlink()
    elif precision == Precision.INT8:
        onnx_path, spec, quantization = quantize_onnx_int8(ctx, path, spec, "tensorrt")
        conversion["steps"]["quantize"] = quantization.seconds
        checks.append(ctx.check(onnx_path, spec, "int8 Q/DQ ONNX (TensorRT settings) in ONNX Runtime vs PyTorch"))
        path.unlink()
    else:
        onnx_path = path
    profile = batch_profile(ctx)
    engine = EngineInfo(onnx=onnx_path.name, profile=profile)
    onnx_spec = spec.model_copy(update={"format": "onnx"})
    available, why = tensorrt_available()
    if not available:
        engine.not_built_because = why
        engine.finish_with = finish_command(ctx.final_dir / "manifest.json", profile, ctx.final_dir / onnx_path.name)
        return TargetOutput(onnx_path, onnx_spec, checks, conversion, quantization, engine, status="needs_engine_build")

    engine_path = onnx_path.with_suffix(".engine")
    timing_cache = ctx.options.trt_timing_cache
    built = build_engine(onnx_path, engine_path, profile.input, tuple(profile.min), tuple(profile.opt),
                         tuple(profile.max), workspace_gib=ctx.options.trt_workspace_gib,
                         timing_cache=Path(timing_cache) if timing_cache else None, precision=precision)
    engine = EngineInfo(**{**engine.model_dump(), **built})
    conversion["steps"]["engine_build"] = built["build_seconds"]
    engine_spec = spec.model_copy(update={"format": "tensorrt", "engine": engine})
    checks.append(ctx.check(engine_path, engine_spec, f"{precision} TensorRT engine vs PyTorch"))
    return TargetOutput(engine_path, engine_spec, checks, conversion, quantization, engine,
                        files={onnx_path.name: file_entry(onnx_path, "TensorRT-ready ONNX")}, extra_files=[onnx_path])
