"""Scaffolding shared by the tests and the benchmarks: a "calibrated random run".

A randomly initialised Inception-v3 in eval mode gives logits of ~1e12 (BatchNorm's running statistics
are 0 / 1; TOOLCHAIN trap 9), so nothing measured on it means anything. A calibrated random run has
its BatchNorm statistics estimated on real images, and optionally a classifier fitted on its random
features (a linear probe): its logits are O(1-10) and its decisions clear-cut, so parity, INT8
accuracy and latency (no denormal storms) are meaningful without training. It is saved like a trained
run (``model.safetensors`` with labels and a recipe pointing at the images).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from .data import ImageFolder, build_transform
from .models import create_model, save_weights
from .rundir import RunDir


def calibrated_run(
    name: str,
    run_dir: str | os.PathLike,
    data_root: str | os.PathLike,
    *,
    labels: list[str] | None = None,
    images: int = 32,
    fit_classifier: bool = True,
    fit_steps: int = 150,
    seed: int = 0,
    **options,
) -> Path:
    """Write ``run_dir/model.safetensors``: ``name`` with ``options`` (depth_multiplier, aux_logits, ...),
    BatchNorm statistics from ``images`` evenly spaced images of ``data_root/train`` (their eval
    transform), and with ``fit_classifier`` the classifier fitted on them (their class folders are the
    labels). ``labels``: the class names (default: the folders of ``data_root/train``; more names than
    folders give a larger classifier, e.g. 1000 classes for ImageNet's cost). Reused when it exists."""
    run = RunDir(run_dir)
    if run.weights("model").is_file():
        return run.path
    torch.manual_seed(seed)
    folder = ImageFolder(Path(data_root) / "train")
    labels = labels or folder.classes
    model = create_model(name, num_classes=len(labels), **options)
    folder.transform = build_transform(model.variant, train=False)
    step = max(1, len(folder) // images)
    picked = [folder[i] for i in range(0, len(folder), step)][:images]
    x = torch.stack([img for img, _ in picked])
    y = torch.tensor([labels.index(folder.classes[label]) for _, label in picked])
    estimate_bn_statistics(model, x)
    if fit_classifier:
        fit_linear_probe(model, x, y, fit_steps)
    recipe = {"model": {"name": name, **options}, "data": {"root": str(data_root)},
              "note": "random features, BatchNorm statistics estimated" + (", classifier fitted" if fit_classifier else "")}
    save_weights(model.eval(), run.weights("model"), metadata={"edgeinc.labels": labels, "edgeinc.recipe": recipe})
    return run.path


@torch.no_grad()
def estimate_bn_statistics(model: torch.nn.Module, images: torch.Tensor, chunk: int | None = None) -> None:
    """BatchNorm running statistics from ``images`` (train-mode forwards). One forward over all of them
    by default: averaging per-chunk variances leaves out the spread between chunk means (chunks of 8
    dropped the test model's TFLite INT8 top-1 to 75%, below its 90% bar)."""
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None  # a cumulative average over the forwards below
    model.train()
    for part in images.split(chunk or len(images)):
        model(part)
    model.eval()


def fit_linear_probe(model, images: torch.Tensor, labels: torch.Tensor, steps: int = 150, lr: float = 0.05) -> None:
    """Fit ``model.fc`` on the frozen features of ``images``."""
    with torch.no_grad():
        features = torch.cat([model.forward_head(model.forward_features(c), pre_logits=True) for c in images.split(8)])
    optimizer = torch.optim.Adam(model.fc.parameters(), lr=lr)
    for _ in range(steps):
        loss = torch.nn.functional.cross_entropy(model.fc(features), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
