"""Images for export: calibration (INT8 ranges, parity) and validation (FP32 vs INT8 accuracy).

Preprocessing is the model's own evaluation transform (``edgeinc.data.build_transform(variant,
train=False)``: central crop, resize, the variant's mean/std), so exported models see exactly what
the checkpoint saw in evaluation.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..artifact import SplitInfo
from ..data import IMAGE_EXTENSIONS, DataError, ImageFolder, build_transform, load_rgb
from ..models import VariantConfig
from .base import ExportError


@dataclass
class ImageBatch:
    """Preprocessed images: ``images`` is float32 NCHW, normalised as the PyTorch model expects;
    ``labels`` are indices into the model's labels (None for an unlabelled folder)."""

    images: np.ndarray
    labels: np.ndarray | None
    root: Path
    total: int  # images in the folder (``images`` may be a subset)

    def __len__(self) -> int:
        return len(self.images)

    def describe(self) -> SplitInfo:
        return SplitInfo(folder=str(self.root), images=len(self), of=self.total, labelled=self.labels is not None)


def _split_dir(root: Path, split: str) -> Path | None:
    path = root / split
    return path if path.is_dir() else None


def resolve_folders(
    calib: str | os.PathLike | None,
    val: str | os.PathLike | None,
    recipe: dict | None,
) -> tuple[Path, Path | None]:
    """(calibration folder, validation folder or None).

    ``calib``: a split folder (``<class>/<image>`` or loose images) or an ImageNet-layout root (its
    ``train`` split is used, its ``val`` split validates). Without it: the recipe's ``data.root``.
    """
    recipe_root = (recipe or {}).get("data", {}).get("root") if isinstance(recipe, dict) else None
    if calib is not None:
        calib_dir = Path(calib)
        if not calib_dir.is_dir():
            raise ExportError(f"--calib {calib_dir}: no such folder")
        root_val = None
        if _split_dir(calib_dir, "train") is not None:
            root_val = _split_dir(calib_dir, "val")
            calib_dir = calib_dir / "train"
    elif recipe_root:
        root = Path(recipe_root)
        calib_dir = root / "train"
        if not calib_dir.is_dir():
            raise ExportError(
                f"no calibration images: the recipe's data.root {root} has no 'train' folder; "
                f"pass --calib DIR (a folder of images)"
            )
        root_val = _split_dir(root, "val")
    else:
        raise ExportError("no calibration images: the checkpoint has no recipe with data.root; pass --calib DIR")
    val_dir = Path(val) if val is not None else root_val
    if val_dir is not None and not val_dir.is_dir():
        raise ExportError(f"--val {val_dir}: no such folder")
    return calib_dir, val_dir


def _loose_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def load_images(
    folder: Path,
    variant: VariantConfig,
    limit: int | None,
    labels: list[str] | None,
    seed: int = 0,
) -> ImageBatch:
    """Up to ``limit`` images of ``folder`` (a random subset, fixed by ``seed``), preprocessed.

    A folder with class sub-folders is labelled when its class names are among ``labels``."""
    transform = build_transform(variant, train=False)
    has_class_dirs = any(e.is_dir() and not e.name.startswith(".") for e in os.scandir(folder))
    if has_class_dirs:
        try:
            dataset = ImageFolder(folder, transform=transform, on_bad_image="fail")
        except DataError as e:
            raise ExportError(str(e)) from e
        samples = dataset.samples
        class_names = dataset.classes
        unknown = [c for c in class_names if labels is not None and c not in labels]
        if labels is not None and unknown:
            raise ExportError(
                f"{folder}: class folder(s) {unknown[:5]} are not among the model's labels {labels[:10]}"
            )
        index = {c: (labels.index(c) if labels is not None else i) for i, c in enumerate(class_names)}
        items = [(path, index[class_names[label]]) for path, label in samples]
    else:
        items = [(str(p), -1) for p in _loose_images(folder)]
    if not items:
        raise ExportError(f"{folder}: holds no images ({', '.join(IMAGE_EXTENSIONS)})")
    total = len(items)
    if limit is not None and limit < total:
        pick = np.random.default_rng(seed).choice(total, size=limit, replace=False)
        items = [items[i] for i in sorted(pick)]
    images = []
    for path, _ in items:
        try:
            images.append(transform(load_rgb(path)))
        except Exception as e:
            raise ExportError(f"cannot read image {path}: {type(e).__name__}: {e}") from e
    stacked = torch.stack(images).numpy().astype(np.float32, copy=False)
    label_array = np.array([lab for _, lab in items], dtype=np.int64) if has_class_dirs else None
    return ImageBatch(stacked, label_array, folder, total)


def denormalize_nhwc(images: np.ndarray, mean: list[float], std: list[float]) -> np.ndarray:
    """Normalised NCHW -> pixel values in [0, 1], NHWC (what onnx2tf's calibration file holds)."""
    m = np.asarray(mean, np.float32).reshape(1, 3, 1, 1)
    s = np.asarray(std, np.float32).reshape(1, 3, 1, 1)
    return np.ascontiguousarray((images * s + m).transpose(0, 2, 3, 1)).astype(np.float32)
