"""The paper's optimizer and learning-rate schedule (section 8; TF-slim ``train_image_classifier``).

* RMSProp with TensorFlow's semantics (timm's ``RMSpropTF``): decay 0.9, momentum 0.9, epsilon 1.0
  added INSIDE the square root, the mean square starting at 1, and the learning rate folded into the
  momentum buffer (TF's ``RMSPropOptimizer``)::

      ms  <- ms + (1 - decay) * (g^2 - ms)                  (ms_0 = 1)
      mom <- momentum * mom + lr * g / sqrt(ms + eps)
      w   <- w - mom

  ``torch.optim.RMSprop`` differs on all three points. ``optimizer: momentum`` is Table 3's baseline
  (TF's MomentumOptimizer = ``torch.optim.SGD(momentum=...)``, no dampening, no Nesterov).
  ``optimizer: adamw`` (not the paper's; betas (momentum, 0.999), decoupled weight decay) is for runs of
  a few hundred steps: with epsilon 1 and the mean square starting at 1, TF-RMSProp takes steps of
  ``lr * g`` - plain momentum SGD - and on the synthetic patch task needed many times the quickstart's
  budget to leave chance level.
* Weight decay 4e-5 as TF-slim's L2 regularizer on conv and fully connected weights only (not on
  BatchNorm parameters or biases): ``4e-5 * w`` is added to the gradient of those weights, which is the
  gradient of TF-slim's ``4e-5 * sum(w^2) / 2`` loss term. It is added inside the optimizer, i.e. after
  gradient clipping (TF-slim clips the total gradient, L2 term included); the difference is negligible
  at 4e-5 and saves a pass over the weights.
* Learning rate ``train.lr`` at the global batch ``train.lr_reference_batch`` (0.045 at 50 x 32 =
  1600), scaled linearly to the actual global batch; multiplied by 0.94 every 2 epochs. TF-slim decays
  in steps (``staircase=True``, the default here); ``lr_staircase: false`` decays smoothly every step.
  An optional linear warm-up (not in the paper) ramps the rate up from 0 over ``warmup_epochs``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from timm.optim import RMSpropTF
from torch import nn

from ..config import TrainSection


def scaled_lr(cfg: TrainSection) -> float:
    """``lr`` scaled linearly from ``lr_reference_batch`` to the recipe's global batch."""
    return cfg.lr * cfg.batch_size / cfg.lr_reference_batch


@dataclass(frozen=True)
class LRSchedule:
    """Learning rate as a pure function of the global step (so a resumed run needs only the step)."""

    base_lr: float
    steps_per_epoch: int
    decay: float = 0.94
    decay_epochs: float = 2.0
    staircase: bool = True
    warmup_epochs: float = 0.0

    @classmethod
    def from_recipe(cls, cfg: TrainSection, steps_per_epoch: int) -> LRSchedule:
        return cls(scaled_lr(cfg), steps_per_epoch, cfg.lr_decay, cfg.lr_decay_epochs, cfg.lr_staircase,
                   cfg.warmup_epochs)

    def __call__(self, step: int) -> float:
        """Rate used for optimizer step ``step`` (0-based)."""
        periods = step / (self.decay_epochs * self.steps_per_epoch)
        if self.staircase:
            periods = math.floor(periods + 1e-9)  # exact multiples must not round down
        lr = self.base_lr * self.decay**periods
        warmup_steps = self.warmup_epochs * self.steps_per_epoch
        if step < warmup_steps:
            lr *= min(1.0, (step + 1) / warmup_steps)
        return lr


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Conv and FC weights get the L2 term; BatchNorm scales/offsets and biases do not (TF-slim)."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim > 1 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: nn.Module, cfg: TrainSection) -> torch.optim.Optimizer:
    groups = param_groups(model, cfg.weight_decay)
    lr = scaled_lr(cfg)  # the schedule overwrites it every step
    if cfg.optimizer == "rmsprop_tf":
        return RMSpropTF(groups, lr=lr, alpha=cfg.rmsprop_decay, eps=cfg.rmsprop_eps, momentum=cfg.momentum,
                         lr_in_momentum=True)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=(cfg.momentum, 0.999))
    return torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
