"""ONNX files in and out: the one place the ONNX graphs of every target are written and described.

fp32: torch's legacy TorchScript exporter (opset 17, ~2 s for Inception-v3; the dynamo exporter gives
opset 18 in ~20 s, TOOLCHAIN trap 6), a dynamic batch axis unless a batch is fixed, simplified with
onnxslim. fp16: the fp32 graph with float16 weights and activations and float32 input/output (casts
at the edges), so callers feed the same arrays. Quantized graphs are written by quantize.py / qat.py
with the names and opset defined here.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import torch

from ..artifact import Precision, RunnerSpec, TensorSpec
from .base import missing_extra

OPSET = 17
INPUT_NAME = "input"
OUTPUT_NAME = "logits"


def onnx_module():
    try:
        import onnx
    except ImportError:
        raise missing_extra("onnx", "export") from None
    return onnx


def torch_to_onnx(model: torch.nn.Module, path: Path, input_size: int, batch: int | None) -> Path:
    """``model`` (eval mode, CPU) through the TorchScript exporter into ``path``, unsimplified: the
    fp32 export and QAT's fake-quantized model go through here."""
    example = torch.zeros(batch or 1, 3, input_size, input_size)
    dynamic = None if batch else {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}}
    with warnings.catch_warnings():  # the legacy exporter's deprecation and tracer warnings
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model.eval().cpu(), (example,), str(path), opset_version=OPSET, dynamo=False,
            input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], dynamic_axes=dynamic,
        )
    return path


def export_fp32_onnx(model: torch.nn.Module, path: Path, input_size: int, batch: int | None) -> Path:
    """Export ``model`` to a simplified opset-17 ONNX file at ``path``."""
    onnx = onnx_module()
    try:
        import onnxslim
    except ImportError:
        raise missing_extra("onnxslim", "export") from None
    raw = torch_to_onnx(model, path.with_suffix(".raw.onnx"), input_size, batch)
    slim = onnxslim.slim(onnx.load(str(raw)))
    raw.unlink()
    onnx.checker.check_model(slim)
    onnx.save(slim, str(path))
    return path


def to_fp16(src: Path, dst: Path) -> Path:
    """float16 weights and activations, float32 input/output (Cast nodes at the edges)."""
    onnx = onnx_module()
    from onnxruntime.transformers.float16 import convert_float_to_float16

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        half = convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
    onnx.save(half, str(dst))
    return dst


def onnx_spec(batch: int | None, preprocessing: Any, labels: list[str], variant: str, precision: Precision,
              quantizer: str | None = None, fmt: str = "onnx") -> RunnerSpec:
    """The runner's view of an ONNX file this module wrote: float32 NCHW in, float32 logits out."""
    b: int | str = batch or "batch"
    size = preprocessing.input_size
    return RunnerSpec(
        format=fmt, precision=precision, preprocessing=preprocessing, labels=labels, variant=variant,
        quantizer=quantizer,
        input=TensorSpec(name=INPUT_NAME, shape=[b, 3, size, size], layout="NCHW", dtype="float32"),
        output=TensorSpec(name=OUTPUT_NAME, shape=[b, len(labels)], layout="NC", dtype="float32"),
    )


def embed_metadata(path: Path, fields: dict[str, Any]) -> None:
    """Store each manifest key as ONNX metadata (``edgeinc.<key>``: JSON), so the file describes itself."""
    onnx = onnx_module()
    model = onnx.load(str(path))
    props = {f"edgeinc.{k}": json.dumps(v) for k, v in fields.items() if k not in ("artifact_sha256", "artifact_bytes")}
    del model.metadata_props[:]
    for key, value in props.items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(path))


def read_metadata(path: Path) -> dict[str, Any]:
    onnx = onnx_module()
    model = onnx.load(str(path), load_external_data=False)
    return {p.key[len("edgeinc."):]: json.loads(p.value) for p in model.metadata_props if p.key.startswith("edgeinc.")}
