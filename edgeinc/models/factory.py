"""The model registry: ``create_model(name, **kwargs)`` and ``list_models()``."""

from __future__ import annotations

import dataclasses
import os

from pydantic import ValidationError

from ..config import ModelOptions
from ..registry import Registry
from .inception_v3 import InceptionV3, StemSpec, VariantConfig

# name -> builder; meta is the variant's VariantConfig (input size, preprocessing, grids, ...)
MODELS: Registry = Registry("model")


def _register_variant(cfg: VariantConfig) -> None:
    def build(num_classes: int = 1000, options: ModelOptions | None = None) -> InceptionV3:
        options = options or ModelOptions()
        variant = resolve_variant(cfg.name, options)
        return InceptionV3(num_classes, first_conv_stride=cfg.stem.first_conv_stride,
                           first_maxpool=cfg.stem.first_maxpool, options=options, variant=variant)

    build.__doc__ = cfg.description
    MODELS.register(cfg.name, meta=cfg)(build)


# Section 9, Table 2: three receptive fields at almost the same cost; only the first layers change.
for _cfg in (
    VariantConfig(
        "inception_v3", 299, StemSpec(first_conv_stride=2, first_maxpool=True),
        "the released Inception-v3, 299x299 input", paper_top1=76.6,
    ),
    VariantConfig(
        "inception_v3_151", 151, StemSpec(first_conv_stride=1, first_maxpool=True),
        "151x151 receptive field: first conv stride 1", paper_top1=76.4,
    ),
    VariantConfig(
        "inception_v3_79", 79, StemSpec(first_conv_stride=1, first_maxpool=False),
        "79x79 receptive field: first conv stride 1, first max-pool removed", paper_top1=75.2,
    ),
):
    _register_variant(_cfg)


def resolve_variant(name: str, options: ModelOptions | None = None) -> VariantConfig:
    """The registered variant as ``options`` build it: their stem, and their input size where set (its
    grids and preprocessing follow)."""
    cfg: VariantConfig = MODELS.meta(name)
    if options is None:
        return cfg
    stem = dataclasses.replace(cfg.stem, stem=options.stem)
    return dataclasses.replace(cfg, stem=stem, input_size=options.input_size or cfg.input_size)


def list_models() -> list[str]:
    return MODELS.names()


def get_variant(name: str) -> VariantConfig:
    return MODELS.meta(name)


def model_options(options: ModelOptions | None = None, **overrides) -> ModelOptions:
    """``options`` (default: ModelOptions()) with ``overrides`` applied and validated; a bad value raises
    ValueError naming the option."""
    data = {**(options or ModelOptions()).model_dump(), **overrides}
    try:
        return ModelOptions(**data)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        hint = f" (options: {', '.join(ModelOptions.model_fields)})" if first["type"] == "extra_forbidden" else ""
        raise ValueError(f"model option {where}: {first['msg']} (got {first.get('input')!r}){hint}") from None


def create_model(
    name: str,
    checkpoint_path: str | os.PathLike | None = None,
    *,
    num_classes: int = 1000,
    options: ModelOptions | None = None,
    **overrides,
) -> InceptionV3:
    """Build a registered variant with ``options`` (edgeinc.config.ModelOptions) and/or single options
    as keywords: depth_multiplier, min_depth, aux_logits, aux_bn, dropout, stem ("factorized" | "7x7"),
    in_chans.

    ``checkpoint_path`` loads weights (safetensors or a plain state dict; never unpickles code).
    """
    model = MODELS.get(name)(num_classes, model_options(options, **overrides))
    if checkpoint_path is not None:
        from .weights import load_checkpoint

        load_checkpoint(model, checkpoint_path)
    return model
