"""The model registry: ``create_model(name, **kwargs)`` and ``list_models()``."""

from __future__ import annotations

import dataclasses
import os

from ..registry import Registry
from .inception_v3 import InceptionV3, StemSpec, VariantConfig

# name -> builder; meta is the variant's VariantConfig (input size, preprocessing, grids, ...)
MODELS: Registry = Registry("model")


def _register_variant(cfg: VariantConfig) -> None:
    def build(**kwargs) -> InceptionV3:
        stem = kwargs.pop("stem", cfg.stem.stem)
        variant = dataclasses.replace(cfg, stem=dataclasses.replace(cfg.stem, stem=stem))
        return InceptionV3(
            first_conv_stride=cfg.stem.first_conv_stride,
            first_maxpool=cfg.stem.first_maxpool,
            stem=stem,
            variant=variant,
            **kwargs,
        )

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


def list_models() -> list[str]:
    return MODELS.names()


def get_variant(name: str) -> VariantConfig:
    return MODELS.meta(name)


def create_model(name: str, checkpoint_path: str | os.PathLike | None = None, **kwargs) -> InceptionV3:
    """Build a registered variant. Options: num_classes, aux_logits, aux_bn, dropout,
    depth_multiplier, min_depth, stem ("factorized" | "7x7"), in_chans.

    ``checkpoint_path`` loads weights (safetensors or a plain state dict; never unpickles code).
    """
    model = MODELS.get(name)(**kwargs)
    if checkpoint_path is not None:
        from .weights import load_checkpoint

        load_checkpoint(model, checkpoint_path)
    return model
