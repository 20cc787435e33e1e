"""COCO detection metrics from pycocotools' COCOeval: the one AP definition everyone compares against,
fed a COCO results list. Nothing here computes AP itself.

pycocotools is an optional extra (``pip install 'edgeinc[detect]'``), imported when an evaluation runs.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import io
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .coco import CocoDataset

# COCOeval.stats, in its order (summarize(): maxDets 100 unless named; areas small < 32^2 <= medium < 96^2).
STAT_NAMES = ("AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large",
              "AR1", "AR10", "AR100", "AR_small", "AR_medium", "AR_large")


@dataclass(frozen=True)
class CocoMetrics:
    """COCO box metrics as fractions (0-1). A metric is None where COCOeval reports -1: no ground truth
    in that area range among the evaluated images. ``per_class``: category name -> AP@[.5:.95] the way
    COCOeval.summarize averages it (over the valid entries of its precision array for that category)."""

    stats: dict[str, float | None]
    per_class: dict[str, float | None]
    images: int  # images evaluated
    ground_truth: int  # non-crowd ground-truth boxes in them
    detections: int
    summary: str  # COCOeval.summarize()'s table, as it prints it
    evaluator: str  # "pycocotools 2.0.11"
    max_dets: tuple[int, ...] = (1, 10, 100)
    notes: tuple[str, ...] = field(default_factory=tuple)

    def __getitem__(self, name: str) -> float | None:
        return self.stats[name]

    def to_dict(self) -> dict[str, Any]:
        out = {**self.stats}
        out.update({k: v for k, v in asdict(self).items() if k != "stats"})
        out["max_dets"] = list(self.max_dets)
        out["notes"] = list(self.notes)
        return out


def _pycocotools() -> tuple[Any, Any]:
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError:
        raise ImportError("COCO evaluation needs pycocotools: pip install 'edgeinc[detect]' (pycocotools)") from None
    return COCO, COCOeval


def _ground_truth(coco: CocoDataset, COCO: Any) -> Any:
    """A pycocotools COCO object for the annotation file. Annotation ids are renumbered 1..N: COCOeval
    takes a matched ground truth's id 0 for 'unmatched', and the COCO format allows id 0."""
    dataset = {
        "images": [{"id": i.id, "file_name": i.file_name, "width": i.width, "height": i.height} for i in coco.images],
        "categories": [{"id": c.id, "name": c.name} for c in coco.categories],
        "annotations": [{"id": k + 1, "image_id": a.image_id, "category_id": a.category_id, "bbox": list(a.bbox),
                         "area": a.area, "iscrowd": int(a.iscrowd)} for k, a in enumerate(coco.annotations)],
    }
    gt = COCO()
    gt.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        gt.createIndex()
    return gt


def coco_evaluate(
    annotations: CocoDataset,
    detections: Sequence[dict[str, Any]],
    image_ids: Sequence[int] | None = None,
    class_agnostic: bool = False,
) -> CocoMetrics:
    """Box AP/AR of ``detections`` (COCO results: ``image_id``, ``category_id``, ``bbox`` [x, y, w, h],
    ``score``) against ``annotations``, with pycocotools' COCOeval (iouType "bbox", its default
    parameters: IoU 0.50:0.05:0.95, at most 100 detections per image for AP).

    ``image_ids``: evaluate on these images only (default: every image of the annotation file).
    ``class_agnostic``: COCOeval's ``useCats = 0`` (a detection matches a ground truth of any category:
    how well objects are found, whatever class they are given); ``per_class`` is then empty.
    Detections must name images and categories of the annotation file (ValueError otherwise).
    """
    COCO, COCOeval = _pycocotools()
    known_images = {i.id for i in annotations.images}
    ids = sorted(known_images if image_ids is None else set(image_ids))
    if unknown := sorted(set(ids) - known_images):
        raise ValueError(f"{annotations.source}: no image has id {unknown[0]} (images to evaluate must be listed there)")
    categories = {c.id for c in annotations.categories}
    for i, d in enumerate(detections):
        if d.get("image_id") not in known_images:
            raise ValueError(f"detection {i}: image_id {d.get('image_id')!r} is not an image of {annotations.source}")
        if d.get("category_id") not in categories:
            raise ValueError(f"detection {i}: category_id {d.get('category_id')!r} is not a category of {annotations.source}")
    gt = _ground_truth(annotations, COCO)
    with contextlib.redirect_stdout(io.StringIO()):
        if detections:
            dt = gt.loadRes([dict(d) for d in detections])  # loadRes adds ids and areas to what it gets
        else:  # loadRes refuses an empty list; an empty result set is a valid (zero) answer
            dt = COCO()
            dt.dataset = {"images": gt.dataset["images"], "categories": gt.dataset["categories"], "annotations": []}
            dt.createIndex()
        evaluator = COCOeval(gt, dt, iouType="bbox")
        evaluator.params.imgIds = ids
        evaluator.params.useCats = 0 if class_agnostic else 1
        evaluator.evaluate()
        evaluator.accumulate()
    text = io.StringIO()
    with contextlib.redirect_stdout(text):
        evaluator.summarize()
    stats = {name: (None if v < 0 else float(v)) for name, v in zip(STAT_NAMES, evaluator.stats)}
    # Per category: the same average summarize() takes for AP (all IoUs, area "all", the largest maxDets).
    precision = evaluator.eval["precision"]  # [T IoUs, R recalls, K categories, A areas, M maxDets]
    names = {c.id: c.name for c in annotations.categories}
    per_class: dict[str, float | None] = {}
    for k, cid in enumerate(evaluator.params.catIds if not class_agnostic else []):
        p = precision[:, :, k, 0, -1]
        per_class[names[cid]] = float(np.mean(p[p > -1])) if (p > -1).any() else None
    wanted = set(ids)
    ground_truth = sum(1 for a in annotations.annotations if a.image_id in wanted and not a.iscrowd)
    try:
        version = importlib.metadata.version("pycocotools")
    except importlib.metadata.PackageNotFoundError:
        version = "?"
    return CocoMetrics(stats, per_class, len(ids), ground_truth, sum(1 for d in detections if d["image_id"] in wanted),
                       text.getvalue().rstrip(), f"pycocotools {version}", tuple(evaluator.params.maxDets))
