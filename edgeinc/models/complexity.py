"""Parameters and multiply-adds, computed from the modules (never typed in)."""

from __future__ import annotations

import torch
from torch import nn


def count_parameters(model: nn.Module, include_aux: bool = True) -> int:
    return sum(
        p.numel() for name, p in model.named_parameters() if include_aux or not name.startswith("AuxLogits.")
    )


@torch.no_grad()
def count_macs(model: nn.Module, input_size: int | tuple[int, int], in_chans: int = 3) -> int:
    """Multiply-adds of one image through the inference graph (eval mode, so no aux head): every
    Conv2d and Linear, the paper's and torchvision's convention for "ops"."""
    h, w = (input_size, input_size) if isinstance(input_size, int) else input_size
    total = 0

    def conv_hook(m: nn.Conv2d, _inp, out: torch.Tensor) -> None:
        nonlocal total
        kh, kw = m.kernel_size
        total += out[0].numel() * (m.in_channels // m.groups) * kh * kw

    def linear_hook(m: nn.Linear, _inp, out: torch.Tensor) -> None:
        nonlocal total
        total += m.in_features * m.out_features

    hooks = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            hooks.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            hooks.append(m.register_forward_hook(linear_hook))
    was_training = model.training
    device = next(model.parameters()).device
    try:
        model.eval()
        model(torch.zeros(1, in_chans, h, w, device=device))
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    return total
