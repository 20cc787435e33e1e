"""A tiny checkpoint and image folders for the export and runtime tests.

The model is inception_v3_79 at depth multiplier 0.1 (min depth 8, ~64 M multiply-adds), a calibrated
random run (edgeinc.testing: BatchNorm statistics estimated on the training images, a classifier fitted
on the random features), so its logits are O(1-10) and its decisions clear-cut: parity and INT8
accuracy figures then mean something.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from edgeinc.testing import calibrated_run

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
    return calibrated_run("inception_v3_79", run_dir, data_root, images=64, seed=seed, depth_multiplier=0.1, min_depth=8,
                          aux_logits=False)


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
        _claim_for_this_worker(tmp_path_factory)
        torch.set_num_threads(1)  # 2 shared cores: one thread each is faster than two fighting
        _WORKSPACE = Workspace(tmp_path_factory.mktemp("export"))
    return _WORKSPACE


def _claim_for_this_worker(tmp_path_factory) -> None:
    """Fail loudly where xdist_group("export_workspace") is not honoured: then every worker would build
    the workspace and load every runtime, which is what the grouping exists to prevent."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if worker is None:
        return
    claim = tmp_path_factory.getbasetemp().parent / "export_workspace.worker"  # shared by the session's workers
    try:
        with open(claim, "x") as f:
            f.write(worker)
    except FileExistsError:
        owner = claim.read_text()
        if owner != worker:
            raise RuntimeError(f"the export workspace is already built by xdist worker {owner}, not {worker}: "
                               "xdist_group is not honoured (run with --dist loadgroup; pytest / pytest-xdist "
                               "versions: pyproject.toml)") from None
