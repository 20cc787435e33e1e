"""ONNX: the graph every other target starts from.

fp32: torch's legacy TorchScript exporter (opset 17, ~2 s for Inception-v3; the dynamo exporter gives
opset 18 in ~20 s, TOOLCHAIN trap 6), dynamic batch axis unless a batch is fixed, simplified with
onnxslim. fp16: the fp32 graph with float16 weights and activations, float32 input/output (casts at
the edges), so callers feed the same arrays. int8: NNCF post-training quantization of the fp32 graph
into QuantizeLinear/DequantizeLinear form (see quantize.py for why this flavour).
"""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .base import TARGETS, ExportContext, ExportError, TargetInfo, TargetOutput, compare_logits, missing_extra, run_in_chunks

OPSET = 17
INPUT_NAME = "input"
OUTPUT_NAME = "logits"


def _onnx():
    try:
        import onnx
    except ImportError:
        raise missing_extra("onnx", "export") from None
    return onnx


def export_fp32_onnx(model: torch.nn.Module, path: Path, input_size: int, batch: int | None) -> Path:
    """Export ``model`` (eval mode, on the CPU) to a simplified opset-17 ONNX file at ``path``."""
    onnx = _onnx()
    try:
        import onnxslim
    except ImportError:
        raise missing_extra("onnxslim", "export") from None
    model = model.eval().cpu()
    example = torch.zeros(batch or 1, 3, input_size, input_size)
    raw = path.with_suffix(".raw.onnx")
    dynamic = None if batch else {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}}
    with warnings.catch_warnings():  # the legacy exporter's deprecation and tracer warnings
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model, (example,), str(raw), opset_version=OPSET, dynamo=False,
            input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], dynamic_axes=dynamic,
        )
    slim = onnxslim.slim(onnx.load(str(raw)))
    raw.unlink()
    onnx.checker.check_model(slim)
    onnx.save(slim, str(path))
    return path


def to_fp16(src: Path, dst: Path) -> Path:
    """float16 weights and activations, float32 input/output (Cast nodes at the edges)."""
    onnx = _onnx()
    from onnxruntime.transformers.float16 import convert_float_to_float16

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        half = convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
    onnx.save(half, str(dst))
    return dst


def ort_session(path: Path | bytes, threads: int | None = None):
    try:
        import onnxruntime as ort
    except ImportError:
        raise missing_extra("onnxruntime", "export") from None
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path) if isinstance(path, Path) else path, opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # corrupt file, unsupported op, ...
        raise ExportError(f"{path if isinstance(path, Path) else 'ONNX model'}: ONNX Runtime cannot load it ({e})") from e


def ort_logits(path: Path, images: np.ndarray, batch: int | None = None, threads: int | None = None) -> np.ndarray:
    session = ort_session(path, threads)
    name = session.get_inputs()[0].name
    return run_in_chunks(lambda x: session.run(None, {name: x})[0], images, batch)


@torch.no_grad()
def torch_logits(model: torch.nn.Module, images: np.ndarray, chunk: int = 16) -> np.ndarray:
    model = model.eval()
    return np.concatenate([model(torch.from_numpy(images[i : i + chunk])).numpy() for i in range(0, len(images), chunk)])


def reference_logits(ctx: ExportContext) -> np.ndarray:
    """The PyTorch model's logits on the parity images (computed once per export)."""
    if "torch_logits" not in ctx._cache:
        ctx._cache["torch_logits"] = torch_logits(ctx.source.model, ctx.parity_batch())
    return ctx._cache["torch_logits"]


def io_specs(batch: int | None, input_size: int, num_classes: int, layout: str = "NCHW") -> dict[str, Any]:
    b: int | str = batch or "batch"
    shape = [b, 3, input_size, input_size] if layout == "NCHW" else [b, input_size, input_size, 3]
    return {
        "input": {"name": INPUT_NAME, "shape": shape, "layout": layout, "dtype": "float32"},
        "output": {"name": OUTPUT_NAME, "shape": [b, num_classes], "layout": "NC", "dtype": "float32"},
    }


def embed_metadata(path: Path, fields: dict[str, Any]) -> None:
    """Store each manifest key as ONNX metadata (``edgeinc.<key>``: JSON), so the file describes itself."""
    onnx = _onnx()
    model = onnx.load(str(path))
    props = {f"edgeinc.{k}": json.dumps(v) for k, v in fields.items() if k not in ("artifact_sha256", "artifact_bytes")}
    del model.metadata_props[:]
    for key, value in props.items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(path))


def read_metadata(path: Path) -> dict[str, Any]:
    onnx = _onnx()
    model = onnx.load(str(path), load_external_data=False)
    return {p.key[len("edgeinc."):]: json.loads(p.value) for p in model.metadata_props if p.key.startswith("edgeinc.")}


def fp32_onnx(ctx: ExportContext) -> Path:
    """The fp32 ONNX in the staging folder, exported once per export and checked against PyTorch."""
    if "fp32_onnx" not in ctx._cache:
        path = ctx.workdir / f"{ctx.stem}_fp32.onnx"
        start = time.perf_counter()
        export_fp32_onnx(ctx.source.model, path, ctx.variant.input_size, ctx.batch)
        seconds = time.perf_counter() - start
        parity = check_parity(ctx, path, "fp32", "fp32 ONNX vs PyTorch")
        ctx._cache["fp32_onnx"] = (path, seconds, parity)
    return ctx._cache["fp32_onnx"][0]


def check_parity(ctx: ExportContext, path: Path, precision: str, what: str) -> dict:
    from .base import ParityError

    logits = ort_logits(path, ctx.parity_batch(), ctx.batch, ctx.threads)
    figures = compare_logits(reference_logits(ctx), logits, ctx.tolerance(precision), what)
    figures["reference"] = "pytorch fp32"
    figures["runtime"] = "onnxruntime"
    if not figures["passed"]:
        raise ParityError(f"{what}: parity failed: {'; '.join(figures['problems'])}")
    return figures


@TARGETS.register("onnx", meta=TargetInfo(("fp32", "fp16", "int8"), "ONNX opset 17 (int8: NNCF Q/DQ)", "onnx"))
def export_onnx(ctx: ExportContext, precision: str) -> TargetOutput:
    path = fp32_onnx(ctx)
    _, export_seconds, fp32_parity = ctx._cache["fp32_onnx"]
    specs = io_specs(ctx.batch, ctx.variant.input_size, ctx.source.model.num_classes)
    conversion: dict[str, Any] = {"exporter": "torch.onnx.export (TorchScript, dynamo=False)", "opset": OPSET,
                                  "simplifier": "onnxslim", "export_seconds": export_seconds}
    if precision == "fp32":
        return TargetOutput(path, {**specs, "format": "onnx", "parity": fp32_parity, "conversion": conversion})
    if precision == "fp16":
        start = time.perf_counter()
        half = to_fp16(path, ctx.workdir / f"{ctx.stem}_fp16.onnx")
        conversion["fp16_seconds"] = time.perf_counter() - start
        conversion["notes"] = "float16 weights and activations; float32 input and output"
        parity = check_parity(ctx, half, "fp16", "fp16 ONNX vs PyTorch")
        path.unlink()
        return TargetOutput(half, {**specs, "format": "onnx", "parity": parity, "conversion": conversion})
    from .quantize import quantize_onnx_int8

    qdq, quant = quantize_onnx_int8(ctx, path, flavour="qat" if ctx.options.get("qat_steps") else "nncf")
    conversion["quantize_seconds"] = quant.pop("seconds")
    parity = check_parity(ctx, qdq, "int8", "int8 Q/DQ ONNX vs PyTorch fp32")
    path.unlink()
    return TargetOutput(qdq, {**specs, "format": "onnx", "parity": parity, "quantization": quant, "conversion": conversion})
