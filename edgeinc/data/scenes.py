"""Synthetic detection scenes: the patch task's shapes as small objects in larger images, annotated in
COCO format, so that the detector stage (``edgeinc data patches``, ``edgeinc detect``, COCO mAP) runs
offline end to end.

A scene is a calm background texture, generic clutter (blobs, ellipses, strokes; also across the
border), then several class shapes whose tight boxes have a longest side of 10-80 pixels, some touching
or overlapping an earlier one, some with a blob over part of their edge. Everything is drawn with the
patch task's functions (``synth._texture``, ``_shape_mask``, ``_blob_mask``, ``_paint``): each object
or blob is drawn in its own square window, about three times an object's side as in a patch, so
textures have the patch task's scale relative to the object.

Annotations are visible extents: a pixel belongs to the last shape or blob drawn there with coverage
>= 0.5; an object keeps its annotation when at least ``MIN_VISIBLE`` (half) of its own pixels stay
visible and the box of its visible pixels still has a longest side >= 10 px. That box is its ``bbox``
and the visible pixel count its ``area``. Objects hidden more than that are left unannotated (they
are rare: most objects are placed apart).

Determinism: scene i of a split is drawn from its own generator seeded with (seed, split, i), so the
output is byte-identical for the same parameters whatever the number of workers or interruptions.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from PIL import Image

from ..utils.io import atomic_write_json
from .claim import claim_folder
from .synth import BACKGROUND_CONTRAST, _blob_mask, _class_names, _paint, _shape_mask, _texture, _unit_area

GENERATOR = "edgeinc.scenes/1"  # bump when the drawing changes: old folders are then not resumed into
OBJECT_SIDE = (10, 80)  # longest side of an object's tight box, pixels
MIN_VISIBLE = 0.5  # fraction of an object's pixels that must stay visible for it to keep its box
WINDOW = 3.0  # an object's drawing window, in object sides: the patch task's proportions
COVERED = 0.5  # coverage from which a pixel belongs to a shape (tight boxes, visibility)
CLUTTER_DENSITY = (1.0e-4, 3.0e-4)  # blobs per pixel of the scene
CLUTTER_RADIUS = (3.0, 30.0)  # pixels, log-uniform: from specks to object-sized blobs
CLUTTER_OUTSIDE = 20  # pixels: clutter centres may lie this far outside the image
TOUCH_PROBABILITY = 0.3  # an object placed against (or partly over) an earlier one
OCCLUDER_PROBABILITY = 0.35  # as render_patch: a blob over part of the object's edge
FREE_PLACEMENT_TRIES = 20
SPLITS = ("train", "val")


@dataclass(frozen=True)
class SceneObject:
    """One annotated object: its class, visible tight box ``(x1, y1, x2, y2)`` in whole pixels (x2, y2
    exclusive, so ``[x1, y1, x2 - x1, y2 - y1]`` is its COCO bbox) and visible pixel count."""

    name: str
    box: tuple[int, int, int, int]
    area: int


@dataclass(frozen=True)
class ScenesInfo:
    """What ``synthesize_scenes`` wrote."""

    root: Path
    categories: list[str]  # category names; COCO category id = position + 1
    counts: dict[str, dict[str, int]]  # split -> {"images": n, "objects": n}
    params: dict = field(default_factory=dict)
    written: int = 0  # scenes drawn by this call
    reused: int = 0  # scenes already there from an interrupted run with the same parameters
    seconds: float = 0.0

    @property
    def annotations(self) -> dict[str, Path]:
        return {split: self.root / "annotations" / f"{split}.json" for split in SPLITS}

    def to_dict(self) -> dict:
        return {**asdict(self), "root": str(self.root), "annotations": {k: str(v) for k, v in self.annotations.items()}}


def _tight_box(covered: np.ndarray) -> tuple[int, int, int, int] | None:
    """(x1, y1, x2, y2), x2/y2 exclusive, of the True pixels; None when there are none."""
    rows, cols = np.flatnonzero(covered.any(axis=1)), np.flatnonzero(covered.any(axis=0))
    if rows.size == 0:
        return None
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def _longest(box: tuple[int, int, int, int] | None) -> int:
    return 0 if box is None else max(box[2] - box[0], box[3] - box[1])


def _object_mask(rng: np.random.Generator, name: str, side: float) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """Shape ``name`` in a square window with its tight box's longest side about ``side`` pixels (within
    a pixel): (coverage (W, W), tight box in the window)."""
    window = math.ceil(WINDOW * side)
    centre = np.full(2, window / 2)
    area = _unit_area(name) * (side / 2.6 / window) ** 2  # a first guess; the drawn box corrects it
    state = rng.bit_generator.state
    for _ in range(4):
        # The same random rotation, mirroring and stretch every time: only the scale changes.
        rng.bit_generator.state = state
        mask = _shape_mask(name, window, centre, area, rng)
        box = _tight_box(mask >= COVERED)
        longest = _longest(box)
        if abs(longest - side) <= 1.0:
            break
        area *= (side / max(longest, 1)) ** 2
    return mask, box


def _overlaps(box: tuple[int, int, int, int], others: list[tuple[int, int, int, int]], gap: int = 2) -> bool:
    return any(box[0] < o[2] + gap and o[0] < box[2] + gap and box[1] < o[3] + gap and o[1] < box[3] + gap
               for o in others)


def _place(rng: np.random.Generator, size: int, width: int, height: int,
           placed: list[tuple[int, int, int, int]]) -> tuple[int, int]:
    """Top-left corner of a ``width x height`` box inside the image: against an earlier box (touching,
    or overlapping by up to 30% of the new box's side), or apart from all of them when that fits."""
    if placed and rng.random() < TOUCH_PROBABILITY:
        other = placed[rng.integers(len(placed))]
        side = rng.integers(4)  # 0: right of it, 1: left, 2: below, 3: above
        overlap = rng.uniform(-0.05, 0.3)  # negative: a gap of a pixel or two
        if side < 2:
            shift = round(overlap * width)
            x = other[2] - shift if side == 0 else other[0] - width + shift
            y = round(rng.uniform(other[1] - 0.7 * height, other[3] - 0.3 * height))
        else:
            shift = round(overlap * height)
            y = other[3] - shift if side == 2 else other[1] - height + shift
            x = round(rng.uniform(other[0] - 0.7 * width, other[2] - 0.3 * width))
        if 0 <= x <= size - width and 0 <= y <= size - height:
            return x, y
    for _ in range(FREE_PLACEMENT_TRIES):
        x, y = int(rng.integers(0, size - width + 1)), int(rng.integers(0, size - height + 1))
        if not _overlaps((x, y, x + width, y + height), placed):
            break
    return x, y


def render_scene(
    rng: np.random.Generator, size: int, shapes: tuple[str, ...], objects: tuple[int, int] = (4, 12)
) -> tuple[Image.Image, list[SceneObject]]:
    """One ``size x size`` RGB scene with ``objects`` (inclusive range) shapes of ``shapes`` among
    clutter, and the annotated ones (visible boxes; see the module's docstring for the rule)."""
    if size < OBJECT_SIDE[1] + 16:
        raise ValueError(f"a scene must be at least {OBJECT_SIDE[1] + 16} px to hold objects of up to "
                         f"{OBJECT_SIDE[1]} px, got {size}")
    # Windows of objects at the border and of clutter across it reach outside the image: the canvas
    # has a margin that fits any window, filled by mirroring the background. It is cut off at the end.
    pad = math.ceil(WINDOW * OBJECT_SIDE[1])
    background = np.array(_texture(rng, size, contrast=rng.uniform(*BACKGROUND_CONTRAST)), dtype=np.float32)
    canvas = np.pad(background, ((pad, pad), (pad, pad), (0, 0)), mode="symmetric")
    owner = np.full(canvas.shape[:2], -1, dtype=np.int32)  # which object each pixel shows (-1: none)

    def blob(centre: np.ndarray, radius: float) -> None:
        # A stroke reaches 2.5 radii from its centre (synth._blob_mask), plus its width.
        window = math.ceil(5.5 * radius) + 4
        top, left = (int(v) for v in np.floor(centre[::-1] + pad - window / 2))
        view = canvas[top:top + window, left:left + window]
        mask = _blob_mask(window, centre + pad - (left, top), radius, rng)
        _paint(view, mask, rng)
        owner[top:top + window, left:left + window][mask >= COVERED] = -1

    density = rng.uniform(*CLUTTER_DENSITY)
    for _ in range(round(density * size * size)):  # generic clutter, under the objects
        radius = math.exp(rng.uniform(*np.log(CLUTTER_RADIUS)))
        blob(rng.uniform(-CLUTTER_OUTSIDE, size + CLUTTER_OUTSIDE, 2), radius)

    drawn: list[tuple[str, np.ndarray, int, int]] = []  # name, coverage, top, left (canvas coordinates)
    placed: list[tuple[int, int, int, int]] = []  # full tight boxes, image coordinates
    for k in range(int(rng.integers(objects[0], objects[1] + 1))):
        name = shapes[rng.integers(len(shapes))]
        side = rng.uniform(OBJECT_SIDE[0] + 1, OBJECT_SIDE[1] - 1)  # 1 px of margin for the drawn box
        mask, box = _object_mask(rng, name, side)
        width, height = box[2] - box[0], box[3] - box[1]
        x, y = _place(rng, size, width, height, placed)
        placed.append((x, y, x + width, y + height))
        top, left = y - box[1] + pad, x - box[0] + pad
        window = mask.shape[0]
        _paint(canvas[top:top + window, left:left + window], mask, rng, contrast=True)
        covered = mask >= COVERED
        owner[top:top + window, left:left + window][covered] = k
        drawn.append((name, covered, top, left))
        if rng.random() < OCCLUDER_PROBABILITY:
            radius = math.sqrt(np.count_nonzero(covered) / np.pi)
            towards = rng.uniform(0, 2 * np.pi)
            centre = np.array([x + width / 2, y + height / 2])
            blob(centre + radius * np.array([math.cos(towards), math.sin(towards)]), radius * rng.uniform(0.35, 0.6))

    annotated = []
    for k, (name, covered, top, left) in enumerate(drawn):
        window = covered.shape[0]
        visible = owner[top:top + window, left:left + window] == k
        box = _tight_box(visible)
        if visible.sum() < MIN_VISIBLE * covered.sum() or _longest(box) < OBJECT_SIDE[0]:
            continue
        x1, y1, x2, y2 = box
        annotated.append(SceneObject(name, (x1 + left - pad, y1 + top - pad, x2 + left - pad, y2 + top - pad),
                                     int(visible.sum())))
    image = canvas[pad:pad + size, pad:pad + size]
    image = image + rng.normal(0.0, rng.uniform(0.0, 6.0), image.shape).astype(np.float32)
    return Image.fromarray(np.clip(np.rint(image), 0, 255).astype(np.uint8), "RGB"), annotated


@dataclass(frozen=True)
class _Job:
    out: str
    seed: int
    size: int
    split: str
    index: int
    shapes: tuple[str, ...]
    objects: tuple[int, int]

    @property
    def image(self) -> Path:
        return Path(self.out) / self.split / f"{self.index:06d}.png"

    @property
    def boxes(self) -> Path:  # the scene's annotations until the split's COCO file is assembled
        return Path(self.out) / ".scenes" / self.split / f"{self.index:06d}.json"


def _run(job: _Job) -> tuple[bool, list[dict]]:
    """Draw and write one scene unless it (and its boxes) are already there: (written, objects)."""
    if job.image.exists() and job.boxes.exists():
        return False, json.loads(job.boxes.read_text())
    rng = np.random.default_rng([job.seed, SPLITS.index(job.split), job.index])
    image, objects = render_scene(rng, job.size, job.shapes, job.objects)
    records = [{"name": o.name, "box": list(o.box), "area": o.area} for o in objects]
    # Renamed into place (hidden temporary names), boxes first: a scene counts as done only when both
    # are there. No fsync per file: they can be regenerated bit for bit.
    for path, write in ((job.boxes, lambda p: p.write_text(json.dumps(records))),
                        (job.image, lambda p: image.save(p, format="PNG", compress_level=6))):
        tmp = path.with_name(f".{path.name}.tmp")
        write(tmp)
        os.replace(tmp, path)
    return True, records


def _coco(split: str, jobs: list[_Job], results: list[list[dict]], names: list[str], size: int) -> dict:
    category = {name: i + 1 for i, name in enumerate(names)}
    images, annotations = [], []
    for job, records in zip(jobs, results):
        images.append({"id": job.index + 1, "file_name": job.image.name, "width": size, "height": size})
        for r in records:
            x1, y1, x2, y2 = r["box"]
            annotations.append({"id": len(annotations) + 1, "image_id": job.index + 1,
                                "category_id": category[r["name"]], "bbox": [x1, y1, x2 - x1, y2 - y1],
                                "area": r["area"], "iscrowd": 0})
    return {
        "info": {"description": f"edgeinc synthetic detection scenes ({split})", "version": GENERATOR},
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": [{"id": i, "name": n, "supercategory": "shape"} for n, i in category.items()],
    }


def synthesize_scenes(
    out: str | os.PathLike,
    train: int = 100,
    val: int = 20,
    size: int = 512,
    classes: int = 5,
    seed: int = 0,
    *,
    objects: tuple[int, int] = (4, 12),
    workers: int = 1,
) -> ScenesInfo:
    """Write ``out/{train,val}/NNNNNN.png`` (``size x size`` scenes of ``objects`` shapes each, an
    inclusive range, of the first ``classes`` shapes), their COCO detection files
    ``out/annotations/{train,val}.json`` (image id = index + 1, category id = shape index + 1, bbox
    ``[x, y, w, h]`` of the visible pixels) and ``out/scenes.json`` (the parameters). Rerunning with the
    same parameters completes an interrupted run (``out/.scenes/`` keeps each finished scene's boxes, so
    those are not drawn again); a folder holding anything else is refused."""
    names = _class_names(classes)[:-1]  # no 'background' category: the patch extraction adds it
    for key, value, low in (("train", train, 1), ("val", val, 1), ("seed", seed, 0), ("workers", workers, 1)):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ValueError(f"{key} must be an integer >= {low}, got {value!r}")
    if not isinstance(size, int) or not 96 <= size <= 4096:
        raise ValueError(f"size must be an integer between 96 and 4096 pixels (objects are up to "
                         f"{OBJECT_SIDE[1]} px), got {size!r}")
    objects = tuple(objects)
    if len(objects) != 2 or not all(isinstance(n, int) for n in objects) or not 0 <= objects[0] <= objects[1]:
        raise ValueError(f"objects must be (min, max) integers with 0 <= min <= max, got {objects!r}")
    out = Path(out)
    params = {"generator": GENERATOR, "classes": classes, "shapes": names, "train": train, "val": val,
              "size": size, "seed": seed, "objects": list(objects), "format": "png"}
    claim_folder(out, "scenes.json", params, "synthetic scenes")
    jobs = {split: [_Job(str(out), seed, size, split, i, tuple(names), objects) for i in range(count)]
            for split, count in (("train", train), ("val", val))}
    for split in SPLITS:
        (out / split).mkdir(parents=True, exist_ok=True)
        (out / ".scenes" / split).mkdir(parents=True, exist_ok=True)
    everything = [job for split in SPLITS for job in jobs[split]]
    start = time.perf_counter()
    if workers == 1:
        results = list(map(_run, everything))
    else:
        with get_context().Pool(workers) as pool:  # fork where available: workers use numpy/PIL, never torch
            results = pool.map(_run, everything, chunksize=4)
    counts, offset = {}, 0
    for split in SPLITS:
        part = [records for _, records in results[offset:offset + len(jobs[split])]]
        offset += len(jobs[split])
        atomic_write_json(out / "annotations" / f"{split}.json", _coco(split, jobs[split], part, names, size))
        counts[split] = {"images": len(part), "objects": sum(map(len, part))}
    written = sum(w for w, _ in results)
    return ScenesInfo(out, names, counts, params, written, len(results) - written, time.perf_counter() - start)
