"""COCO detection files: a typed reader whose errors name the file and the field, and the training
patches of one COCO split (``edgeinc data patches``) cut with ``crop_patches``.

COCO conventions kept here: ``bbox`` is ``[x, y, width, height]`` in pixels from the image's top-left
corner (torchvision's ``"xywh"``; ``CocoDataset.boxes`` converts to xyxy), ids are non-negative integers
and need not be contiguous, ``iscrowd`` marks a crowd region.
"""

from __future__ import annotations

import functools
import math
import os
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torchvision.ops import box_convert, box_iou

from ..data.folder import DataError, load_rgb
from ..data.claim import claim_folder
from ..data.synth import BACKGROUND
from ..utils.io import atomic_write_json, atomic_write_text, read_json_file, sha256_file
from .crops import DEFAULT_CONTEXT, INCEPTION_MEAN, check_boxes, check_context, crop_patches, mean_fill


class CocoFormatError(DataError):
    """A COCO file that cannot be read as detection annotations (the message names the file and field)."""


@dataclass(frozen=True)
class CocoImage:
    id: int
    file_name: str  # relative to the images folder
    width: int
    height: int


@dataclass(frozen=True)
class CocoCategory:
    id: int
    name: str
    supercategory: str | None = None


@dataclass(frozen=True)
class CocoAnnotation:
    id: int
    image_id: int
    category_id: int
    bbox: tuple[float, float, float, float]  # x, y, width, height (pixels); width and height >= 0
    area: float  # as recorded (segment area in COCO); width * height when the file has none
    iscrowd: bool = False


@dataclass(frozen=True)
class CocoDataset:
    """A COCO detection file: images, annotations and categories as read (file order kept)."""

    path: Path | None
    images: tuple[CocoImage, ...]
    annotations: tuple[CocoAnnotation, ...]
    categories: tuple[CocoCategory, ...]

    @property
    def source(self) -> str:
        """The file's path, for messages ("<COCO data>" when parsed from memory)."""
        return str(self.path) if self.path is not None else "<COCO data>"

    @functools.cached_property
    def image_by_id(self) -> dict[int, CocoImage]:
        return {image.id: image for image in self.images}

    @functools.cached_property
    def category_by_id(self) -> dict[int, CocoCategory]:
        return {category.id: category for category in self.categories}

    @functools.cached_property
    def annotations_by_image(self) -> dict[int, list[CocoAnnotation]]:
        by_image: dict[int, list[CocoAnnotation]] = {image.id: [] for image in self.images}
        for annotation in self.annotations:
            by_image[annotation.image_id].append(annotation)
        return by_image

    def boxes(self, image_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The image's annotations as tensors, in file order: xyxy float32 ``[N, 4]`` (not clipped),
        category ids int64 ``[N]``, iscrowd bool ``[N]`` and annotation ids int64 ``[N]``."""
        annotations = self.annotations_by_image[image_id]
        xywh = torch.tensor([a.bbox for a in annotations], dtype=torch.float32).reshape(-1, 4)
        return (box_convert(xywh, "xywh", "xyxy"),
                torch.tensor([a.category_id for a in annotations], dtype=torch.int64),
                torch.tensor([a.iscrowd for a in annotations], dtype=torch.bool),
                torch.tensor([a.id for a in annotations], dtype=torch.int64))


class _Reader:
    """Field checks that name the file and the field in every error."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, where: str, problem: str) -> CocoFormatError:
        return CocoFormatError(f"{self.source}: {where}: {problem}")

    def array(self, data: dict, key: str) -> list:
        if key not in data:
            raise self.fail(key, f"missing (a COCO detection file has 'images', 'annotations' and 'categories'; "
                                 f"found {sorted(data)[:10]})")
        if not isinstance(data[key], list):
            raise self.fail(key, f"expected a list, got {type(data[key]).__name__}")
        return data[key]

    def record(self, item: Any, where: str) -> dict:
        if not isinstance(item, dict):
            raise self.fail(where, f"expected an object, got {type(item).__name__}")
        return item

    def value(self, item: dict, key: str, where: str, default: Any = ...) -> Any:
        if key not in item:
            if default is not ...:
                return default
            raise self.fail(f"{where}.{key}", "missing")
        return item[key]

    def id(self, item: dict, key: str, where: str, positive: bool = False) -> int:
        value = self.value(item, key, where)
        if isinstance(value, bool) or not isinstance(value, int) or value < (1 if positive else 0):
            kind = "a positive" if positive else "a non-negative"
            raise self.fail(f"{where}.{key}", f"expected {kind} integer, got {value!r}")
        return value

    def name(self, item: dict, key: str, where: str) -> str:
        value = self.value(item, key, where)
        if not isinstance(value, str) or not value.strip():
            raise self.fail(f"{where}.{key}", f"expected a non-empty string, got {value!r}")
        return value

    def number(self, value: Any, where: str) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise self.fail(where, f"expected a finite number, got {value!r}")
        return float(value)


def parse_coco(data: Any, source: str = "<COCO data>", path: Path | None = None) -> CocoDataset:
    """A COCO detection dict (``images``, ``annotations``, ``categories``) as a CocoDataset; CocoFormatError
    naming ``source`` and the field (``annotations[3] (id 7).bbox``) for anything malformed: missing or
    mistyped fields, ids that are not non-negative integers or repeat, a bbox that is not 4 finite
    numbers with width and height >= 0, annotations naming an unknown image or category."""
    r = _Reader(source)
    if not isinstance(data, dict):
        raise r.fail("top level", f"expected an object with 'images', 'annotations' and 'categories', got "
                                  f"{type(data).__name__}" + (" (a results file? it is a list of detections)"
                                                              if isinstance(data, list) else ""))
    raw_images, raw_annotations, raw_categories = (r.array(data, k) for k in ("images", "annotations", "categories"))

    categories: dict[int, CocoCategory] = {}
    for i, item in enumerate(raw_categories):
        where = f"categories[{i}]"
        item = r.record(item, where)
        cid = r.id(item, "id", where)
        if cid in categories:
            raise r.fail(f"{where}.id", f"category id {cid} repeats")
        supercategory = item.get("supercategory")
        categories[cid] = CocoCategory(cid, r.name(item, "name", where),
                                       supercategory if isinstance(supercategory, str) else None)

    images: dict[int, CocoImage] = {}
    for i, item in enumerate(raw_images):
        where = f"images[{i}]"
        item = r.record(item, where)
        iid = r.id(item, "id", where)
        if iid in images:
            raise r.fail(f"{where}.id", f"image id {iid} repeats")
        images[iid] = CocoImage(iid, r.name(item, "file_name", f"{where} (id {iid})"),
                                r.id(item, "width", f"{where} (id {iid})", positive=True),
                                r.id(item, "height", f"{where} (id {iid})", positive=True))

    annotations: list[CocoAnnotation] = []
    seen: set[int] = set()
    for i, item in enumerate(raw_annotations):
        where = f"annotations[{i}]"
        item = r.record(item, where)
        aid = r.id(item, "id", where)
        where = f"{where} (id {aid})"
        if aid in seen:
            raise r.fail(f"{where}.id", f"annotation id {aid} repeats")
        seen.add(aid)
        image_id = r.id(item, "image_id", where)
        if image_id not in images:
            raise r.fail(f"{where}.image_id", f"no image has id {image_id}")
        category_id = r.id(item, "category_id", where)
        if category_id not in categories:
            raise r.fail(f"{where}.category_id", f"no category has id {category_id} (ids: {sorted(categories)[:20]})")
        bbox = r.value(item, "bbox", where)
        if (not isinstance(bbox, list) or len(bbox) != 4
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in bbox)):
            raise r.fail(f"{where}.bbox", f"expected 4 finite numbers [x, y, width, height], got {bbox!r}")
        if bbox[2] < 0 or bbox[3] < 0:
            raise r.fail(f"{where}.bbox", f"width and height must be >= 0, got {bbox!r}")
        x, y, w, h = (float(v) for v in bbox)
        area = r.number(r.value(item, "area", where, w * h), f"{where}.area")
        iscrowd = r.value(item, "iscrowd", where, 0)
        if iscrowd not in (0, 1):  # True/False compare equal to 1/0
            raise r.fail(f"{where}.iscrowd", f"expected 0 or 1, got {iscrowd!r}")
        annotations.append(CocoAnnotation(aid, image_id, category_id, (x, y, w, h), area, bool(iscrowd)))
    return CocoDataset(path, tuple(images.values()), tuple(annotations), tuple(categories.values()))


def read_coco(path: str | os.PathLike) -> CocoDataset:
    """Read and check a COCO detection file (see ``parse_coco``); errors name the file."""
    path = Path(path)
    return parse_coco(read_json_file(path, "COCO annotation file", CocoFormatError), str(path), path)


# --- training patches -----------------------------------------------------------------------------------

PATCHES_GENERATOR = "edgeinc.patches/1"  # bump when the sampling changes: old folders are then not resumed into
POS_IOU = 0.7  # jittered copies of a ground-truth box keep at least this IoU with it
NEG_IOU = 0.3  # negatives stay below this IoU with every ground-truth box (R-CNN), and below this
               # fraction of their own area inside crowd regions
JITTER_SHIFT = 0.12  # centre shift, fraction of the box side (uniform in +-)
JITTER_SCALE = 0.15  # log of the side scale (uniform in +-), each side separately
NEAR_FRACTION = 0.5  # negatives drawn around objects (partly overlapping one); the rest anywhere
NEAR_SCALE = 0.4  # log of their side scale (uniform in +-)
FAR_SCALE = 0.7  # negatives anywhere: an object's sides times exp(uniform(+-0.7)), 0.5x to 2x
MIN_SIDE = 2.0  # pixels: no sliver negatives
CANDIDATES = 8  # candidates drawn per box wanted, per round
MAX_CANDIDATES = 16384  # per round: bounds the IoU matrix on images with hundreds of objects
ROUNDS = 4
_UNSAFE = re.compile(r'[\x00-\x1f<>:"/\\|?*]')  # not allowed in file names on some system we care about


def class_folder(name: str) -> str:
    """A category name as a class folder name: characters that are not allowed in file names (on Linux,
    macOS or Windows) become ``_``, surrounding spaces and trailing dots go, a leading dot (a hidden
    folder, which ImageFolder skips) becomes ``_``. ValueError when nothing is left."""
    folder = _UNSAFE.sub("_", name).strip().rstrip(".")
    if folder.startswith("."):
        folder = "_" + folder[1:]
    if not folder:
        raise ValueError(f"category name {name!r} gives no usable folder name")
    return folder


@dataclass(frozen=True)
class PatchBoxes:
    """Boxes sampled for one image: float32 xyxy ``[K, 4]`` (positives first, each ground truth followed
    by its jittered copies, then negatives), ``gt_index`` int64 ``[K]`` (the ground-truth row of a
    positive, -1 for a negative) and ``iou`` float32 ``[K]`` (with its own ground truth for a positive,
    the largest with any ground truth for a negative)."""

    boxes: torch.Tensor
    gt_index: torch.Tensor
    iou: torch.Tensor
    positive_shortfall: int = 0  # jittered copies wanted but not found
    negative_shortfall: int = 0  # negatives wanted but not found (crowded image)


def _intersection(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise intersection areas of xyxy boxes: ``[N, M]``."""
    wh = (torch.min(a[:, None, 2:], b[None, :, 2:]) - torch.max(a[:, None, :2], b[None, :, :2])).clamp(min=0)
    return wh[..., 0] * wh[..., 1]


def _from_centres(centre: np.ndarray, sides: np.ndarray, image_size: tuple[int, int]) -> torch.Tensor:
    """float32 xyxy ``[N, 4]`` clipped to the image, from float64 centres and sides ``[N, 2]``."""
    boxes = torch.from_numpy(np.concatenate([centre - sides / 2, centre + sides / 2], axis=1)).to(torch.float32)
    return check_boxes(boxes, image_size)[0]


def _keep_negatives(candidates: torch.Tensor, gt: torch.Tensor, crowd: torch.Tensor, neg_iou: float,
                    touching: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(mask of usable negatives, their largest IoU with any ground truth)."""
    sides = candidates[:, 2:] - candidates[:, :2]
    iou = box_iou(candidates, gt)
    best = iou.max(dim=1).values if gt.numel() else torch.zeros(len(candidates))
    ok = (sides >= MIN_SIDE).all(dim=1) & (best < neg_iou)
    if touching is not None:  # partly over the object it was drawn around
        ok &= iou.gather(1, touching[:, None])[:, 0] > 0
    if len(crowd):
        inside = _intersection(candidates, crowd).sum(dim=1) / (sides[:, 0] * sides[:, 1]).clamp(min=1e-6)
        ok &= inside <= neg_iou
    return ok, best


def sample_patch_boxes(
    gt: torch.Tensor,
    image_size: tuple[int, int],
    rng: np.random.Generator,
    *,
    crowd: torch.Tensor | None = None,
    jitter: int = 2,
    neg_ratio: int = 3,
    pos_iou: float = POS_IOU,
    neg_iou: float = NEG_IOU,
) -> PatchBoxes:
    """Training boxes for one image (R-CNN's rules).

    Args:
        gt: float32 xyxy ``[N, 4]`` ground-truth boxes, clipped and valid (``check_boxes``).
        image_size: ``(height, width)``.
        rng: the image's own generator (the caller seeds it per image).
        crowd: xyxy ``[M, 4]`` crowd regions: never positives, and negatives keep at most ``neg_iou``
            of their area inside them.
        jitter: jittered copies per ground-truth box, each with IoU >= ``pos_iou`` with it (and no
            higher IoU with another ground truth): centre shifted by up to ``JITTER_SHIFT`` of the side,
            each side scaled by ``exp(+-JITTER_SCALE)``, clipped to the image.
        neg_ratio: negatives per positive (ground truths plus copies) of this image, with IoU <
            ``neg_iou`` with every ground truth; ``NEAR_FRACTION`` of them around an object and partly
            over it (0 < IoU), the others anywhere, sized like the image's objects (0.5x to 2x).
    """
    height, width = image_size
    crowd = torch.zeros(0, 4) if crowd is None else crowd.reshape(-1, 4).to(torch.float32)
    gt = gt.reshape(-1, 4).to(torch.float32)
    n = len(gt)
    gt64 = gt.double().numpy()
    centres, sides = (gt64[:, :2] + gt64[:, 2:]) / 2, gt64[:, 2:] - gt64[:, :2]

    # Positives: each ground truth, then its jittered copies.
    copies: list[list[tuple[torch.Tensor, float]]] = [[] for _ in range(n)]
    for _ in range(ROUNDS if jitter > 0 and n else 0):
        count = CANDIDATES * jitter
        shift = rng.uniform(-JITTER_SHIFT, JITTER_SHIFT, (n, count, 2)) * sides[:, None]
        scale = np.exp(rng.uniform(-JITTER_SCALE, JITTER_SCALE, (n, count, 2)))
        candidates = _from_centres((centres[:, None] + shift).reshape(-1, 2),
                                   (sides[:, None] * scale).reshape(-1, 2), image_size)
        iou = box_iou(candidates, gt).reshape(n, count, n)
        own = iou[torch.arange(n), :, torch.arange(n)]  # [n, count]
        ok = (own >= pos_iou) & (own >= iou.max(dim=2).values)
        for g in range(n):
            for c in torch.nonzero(ok[g])[:, 0].tolist():
                if len(copies[g]) < jitter:
                    copies[g].append((candidates[g * count + c], float(own[g, c])))
        if all(len(c) == jitter for c in copies):
            break
    boxes = [gt[g:g + 1] if not copies[g] else torch.cat([gt[g:g + 1], torch.stack([b for b, _ in copies[g]])])
             for g in range(n)]
    gt_index = [torch.full((1 + len(copies[g]),), g, dtype=torch.int64) for g in range(n)]
    ious = [torch.tensor([1.0] + [v for _, v in copies[g]], dtype=torch.float32) for g in range(n)]
    positives = sum(1 + len(c) for c in copies)

    # Negatives: around objects (partly over one), then anywhere.
    wanted = neg_ratio * positives
    near_wanted = round(wanted * NEAR_FRACTION)
    found: list[list[tuple[torch.Tensor, torch.Tensor]]] = [[], []]
    for kind, want in ((0, near_wanted), (1, wanted - near_wanted)):
        have = 0
        for _ in range(ROUNDS if want else 0):
            count = min(CANDIDATES * (want - have), MAX_CANDIDATES)
            source = rng.integers(0, n, count)
            if kind == 0:  # moved by up to a side in x and y, scaled: overlapping it little or not at all
                size = sides[source] * np.exp(rng.uniform(-NEAR_SCALE, NEAR_SCALE, (count, 2)))
                centre = centres[source] + rng.uniform(-1.0, 1.0, (count, 2)) * (sides[source] + size) / 2
            else:  # anywhere inside the image, an object's size give or take 2x
                size = np.minimum(sides[source] * np.exp(rng.uniform(-FAR_SCALE, FAR_SCALE, (count, 2))),
                                  [width, height])
                centre = size / 2 + rng.random((count, 2)) * ([width, height] - size)
            candidates = _from_centres(centre, size, image_size)
            ok, best = _keep_negatives(candidates, gt, crowd, neg_iou,
                                       torch.from_numpy(source) if kind == 0 else None)
            chosen = torch.nonzero(ok)[:, 0][:want - have]
            found[kind].append((candidates[chosen], best[chosen]))
            have += len(chosen)
            if have == want:
                break
    negatives = [b for part in found for b, _ in part]
    boxes += negatives
    gt_index += [torch.full((len(b),), -1, dtype=torch.int64) for b in negatives]
    ious += [v for part in found for _, v in part]
    negative_count = sum(len(b) for b in negatives)
    return PatchBoxes(
        torch.cat(boxes) if boxes else torch.zeros(0, 4),
        torch.cat(gt_index) if gt_index else torch.zeros(0, dtype=torch.int64),
        torch.cat(ious) if ious else torch.zeros(0),
        jitter * n - (positives - n),
        wanted - negative_count,
    )


@dataclass(frozen=True)
class PatchesInfo:
    """What ``extract_patches`` wrote (also recorded in ``OUT/patches.json``)."""

    root: Path
    classes: list[str]  # label order: the class folders sorted, as ImageFolder reads them
    counts: dict[str, int]  # class folder -> patches
    images: int  # images listed in the COCO file
    objects: int  # ground-truth boxes used (after clipping)
    clipped: int  # of them, boxes that reached outside their image
    skipped: dict[str, int]  # {"crowd": n, "no_area": n}: annotations not used as positives
    shortfall: dict[str, int]  # {"jittered": n, "negatives": n}: boxes wanted but not found
    empty_categories: list[str]  # categories without any patch in this split (no folder)
    params: dict = field(default_factory=dict)
    written: int = 0  # patches written by this call
    reused: int = 0  # patches already there from an interrupted run with the same parameters
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return {**asdict(self), "root": str(self.root)}


def _folders(coco: CocoDataset) -> dict[int, str]:
    """Category id -> class folder; DataError when two categories (or one and 'background') share one."""
    folders: dict[int, str] = {}
    taken: dict[str, str] = {BACKGROUND: f"the {BACKGROUND!r} class of the negatives"}
    for category in coco.categories:
        try:
            folder = class_folder(category.name)
        except ValueError as e:
            raise DataError(f"{coco.source}: category id {category.id}: {e}") from None
        # Case-insensitive file systems (macOS, Windows) would merge "Dog" and "dog".
        key = folder.casefold()
        if key in taken:
            raise DataError(f"{coco.source}: category id {category.id} ({category.name!r}) would share the class "
                            f"folder {folder!r} with {taken[key]}; rename one of them")
        taken[key] = f"category id {category.id} ({category.name!r})"
        folders[category.id] = folder
    return folders


def extract_patches(
    coco: str | os.PathLike | CocoDataset,
    images_dir: str | os.PathLike,
    out: str | os.PathLike,
    size: int = 79,
    context: int = DEFAULT_CONTEXT,
    neg_ratio: int = 3,
    seed: int = 0,
    jitter: int = 2,
    *,
    mean: tuple[float, float, float] = INCEPTION_MEAN,
    pos_iou: float = POS_IOU,
    neg_iou: float = NEG_IOU,
) -> PatchesInfo:
    """Cut one COCO detection split into an ImageNet-layout patch folder: ``out/<category>/*.png`` (each
    non-crowd ground-truth box and ``jitter`` jittered copies with IoU >= ``pos_iou``) and
    ``out/background/*.png`` (``neg_ratio`` negatives per positive of each image, IoU < ``neg_iou`` with
    every ground truth; see ``sample_patch_boxes``), all ``crop_patches(image, box, size, context, mean)``.

    ``out`` is one split folder: run it once per COCO file (train.json -> DATA/train, val.json ->
    DATA/val). Also written: ``out/classes.json`` (label order), ``out/boxes.csv`` (each patch's file,
    class, image and annotation id, box and IoU) and ``out/patches.json`` (parameters and counts).
    Boxes reaching outside their image are clipped; boxes with no area left are skipped and counted;
    crowd boxes give no positives and keep negatives out. An image without usable boxes gives no patches
    (negatives are counted per positive of their image).
    Every image is checked to exist before anything is written. Each image's boxes come from a generator
    seeded with (seed, image id): the same parameters give the same files, and a rerun completes an
    interrupted one.
    """
    check_context(size, context)
    fill = mean_fill(mean)
    for key, value in (("neg_ratio", neg_ratio), ("seed", seed), ("jitter", jitter)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{key} must be an integer >= 0, got {value!r}")
    if not 0.0 < neg_iou <= pos_iou <= 1.0:
        raise ValueError(f"IoU thresholds must satisfy 0 < neg_iou <= pos_iou <= 1, got {neg_iou}, {pos_iou}")
    if not isinstance(coco, CocoDataset):
        coco = read_coco(coco)
    images_dir, out = Path(images_dir), Path(out)
    if not images_dir.is_dir():
        what = "is not a folder" if images_dir.exists() else "does not exist"
        raise DataError(f"images folder {images_dir} {what} (the folder holding the images of {coco.source})")
    folders = _folders(coco)
    missing = [image.file_name for image in coco.images if not (images_dir / image.file_name).is_file()]
    if missing:
        raise DataError(f"{len(missing)} of the {len(coco.images)} images listed in {coco.source} are missing from "
                        f"{images_dir}: {', '.join(missing[:5])}{f' and {len(missing) - 5} more' if len(missing) > 5 else ''}")

    # First the boxes of every image (no decoding), so that totals are known before writing.
    plans = []
    objects = clipped = no_area = crowd_count = short_jitter = short_neg = 0
    for image in coco.images:
        xyxy, category_ids, iscrowd, annotation_ids = coco.boxes(image.id)
        boxes, valid = check_boxes(xyxy, (image.height, image.width))
        use = valid & ~iscrowd
        crowd_count += int(iscrowd.sum())
        no_area += int((~valid & ~iscrowd).sum())
        objects += int(use.sum())
        clipped += int((use & (boxes != xyxy).any(dim=1)).sum())
        rng = np.random.default_rng([seed, image.id])
        sampled = sample_patch_boxes(boxes[use], (image.height, image.width), rng, crowd=boxes[valid & iscrowd],
                                     jitter=jitter, neg_ratio=neg_ratio, pos_iou=pos_iou, neg_iou=neg_iou)
        short_jitter += sampled.positive_shortfall
        short_neg += sampled.negative_shortfall
        used_ids, used_categories = annotation_ids[use].tolist(), category_ids[use].tolist()
        names = []  # (class folder, file name, annotation id or None)
        previous, copy = -1, 0
        for k, g in enumerate(sampled.gt_index.tolist()):
            if g >= 0:  # the ground truth itself is copy 0, its jittered copies 1, 2, ...
                copy = copy + 1 if g == previous else 0
                names.append((folders[used_categories[g]], f"{image.id:012d}_{used_ids[g]}_{copy}.png", used_ids[g]))
            else:
                names.append((BACKGROUND, f"{image.id:012d}_bg{k:05d}.png", None))
            previous = g
        plans.append((image, sampled, names))
    counts: dict[str, int] = {}
    for _, _, names in plans:
        for folder, _, _ in names:
            counts[folder] = counts.get(folder, 0) + 1
    if not counts:
        raise DataError(f"{coco.source}: no patches to cut: no annotation has a usable box "
                        f"({no_area} without area, {crowd_count} crowd)")

    params = {"generator": PATCHES_GENERATOR, "coco_sha256": sha256_file(coco.path) if coco.path else None,
              "size": size, "context": context, "mean": list(mean), "fill": list(fill), "neg_ratio": neg_ratio,
              "jitter": jitter, "seed": seed, "pos_iou": pos_iou, "neg_iou": neg_iou}
    claim_folder(out, "patches.json", params, "patches", key="params")
    start = time.perf_counter()
    written = reused = 0
    rows = ["file,class,image_id,annotation_id,x1,y1,x2,y2,iou"]
    for folder in counts:
        (out / folder).mkdir(parents=True, exist_ok=True)
    for image, sampled, names in plans:
        paths = [out / folder / name for folder, name, _ in names]
        if all(p.exists() for p in paths):
            reused += len(paths)
        elif paths:
            pixels = _load(images_dir / image.file_name, image, coco.source)
            for path, patch in zip(paths, crop_patches(pixels, sampled.boxes, size, context, mean)):
                tmp = path.with_name(f".{path.name}.tmp")  # hidden, not an image extension: loaders ignore it
                # No fsync per patch: they can be cut again bit for bit; the rename keeps each whole.
                Image.fromarray(patch, "RGB").save(tmp, format="PNG", compress_level=6)
                os.replace(tmp, path)
            written += len(paths)
        for (folder, name, aid), box, iou in zip(names, sampled.boxes.tolist(), sampled.iou.tolist()):
            coords = ",".join(f"{v:.9g}" for v in box)  # 9 digits: float32 boxes read back exactly
            rows.append(f"{folder}/{name},{folder},{image.id},{'' if aid is None else aid},{coords},{iou:.4f}")
    atomic_write_text(out / "boxes.csv", "\n".join(rows) + "\n")
    classes = sorted(counts)  # ImageFolder sorts the folders: labels follow that order
    atomic_write_json(out / "classes.json", classes)
    info = PatchesInfo(
        out, classes, {c: counts[c] for c in classes}, len(coco.images), objects, clipped,
        {"crowd": crowd_count, "no_area": no_area}, {"jittered": short_jitter, "negatives": short_neg},
        sorted(folders[c.id] for c in coco.categories if folders[c.id] not in counts), params, written, reused,
        time.perf_counter() - start,
    )
    record = info.to_dict()
    record.update(coco=coco.source, images_dir=str(images_dir))
    for key in ("root", "written", "reused", "seconds"):  # this call's, not the folder's
        record.pop(key)
    atomic_write_json(out / "patches.json", record)
    return info


def _load(path: Path, image: CocoImage, source: str) -> Image.Image:
    try:
        pixels = load_rgb(path)
    except Exception as e:  # any decoder failure
        raise DataError(f"cannot read image {path} (id {image.id} in {source}): {type(e).__name__}: {e}") from e
    if pixels.size != (image.width, image.height):
        raise DataError(f"{path}: the image is {pixels.size[0]}x{pixels.size[1]} but {source} says "
                        f"{image.width}x{image.height} (image id {image.id}); its boxes would not fit it")
    return pixels
