"""Checkpointing: the run directory's files and the full training state, written atomically and read
back without unpickling code.

``checkpoints/last.pt`` holds only tensors and plain Python values (``torch.load(weights_only=True)``
accepts it): model, EMA, optimizer, scaler, the schedule's position, the RNG state of every rank
(python, NumPy, torch CPU, CUDA), the position in the data (epoch, step in epoch), the per-epoch
history and the resolved recipe and class list. ``RunStore`` is the one writer of a run directory
(edgeinc.rundir.RunDir names its files); only rank 0 writes.
"""

from __future__ import annotations

import errno
import io
import json
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rich.console import Console

from ..config import RESOLVED_NAME, Recipe, recipe_from_dict
from ..models import CheckpointError, save_weights
from ..models.weights import load_failure
from ..rundir import RunDir
from ..utils.io import atomic_open, atomic_write_json, atomic_write_text, remove_stale_temporaries
from .monitor import write_metrics_csv

FORMAT = "edgeinc.train/1"
# Keys that may change when a run is resumed; any other difference is refused (not the same run).
RESUMABLE_CHANGES = {
    "train.epochs", "train.checkpoint_every_steps", "train.log_every_steps", "train.eval_every_epochs",
    "train.micro_batch_size", "data.root", "data.workers", "data.eval_batch_size", "description",
}


class TrainingError(RuntimeError):
    """Training cannot go on (non-finite loss, a run directory in the way, a full disk, ...); the message
    says why and what is kept."""


def checkpoint_path(run_dir: str | os.PathLike) -> Path:
    return RunDir(run_dir).checkpoint


def capture_rng(device: torch.device) -> dict[str, Any]:
    """This process's RNG streams, as plain values and tensors."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def restore_rng(state: dict[str, Any], device: torch.device) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """Write ``state`` atomically: a reader (or a run killed mid-write) sees the old file or the new one."""
    buffer = io.BytesIO()
    torch.save({"format": FORMAT, **state}, buffer)
    with atomic_open(path, "wb") as f:
        f.write(buffer.getbuffer())


def load_checkpoint_state(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated file, foreign pickle refused by weights_only, ...
        raise CheckpointError(f"{path}: not a readable edgeinc training checkpoint ({load_failure(e)})") from e
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an edgeinc training checkpoint (expected format {FORMAT!r})")
    return state


class RunStore:
    """Writes a run directory: its recipe, classes, weights, metrics and checkpoint. Disk errors
    (a full disk, a read-only folder) become TrainingError naming what was kept."""

    def __init__(self, run: RunDir) -> None:
        self.run = run

    def existing_state(self, recipe: Recipe, resume: bool, force: bool, console: Console) -> dict | None:
        """The training state to continue from (``resume``), or None for a new run. A directory that
        holds a run is never overwritten without ``force``; a resumed run must keep its recipe (but for
        ``RESUMABLE_CHANGES``)."""
        run = self.run
        if not run.checkpoint.is_file():
            if resume and run.has_weights() and not force:
                raise TrainingError(
                    f"cannot resume {run.path}: its checkpoint {run.checkpoint} is gone, but it holds trained weights "
                    f"({', '.join(p.name for p in run.existing_weights())}), which a new run would overwrite; "
                    f"restore the checkpoint, choose another run directory with --out, or pass --force to start over there"
                )
            if run.path.exists() and not run.path.is_dir():
                raise TrainingError(f"--out {run.path} is a file, not a run directory")
            if not resume and run.holds_a_run() and not force:
                raise TrainingError(
                    f"{run.path} already holds a run ({', '.join(p.name for p in run.existing_weights()) or run.recipe.name}); "
                    f"continue it with --resume, choose another run directory with --out, or pass --force to replace it"
                )
            if resume:
                console.print(f"no checkpoint in {run.path}: starting a new run there")
            return None
        if not resume:
            if force:
                return None
            raise TrainingError(
                f"{run.path} already holds a run ({run.checkpoint}); continue it with --resume, "
                f"or choose another run directory with --out (--force replaces it)"
            )
        state = load_checkpoint_state(run.checkpoint)
        saved = recipe_from_dict(state["recipe"], str(run.checkpoint))
        changed = _diff(saved.to_dict(), recipe.to_dict())
        refused = [k for k in changed if k not in RESUMABLE_CHANGES]
        if refused:
            detail = "; ".join(f"{k}: {changed[k][0]!r} -> {changed[k][1]!r}" for k in refused)
            raise TrainingError(
                f"cannot resume {run.path}: the recipe differs from the run's ({detail}). Resume with the "
                f"run's own recipe (`edgeinc train {run.path} --resume`, after undoing the edit to "
                f"{run.recipe.name} if you made one) or start a new run with --out"
            )
        return state

    def write_run_files(self, recipe: Recipe, classes: list[str], history: list[dict]) -> None:
        with self._disk("the run's recipe and classes"):
            self.run.path.mkdir(parents=True, exist_ok=True)
            for folder in (self.run.path, self.run.checkpoint.parent):  # a killed run's half-written files
                remove_stale_temporaries(folder)
            atomic_write_text(self.run.path / RESOLVED_NAME, recipe.to_yaml())
            atomic_write_json(self.run.classes, classes)
            if history:  # a resumed run: metrics.csv must match the checkpoint
                write_metrics_csv(self.run.metrics, history)

    def save_weights(self, net: torch.nn.Module, ema: torch.nn.Module | None, classes: list[str], recipe: Recipe) -> None:
        meta = {"edgeinc.labels": json.dumps(classes), "edgeinc.recipe": json.dumps(recipe.to_dict())}
        with self._disk("the weights"):
            save_weights(net, self.run.weights("model"), meta)
            if ema is not None:
                save_weights(ema, self.run.weights("ema"), meta)

    def save_metrics(self, history: list[dict]) -> None:
        with self._disk("metrics.csv"):
            write_metrics_csv(self.run.metrics, history)

    def save_state(self, state: dict[str, Any]) -> None:
        with self._disk("the checkpoint"):
            save_checkpoint(self.run.checkpoint, state)

    def _disk(self, what: str):
        return _DiskErrors(self.run, what)


class _DiskErrors:
    """OSError while writing -> TrainingError naming the file system problem and the last good checkpoint."""

    def __init__(self, run: RunDir, what: str) -> None:
        self.run, self.what = run, what

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, error, _tb) -> bool:
        if error is None or not isinstance(error, OSError):
            return False
        reasons = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is exceeded",
                   errno.EROFS: "the file system is read-only", errno.EACCES: "permission denied"}
        why = reasons.get(error.errno, error.strerror or str(error))
        kept = (f"the last good checkpoint {self.run.checkpoint} is kept" if self.run.checkpoint.is_file()
                else "no checkpoint was written yet")
        raise TrainingError(f"cannot write {self.what} in {self.run.path}: {why}; {kept} (atomic writes: nothing "
                            f"half-written was left). Free space, then resume with `edgeinc train {self.run.path} --resume`") from error


def _diff(old: dict, new: dict, prefix: str = "") -> dict[str, tuple[Any, Any]]:
    out: dict[str, tuple[Any, Any]] = {}
    for key in old.keys() | new.keys():
        a, b, path = old.get(key), new.get(key), f"{prefix}{key}"
        if isinstance(a, dict) and isinstance(b, dict):
            out.update(_diff(a, b, path + "."))
        elif a != b:
            out[path] = (a, b)
    return out
