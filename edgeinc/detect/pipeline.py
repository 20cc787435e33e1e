"""The detector's second stage end to end: proposals -> patch classifier -> per-class NMS -> COCO
results and annotated images (-> COCO mAP against annotations).

    result = edgeinc.detect.detect("runs/quickstart", "scenes/val", proposals="sliding", out="det",
                                   eval_ann="scenes/annotations/val.json")
    result.metrics["AP50"]

The rule that turns class probabilities into detections (``score_rule``):
  ``"object"`` (default): each box gets the non-background class with the highest probability, and
      that probability (of the softmax over ALL classes, so whatever background takes lowers it) as its
      score; boxes scoring below ``score_thr`` are dropped. A box whose argmax is background can still
      be kept when its best object class clears the threshold: AP ranks by score, and a weak
      classifier's second choice is often the object.
  ``"argmax"``: boxes whose argmax over all classes is background are dropped first; the others keep
      their argmax class and its probability.
  ``"per-class"``: every box once for each non-background class with that class's probability (R-CNN's
      per-class scoring); NMS then runs per class.
A model without a ``background`` class scores every box with its argmax. Then ``torchvision.ops.
batched_nms`` per class at ``nms_iou`` (or over all classes), optionally ``suppress_inside``, and the
``max_det`` best per image.
"""

from __future__ import annotations

import io
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torchvision.ops import batched_nms, box_area, box_convert

from ..data.folder import IMAGE_EXTENSIONS, DataError, load_rgb
from ..utils.io import atomic_write_bytes, atomic_write_json
from .classifier import PatchClassifier, PatchResult, PatchScorer, check_batch_size
from .coco import CocoDataset, class_folder, read_coco
from .crops import DEFAULT_CONTEXT
from .evaluate import CocoMetrics, coco_evaluate
from .proposals import (
    PROPOSAL_METHODS,
    ProposalError,
    ProposalFile,
    SlidingWindows,
    require_opencv_contrib,
    read_proposals,
    selective_search,
)

ScoreRule = Literal["object", "argmax", "per-class"]
SCORE_RULES = ("object", "argmax", "per-class")


@dataclass(frozen=True)
class ImageDetections:
    """One image's detections (after NMS, best first): float32 ``[D, 4]`` xyxy boxes, ``[D]`` scores,
    int64 ``[D]`` labels (indices into the classifier's class names) and COCO category ids."""

    file_name: str  # relative to the images folder (posix), as an annotation file names it
    image_id: int
    size: tuple[int, int]  # (height, width)
    proposals: int  # boxes proposed
    classified: int  # of them, valid boxes that were classified
    boxes: torch.Tensor
    scores: torch.Tensor
    labels: torch.Tensor
    category_ids: torch.Tensor


@dataclass
class DetectResult:
    """What ``detect`` found and wrote."""

    images: list[ImageDetections]
    detections: list[dict[str, Any]]  # COCO results format, the content of detections.json
    categories: dict[int, str]  # category id -> class name
    class_names: tuple[str, ...]
    metrics: CocoMetrics | None
    agnostic: CocoMetrics | None  # the same detections with COCOeval's useCats=0: is there an object
    settings: dict[str, Any]
    counts: dict[str, int]
    seconds: dict[str, float]
    files: dict[str, Path] = field(default_factory=dict)  # kind -> path (nothing when out is None)

    def summary(self) -> dict[str, Any]:
        """Settings, counts, timings and categories: ``OUT/detect.json``."""
        return {"settings": self.settings, "counts": self.counts, "seconds": self.seconds,
                "categories": [{"id": k, "name": v} for k, v in self.categories.items()],
                "images": [{"id": i.image_id, "file_name": i.file_name, "proposals": i.proposals,
                            "classified": i.classified, "detections": len(i.boxes)} for i in self.images],
                "files": {k: str(v) for k, v in self.files.items()}}


def list_images(images: str | os.PathLike) -> tuple[Path, list[str]]:
    """(folder, file names relative to it) for one image file or a folder of them (searched
    recursively, hidden files skipped, sorted). DataError naming the path when there is none."""
    path = Path(images)
    if path.is_file():
        if not path.name.lower().endswith(IMAGE_EXTENSIONS):
            raise DataError(f"{path}: not an image file (extensions: {', '.join(IMAGE_EXTENSIONS)})")
        return path.parent, [path.name]
    if not path.is_dir():
        raise DataError(f"{path}: no such image file or folder")
    names = sorted(p.relative_to(path).as_posix() for p in path.rglob("*")
                   if p.is_file() and p.name.lower().endswith(IMAGE_EXTENSIONS)
                   and not any(part.startswith(".") for part in p.relative_to(path).parts))
    if not names:
        raise DataError(f"{path}: no images in this folder (extensions: {', '.join(IMAGE_EXTENSIONS)})")
    return path, names


def match_annotations(coco: CocoDataset, names: Sequence[str]) -> list[int]:
    """The annotation file's image id of each given image, matched by ``file_name`` (the relative path,
    or the bare file name when that is unique in the file). DataError naming the file and the images
    it does not list."""
    by_path = {PurePosixPath(i.file_name.replace("\\", "/")).as_posix(): i.id for i in coco.images}
    by_name: dict[str, list[int]] = {}
    for i in coco.images:
        by_name.setdefault(PurePosixPath(i.file_name.replace("\\", "/")).name, []).append(i.id)
    ids, missing = [], []
    for name in names:
        if name in by_path:
            ids.append(by_path[name])
        elif len(by_name.get(PurePosixPath(name).name, [])) == 1:
            ids.append(by_name[PurePosixPath(name).name][0])
        else:
            missing.append(name)
    if missing:
        listed = ", ".join(i.file_name for i in coco.images[:3])
        raise DataError(f"{coco.source}: images.file_name: {len(missing)} of the {len(names)} given images are not "
                        f"in this annotation file: {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''} "
                        f"(it lists {len(coco.images)} images: {listed}{' ...' if len(coco.images) > 3 else ''})")
    if len(set(ids)) != len(ids):
        raise DataError(f"{coco.source}: two given images match the same annotated image; give the folder the "
                        f"annotation file's file_name paths are relative to")
    return ids


def category_ids(class_names: Sequence[str], background: int | None, coco: CocoDataset | None) -> dict[int, int]:
    """Class index -> COCO category id. With an annotation file: the category whose name (or class
    folder name, as ``edgeinc data patches`` names folders) is the class name; without one: 1, 2, ... in
    the model's order of non-background classes. DataError naming a class the file lacks."""
    objects = [k for k in range(len(class_names)) if k != background]
    if coco is None:
        return {k: n + 1 for n, k in enumerate(objects)}
    by_name: dict[str, int] = {}
    for c in coco.categories:
        by_name.setdefault(c.name, c.id)
        by_name.setdefault(class_folder(c.name), c.id)
    missing = [class_names[k] for k in objects if class_names[k] not in by_name]
    if missing:
        raise DataError(f"{coco.source}: categories: no category for the model's class(es) {', '.join(missing)} "
                        f"(categories: {', '.join(c.name for c in coco.categories[:10])})")
    return {k: by_name[class_names[k]] for k in objects}


def score_boxes(result: PatchResult, rule: ScoreRule = "object") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Candidate detections from a PatchResult by ``rule`` (module docstring): (boxes float32 [M, 4],
    labels int64 [M], scores float32 [M]); M = N for "object" and "argmax" (less the boxes dropped),
    N x (K - 1) for "per-class". Boxes that are not valid never appear."""
    if rule not in SCORE_RULES:
        raise ValueError(f"score_rule must be one of {', '.join(SCORE_RULES)}, got {rule!r}")
    background = result.background_index
    valid = result.valid
    probs = result.probs[valid]
    boxes = result.boxes[valid]
    if background is None or rule == "argmax":
        keep = torch.ones(len(probs), dtype=torch.bool) if background is None else result.labels[valid] != background
        return boxes[keep], result.labels[valid][keep], result.scores[valid][keep]
    objects = torch.tensor([k for k in range(probs.shape[1]) if k != background], dtype=torch.int64)
    if rule == "object":
        scores, best = probs[:, objects].max(dim=1)
        return boxes, objects[best], scores
    # per-class: every box once for every object class
    count = len(objects)
    return (boxes.repeat_interleave(count, dim=0), objects.repeat(len(boxes)), probs[:, objects].reshape(-1))


def suppress_inside(boxes: torch.Tensor, inside_thr: float) -> torch.Tensor:
    """bool ``[D]``: False for each box of which more than ``inside_thr`` of its area lies inside a
    larger box of ``boxes`` (any class, any score). A sliding-window classifier that never saw views
    from inside an object as negatives scores windows within a large object as that object."""
    area = box_area(boxes)
    low = torch.max(boxes[:, None, :2], boxes[None, :, :2])
    high = torch.min(boxes[:, None, 2:], boxes[None, :, 2:])
    inter = (high - low).clamp(min=0).prod(dim=2)  # [i, j]
    inside = inter / area.clamp(min=1e-9)[:, None]  # fraction of i inside j
    return ~((inside > inside_thr) & (area[None, :] > area[:, None])).any(dim=1)


def select_detections(result: PatchResult, score_thr: float, nms_iou: float, max_det: int,
                      rule: ScoreRule = "object", *, class_agnostic_nms: bool = False,
                      inside_thr: float | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Scoring rule, threshold, NMS (``torchvision.ops.batched_nms``: per class, or over all classes
    with ``class_agnostic_nms``), optionally ``suppress_inside``, and the ``max_det`` best:
    (boxes float32 [D, 4], scores float32 [D], labels int64 [D]), best first."""
    boxes, labels, scores = score_boxes(result, rule)
    keep = scores >= score_thr
    boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
    order = batched_nms(boxes, scores, torch.zeros_like(labels) if class_agnostic_nms else labels, nms_iou)
    boxes, scores, labels = boxes[order], scores[order], labels[order]
    if inside_thr is not None and len(boxes):
        keep = suppress_inside(boxes, inside_thr)
        boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
    return boxes[:max_det], scores[:max_det], labels[:max_det]


# One colour per class (tab10), so a class reads the same in every image.
COLOURS = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
           (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207))


DRAW_MIN_SIDE = 512  # smaller images are enlarged (nearest neighbour) so that the labels stay legible


def draw_detections(image: Image.Image, found: ImageDetections, class_names: Sequence[str],
                    min_score: float = 0.0) -> Image.Image:
    """A copy of ``image`` with the box, class and score of each detection scoring at least
    ``min_score``, enlarged by a whole factor when its longer side is under ``DRAW_MIN_SIDE``."""
    scale = max(1, -(-DRAW_MIN_SIDE // max(image.size)))
    canvas = image.convert("RGB")
    canvas = canvas.resize((canvas.width * scale, canvas.height * scale), Image.NEAREST) if scale > 1 else canvas.copy()
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    for box, score, label in zip(found.boxes.tolist(), found.scores.tolist(), found.labels.tolist()):
        if score < min_score:
            continue
        colour = COLOURS[label % len(COLOURS)]
        x1, y1, x2, y2 = (v * scale for v in box)
        draw.rectangle([x1, y1, max(x1, x2 - 1), max(y1, y2 - 1)], outline=colour, width=2)
        text = f"{class_names[label]} {score:.2f}"
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        ty = y1 - (bottom - top) - 3 if y1 - (bottom - top) - 3 >= 0 else y2 + 1
        draw.rectangle([x1, ty, x1 + right - left + 3, ty + bottom - top + 2], fill=colour)
        draw.text((x1 + 2 - left, ty + 1 - top), text, fill=(255, 255, 255), font=font)
    return canvas


def _proposal_source(proposals: str | os.PathLike) -> str | ProposalFile:
    if isinstance(proposals, str) and proposals in PROPOSAL_METHODS:
        return proposals
    path = Path(proposals)
    if not path.exists() and not str(proposals).lower().endswith(".json"):
        raise ProposalError(f"proposals {str(proposals)!r}: not {' or '.join(PROPOSAL_METHODS)} and no such file "
                            f"(a COCO results JSON file of boxes)")
    return read_proposals(path)


def detect(
    source: str | os.PathLike | PatchScorer,
    images: str | os.PathLike,
    proposals: str | os.PathLike = "sliding",
    out: str | os.PathLike | None = None,
    score_thr: float = 0.3,
    nms_iou: float = 0.5,
    max_det: int = 100,
    eval_ann: str | os.PathLike | CocoDataset | None = None,
    backend: str | None = None,
    context: int = DEFAULT_CONTEXT,
    threads: int | None = None,
    batch_size: int | None = None,
    *,
    score_rule: ScoreRule = "object",
    class_agnostic_nms: bool = False,
    inside_thr: float | None = None,
    windows: SlidingWindows | None = None,
    search_mode: str = "fast",
    draw: int | None = None,
    draw_thr: float | None = None,
    progress: Callable[[str], None] | None = None,
) -> DetectResult:
    """Detect objects in one image or a folder of images with a patch classifier over proposals.

    Args:
        source: a run directory, weights file or exported artifact (``PatchClassifier.load(source,
            backend, threads)``), or a ready classifier (anything with ``class_names`` and ``classify``).
        images: an image file or a folder of images (searched recursively).
        proposals: ``"sliding"`` (``windows``, default ``SlidingWindows()``), ``"selective-search"``
            (``search_mode`` "fast" or "quality") or a COCO results JSON file of boxes per image
            (``image_id`` needs ``eval_ann`` to say which file an id is; ``file_name`` is relative to
            ``images``).
        out: folder for ``detections.json`` (COCO results), ``detect.json`` (settings, counts,
            timings, categories), ``annotated/<image>.png`` and, with ``eval_ann``, ``metrics.json``;
            None writes nothing. Files are written atomically (an earlier run's files are replaced).
        score_thr, nms_iou, max_det: detections below the score are dropped, then per-class NMS at
            this IoU (over all classes with ``class_agnostic_nms``), then the best ``max_det`` per
            image. ``score_rule``: module docstring. ``inside_thr``: also drop detections lying more
            than this fraction inside a larger one (``suppress_inside``; None: off).
        eval_ann: COCO annotations of these images (path or CocoDataset): image ids and category ids
            come from it (images matched by file_name; every given image must be listed), and COCO
            AP/AR (pycocotools) are computed on the given images.
        context, batch_size: as ``PatchClassifier.classify``. ``draw``: annotate at most this many
            images (None: all; 0: none), showing the
            detections that score at least ``draw_thr`` (default ``score_thr``).
    """
    start = time.perf_counter()
    say = progress or (lambda _msg: None)
    if not 0.0 <= score_thr <= 1.0:
        raise ValueError(f"score_thr must be in [0, 1], got {score_thr}")
    if not 0.0 < nms_iou <= 1.0:
        raise ValueError(f"nms_iou must be in (0, 1], got {nms_iou}")
    if isinstance(max_det, bool) or not isinstance(max_det, int) or max_det < 1:
        raise ValueError(f"max_det must be an integer >= 1, got {max_det!r}")
    if score_rule not in SCORE_RULES:
        raise ValueError(f"score_rule must be one of {', '.join(SCORE_RULES)}, got {score_rule!r}")
    if inside_thr is not None and not 0.0 < inside_thr <= 1.0:
        raise ValueError(f"inside_thr must be in (0, 1] (or None: off), got {inside_thr}")
    batch = check_batch_size(batch_size)
    folder, names = list_images(images)
    coco = eval_ann if isinstance(eval_ann, CocoDataset) else (read_coco(eval_ann) if eval_ann is not None else None)
    ids = match_annotations(coco, names) if coco is not None else list(range(1, len(names) + 1))
    method = _proposal_source(proposals)
    if isinstance(method, ProposalFile):
        if method.by_id and coco is None:
            raise ProposalError(f"{method.path}: [*].image_id: image ids need the annotation file (--eval ANN.json) to "
                                f"say which image file each id is; or name images with file_name")
        if not any(method.lookup(i, n) is not None for i, n in zip(ids, names)):
            raise ProposalError(f"{method.path}: none of its {method.entries} boxes names one of the {len(names)} given "
                                f"images (by image_id or file_name, e.g. {names[0]!r})")
    if method == "selective-search":
        require_opencv_contrib()  # the install hint before any work
    windows = windows or SlidingWindows()
    t0 = time.perf_counter()
    classifier = source if hasattr(source, "classify") else PatchClassifier.load(source, backend=backend, threads=threads)
    load_s = time.perf_counter() - t0
    class_names = tuple(classifier.class_names)
    background = class_names.index("background") if "background" in class_names else None
    to_category = category_ids(class_names, background, coco)
    categories = {to_category[k]: class_names[k] for k in sorted(to_category)}

    seconds = {"load": load_s, "decode": 0.0, "proposals": 0.0, "classify": 0.0, "nms": 0.0, "draw": 0.0}
    found: list[ImageDetections] = []
    detections: list[dict[str, Any]] = []
    out_dir = Path(out) if out is not None else None
    files: dict[str, Path] = {}
    drawn = 0
    for n, (name, image_id) in enumerate(zip(names, ids)):
        t0 = time.perf_counter()
        path = folder / name
        try:
            image = load_rgb(path)
        except Exception as e:  # any decoder failure, named
            raise DataError(f"cannot read image {path}: {type(e).__name__}: {e}") from e
        if coco is not None:
            record = coco.image_by_id[image_id]
            if (record.width, record.height) != image.size:
                raise DataError(f"{path}: the image is {image.size[0]}x{image.size[1]} but {coco.source} says "
                                f"{record.width}x{record.height} (image id {image_id}); its boxes would not fit it")
        pixels = np.asarray(image)
        size = (image.height, image.width)
        t1 = time.perf_counter()
        if method == "sliding":
            boxes = windows(size)
        elif method == "selective-search":
            boxes = selective_search(pixels, mode=search_mode)
        else:
            entry = method.lookup(image_id if coco is not None else None, name)
            boxes = entry[0] if entry is not None else torch.zeros(0, 4)
        t2 = time.perf_counter()
        result = classifier.classify(pixels, boxes, context=context, batch_size=batch)
        t3 = time.perf_counter()
        kept_boxes, scores, labels = select_detections(result, score_thr, nms_iou, max_det, score_rule,
                                                       class_agnostic_nms=class_agnostic_nms, inside_thr=inside_thr)
        t4 = time.perf_counter()
        cats = torch.tensor([to_category[int(k)] for k in labels.tolist()], dtype=torch.int64)
        item = ImageDetections(name, image_id, size, len(boxes), int(result.valid.sum()), kept_boxes, scores, labels, cats)
        found.append(item)
        for box, score, cat in zip(box_convert(kept_boxes, "xyxy", "xywh").tolist(), scores.tolist(), cats.tolist()):
            detections.append({"image_id": image_id, "category_id": cat, "bbox": [round(v, 2) for v in box],
                               "score": round(score, 5)})
        if out_dir is not None and (draw is None or drawn < draw):
            target = out_dir / "annotated" / (name if name.lower().endswith(".png") else f"{name}.png")
            buffer = io.BytesIO()
            shown = score_thr if draw_thr is None else draw_thr
            draw_detections(image, item, class_names, shown).save(buffer, format="PNG")
            atomic_write_bytes(target, buffer.getvalue())
            files.setdefault("annotated", out_dir / "annotated")
            drawn += 1
        t5 = time.perf_counter()
        for key, value in (("decode", t1 - t0), ("proposals", t2 - t1), ("classify", t3 - t2), ("nms", t4 - t3), ("draw", t5 - t4)):
            seconds[key] += value
        say(f"[{n + 1}/{len(names)}] {name}: {len(boxes)} proposals, {len(kept_boxes)} detections "
            f"({t3 - t2:.1f} s classifying)")

    metrics = agnostic = None
    if coco is not None:
        t0 = time.perf_counter()
        metrics = coco_evaluate(coco, detections, image_ids=ids)
        agnostic = coco_evaluate(coco, detections, image_ids=ids, class_agnostic=True)
        seconds["evaluate"] = time.perf_counter() - t0
    seconds["total"] = time.perf_counter() - start
    proposals_total = sum(i.proposals for i in found)
    counts = {"images": len(found), "proposals": proposals_total, "classified": sum(i.classified for i in found),
              "not_valid": proposals_total - sum(i.classified for i in found), "detections": len(detections)}
    settings = {
        "source": str(source) if not hasattr(source, "classify") else type(source).__name__,
        "runner": getattr(classifier, "name", type(classifier).__name__), "images": str(images),
        "proposals": proposals if isinstance(proposals, str) and proposals in PROPOSAL_METHODS else str(proposals),
        "windows": {"sizes": list(windows.sizes), "aspect_ratios": list(windows.aspect_ratios), "stride": windows.stride}
        if method == "sliding" else None,
        "search_mode": search_mode if method == "selective-search" else None,
        "score_thr": score_thr, "nms_iou": nms_iou, "max_det": max_det, "score_rule": score_rule,
        "class_agnostic_nms": class_agnostic_nms, "inside_thr": inside_thr, "context": context,
        "batch_size": batch, "threads": threads, "backend": backend,
        "eval_ann": (coco.source if coco is not None else None), "class_names": list(class_names),
    }
    result = DetectResult(found, detections, categories, class_names, metrics, agnostic, settings, counts, seconds, files)
    if out_dir is not None:
        atomic_write_json(out_dir / "detections.json", detections)
        files["detections"] = out_dir / "detections.json"
        if metrics is not None:
            atomic_write_json(out_dir / "metrics.json", {**metrics.to_dict(), "class_agnostic": agnostic.stats,
                                                         "settings": settings, "counts": counts})
            files["metrics"] = out_dir / "metrics.json"
        files["summary"] = out_dir / "detect.json"
        atomic_write_json(out_dir / "detect.json", result.summary())
    return result
