"""What every later step (eval, export, bench, the patch classifier) starts from: a run directory or a
weights file, resolved to a model plus the labels and recipe it was trained with.

The contract (written by training, read here):
  RUN_DIR/ema.safetensors    EMA weights (preferred: the paper evaluates the running average)
  RUN_DIR/model.safetensors  raw weights
Each is a ``save_weights`` file whose metadata holds ``edgeinc.model`` (how to rebuild it),
``edgeinc.labels`` (JSON list of class names, label order) and ``edgeinc.recipe`` (JSON, resolved recipe).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..utils.io import sha256_file
from .inception_v3 import InceptionV3
from .weights import CheckpointError, load_weights, read_metadata

WEIGHT_FILES = {"ema": "ema.safetensors", "model": "model.safetensors"}


@dataclass
class ModelSource:
    model: InceptionV3
    weights_path: Path
    sha256: str
    labels: list[str] | None = None
    recipe: dict | None = None
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.model.variant.name


def resolve_weights_path(path: str | os.PathLike, prefer: str = "ema") -> Path:
    """A run directory -> its EMA (or raw) weights file; a file -> itself. Errors name what was looked for."""
    path = Path(path)
    if path.is_dir():
        order = [prefer] + [k for k in WEIGHT_FILES if k != prefer]
        for kind in order:
            candidate = path / WEIGHT_FILES[kind]
            if candidate.is_file():
                return candidate
        wanted = " or ".join(WEIGHT_FILES[k] for k in order)
        raise CheckpointError(f"{path}: not a run directory (no {wanted} in it)")
    if not path.is_file():
        raise CheckpointError(f"{path}: no such run directory or weights file")
    return path


def load_source(path: str | os.PathLike, prefer: str = "ema") -> ModelSource:
    if prefer not in WEIGHT_FILES:
        raise ValueError(f"prefer must be one of {list(WEIGHT_FILES)}, got {prefer!r}")
    weights = resolve_weights_path(path, prefer)
    if weights.suffix != ".safetensors":
        raise CheckpointError(f"{weights}: expected an edgeinc .safetensors weights file")
    meta = read_metadata(weights)
    model = load_weights(weights).eval()
    try:
        labels = json.loads(meta["edgeinc.labels"]) if "edgeinc.labels" in meta else None
        recipe = json.loads(meta["edgeinc.recipe"]) if "edgeinc.recipe" in meta else None
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{weights}: metadata is not valid JSON ({e})") from e
    if labels is not None and len(labels) != model.num_classes:
        raise CheckpointError(
            f"{weights}: edgeinc.labels has {len(labels)} names but the model has {model.num_classes} classes"
        )
    return ModelSource(model, weights, sha256_file(weights), labels, recipe, meta)
