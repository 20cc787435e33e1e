"""What every later step (eval, export, bench, the patch classifier) starts from: a run directory or a
weights file (edgeinc.rundir), resolved to a model plus the labels and recipe it was trained with.

A run directory's EMA weights are preferred (the paper evaluates the running average). Each weights
file is a ``save_weights`` file whose metadata holds ``edgeinc.model`` (how to rebuild it),
``edgeinc.labels`` (JSON list of class names, label order) and ``edgeinc.recipe`` (JSON, resolved recipe).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..rundir import WEIGHT_FILES, RunDir
from ..utils.io import sha256_file
from .inception_v3 import InceptionV3
from .weights import CheckpointError, load_weights, read_metadata



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
        found = RunDir(path).find_weights(prefer)
        if found is None:
            raise CheckpointError(f"{path}: not a run directory (no {' or '.join(WEIGHT_FILES.values())} in it)")
        return found
    if not path.is_file():
        raise CheckpointError(f"{path}: no such run directory or weights file")
    return path


def _check_run_recipe(path: Path, weights: Path, variant: str) -> None:
    """A run directory's weights must be of the model its recipe trains (files copied between runs are not)."""
    import yaml

    recipe = RunDir(path).recipe if path.is_dir() else None
    if recipe is None or not recipe.is_file():
        return
    try:
        trained = ((yaml.safe_load(recipe.read_text(encoding="utf-8")) or {}).get("model") or {}).get("name")
    except (OSError, UnicodeDecodeError, yaml.YAMLError, AttributeError):
        return  # the recipe's own problems are reported where it is read as a recipe
    if trained and trained != variant:
        raise CheckpointError(f"{weights} holds {variant} weights, but the run's recipe {recipe} trains {trained}: "
                              f"the files come from different runs")


def nonfinite_tensors(model) -> list[str]:
    """Names of the floating-point parameters and buffers that hold NaN or inf."""
    return [name for name, t in model.state_dict().items() if t.is_floating_point() and not bool(t.isfinite().all())]


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
    _check_run_recipe(Path(path), weights, model.variant.name)
    bad = nonfinite_tensors(model)
    if bad:  # a diverged run's weights would still "score" a top-1 (issue 12): refuse them everywhere
        raise CheckpointError(f"{weights}: {len(bad)} weight tensor(s) hold NaN or inf (e.g. {', '.join(bad[:3])}): "
                              f"the run that wrote them diverged; use an earlier checkpoint or train again")
    return ModelSource(model, weights, sha256_file(weights), labels, recipe, meta)
