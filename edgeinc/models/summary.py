"""The model table of ``edgeinc models``: every figure computed from the modules."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from .complexity import count_macs, count_parameters
from .factory import MODELS, create_model


@dataclass(frozen=True)
class ModelSummary:
    name: str
    description: str
    input_size: int
    min_input_size: int
    params: int  # without the auxiliary head (the inference graph)
    params_with_aux: int  # with the default BN-auxiliary head
    macs: int  # multiply-adds of one image at input_size
    grids: tuple[int, int, int]  # sides of the Inception grids (35/17/8 at 299)
    paper_top1: float | None

    def to_dict(self) -> dict:
        return asdict(self)


def summarize(name: str, num_classes: int = 1000, **kwargs) -> ModelSummary:
    # Shapes are all the figures need: a meta-device model skips allocating and initializing weights.
    with torch.device("meta"):
        model = create_model(name, num_classes=num_classes, **kwargs)
    v = model.variant
    return ModelSummary(
        name=name,
        description=v.description,
        input_size=v.input_size,
        min_input_size=v.min_input_size,
        params=count_parameters(model, include_aux=False),
        params_with_aux=count_parameters(model, include_aux=True),
        macs=count_macs(model, v.input_size),
        grids=v.grids,
        paper_top1=v.paper_top1,
    )


def summarize_all(**kwargs) -> list[ModelSummary]:
    return [summarize(name, **kwargs) for name in MODELS.names()]
