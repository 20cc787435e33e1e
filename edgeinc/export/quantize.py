"""INT8 post-training quantization of the fp32 ONNX graph into QuantizeLinear/DequantizeLinear form.

Two flavours, one per consumer (TOOLCHAIN.md, "Faster paths tried"):

* ``nncf`` (ONNX target, OpenVINO): NNCF's ONNX backend, preset "performance": per-channel symmetric
  int8 weights, symmetric activations (uint8 with zero point 0 after ReLU, int8 where signed), fast
  bias correction. Correct in ONNX Runtime and in OpenVINO (an ONNX Runtime ``quantize_static``
  model with int8 activations gave wrong outputs in OpenVINO in the trial).
* ``tensorrt`` (TensorRT target): ONNX Runtime's static quantizer with the settings NVIDIA ModelOpt
  uses for TensorRT: int8 activations, symmetric (zero point 0), per-channel symmetric int8 weights on
  the output-channel axis, bias left in float; TensorRT's explicit quantization takes int8 Q/DQ only.

Quantization is NOT applied to the PyTorch model (NNCF's torch export emits OpenVINO FakeQuantize ops
that ONNX Runtime cannot load, trap 7); QAT (qat.py) ends in the same Q/DQ ONNX form.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from .base import ExportContext, ExportError, accuracy, missing_extra, run_in_chunks
from .onnx_target import INPUT_NAME, ort_logits, ort_session

FLAVOURS = ("nncf", "tensorrt", "qat")


def _items(images: np.ndarray, batch: int | None) -> list[np.ndarray]:
    step = batch or 1
    usable = len(images) - len(images) % step
    return [images[i : i + step] for i in range(0, usable, step)]


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


def _nncf_quantize(model, ctx: ExportContext, calib: np.ndarray) -> tuple[Any, dict]:
    # NNCF imports torch's C++-extension helper, which warns "No CUDA runtime is found" on every CPU
    # machine; nothing here builds extensions.
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    try:
        import nncf
    except ImportError:
        raise missing_extra("nncf", "export") from None
    dataset = nncf.Dataset(_items(calib, ctx.batch), lambda x: {INPUT_NAME: x})
    subset = len(calib) // (ctx.batch or 1)
    if ctx.max_drop is None:
        return nncf.quantize(model, dataset, subset_size=subset, preset=nncf.QuantizationPreset.PERFORMANCE), {}
    val = ctx.require_validation("--max-drop")

    def validate(candidate, items) -> float:
        session = ort_session(candidate.SerializeToString(), ctx.threads)
        logits = run_in_chunks(lambda x: session.run(None, {INPUT_NAME: x})[0], val.images, ctx.batch)
        return float((logits.argmax(1) == val.labels).mean())

    val_dataset = nncf.Dataset([val.images[:1]])  # validate() reads the whole split itself
    quantized = nncf.quantize_with_accuracy_control(
        model, dataset, val_dataset, validate, max_drop=ctx.max_drop / 100.0,
        drop_type=nncf.DropType.ABSOLUTE, subset_size=subset, preset=nncf.QuantizationPreset.PERFORMANCE,
    )
    return quantized, {"accuracy_control": {"max_drop_points": ctx.max_drop, "metric": "top-1 on the validation split"}}


def _ort_tensorrt_quantize(src: Path, dst: Path, ctx: ExportContext, calib: np.ndarray) -> None:
    from onnxruntime.quantization import (
        CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static,
    )

    items = _items(calib, ctx.batch)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(items)

        def get_next(self):
            x = next(self._it, None)
            return None if x is None else {INPUT_NAME: x}

    quantize_static(
        str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax,
        extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False},
    )


def quantize_onnx_int8(ctx: ExportContext, fp32_path: Path, flavour: str) -> tuple[Path, dict]:
    """Quantize ``fp32_path`` to ``<stem>_int8_qdq[_trt].onnx`` beside it and report what it cost:
    FP32 vs INT8 top-1/top-5 on the validation split, sizes, ops kept in float."""
    import onnx

    if flavour not in FLAVOURS:
        raise ValueError(f"flavour must be one of {FLAVOURS}, got {flavour!r}")
    val = ctx.require_validation("an INT8 export (it reports FP32 vs INT8 accuracy)")
    calib = ctx.calibration()
    dst = fp32_path.with_name(f"{ctx.stem}_int8_qdq{'_trt' if flavour == 'tensorrt' else ''}.onnx")
    start = time.perf_counter()
    extra: dict[str, Any] = {}
    if flavour == "nncf":
        quantized, extra = _nncf_quantize(onnx.load(str(fp32_path)), ctx, calib.images)
        onnx.save(quantized, str(dst))
        method = "NNCF post-training quantization (ONNX backend, preset performance, fast bias correction)"
    elif flavour == "tensorrt":
        _ort_tensorrt_quantize(fp32_path, dst, ctx, calib.images)
        method = "ONNX Runtime quantize_static, QDQ, TensorRT settings"
    else:
        from .qat import qat_quantize

        dst, extra = qat_quantize(ctx, fp32_path)
        method = extra.pop("method")
        extra.pop("seconds")
    seconds = time.perf_counter() - start
    model = onnx.load(str(dst))
    kept = float_compute_nodes(model)
    fp32_acc = accuracy(ort_logits(fp32_path, val.images, ctx.batch, ctx.threads), val.labels)
    int8_acc = accuracy(ort_logits(dst, val.images, ctx.batch, ctx.threads), val.labels)
    fp32_bytes, int8_bytes = fp32_path.stat().st_size, dst.stat().st_size
    info = {
        "method": method,
        "flavour": flavour,
        "weights": "int8, per-channel (output channel), symmetric (zero point 0)",
        "activations": _activation_summary(model),
        "calibration": calib.describe(),
        "kept_in_float": kept,
        "accuracy": {
            "split": val.describe(),
            "fp32": fp32_acc,
            "int8": int8_acc,
            "top1_drop_points": fp32_acc["top1"] - int8_acc["top1"],
            "top5_drop_points": fp32_acc["top5"] - int8_acc["top5"],
        },
        "size": {"fp32_bytes": fp32_bytes, "int8_bytes": int8_bytes, "ratio": fp32_bytes / int8_bytes},
        "seconds": seconds,
        **extra,
    }
    if ctx.max_drop is not None and info["accuracy"]["top1_drop_points"] > ctx.max_drop + 1e-9:
        raise ExportError(
            f"INT8 top-1 dropped {info['accuracy']['top1_drop_points']:.2f} points "
            f"(> --max-drop {ctx.max_drop}) even with {len(kept)} op(s) kept in float"
        )
    return dst, info


def _activation_summary(model) -> dict:
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
    return {"quantizers_by_dtype": dtypes, "nonzero_zero_points": nonzero, "per": "tensor"}
