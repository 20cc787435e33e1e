"""A colour-only baseline: multinomial logistic regression on colour histograms.

It shows how much of a task colour statistics alone solve; on the synthetic patch task it must stay
near chance, far below a trained network (issue 3).
"""

from __future__ import annotations

import os

import numpy as np
import torch

from .folder import ImageFolder


def colour_histograms(dataset: ImageFolder, bins: int = 8, joint: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(features, labels) for every readable image of ``dataset`` (a transform-less ImageFolder).

    Per channel: ``3 * bins`` features; ``joint``: the ``bins**3`` joint RGB histogram. Each histogram
    is normalised to sum to 1 per channel (per image when joint), so image size does not matter.
    """
    if not 2 <= bins <= 256:
        raise ValueError(f"bins must be between 2 and 256, got {bins}")
    features, labels = [], []
    for sample in dataset:
        if sample is None:  # a bad image, already reported by the dataset
            continue
        image, label = sample
        q = (np.asarray(image, dtype=np.int64) * bins) >> 8  # (H, W, 3) bin index per channel
        if joint:
            hist = np.bincount(((q[..., 0] * bins + q[..., 1]) * bins + q[..., 2]).ravel(), minlength=bins**3)
            hist = hist / hist.sum()
        else:
            hist = np.concatenate([np.bincount(q[..., c].ravel(), minlength=bins) for c in range(3)]) / q[..., 0].size
        features.append(hist.astype(np.float32))
        labels.append(label)
    return np.stack(features), np.array(labels, dtype=np.int64)


def _fit_softmax_regression(x: torch.Tensor, y: torch.Tensor, num_classes: int, l2: float) -> torch.nn.Linear:
    """Full-batch L-BFGS on cross-entropy + l2 * |W|^2: deterministic, converges in a second."""
    model = torch.nn.Linear(x.shape[1], num_classes)
    torch.nn.init.zeros_(model.weight)
    torch.nn.init.zeros_(model.bias)
    optimizer = torch.optim.LBFGS(model.parameters(), lr=1.0, max_iter=500, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y) + l2 * model.weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return model


def colour_histogram_baseline(
    train_root: str | os.PathLike,
    val_root: str | os.PathLike,
    bins: int = 8,
    *,
    joint: bool = False,
    l2: float = 1e-3,
) -> dict:
    """Train on ``train_root`` (a split folder, ``<class>/<images>``), evaluate on ``val_root``.

    Returns ``{"top1", "train_top1", "chance", "num_classes", "classes", "n_train", "n_val", "features"}``
    (accuracies as fractions; chance = 1 / number of classes).
    """
    train_set = ImageFolder(train_root)
    val_set = ImageFolder(val_root, classes=train_set.classes)
    x_train, y_train = colour_histograms(train_set, bins, joint)
    x_val, y_val = colour_histograms(val_set, bins, joint)
    # Standardised with the training statistics; constant features (empty bins) stay 0.
    mean, std = x_train.mean(axis=0), x_train.std(axis=0) + 1e-6
    xt = torch.from_numpy((x_train - mean) / std)
    xv = torch.from_numpy((x_val - mean) / std)
    num_classes = len(train_set.classes)
    with torch.random.fork_rng():  # leave the caller's RNG untouched
        model = _fit_softmax_regression(xt, torch.from_numpy(y_train), num_classes, l2)
    with torch.no_grad():
        train_top1 = (model(xt).argmax(1).numpy() == y_train).mean()
        top1 = (model(xv).argmax(1).numpy() == y_val).mean()
    return {
        "top1": float(top1),
        "train_top1": float(train_top1),
        "chance": 1.0 / num_classes,
        "num_classes": num_classes,
        "classes": train_set.classes,
        "n_train": len(y_train),
        "n_val": len(y_val),
        "features": f"{'joint RGB' if joint else 'per-channel'} colour histogram, {bins} bins",
    }
