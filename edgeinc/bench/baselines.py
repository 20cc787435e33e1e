"""The paper's single-crop ImageNet baselines, printed beside measured rows and marked as published.

These are figures from the literature (reference/PAPER.md), not measurements of this project; the
Table 2 top-1 of each receptive field lives in the model registry's metadata (``paper_top1``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from ..models import MODELS


@dataclass(frozen=True)
class Baseline:
    variant: str
    source: str
    top1: float | None  # ImageNet ILSVRC-2012 val, single central crop, percent
    top5: float | None
    gmacs: float | None  # as the source reports it (the paper counts Table 3's ops differently)

    def to_dict(self) -> dict:
        return asdict(self)


def paper_baselines() -> list[Baseline]:
    rows = [
        Baseline(e.name, "paper Table 2 (receptive field)", e.meta.paper_top1, None, None)
        for e in MODELS
        if e.meta.paper_top1 is not None
    ]
    rows += [
        # Table 3, last row: Inception-v3 = v2 + RMSProp + label smoothing + factorized 7x7 + BN-aux.
        Baseline("inception_v3", "paper Table 3 (Inception-v3, BN-auxiliary)", 100 - 21.2, 100 - 5.6, 4.8),
        Baseline("inception_v3", "TF-slim checkpoint 2016_08_28", 78.0, 93.9, None),
        Baseline("inception_v3", "torchvision IMAGENET1K_V1", 77.294, 93.450, None),
        Baseline("inception_v3", "timm inception_v3.tf_in1k", 77.866, 93.644, None),
    ]
    return rows
