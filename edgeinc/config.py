"""The typed training recipe: YAML sections ``model``, ``data``, ``train`` validated by pydantic.

Unknown keys and wrong types are errors that name where the value came from (the file, a base file,
or a ``--set`` override) and the key path, and suggest the closest known key::

    recipes/x.yaml: train.bach_size: unknown key; did you mean 'batch_size'?

A recipe may inherit from another with a top-level ``base: ../paper.yaml`` (relative to the file):
mappings are merged key by key, everything else is replaced. ``--set section.key=value`` overrides
any key after inheritance; the value is read as a YAML scalar (``true``, ``null``, ``0.1``, ``[1, 2]``).

The defaults of ``TrainSection`` are the paper's method (section 8 of Szegedy et al. 2015, TF-slim's
``train_image_classifier``), so a recipe only has to name a model and a data folder.
Adding a section (``export``, ``bench``) is one field on ``Recipe``.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

RESOLVED_NAME = "recipe.resolved.yaml"
# The shipped recipes live inside the package (a non-editable install has them too): `edgeinc train lowres`.
RECIPES_DIR = Path(__file__).resolve().parent / "recipes"


class RecipeError(ValueError):
    """A recipe that cannot be read or validated; the message names the file and the key path."""


class Section(BaseModel):
    # Every float must be finite: `--set train.lr=.inf` passed a `> 0` check and saved NaN weights.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class ModelOptions(Section):
    """How a registered model is built, beside its name and class count: the one set of options and
    defaults shared by the recipe (``model:``), ``create_model``, the model itself and the metadata its
    weights carry (so ``load_weights`` rebuilds it)."""

    depth_multiplier: float = Field(1.0, gt=0, description="TF-slim: every width x this")
    min_depth: int = Field(16, ge=1, description="TF-slim: no width below this")
    aux_logits: bool = True
    aux_bn: bool = Field(True, description="Table 3 'BN-auxiliary': batch-normalized aux classifier FC")
    dropout: float = Field(0.2, ge=0, lt=1, description="before the classifier; TF-slim dropout_keep_prob 0.8")
    stem: Literal["factorized", "7x7"] = Field("factorized", description="7x7: Table 3's Inception-v2 stem ablation")
    in_chans: int = Field(3, ge=1)
    input_size: int | None = Field(None, ge=16, description="null: the variant's; else the input side to train and "
                                   "evaluate at (Table 2's naive baseline: inception_v3 fed 79-pixel patches)")


class ModelSection(ModelOptions):
    name: str = Field(description="registered model: inception_v3 | inception_v3_151 | inception_v3_79")
    num_classes: int | None = Field(None, ge=1, description="null: the number of classes in the training data")

    @field_validator("name")
    @classmethod
    def _registered(cls, name: str) -> str:
        from .models import MODELS  # the registry imports this module for ModelOptions

        MODELS.entry(name)  # raises with the closest names suggested
        return name

    @property
    def options(self) -> ModelOptions:
        return ModelOptions(**self.model_dump(include=set(ModelOptions.model_fields)))


class DataSection(Section):
    root: str = Field(description="ImageNet-layout folder: ROOT/train/<class>/*, ROOT/val/<class>/*")
    workers: int = Field(4, ge=0, description="loader processes per training process")
    on_bad_image: Literal["skip", "fail"] = "skip"
    scale: tuple[float, float] = Field((0.08, 1.0), description="random-resized-crop area range")
    decode: Literal["cpu", "gpu"] = Field("cpu", description="gpu: JPEG decode + augmentation on the GPU (nvJPEG)")
    eval_batch_size: int | None = Field(None, ge=1, description="per process; null: the training batch")

    @field_validator("scale")
    @classmethod
    def _scale_range(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not 0 < v[0] <= v[1] <= 1:
            raise ValueError(f"must satisfy 0 < min <= max <= 1, got {list(v)}")
        return v


class TrainSection(Section):
    epochs: int = Field(100, ge=1)
    batch_size: int = Field(1600, ge=1, description="GLOBAL batch, summed over all processes (paper: 50 x 32)")
    micro_batch_size: int | Literal["auto"] | None = Field(
        "auto", description="images per forward/backward on each process; the global batch is accumulated from "
        "micro-batches (BatchNorm normalises each, as each of the paper's replicas did over 32). auto: the whole "
        "per-process batch on CPU; on CUDA the largest divisor that fits in memory. null: no accumulation")
    lr: float = Field(0.045, gt=0, description="learning rate at the global batch lr_reference_batch")
    lr_reference_batch: int = Field(1600, ge=1, description="lr is scaled by batch_size / lr_reference_batch")
    lr_decay: float = Field(0.94, gt=0, le=1)
    lr_decay_epochs: float = Field(2.0, gt=0)
    lr_staircase: bool = Field(True, description="true: drop every lr_decay_epochs (TF-slim); false: smooth")
    warmup_epochs: float = Field(0.0, ge=0, description="linear warm-up from 0 (not in the paper)")
    optimizer: Literal["rmsprop_tf", "momentum", "adamw"] = Field(
        "rmsprop_tf", description="rmsprop_tf: the paper; momentum: Table 3's baseline; adamw: short runs"
    )
    momentum: float = Field(0.9, ge=0, lt=1)
    rmsprop_decay: float = Field(0.9, gt=0, lt=1)
    rmsprop_eps: float = Field(1.0, gt=0, description="TF semantics: inside the square root")
    weight_decay: float = Field(4e-5, ge=0, description="L2 on conv and FC weights (TF-slim's regularizer)")
    grad_clip_norm: float | None = Field(2.0, gt=0, description="global-norm clipping; null: off")
    label_smoothing: float = Field(0.1, ge=0, lt=1)
    aux_weight: float = Field(0.4, ge=0)
    bn_momentum: float = Field(0.0003, gt=0, le=1, description="PyTorch convention: 1 - TF decay (0.9997)")
    ema_decay: float | None = Field(0.9999, gt=0, lt=1, description="weight EMA for evaluation; null: off")
    ema_warmup: bool = True
    ema_warmup_power: float = Field(0.75, gt=0, description="timm ModelEmaV3: decay = 1 - (1 + step)^-power")
    seed: int = Field(0, ge=0)
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N")
    precision: Literal["auto", "fp32", "bf16", "fp16", "fp64"] = Field(
        "auto", description="auto: bf16 autocast on CUDA, else fp32; fp64: slow, for numerical checks"
    )
    channels_last: bool | Literal["auto"] = Field("auto", description="auto: on CUDA only")
    compile: bool | Literal["auto"] = Field("auto", description="torch.compile the model; auto: on CUDA only")
    sync_bn: bool = False
    checkpoint_every_steps: int = Field(1000, ge=0, description="0: at epoch ends only")
    log_every_steps: int = Field(50, ge=1)
    eval_every_epochs: int = Field(1, ge=0, description="0: evaluate only after the last epoch")

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if v in ("auto", "cpu", "cuda") or (v.startswith("cuda:") and v[5:].isdigit()):
            return v
        raise ValueError(f"must be auto, cpu, cuda or cuda:N, got {v!r}")


class Recipe(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    description: str = ""
    model: ModelSection
    data: DataSection
    train: TrainSection = TrainSection()

    @model_validator(mode="after")
    def _consistent(self) -> Recipe:
        if self.train.optimizer == "momentum" and self.train.momentum == 0:
            raise ValueError("train.momentum must be > 0 with optimizer 'momentum'")
        micro = self.train.micro_batch_size
        if isinstance(micro, int) and (micro < 1 or micro > self.train.batch_size):
            raise ValueError(f"train.micro_batch_size must be between 1 and train.batch_size ({self.train.batch_size}), "
                             f"got {micro}")
        return self

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def with_overrides(self, overrides: list[str]) -> Recipe:
        """A copy with ``section.key=value`` overrides applied (validated like a file)."""
        data, origins = self.to_dict(), {}
        _apply_overrides(data, origins, overrides)
        return _validate(data, origins, "<recipe>")


# ------------------------------------------------------------------------------------------------
# Loading: inheritance, overrides, and errors that say where a bad key came from
# ------------------------------------------------------------------------------------------------

Origins = dict[tuple[str, ...], str]  # key path -> the file or "--set k=v" that set it


def shipped_recipes() -> dict[str, Path]:
    """Name -> file of every recipe shipped with edgeinc (``ablations/2_rmsprop`` for the Table 3 chain)."""
    return {str(p.relative_to(RECIPES_DIR).with_suffix("")): p for p in sorted(RECIPES_DIR.rglob("*.yaml"))}


def find_recipe(name_or_path: str | os.PathLike) -> Path:
    """A recipe file: an existing path, or the name of a shipped recipe (``lowres``, ``paper``, ...)."""
    path = Path(name_or_path)
    if path.exists() or path.suffix in (".yaml", ".yml") or len(path.parts) > 2:
        return path
    shipped = shipped_recipes()
    if str(name_or_path) in shipped:
        return shipped[str(name_or_path)]
    close = difflib.get_close_matches(str(name_or_path), list(shipped), n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise RecipeError(f"{name_or_path}: no such recipe file, and not a shipped recipe ({hint}shipped: {', '.join(shipped)})")


def load_recipe(path: str | os.PathLike, overrides: list[str] | None = None) -> Recipe:
    """Read a YAML recipe (a path or a shipped recipe's name, following ``base:``), apply ``--set``
    overrides and validate."""
    origins: Origins = {}
    data = _read_with_bases(find_recipe(path), origins, chain=())
    _apply_overrides(data, origins, overrides or [])
    return _validate(data, origins, str(path))


def recipe_from_dict(data: dict[str, Any], source: str = "<recipe>") -> Recipe:
    """Validate a recipe held as a dict (e.g. the one embedded in a checkpoint)."""
    return _validate(data, {}, source)


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise RecipeError(f"{path}: no such recipe file")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise RecipeError(f"{path}: not a text file in UTF-8 (byte {e.start}: {e.reason}); a recipe is YAML") from None
    except OSError as e:
        raise RecipeError(f"{path}: cannot read it ({e.strerror})") from None
    except yaml.YAMLError as e:
        raise RecipeError(f"{path}: not valid YAML: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise RecipeError(f"{path}: a recipe is a mapping of sections (model, data, train), got {type(data).__name__}")
    return data


def _read_with_bases(path: Path, origins: Origins, chain: tuple[Path, ...]) -> dict[str, Any]:
    resolved = path.resolve()
    if resolved in chain:
        raise RecipeError(f"{path}: 'base' chain loops: {' -> '.join(map(str, chain + (resolved,)))}")
    data = _read_yaml(path)
    base = data.pop("base", None)
    merged: dict[str, Any] = {}
    if base is not None:
        if not isinstance(base, str):
            raise RecipeError(f"{path}: base: must be a path to another recipe, got {base!r}")
        merged = _read_with_bases(Path(os.path.normpath(path.parent / base)), origins, chain + (resolved,))
    _merge(merged, data, origins, str(path), ())
    return merged


def _merge(dst: dict, src: dict, origins: Origins, source: str, prefix: tuple[str, ...]) -> None:
    for key, value in src.items():
        loc = prefix + (str(key),)
        if isinstance(value, dict) and isinstance(dst.get(key), dict):
            _merge(dst[key], value, origins, source, loc)
        else:
            dst[key] = value
            _mark(origins, loc, value, source)


def _mark(origins: Origins, loc: tuple[str, ...], value: Any, source: str) -> None:
    for old in [k for k in origins if k[: len(loc)] == loc]:
        del origins[old]
    origins[loc] = source
    if isinstance(value, dict):
        for key, sub in value.items():
            _mark(origins, loc + (str(key),), sub, source)


def _apply_overrides(data: dict, origins: Origins, overrides: list[str]) -> None:
    for item in overrides:
        source = f"--set {item}"
        key, sep, text = item.partition("=")
        if not sep or not key or any(not part for part in key.split(".")):
            raise RecipeError(f"{source}: expected section.key=value, e.g. train.lr=0.1")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise RecipeError(f"{source}: value is not a YAML scalar: {e}") from None
        parts = key.split(".")
        node = data
        for i, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise RecipeError(f"{source}: {'.'.join(parts[: i + 1])} is a value, not a section")
            node = child
        node[parts[-1]] = value
        _mark(origins, tuple(parts), value, source)


def _validate(data: dict[str, Any], origins: Origins, default_source: str) -> Recipe:
    try:
        return Recipe.model_validate(data)
    except ValidationError as e:
        lines = [_describe(err, origins, default_source) for err in e.errors()]
        raise RecipeError("\n".join(lines)) from None


def _describe(err: dict, origins: Origins, default_source: str) -> str:
    loc = tuple(str(p) for p in err["loc"])
    # Tuple fields report the element index; name the key itself.
    key_loc = tuple(p for p in loc if not p.isdigit())
    source = default_source
    for n in range(len(key_loc), 0, -1):
        if key_loc[:n] in origins:
            source = origins[key_loc[:n]]
            break
    where = ".".join(key_loc) or "(top level)"
    kind = err["type"]
    if kind == "extra_forbidden":
        known = _known_keys(key_loc[:-1])
        close = difflib.get_close_matches(key_loc[-1], known, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]!r}?" if close else f"known keys: {', '.join(known)}"
        return f"{source}: {where}: unknown key; {hint}"
    if kind == "missing":
        return f"{source}: {where}: required key is missing"
    msg = err["msg"].removeprefix("Value error, ")
    if kind != "value_error" and "input" in err and kind not in ("model_type", "dict_type"):
        return f"{source}: {where}: {msg} (got {err['input']!r})"
    return f"{source}: {where}: {msg}"


def _known_keys(loc: tuple[str, ...]) -> list[str]:
    cls: type[BaseModel] = Recipe
    for part in loc:
        field = cls.model_fields.get(part)
        if field is None or not (isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)):
            return []
        cls = field.annotation
    return list(cls.model_fields)
