"""The run directory: what training writes and every later step reads, in one place.

    RUN/recipe.resolved.yaml   the fully resolved recipe
    RUN/classes.json           class names in label order
    RUN/model.safetensors      raw weights  } save_weights(..., metadata={"edgeinc.labels", "edgeinc.recipe"}),
    RUN/ema.safetensors        EMA weights  }   written at every epoch end
    RUN/checkpoints/last.pt    full training state, at epoch ends and every train.checkpoint_every_steps
    RUN/metrics.csv            one row per epoch
    RUN/tb/                    TensorBoard logs

A *model source* (what eval, export, bench, the runners and the patch classifier accept) is a run
directory holding weights, or one ``.safetensors`` weights file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

WeightsKind = Literal["ema", "model"]
WEIGHT_FILES: dict[str, str] = {"ema": "ema.safetensors", "model": "model.safetensors"}


@dataclass(frozen=True)
class RunDir:
    path: Path

    def __init__(self, path: str | os.PathLike) -> None:
        object.__setattr__(self, "path", Path(path))

    @property
    def recipe(self) -> Path:
        return self.path / "recipe.resolved.yaml"

    @property
    def classes(self) -> Path:
        return self.path / "classes.json"

    @property
    def checkpoint(self) -> Path:
        return self.path / "checkpoints" / "last.pt"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.csv"

    @property
    def tensorboard(self) -> Path:
        return self.path / "tb"

    def weights(self, kind: WeightsKind) -> Path:
        return self.path / WEIGHT_FILES[kind]

    def existing_weights(self) -> list[Path]:
        return [self.weights(k) for k in WEIGHT_FILES if self.weights(k).is_file()]

    def has_weights(self) -> bool:
        return bool(self.existing_weights())

    def holds_a_run(self) -> bool:
        """Anything training wrote that a new run would overwrite."""
        return self.has_weights() or self.checkpoint.is_file() or self.recipe.is_file() or self.metrics.is_file()

    def find_weights(self, prefer: WeightsKind = "ema") -> Path | None:
        order = [prefer] + [k for k in WEIGHT_FILES if k != prefer]
        return next((self.weights(k) for k in order if self.weights(k).is_file()), None)


def is_model_source(path: str | os.PathLike) -> bool:
    """A run directory with weights, or a ``.safetensors`` weights file."""
    path = Path(path)
    return (path.is_file() and path.suffix == ".safetensors") or (path.is_dir() and RunDir(path).has_weights())
