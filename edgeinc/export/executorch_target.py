"""ExecuTorch: PyTorch's own on-device runtime, every operator inside the XNNPACK delegate.

    torch.export -> [int8: PT2E with XNNPACKQuantizer, calibrated] -> to_edge_transform_and_lower(
        XnnpackPartitioner) -> .pte, checked in the ExecuTorch runtime against PyTorch

XNNPACK refuses the padded 3x3 stride-1 average pools of the Inception blocks (``count_include_pad``
with non-zero padding): left to the portable kernels, they cut the graph into ten delegate calls and
ran 27 ms of a 1.3 ms model (issue 15). They are exported as what they compute - a depthwise 3x3
convolution with weights 1/9 and zero padding 1 (the padding counted in every average) - in a copy of
the model (``export_friendly``): one delegate call, nothing outside, in fp32 and INT8. The other exact
form, an explicit zero pad before an unpadded pool, lowers in fp32 but its quantized pad fails to load
in XNNPACK (StaticConstantPad, xnn_status_invalid_parameter). The state dict is unchanged (the 1/9
weights are a non-persistent buffer). INT8 .pte files keep float32 input and output.
"""

from __future__ import annotations

import copy
import importlib.metadata
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..artifact import Precision, Preprocessing, RunnerSpec, TensorSpec
from .base import ExportContext, ExportError, TargetOutput
from .quantize import quantization_report

INPUT_NAME, OUTPUT_NAME = "input", "logits"
EXTRA = "pip install 'edgeinc[executorch]'"


class AvgPoolAsDepthwiseConv(nn.Module):
    """``nn.AvgPool2d(k, stride, padding)`` with ``count_include_pad=True`` as the depthwise convolution it
    is: every weight 1/k^2, zero padding counted in each average. Equal up to float rounding."""

    def __init__(self, pool: nn.AvgPool2d, channels: int) -> None:
        super().__init__()
        k = _pair(pool.kernel_size)
        self.stride, self.padding, self.channels = _pair(pool.stride or pool.kernel_size), _pair(pool.padding), channels
        # not in the state dict: checkpoints load into the rewritten copy as into the model
        self.register_buffer("weight", torch.full((channels, 1, *k), 1.0 / (k[0] * k[1])), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.conv2d(x, self.weight.to(x.dtype), None, self.stride, self.padding, 1, self.channels)


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


def _needs_rewrite(module: nn.Module) -> bool:
    return (isinstance(module, nn.AvgPool2d) and module.count_include_pad and module.ceil_mode is False
            and _pair(module.padding) != (0, 0) and module.divisor_override is None)


def export_friendly(model: nn.Module, input_size: int) -> tuple[nn.Module, int]:
    """A copy of ``model`` with every padded average pool as a depthwise convolution; how many were swapped."""
    model = copy.deepcopy(model).eval()
    channels: dict[str, int] = {}
    hooks = [m.register_forward_pre_hook(lambda m, args, name=name: channels.__setitem__(name, args[0].shape[1]))
             for name, m in model.named_modules() if _needs_rewrite(m)]
    with torch.no_grad():
        model(torch.zeros(1, 3, input_size, input_size))
    for hook in hooks:
        hook.remove()
    for name, c in channels.items():
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, AvgPoolAsDepthwiseConv(getattr(parent, child), c))
    return model, len(channels)


def _executorch():
    try:
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
        from executorch.exir import to_edge_transform_and_lower
    except ImportError:
        raise ExportError(f"executorch is not installed: {EXTRA}") from None
    # torchao and ExecuTorch announce deprecations and experimental APIs on import: not the user's concern
    logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)
    return to_edge_transform_and_lower, XnnpackPartitioner


def delegation(graph_module) -> dict[str, Any]:
    """Delegate calls and the operators left outside XNNPACK, counted on the lowered edge program (before
    ``to_executorch``, which adds its memory-planning nodes)."""
    calls, outside = 0, {}
    for node in graph_module.graph.nodes:
        if node.op != "call_function":
            continue
        name = getattr(node.target, "__name__", str(node.target))
        if name == "executorch_call_delegate":
            calls += 1
        elif name != "getitem":  # only unpacks a delegate's outputs
            op = str(getattr(node.target, "_name", name)).split(".")[0]
            outside[op] = outside.get(op, 0) + 1
    return {"delegate_calls": calls, "non_delegated_ops": sum(outside.values()), "non_delegated_by_op": outside}


def _lower(program, path: Path) -> dict[str, Any]:
    to_edge_transform_and_lower, XnnpackPartitioner = _executorch()
    edge = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()])
    counts = delegation(edge.exported_program().graph_module)
    path.write_bytes(edge.to_executorch().buffer)
    return counts


def _quantized(model: nn.Module, example: torch.Tensor, calibration: np.ndarray) -> torch.export.ExportedProgram:
    """PT2E: XNNPACK's quantizer, per-channel symmetric int8 weights, calibrated one image at a time (the
    exported graph has the example's fixed batch)."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer, get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    prepared = prepare_pt2e(torch.export.export(model, (example,)).module(), quantizer)
    batch = example.shape[0]
    with torch.no_grad():
        for start in range(0, len(calibration) - batch + 1, batch):
            prepared(torch.from_numpy(calibration[start : start + batch]))
    return torch.export.export(convert_pt2e(prepared), (example,))


def _spec(ctx: ExportContext, precision: Precision, batch: int) -> RunnerSpec:
    size = ctx.variant.input_size
    return RunnerSpec(
        format="executorch", precision=precision, preprocessing=Preprocessing.from_variant(ctx.variant),
        labels=ctx.labels, variant=ctx.variant.name, quantizer="pt2e-xnnpack" if precision == Precision.INT8 else None,
        input=TensorSpec(name=INPUT_NAME, shape=[batch, 3, size, size], layout="NCHW", dtype="float32"),
        output=TensorSpec(name=OUTPUT_NAME, shape=[batch, len(ctx.labels)], layout="NC", dtype="float32"),
    )


def _fp32_pte(ctx: ExportContext, model: nn.Module, example: torch.Tensor) -> tuple[Path, RunnerSpec, dict, float]:
    path = ctx.workdir / f"{ctx.stem}_fp32.pte"
    start = time.perf_counter()
    counts = _lower(torch.export.export(model, (example,)), path)
    return path, _spec(ctx, Precision.FP32, example.shape[0]), counts, time.perf_counter() - start


def export_executorch(ctx: ExportContext, precision: Precision) -> TargetOutput:
    if precision == Precision.INT8:  # before minutes of work
        ctx.require_validation("an INT8 export (it reports FP32 vs INT8 accuracy)")
    _executorch()
    batch = ctx.batch or 1  # a fixed batch: the runner cuts larger batches (a dynamic .pte plans for its maximum)
    start = time.perf_counter()
    model, swapped = export_friendly(ctx.source.model, ctx.variant.input_size)
    example = torch.zeros(batch, 3, ctx.variant.input_size, ctx.variant.input_size)
    steps = {"rewrite": time.perf_counter() - start}
    fp32_path, fp32_spec, counts, steps["fp32_lower"] = _fp32_pte(ctx, model, example)
    checks = [ctx.check(fp32_path, fp32_spec, "fp32 .pte (ExecuTorch, XNNPACK) vs PyTorch")]
    path, spec, quantization = fp32_path, fp32_spec, None
    if precision == Precision.INT8:
        start = time.perf_counter()
        path, spec = ctx.workdir / f"{ctx.stem}_int8_pt2e.pte", _spec(ctx, Precision.INT8, batch)
        counts = _lower(_quantized(model, example, ctx.calibration().images), path)
        steps["int8_quantize_lower"] = time.perf_counter() - start
        checks.append(ctx.check(path, spec, "int8 .pte (PT2E, XNNPACK) vs PyTorch fp32"))
        quantization = quantization_report(
            ctx, "pt2e-xnnpack", "PT2E post-training quantization (torchao prepare_pt2e / convert_pt2e) with "
            "ExecuTorch's XNNPACKQuantizer, lowered to the XNNPACK delegate", "int8, per-channel, symmetric",
            "int8, per tensor (XNNPACK's symmetric config); float32 input and output, quantized inside the delegate",
            (fp32_path, fp32_spec), (path, spec), fp32_path.stat().st_size, steps["int8_quantize_lower"],
            details={"calibration_batch": batch},
        )
        fp32_path.unlink()
    if counts["non_delegated_ops"]:
        logging.getLogger("edgeinc.export").warning("%s: %d operator(s) run outside the XNNPACK delegate: %s",
                                                    path.name, counts["non_delegated_ops"], counts["non_delegated_by_op"])
    conversion = {
        "tool": f"executorch {importlib.metadata.version('executorch')}", "backend": "XnnpackPartitioner", "steps": steps,
        "notes": f"{counts['delegate_calls']} XNNPACK delegate call(s), {counts['non_delegated_ops']} operator(s) outside",
        "settings": {"batch": batch, **counts, "rewrites": {"avg_pool_3x3_count_include_pad": f"depthwise conv 1/9 ({swapped})"},
                     "torchao": importlib.metadata.version("torchao")},
    }
    return TargetOutput(path, spec, checks, conversion, quantization=quantization)
