"""The synthetic patch task: section 9's use case (is the centre of a detector's patch an object, and
which class) made offline, written as an ImageNet-layout folder so the real loader reads it.

Each patch has one of K shapes at its centre (random colour, texture, size, rotation, mirroring and
stretch, sometimes partly occluded) on a cluttered background that also holds off-centre and
border-cut shapes of the same classes, or is ``background``: the same clutter and off-centre shapes,
nothing centred. Colours and textures are drawn from one palette for every class and for the
clutter, and every shape is scaled to the same area, so colour statistics say nothing about the label.

Determinism: image i of class c in a split is drawn from its own generator seeded with
(seed, split, shape index, i), so output is byte-identical for the same parameters (same Pillow/zlib),
whatever the order, the number of workers or an interrupted-then-resumed run.
"""

from __future__ import annotations

import colorsys
import functools
import math
import os
import time
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ..utils.io import atomic_write_json
from .claim import claim_folder

GENERATOR = "edgeinc.synth/2"  # bump when the drawing changes: old folders are then not resumed into
BACKGROUND = "background"
_BACKGROUND_INDEX = 1000  # seed component for the background folder, apart from any shape index
SUPERSAMPLE = 2  # masks are drawn at 2x and box-filtered down: anti-aliased edges

# Object scale, as a fraction of the patch area (every shape is scaled to the same area).
OBJECT_AREA = (0.07, 0.16)
MAX_CENTRE_JITTER = 0.05  # centred object's offset from the patch centre, fraction of the side
DECOY_DISTANCE = (0.34, 0.62)  # off-centre shapes: distance of their centre, fraction of the side
SMALL_SHAPE_AREA = (0.008, 0.025)
SMALL_SHAPE_MIN_DISTANCE = 0.28
# Generic clutter (blobs, ellipses, strokes) may cover the centre, so it stays smaller than any object.
CLUTTER_RADIUS = (0.04, 0.11)
CLUTTER_COUNT = (2, 6)  # integers, high exclusive
# How far a texture's second colour moves from the first towards another palette colour.
BACKGROUND_CONTRAST = (0.1, 0.35)
TEXTURE_CONTRAST = (0.3, 1.0)
MIN_CONTRAST = 60.0  # RGB distance between a shape's fill and the pixels it covers


def _regular(n: int, radius: float = 1.0, phase: float = 0.0) -> np.ndarray:
    angles = phase + 2 * np.pi * np.arange(n) / n
    return radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)


def _poly(*points: tuple[float, float]) -> np.ndarray:
    return np.array(points, dtype=np.float64)


_CIRCLE = _regular(48)
_STAR = _regular(10, phase=-np.pi / 2) * np.where(np.arange(10) % 2 == 0, 1.0, 0.42)[:, None]
# name -> polygons in unit coordinates (extent about [-1, 1], y down), each with a fill: 255 adds, 0 cuts a hole.
SHAPES: dict[str, list[tuple[np.ndarray, int]]] = {
    "circle": [(_CIRCLE, 255)],
    "triangle": [(_regular(3, phase=-np.pi / 2), 255)],
    "square": [(_regular(4, phase=np.pi / 4), 255)],
    "star": [(_STAR, 255)],
    "cross": [(_poly((-.32, -1), (.32, -1), (.32, -.32), (1, -.32), (1, .32), (.32, .32), (.32, 1),
                     (-.32, 1), (-.32, .32), (-1, .32), (-1, -.32), (-.32, -.32)), 255)],
    "ring": [(_CIRCLE, 255), (_CIRCLE * 0.55, 0)],
    "arrow": [(_poly((-1, -.22), (.1, -.22), (.1, -.65), (1, 0), (.1, .65), (.1, .22), (-1, .22)), 255)],
    "letter_t": [(_poly((-.85, -1), (.85, -1), (.85, -.55), (.22, -.55), (.22, 1), (-.22, 1), (-.22, -.55),
                        (-.85, -.55)), 255)],
    "letter_l": [(_poly((-.6, -1), (-.15, -1), (-.15, .55), (.7, .55), (.7, 1), (-.6, 1)), 255)],
    "letter_h": [(_poly((-.8, -1), (-.38, -1), (-.38, -.2), (.38, -.2), (.38, -1), (.8, -1), (.8, 1), (.38, 1),
                        (.38, .2), (-.38, .2), (-.38, 1), (-.8, 1)), 255)],
    "crescent": [(_CIRCLE, 255), (_CIRCLE * 0.85 + [0.45, 0.0], 0)],
    "hexagon": [(_regular(6), 255)],
}
SHAPE_NAMES = tuple(SHAPES)  # the first K are the classes of a K-class task


@dataclass(frozen=True)
class SynthInfo:
    """What ``synthesize_patch_task`` wrote."""

    root: Path
    classes: list[str]  # label order (sorted folder names, as ImageFolder reads them)
    counts: dict[str, dict[str, int]]  # split -> class -> images
    params: dict = field(default_factory=dict)
    written: int = 0  # images written by this call
    reused: int = 0  # images already there from an interrupted run with the same parameters
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return {**asdict(self), "root": str(self.root)}


@functools.cache
def _unit_area(name: str) -> float:
    """Filled area of a unit shape (in unit^2), measured by drawing it the way patches are drawn."""
    side = 512
    image = Image.new("L", (side, side), 0)
    draw = ImageDraw.Draw(image)
    for polygon, fill in SHAPES[name]:
        draw.polygon([tuple(p) for p in (polygon + 1.0) * (side / 2)], fill=fill)
    return float(np.count_nonzero(np.asarray(image))) / (side / 2) ** 2


@functools.cache
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    return x, y


def _colour(rng: np.random.Generator) -> np.ndarray:
    """The one palette, for every class, clutter and background alike."""
    r, g, b = colorsys.hsv_to_rgb(rng.random(), rng.uniform(0.15, 1.0), rng.uniform(0.2, 1.0))
    return np.array([r, g, b], dtype=np.float32) * 255.0


def _texture(
    rng: np.random.Generator, size: int, region: tuple[slice, slice] = (slice(None), slice(None)),
    first: np.ndarray | None = None, contrast: float = 1.0,
) -> np.ndarray:
    """A fill for ``region`` of a size x size patch: solid, stripes, dots, checker, gradient or blotches
    between two palette colours (``first``: the first one; the second is moved ``contrast`` of the way
    from it to another palette colour); (h, w, 3) float."""
    x, y = (g[region] for g in _grid(size))
    c1 = _colour(rng) if first is None else first
    c2 = c1 + contrast * (_colour(rng) - c1)
    kind = rng.integers(6)
    if kind == 0:
        return np.broadcast_to(c1, (*x.shape, 3))
    angle = rng.uniform(0, np.pi)
    u = x * math.cos(angle) + y * math.sin(angle)
    v = -x * math.sin(angle) + y * math.cos(angle)
    period = rng.uniform(0.04, 0.12) * size
    if kind == 1:  # stripes
        t = (np.mod(u / period, 1.0) < rng.uniform(0.3, 0.7)).astype(np.float32)
    elif kind == 2:  # dots on a rotated grid
        du = np.mod(u, period) - period / 2
        dv = np.mod(v, period) - period / 2
        t = (du * du + dv * dv < (rng.uniform(0.2, 0.4) * period) ** 2).astype(np.float32)
    elif kind == 3:  # checker
        t = np.mod(np.floor(u / period) + np.floor(v / period), 2).astype(np.float32)
    elif kind == 4:  # linear gradient across the filled region
        t = np.clip((u - u.min()) / max(float(np.ptp(u)), 1e-6), 0, 1)
    else:  # low-frequency blotches
        coarse = Image.fromarray((rng.random((4, 4)) * 255).astype(np.uint8), "L")
        t = np.asarray(coarse.resize(x.shape[::-1], Image.BILINEAR), dtype=np.float32) / 255.0
    return c1 * (1.0 - t[..., None]) + c2 * t[..., None]


def _draw(size: int, draw_fn) -> np.ndarray:
    """A (size, size) coverage mask in [0, 1] from drawing calls on a supersampled canvas."""
    big = size * SUPERSAMPLE
    image = Image.new("L", (big, big), 0)
    draw_fn(ImageDraw.Draw(image), SUPERSAMPLE)
    return np.asarray(image.resize((size, size), Image.BOX), dtype=np.float32) / 255.0


def _shape_mask(name: str, size: int, centre: np.ndarray, area: float, rng: np.random.Generator) -> np.ndarray:
    """Shape ``name`` with filled area ``area`` (fraction of the patch), randomly rotated/mirrored/stretched."""
    stretch = math.exp(rng.uniform(-0.15, 0.15))
    mirror = -1.0 if rng.random() < 0.5 else 1.0
    angle = rng.uniform(0, 2 * np.pi)
    radius = math.sqrt(area / _unit_area(name)) * size
    rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    scale = np.array([mirror * stretch, 1.0 / stretch]) * radius

    def draw(d: ImageDraw.ImageDraw, ss: int) -> None:
        for polygon, fill in SHAPES[name]:
            points = ((polygon * scale) @ rotation.T + centre) * ss
            d.polygon([tuple(p) for p in points], fill=fill)

    return _draw(size, draw)


def _blob_mask(size: int, centre: np.ndarray, radius: float, rng: np.random.Generator) -> np.ndarray:
    """An irregular polygon, an ellipse-ish blob or a thick stroke: clutter that is no class."""
    kind = rng.integers(3)

    def draw(d: ImageDraw.ImageDraw, ss: int) -> None:
        if kind == 2:
            angle = rng.uniform(0, np.pi)
            half = np.array([math.cos(angle), math.sin(angle)]) * radius * rng.uniform(1.0, 2.5)
            d.line([tuple((centre - half) * ss), tuple((centre + half) * ss)], fill=255,
                   width=max(1, int(rng.uniform(0.015, 0.05) * size * ss)))
            return
        n = int(rng.integers(5, 10)) if kind == 0 else 24
        angles = np.sort(rng.uniform(0, 2 * np.pi, n)) if kind == 0 else np.linspace(0, 2 * np.pi, n, endpoint=False)
        radii = rng.uniform(0.45, 1.0, n) if kind == 0 else np.full(n, 1.0)
        stretch = rng.uniform(0.45, 0.8) if kind == 1 else 1.0  # elongated: never a 'circle'
        points = np.stack([np.cos(angles) * radii, np.sin(angles) * radii * stretch], axis=1) * radius + centre
        d.polygon([tuple(p * ss) for p in points], fill=255)

    return _draw(size, draw)


def _paint(canvas: np.ndarray, mask: np.ndarray, rng: np.random.Generator, contrast: bool = False) -> None:
    """Fill ``mask`` on ``canvas`` with a random texture; ``contrast``: redraw the main colour until it
    stands out from what it covers (the palette itself stays the same for every class)."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:  # entirely outside the patch
        return
    region = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    m = mask[region][..., None]
    first = None
    if contrast:
        under = (canvas[region] * m).sum(axis=(0, 1)) / m.sum()
        for _ in range(10):
            first = _colour(rng)
            if np.linalg.norm(first - under) >= MIN_CONTRAST:
                break
    texture = _texture(rng, canvas.shape[0], region, first, rng.uniform(*TEXTURE_CONTRAST))
    canvas[region] = canvas[region] * (1.0 - m) + texture * m


def _off_centre(rng: np.random.Generator, size: int, distance: tuple[float, float]) -> np.ndarray:
    angle = rng.uniform(0, 2 * np.pi)
    r = rng.uniform(*distance) * size
    return size / 2 + r * np.array([math.cos(angle), math.sin(angle)])


def render_patch(rng: np.random.Generator, size: int, shape: str | None, shapes: tuple[str, ...]) -> Image.Image:
    """One patch: ``shape`` centred (None: background), clutter and off-centre ``shapes`` around it."""
    # A calm background (its texture at low contrast), so that clutter and shapes stand out from it.
    canvas = np.array(_texture(rng, size, contrast=rng.uniform(*BACKGROUND_CONTRAST)), dtype=np.float32)
    for _ in range(rng.integers(*CLUTTER_COUNT)):  # generic clutter anywhere, even over the centre
        centre = rng.uniform(-0.1, 1.1, 2) * size
        _paint(canvas, _blob_mask(size, centre, rng.uniform(*CLUTTER_RADIUS) * size, rng), rng)
    for _ in range(rng.integers(0, 3)):  # small class shapes, never near the centre
        centre = _off_centre(rng, size, (SMALL_SHAPE_MIN_DISTANCE, 0.7))
        mask = _shape_mask(shapes[rng.integers(len(shapes))], size, centre, rng.uniform(*SMALL_SHAPE_AREA), rng)
        _paint(canvas, mask, rng)
    # Object-sized shapes off centre, mostly cut by the border; a background patch gets one more, so
    # both kinds hold about as much "object" area and colour.
    for _ in range(rng.integers(0, 2) + (1 if shape is None else 0)):
        centre = _off_centre(rng, size, DECOY_DISTANCE)
        mask = _shape_mask(shapes[rng.integers(len(shapes))], size, centre, rng.uniform(*OBJECT_AREA), rng)
        _paint(canvas, mask, rng, contrast=True)
    if shape is not None:
        jitter = rng.uniform(0, MAX_CENTRE_JITTER) * size
        angle = rng.uniform(0, 2 * np.pi)
        centre = size / 2 + jitter * np.array([math.cos(angle), math.sin(angle)])
        area = rng.uniform(*OBJECT_AREA)
        _paint(canvas, _shape_mask(shape, size, centre, area, rng), rng, contrast=True)
        if rng.random() < 0.35:  # occluder over part of the object's edge
            radius = math.sqrt(area / np.pi) * size
            towards = rng.uniform(0, 2 * np.pi)
            edge = centre + radius * np.array([math.cos(towards), math.sin(towards)])
            _paint(canvas, _blob_mask(size, edge, radius * rng.uniform(0.35, 0.6), rng), rng)
    canvas += rng.normal(0.0, rng.uniform(0.0, 6.0), canvas.shape).astype(np.float32)
    return Image.fromarray(np.clip(np.rint(canvas), 0, 255).astype(np.uint8), "RGB")


def _class_names(classes: int) -> list[str]:
    if not 1 <= classes <= len(SHAPE_NAMES):
        raise ValueError(
            f"classes must be between 1 and {len(SHAPE_NAMES)} (shapes: {', '.join(SHAPE_NAMES)}), got {classes}"
        )
    return [*SHAPE_NAMES[:classes], BACKGROUND]


_SPLITS = {"train": 0, "val": 1}


@dataclass(frozen=True)
class _Job:
    out: str
    seed: int
    size: int
    split: str
    folder: str  # a shape name or BACKGROUND
    index: int
    shapes: tuple[str, ...]

    @property
    def path(self) -> Path:
        return Path(self.out) / self.split / self.folder / f"{self.index:06d}.png"


def _run(job: _Job) -> bool:
    """Render and write one image unless it is already there; True when written."""
    path = job.path
    if path.exists():
        return False
    folder_index = _BACKGROUND_INDEX if job.folder == BACKGROUND else SHAPE_NAMES.index(job.folder)
    rng = np.random.default_rng([job.seed, _SPLITS[job.split], folder_index, job.index])
    image = render_patch(rng, job.size, None if job.folder == BACKGROUND else job.folder, job.shapes)
    tmp = path.with_name(f".{path.name}.tmp")  # hidden, not an image extension: loaders ignore it
    # Renamed into place: an interrupted run never leaves a half-written image; rerunning finishes it.
    # No fsync per image: the files can be regenerated bit for bit.
    image.save(tmp, format="PNG", compress_level=6)
    os.replace(tmp, path)
    return True


def synthesize_patch_task(
    out: str | os.PathLike,
    classes: int = 5,
    train: int = 200,
    val: int = 50,
    size: int = 96,
    seed: int = 0,
    *,
    workers: int = 1,
) -> SynthInfo:
    """Write the task as ``out/{train,val}/<class>/NNNNNN.png`` (``train``/``val`` images per class, K =
    ``classes`` shapes plus ``background``), ``out/classes.json`` (label order) and ``out/synth.json``
    (the parameters). Rerunning with the same parameters completes an interrupted run; a folder holding
    anything else is refused."""
    names = _class_names(classes)
    for key, value, low in (("train", train, 1), ("val", val, 1), ("seed", seed, 0), ("workers", workers, 1)):
        if not isinstance(value, int) or value < low:
            raise ValueError(f"{key} must be an integer >= {low}, got {value!r}")
    if not 32 <= size <= 1024:
        raise ValueError(f"size must be between 32 and 1024 pixels, got {size}")
    out = Path(out)
    params = {"generator": GENERATOR, "classes": classes, "shapes": names[:-1], "train": train, "val": val,
              "size": size, "seed": seed, "format": "png"}
    claim_folder(out, "synth.json", params, "a synthetic task")
    shapes = tuple(names[:-1])
    jobs = [
        _Job(str(out), seed, size, split, folder, i, shapes)
        for split, count in (("train", train), ("val", val))
        for folder in names
        for i in range(count)
    ]
    for split in _SPLITS:
        for folder in names:
            (out / split / folder).mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    if workers == 1:
        written = sum(map(_run, jobs))
    else:
        with get_context().Pool(workers) as pool:  # fork where available: workers use numpy/PIL, never torch
            written = sum(pool.imap_unordered(_run, jobs, chunksize=16))
    label_order = sorted(names)  # ImageFolder sorts the folders: labels follow that order
    atomic_write_json(out / "classes.json", label_order)
    counts = {split: {c: (train if split == "train" else val) for c in label_order} for split in _SPLITS}
    return SynthInfo(out, label_order, counts, params, written, len(jobs) - written, time.perf_counter() - start)
