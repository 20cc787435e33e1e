"""ONNX: the graph every other target starts from (onnx_io.py writes it), checked in ONNX Runtime.

fp32: the exported graph; fp16: float16 weights and activations with float32 input/output; int8: a
registered quantizer's Q/DQ graph (NNCF by default; accuracy control with ``--max-drop``; QAT with
``--qat-steps``). Every file is checked against PyTorch through the ONNX Runtime runner.
"""

from __future__ import annotations

import time
from pathlib import Path

from ..artifact import Parity, Precision, Preprocessing, RunnerSpec
from .base import ExportContext, TargetOutput
from .onnx_io import OPSET, export_fp32_onnx, onnx_spec, to_fp16
from .quantize import quantize_onnx_int8


def spec_for(ctx: ExportContext, precision: Precision, quantizer: str | None = None) -> RunnerSpec:
    return onnx_spec(ctx.batch, Preprocessing.from_variant(ctx.variant), ctx.labels, ctx.variant.name, precision, quantizer)


def fp32_onnx(ctx: ExportContext) -> tuple[Path, RunnerSpec, Parity]:
    """The fp32 ONNX in the staging folder, exported once per export and checked against PyTorch."""
    if "fp32_onnx" not in ctx._cache:
        path = ctx.workdir / f"{ctx.stem}_fp32.onnx"
        start = time.perf_counter()
        export_fp32_onnx(ctx.source.model, path, ctx.variant.input_size, ctx.batch)
        ctx._cache["onnx_export_seconds"] = time.perf_counter() - start
        spec = spec_for(ctx, Precision.FP32)
        ctx._cache["fp32_onnx"] = (path, spec, ctx.check(path, spec, "fp32 ONNX vs PyTorch"))
    return ctx._cache["fp32_onnx"]


def onnx_conversion(ctx: ExportContext) -> dict:
    return {"tool": "torch.onnx.export (TorchScript, dynamo=False)", "steps": {"onnx_export": ctx._cache["onnx_export_seconds"]},
            "settings": {"opset": OPSET, "simplifier": "onnxslim", "batch": ctx.batch or "dynamic"}}


def half_onnx(ctx: ExportContext, fp32: Path, check: str) -> tuple[Path, RunnerSpec, Parity, float]:
    start = time.perf_counter()
    path = to_fp16(fp32, ctx.workdir / f"{ctx.stem}_fp16.onnx")
    seconds = time.perf_counter() - start
    spec = spec_for(ctx, Precision.FP16)
    return path, spec, ctx.check(path, spec, check), seconds


def int8_quantizer(ctx: ExportContext) -> str:
    if ctx.options.qat_steps:
        return "qat"
    return "nncf-accuracy-control" if ctx.max_drop is not None else "nncf"


def export_onnx(ctx: ExportContext, precision: Precision) -> TargetOutput:
    path, spec, parity = fp32_onnx(ctx)
    conversion = onnx_conversion(ctx)
    if precision == Precision.FP32:
        return TargetOutput(path, spec, [parity], conversion)
    if precision == Precision.FP16:
        half, half_spec, half_parity, seconds = half_onnx(ctx, path, "fp16 ONNX vs PyTorch")
        conversion["steps"]["fp16"] = seconds
        conversion["notes"] = "float16 weights and activations; float32 input and output"
        path.unlink()
        return TargetOutput(half, half_spec, [parity, half_parity], conversion)
    qdq, qdq_spec, report = quantize_onnx_int8(ctx, path, spec, int8_quantizer(ctx))
    conversion["steps"]["quantize"] = report.seconds
    int8_parity = ctx.check(qdq, qdq_spec, "int8 Q/DQ ONNX vs PyTorch fp32")
    path.unlink()
    return TargetOutput(qdq, qdq_spec, [parity, int8_parity], conversion, quantization=report)
