"""The full training state in one atomically written file, read back without unpickling code.

``checkpoints/last.pt`` holds only tensors and plain Python values (``torch.load(weights_only=True)``
accepts it): model, EMA, optimizer, scaler, the schedule's position, the RNG state of every rank
(python, NumPy, torch CPU, CUDA), the position in the data (epoch, step in epoch), the per-epoch
history and the resolved recipe and class list.
"""

from __future__ import annotations

import io
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..models import CheckpointError
from ..utils.io import atomic_open

FORMAT = "edgeinc.train/1"
CHECKPOINT_DIR = "checkpoints"
LAST = "last.pt"


def checkpoint_path(run_dir: str | os.PathLike) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR / LAST


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
        raise CheckpointError(f"{path}: not a readable edgeinc training checkpoint ({type(e).__name__}: {e})") from e
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an edgeinc training checkpoint (expected format {FORMAT!r})")
    return state
