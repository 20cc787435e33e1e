"""Quantization-aware training: fine-tune with fake quantization, export the same Q/DQ ONNX form.

    edgeinc export RUN --target onnx --precision int8 --qat-steps 200

1. every Conv2d/Linear gets fake-quantized weights (int8, per output channel, symmetric: scale =
   max|w| / 127, recomputed each step) and a fake-quantized input (per tensor, scale from the
   calibration images: uint8 with zero point 0 where the input is never negative - after ReLU -,
   symmetric int8 otherwise), with PyTorch's native ``fake_quantize_per_*_affine`` ops
   (straight-through gradients);
2. the weights are fine-tuned for ``qat_steps`` steps (cross-entropy on the training images,
   BatchNorm statistics frozen);
3. the TorchScript exporter writes those ops as QuantizeLinear/DequantizeLinear pairs, and the
   weight quantizers are folded into int8 initializers (``fold_weight_quantizers``): the file has
   the layout of the post-training Q/DQ model (int8 weights + DequantizeLinear, Q/DQ on activations).

Why not NNCF's PyTorch QAT: in nncf 3.4 it needs ``torchao`` to strip its quantizers for export, its
CPU kernels are a C++ extension compiled on first use (minutes, TOOLCHAIN trap 7) or torch.compile'd
reference kernels (minutes of recompilation here), and its own ONNX export is OpenVINO FakeQuantize.
The post-training path (quantize.py) does use NNCF, on the ONNX graph.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from .base import ExportContext, ExportError
from .data import load_images
from .onnx_io import onnx_module, torch_to_onnx
from .quantize import Quantized


class WeightFakeQuant(nn.Module):
    """Parametrization: int8 per-output-channel symmetric fake quantization of a weight. The scale
    follows the weight during training and is frozen (a constant) for export."""

    def __init__(self) -> None:
        super().__init__()
        self.frozen_scale: torch.Tensor | None = None

    @staticmethod
    def scale_of(w: torch.Tensor) -> torch.Tensor:
        return (w.detach().abs().amax(dim=tuple(range(1, w.dim()))) / 127.0).clamp_min(1e-12)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        scale = self.frozen_scale if self.frozen_scale is not None else self.scale_of(w)
        zero_point = torch.zeros(w.shape[0], dtype=torch.int32, device=w.device)
        return torch.fake_quantize_per_channel_affine(w, scale, zero_point, 0, -128, 127)


def freeze_weight_scales(model: nn.Module) -> None:
    for module in model.modules():
        parametrizations = getattr(module, "parametrizations", None)
        if parametrizations is not None and "weight" in parametrizations:
            quantizer = parametrizations["weight"][0]
            quantizer.frozen_scale = WeightFakeQuant.scale_of(parametrizations["weight"].original)


class InputFakeQuant:
    """Forward pre-hook: per-tensor fake quantization of a layer's input with a calibrated range."""

    def __init__(self) -> None:
        self.low, self.high = float("inf"), float("-inf")
        self.calibrating = True

    def __call__(self, module: nn.Module, args: tuple) -> tuple:
        x = args[0]
        if self.calibrating:
            self.low = min(self.low, float(x.min()))
            self.high = max(self.high, float(x.max()))
            return args
        if self.low >= 0:  # after ReLU: uint8, zero point 0
            scale = max(self.high, 1e-8) / 255.0
            return (torch.fake_quantize_per_tensor_affine(x, scale, 0, 0, 255),)
        scale = max(abs(self.low), abs(self.high), 1e-8) / 127.0
        return (torch.fake_quantize_per_tensor_affine(x, scale, 0, -128, 127),)


def prepare_qat(model: nn.Module, calibration: torch.Tensor, chunk: int = 16) -> list[InputFakeQuant]:
    """Insert the fake quantizers into ``model`` (in place) and calibrate the input ranges."""
    observers = []
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            parametrize.register_parametrization(module, "weight", WeightFakeQuant())
            observer = InputFakeQuant()
            module.register_forward_pre_hook(observer)
            observers.append(observer)
    model.eval()
    with torch.no_grad():
        for i in range(0, len(calibration), chunk):
            model(calibration[i : i + chunk])
    for observer in observers:
        observer.calibrating = False
    return observers


def fold_weight_quantizers(model) -> int:
    """QuantizeLinear(constant) -> an int8/uint8 initializer feeding the DequantizeLinear; returns
    how many were folded."""
    from onnx import numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    constants = {n.output[0]: n for n in model.graph.node if n.op_type == "Constant"}

    def value(name: str) -> np.ndarray | None:
        if name in inits:
            return numpy_helper.to_array(inits[name])
        if name in constants:
            return numpy_helper.to_array(constants[name].attribute[0].t)
        return None

    folded, keep = 0, []
    for node in model.graph.node:
        w = value(node.input[0]) if node.op_type == "QuantizeLinear" else None
        if w is None:
            keep.append(node)
            continue
        scale, zero_point = value(node.input[1]), value(node.input[2])
        if scale is None or zero_point is None:
            keep.append(node)
            continue
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        shape = [1] * w.ndim
        if scale.ndim == 1 and scale.size > 1:
            shape[axis] = -1
        info = np.iinfo(zero_point.dtype)
        q = np.round(w / scale.reshape(shape)) + zero_point.astype(np.int64).reshape(shape)
        q = np.clip(q, info.min, info.max).astype(zero_point.dtype)
        model.graph.initializer.append(numpy_helper.from_array(q, node.output[0]))
        folded += 1
    del model.graph.node[:]
    model.graph.node.extend(keep)
    used = {i for n in model.graph.node for i in n.input}
    stale = [i for i in model.graph.initializer if i.name not in used and i.name not in {o.name for o in model.graph.output}]
    for init in stale:
        model.graph.initializer.remove(init)
    return folded


def _training_images(ctx: ExportContext) -> tuple[np.ndarray, np.ndarray]:
    calib = ctx.calibration()
    folder = Path(ctx.options.qat_data or calib.root)
    batch = load_images(folder, ctx.variant, ctx.options.qat_images, ctx.labels, seed=1)
    if batch.labels is None:
        raise ExportError(f"QAT needs labelled training images (<class>/<image> folders); {folder} has none")
    return batch.images, batch.labels


def qat_quantize(ctx: ExportContext, src: Path, dst: Path) -> Quantized:
    """Fine-tune with fake quantization and write the Q/DQ ONNX to ``dst`` (``src``, the fp32 ONNX,
    is not needed: the fine-tuned PyTorch model is exported)."""
    onnx = onnx_module()
    opts = ctx.options
    steps = int(opts.qat_steps or 0)
    if steps < 1:
        raise ExportError(f"qat_steps must be >= 1, got {steps}")
    x, y = _training_images(ctx)
    model = copy.deepcopy(ctx.source.model).eval()
    prepare_qat(model, torch.from_numpy(ctx.calibration().images))
    optimizer = torch.optim.Adam(model.parameters(), lr=opts.qat_lr)
    generator = torch.Generator().manual_seed(0)
    model.train()
    for module in model.modules():  # keep the BatchNorm statistics the checkpoint was evaluated with
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()
    losses = []
    for _ in range(steps):
        idx = torch.randint(0, len(x), (min(opts.qat_batch_size, len(x)),), generator=generator).numpy()
        out = model(torch.from_numpy(x[idx]))
        logits = out[0] if isinstance(out, tuple) else out
        loss = nn.functional.cross_entropy(logits, torch.from_numpy(y[idx]))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    model.eval()
    freeze_weight_scales(model)
    raw = torch_to_onnx(model, dst.with_suffix(".raw.onnx"), ctx.variant.input_size, ctx.batch)
    graph = onnx.load(str(raw))
    raw.unlink()
    folded = fold_weight_quantizers(graph)
    onnx.checker.check_model(graph)
    onnx.save(graph, str(dst))
    return Quantized({"qat": {"steps": steps, "lr": opts.qat_lr, "batch_size": opts.qat_batch_size, "optimizer": "Adam",
                              "train_images": int(len(x)), "loss_first": losses[0], "loss_last": losses[-1],
                              "folded_weight_quantizers": folded}})
