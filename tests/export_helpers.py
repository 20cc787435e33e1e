"""A tiny trained checkpoint and image folders for the export and runtime tests.

The model is inception_v3_79 at depth multiplier 0.1 (min depth 8, ~64 M multiply-adds), random
features with BatchNorm statistics re-estimated on the training images (TOOLCHAIN trap 9: otherwise
eval-mode logits are ~1e12) and a classifier fitted on those features, so its logits are O(1-10) and
its decisions clear-cut: parity and INT8 accuracy figures then mean something.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from edgeinc.data import ImageFolder, build_transform
from edgeinc.models import create_model, save_weights

CLASSES = ["blue", "gray", "green", "red"]
_COLOURS = {"red": (200, 40, 40), "green": (40, 180, 60), "blue": (40, 60, 200), "gray": (128, 128, 128)}


def make_images(root: Path, per_class: dict[str, int], size: int = 90, seed: int = 0) -> Path:
    """``root/<split>/<class>/<i>.png``: noisy patches of a class colour."""
    rng = np.random.default_rng(seed)
    for split, n in per_class.items():
        for name in CLASSES:
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                pixels = np.array(_COLOURS[name]) + rng.normal(0, 45, (size, size, 3))
                Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(folder / f"{i}.png")
    return root


def make_checkpoint(run_dir: Path, data_root: Path, seed: int = 0) -> Path:
    """``run_dir/model.safetensors`` with labels and a recipe pointing at ``data_root``."""
    torch.manual_seed(seed)
    model = create_model("inception_v3_79", depth_multiplier=0.1, min_depth=8, num_classes=len(CLASSES), aux_logits=False)
    train = ImageFolder(data_root / "train", transform=build_transform(model.variant, train=False))
    x = torch.stack([train[i][0] for i in range(len(train))])
    y = torch.tensor([train[i][1] for i in range(len(train))])
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None  # cumulative average over the forwards below
    model.train()
    with torch.no_grad():
        model(x)
    model.eval()
    with torch.no_grad():
        features = model.forward_head(model.forward_features(x), pre_logits=True)
    optimizer = torch.optim.Adam(model.fc.parameters(), lr=0.05)
    for _ in range(150):
        loss = torch.nn.functional.cross_entropy(model.fc(features), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    recipe = {"model": {"name": "inception_v3_79", "depth_multiplier": 0.1}, "data": {"root": str(data_root)}}
    run_dir.mkdir(parents=True, exist_ok=True)
    save_weights(model, run_dir / "model.safetensors", metadata={"edgeinc.labels": CLASSES, "edgeinc.recipe": recipe})
    return run_dir


class Workspace:
    """One checkpoint + data for the whole test session; each (target, precision, options) exported
    once and shared by the export and runtime tests."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.data = make_images(root / "data", {"train": 16, "val": 8})
        self.run = make_checkpoint(root / "run", self.data)
        self.out = root / "artifacts"
        self._results: dict = {}

    def export(self, target: str, precision: str, **kwargs):
        from edgeinc.export import export

        key = (target, precision, tuple(sorted(kwargs.items())))
        if key not in self._results:
            kwargs.setdefault("out", self.out)
            self._results[key] = export(self.run, target, precision, calib_size=32, threads=1, **kwargs)
        return self._results[key]


_WORKSPACE: Workspace | None = None


def workspace(tmp_path_factory) -> Workspace:
    global _WORKSPACE
    if _WORKSPACE is None:
        torch.set_num_threads(1)  # 2 shared cores: one thread each is faster than two fighting
        _WORKSPACE = Workspace(tmp_path_factory.mktemp("export"))
    return _WORKSPACE
