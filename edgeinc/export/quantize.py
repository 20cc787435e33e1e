"""INT8 quantization of the fp32 ONNX graph into QuantizeLinear/DequantizeLinear form, behind one
registry of quantizers that all end in the same ``QuantizationReport``.

* ``nncf`` (ONNX target, OpenVINO): NNCF's ONNX backend, preset "performance": per-channel symmetric
  int8 weights, symmetric activations (uint8 with zero point 0 after ReLU, int8 where signed), fast
  bias correction. Correct in ONNX Runtime and in OpenVINO (an ONNX Runtime ``quantize_static``
  model with int8 activations gave wrong outputs in OpenVINO in the trial).
* ``nncf-accuracy-control``: the same, with NNCF's accuracy control keeping ops in float until the
  top-1 drop on the validation split is within ``--max-drop``.
* ``qat``: quantization-aware fine-tuning in PyTorch (qat.py), exported in the same Q/DQ form.
* ``tensorrt`` (TensorRT target): ONNX Runtime's static quantizer with the settings NVIDIA ModelOpt
  uses for TensorRT: int8 activations, symmetric (zero point 0), per-channel symmetric int8 weights on
  the output-channel axis, bias left in float; TensorRT's explicit quantization takes int8 Q/DQ only.

Quantization is NOT applied to the PyTorch model (NNCF's torch export emits OpenVINO FakeQuantize ops
that ONNX Runtime cannot load, trap 7).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..artifact import Precision, QuantAccuracy, QuantizationReport, RunnerSpec, SizeInfo
from ..registry import Registry
from ..runtime import DEFAULT_BACKEND
from ..scoring import accuracy
from .base import ExportContext, ExportError, missing_extra
from .onnx_io import INPUT_NAME, onnx_module


@dataclass(frozen=True)
class QuantizerInfo:
    method: str
    weights: str
    flavour: str  # what consumes the result: "onnx" (ONNX Runtime, OpenVINO) or "tensorrt"


@dataclass
class Quantized:
    """What a quantizer hands back beside the file it wrote."""

    details: dict[str, Any] = field(default_factory=dict)


# name -> fn(ctx, fp32 ONNX path, destination path) -> Quantized
QUANTIZERS: Registry[Callable[[ExportContext, Path, Path], Quantized]] = Registry("quantizer")
_SYMMETRIC = "int8, per-channel (output channel), symmetric (zero point 0)"


def _items(images: np.ndarray, batch: int | None) -> list[np.ndarray]:
    step = batch or 1
    usable = len(images) - len(images) % step
    return [images[i : i + step] for i in range(0, usable, step)]


def _nncf():
    # NNCF imports torch's C++-extension helper, which warns "No CUDA runtime is found" on every CPU
    # machine; nothing here builds extensions.
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    try:
        import nncf
    except ImportError:
        raise missing_extra("nncf", "export") from None
    return nncf


@QUANTIZERS.register("nncf", meta=QuantizerInfo(
    "NNCF post-training quantization (ONNX backend, preset performance, fast bias correction)", _SYMMETRIC, "onnx"))
def nncf_quantize(ctx: ExportContext, src: Path, dst: Path) -> Quantized:
    nncf, onnx = _nncf(), onnx_module()
    calib = ctx.calibration().images
    dataset = nncf.Dataset(_items(calib, ctx.batch), lambda x: {INPUT_NAME: x})
    quantized = nncf.quantize(onnx.load(str(src)), dataset, subset_size=len(calib) // (ctx.batch or 1),
                              preset=nncf.QuantizationPreset.PERFORMANCE)
    onnx.save(quantized, str(dst))
    return Quantized()


@QUANTIZERS.register("nncf-accuracy-control", meta=QuantizerInfo(
    "NNCF post-training quantization with accuracy control (ONNX backend, preset performance)", _SYMMETRIC, "onnx"))
def nncf_accuracy_control(ctx: ExportContext, src: Path, dst: Path) -> Quantized:
    nncf, onnx = _nncf(), onnx_module()
    if ctx.max_drop is None:
        raise ExportError("accuracy-controlled quantization needs --max-drop (top-1 points)")
    calib = ctx.calibration().images
    val = ctx.require_validation("--max-drop")
    dataset = nncf.Dataset(_items(calib, ctx.batch), lambda x: {INPUT_NAME: x})

    def validate(candidate, _items) -> float:
        # NNCF's callback hands an in-memory graph: scored in an ONNX Runtime session of its bytes.
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        if ctx.threads:
            opts.intra_op_num_threads = ctx.threads
        session = ort.InferenceSession(candidate.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        chunks = [session.run(None, {INPUT_NAME: x})[0] for x in _chunks(val.images, ctx.batch)]
        logits = np.concatenate(chunks)[: len(val.images)]
        return float((logits.argmax(1) == val.labels).mean())

    quantized = nncf.quantize_with_accuracy_control(
        onnx.load(str(src)), dataset, nncf.Dataset([val.images[:1]]), validate, max_drop=ctx.max_drop / 100.0,
        drop_type=nncf.DropType.ABSOLUTE, subset_size=len(calib) // (ctx.batch or 1),
        preset=nncf.QuantizationPreset.PERFORMANCE,
    )
    onnx.save(quantized, str(dst))
    return Quantized({"accuracy_control": {"max_drop_points": ctx.max_drop, "metric": "top-1 on the validation split"}})


def _chunks(images: np.ndarray, batch: int | None) -> list[np.ndarray]:
    """Batches of ``batch`` (the last one padded by repeating its last image, then cut back by the caller)."""
    if batch is None:
        return [images]
    out = []
    for start in range(0, len(images), batch):
        chunk = images[start : start + batch]
        out.append(np.concatenate([chunk, np.repeat(chunk[-1:], batch - len(chunk), axis=0)]) if len(chunk) < batch else chunk)
    return out


@QUANTIZERS.register("tensorrt", meta=QuantizerInfo(
    "ONNX Runtime quantize_static, QDQ, TensorRT settings", _SYMMETRIC, "tensorrt"))
def tensorrt_quantize(ctx: ExportContext, src: Path, dst: Path) -> Quantized:
    from onnxruntime.quantization import (
        CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static,
    )

    items = _items(ctx.calibration().images, ctx.batch)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(items)

        def get_next(self):
            x = next(self._it, None)
            return None if x is None else {INPUT_NAME: x}

    quantize_static(
        str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax,
        # The final Gemm's output (the logits) stays float: TensorRT advises Q/DQ on the inputs of
        # weighted layers, and int8 logits would only lose resolution.
        extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False,
                       "OpTypesToExcludeOutputQuantization": ["Gemm"]},
    )
    return Quantized()


QUANTIZERS.register_lazy("qat", "edgeinc.export.qat:qat_quantize", meta=QuantizerInfo(
    "quantization-aware training (PyTorch fake quantization, straight-through), exported as Q/DQ", _SYMMETRIC, "onnx"))


def float_compute_nodes(model) -> list[str]:
    """Conv/Gemm/MatMul nodes whose weights are not fed through DequantizeLinear (kept in float)."""
    producers = {out: node for node in model.graph.node for out in node.output}
    kept = []
    for node in model.graph.node:
        if node.op_type in ("Conv", "Gemm", "MatMul") and len(node.input) > 1:
            producer = producers.get(node.input[1])
            if producer is None or producer.op_type != "DequantizeLinear":
                kept.append(node.name)
    return kept


def activation_summary(model) -> str:
    """dtypes and zero points of the activation quantizers (QuantizeLinear nodes)."""
    from onnx import numpy_helper

    consts = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    consts.update({n.output[0]: numpy_helper.to_array(n.attribute[0].t) for n in model.graph.node if n.op_type == "Constant"})
    dtypes: dict[str, int] = {}
    nonzero = 0
    for node in model.graph.node:
        if node.op_type != "QuantizeLinear" or len(node.input) < 3 or node.input[0] in consts:
            continue
        zp = consts[node.input[2]]
        dtypes[str(zp.dtype)] = dtypes.get(str(zp.dtype), 0) + 1
        nonzero += int(np.any(zp != 0))
    counts = ", ".join(f"{n} {d}" for d, n in sorted(dtypes.items()))
    return f"per tensor: {counts or 'none'} quantizers, {nonzero} with a nonzero zero point"


def quantization_report(
    ctx: ExportContext, quantizer: str, method: str, weights: str, activations: str,
    fp32: tuple[Path, RunnerSpec], int8: tuple[Path, RunnerSpec], fp32_bytes: int | None, seconds: float,
    kept_in_float: list[str] | None = None, details: dict[str, Any] | None = None,
) -> QuantizationReport:
    """FP32 vs INT8 top-1/top-5 of the two files on the validation split, each through its own runner,
    sizes, and what the quantizer did. Raises when ``--max-drop`` was asked and the drop exceeds it."""
    val = ctx.require_validation("an INT8 export (it reports FP32 vs INT8 accuracy)")
    fp32_acc = accuracy(ctx.run(*fp32, val.images), val.labels)
    int8_acc = accuracy(ctx.run(*int8, val.images), val.labels)
    int8_bytes = int8[0].stat().st_size
    report = QuantizationReport(
        quantizer=quantizer, method=method, weights=weights, activations=activations,
        calibration=ctx.calibration().describe(), kept_in_float=kept_in_float or [], seconds=seconds,
        accuracy=QuantAccuracy.compare(val.describe(), fp32_acc, int8_acc,
                                       f"{DEFAULT_BACKEND[fp32[1].format]} ({fp32[1].format} fp32)",
                                       DEFAULT_BACKEND[int8[1].format]),
        size=SizeInfo(fp32_bytes=fp32_bytes, int8_bytes=int8_bytes, ratio=fp32_bytes / int8_bytes if fp32_bytes else None),
        details=details or {},
    )
    drop = report.accuracy.top1_drop_points
    if ctx.max_drop is not None and drop > ctx.max_drop + 1e-9:
        raise ExportError(f"INT8 top-1 dropped {drop:.2f} points (> --max-drop {ctx.max_drop}) even with "
                          f"{len(report.kept_in_float)} op(s) kept in float")
    return report


def quantize_onnx_int8(ctx: ExportContext, fp32_path: Path, fp32_spec: RunnerSpec, quantizer: str) -> tuple[Path, RunnerSpec, QuantizationReport]:
    """Quantize ``fp32_path`` with a registered quantizer into ``<stem>_int8_qdq[_<quantizer>].onnx``
    beside it; the INT8 file's runner spec and its report."""
    onnx = onnx_module()
    info: QuantizerInfo = QUANTIZERS.meta(quantizer)
    ctx.require_validation("an INT8 export (it reports FP32 vs INT8 accuracy)")  # before minutes of work
    suffix = {"nncf": "", "nncf-accuracy-control": "", "tensorrt": "_trt", "qat": "_qat"}[quantizer]
    dst = fp32_path.with_name(f"{ctx.stem}_int8_qdq{suffix}.onnx")
    start = time.perf_counter()
    outcome = QUANTIZERS.get(quantizer)(ctx, fp32_path, dst)
    seconds = time.perf_counter() - start
    model = onnx.load(str(dst))
    spec = fp32_spec.model_copy(update={"precision": Precision.INT8, "quantizer": quantizer})
    report = quantization_report(
        ctx, quantizer, info.method, info.weights, activation_summary(model), (fp32_path, fp32_spec), (dst, spec),
        fp32_path.stat().st_size, seconds, float_compute_nodes(model), outcome.details,
    )
    return dst, spec, report
