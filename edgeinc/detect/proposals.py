"""Proposals for the patch classifier: where the detector looks.

Three sources, one output (float32 ``[N, 4]`` xyxy in pixels, torchvision's convention):
  ``sliding``           multi-scale square windows over the whole image: the baseline without a
                        proposal network (``SlidingWindows``).
  ``selective-search``  OpenCV contrib's selective search (``cv2.ximgproc.segmentation``), an optional
                        extra: ``pip install 'edgeinc[detect]'`` (opencv-contrib-python-headless).
  ``FILE.json``         boxes from the user's own detector in COCO results format (``read_proposals``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import torch
from torchvision.ops import box_convert

from ..data.folder import DataError
from ..utils.io import read_json_file

PROPOSAL_METHODS = ("sliding", "selective-search")


class ProposalError(DataError):
    """A proposals file that cannot be used (the message names the file and the field)."""


# --- sliding windows ----------------------------------------------------------------------------------------

# Objects of 10-80 px (the synthetic scenes' tight boxes; COCO's small and medium objects) in scenes of
# about 512 px: square windows of 12 to 96 px sides, 2^(1/2) apart, every half side. Measured on 10 scenes
# of 512 px (seed 0): 13,736 windows per scene, 97% of the objects have a window with IoU
# >= 0.5 (38% >= 0.7; median best IoU 0.64). A step of a third of the side: 30,809 windows, 100% (49%;
# 0.70). A step of a quarter: 54,125 windows, 100% (78%; 0.73).
SLIDING_SIZES = (12.0, 17.0, 24.0, 34.0, 48.0, 68.0, 96.0)
SLIDING_ASPECT_RATIOS = (1.0,)  # width / height; the scenes' boxes are 0.85-1.2 (5th-95th percentile)
SLIDING_STRIDE = 0.5  # of the window's side


@dataclass(frozen=True)
class SlidingWindows:
    """Multi-scale sliding windows.

    sizes: window sides in pixels (the square root of the area for other aspect ratios).
    aspect_ratios: width / height of the windows at each size.
    stride: step between windows as a fraction of the window's width (x) and height (y).
    Each scale's grid is centred in the image (equal margins); windows lie wholly inside it, and
    sizes larger than the image get one window each, clipped to the image.
    """

    sizes: tuple[float, ...] = SLIDING_SIZES
    aspect_ratios: tuple[float, ...] = SLIDING_ASPECT_RATIOS
    stride: float = SLIDING_STRIDE

    def __post_init__(self) -> None:
        for name, values in (("sizes", self.sizes), ("aspect_ratios", self.aspect_ratios)):
            if not values or not all(isinstance(v, (int, float)) and math.isfinite(v) and v > 0 for v in values):
                raise ValueError(f"sliding windows: {name} must be positive numbers, got {values!r}")
        if not isinstance(self.stride, (int, float)) or not 0 < self.stride <= 1:
            raise ValueError(f"sliding windows: stride must be a fraction of the window in (0, 1], got {self.stride!r}")

    def __call__(self, image_size: tuple[int, int]) -> torch.Tensor:
        """float32 ``[N, 4]`` xyxy for an image of ``(height, width)``, smallest windows first."""
        height, width = image_size
        boxes = []
        for size in self.sizes:
            for ratio in self.aspect_ratios:
                w, h = min(size * math.sqrt(ratio), width), min(size / math.sqrt(ratio), height)
                xs, ys = _positions(width, w, self.stride * w), _positions(height, h, self.stride * h)
                x, y = np.meshgrid(xs, ys)
                boxes.append(np.stack([x.ravel(), y.ravel(), x.ravel() + w, y.ravel() + h], axis=1))
        out = np.concatenate(boxes) if boxes else np.zeros((0, 4))
        return torch.from_numpy(out).to(torch.float32)

    def count(self, image_size: tuple[int, int]) -> int:
        return len(self(image_size))


def _positions(extent: float, window: float, step: float) -> np.ndarray:
    """Left edges of windows of ``window`` px every ``step`` px, the grid centred in ``extent``."""
    n = int(math.floor((extent - window) / step + 1e-9)) + 1
    offset = (extent - window - (n - 1) * step) / 2
    return offset + step * np.arange(n)


def sliding_windows(image_size: tuple[int, int], sizes: Sequence[float] = SLIDING_SIZES,
                    aspect_ratios: Sequence[float] = SLIDING_ASPECT_RATIOS, stride: float = SLIDING_STRIDE) -> torch.Tensor:
    """``SlidingWindows(sizes, aspect_ratios, stride)(image_size)``: float32 ``[N, 4]`` xyxy."""
    return SlidingWindows(tuple(sizes), tuple(aspect_ratios), stride)(image_size)


# --- selective search -----------------------------------------------------------------------------------------


def selective_search(image: np.ndarray, mode: str = "fast", max_boxes: int = 2000, min_side: float = 4.0) -> torch.Tensor:
    """OpenCV contrib's selective search (Uijlings et al.; ``switchToSelectiveSearchFast`` or
    ``...Quality``) on an RGB uint8 ``H x W x 3`` image: float32 ``[N, 4]`` xyxy, in OpenCV's order
    (most likely objects first), at most ``max_boxes``, sides of at least ``min_side`` px."""
    cv2 = require_opencv_contrib()
    if mode not in ("fast", "quality"):
        raise ValueError(f"selective search mode must be 'fast' or 'quality', got {mode!r}")
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"selective search needs a uint8 HxWx3 RGB image, got {image.dtype} {list(image.shape)}")
    search = cv2.ximgproc.segmentation.createSelectiveSearchSegmentation()
    search.setBaseImage(np.ascontiguousarray(image[..., ::-1]))  # OpenCV works in BGR
    search.switchToSelectiveSearchFast() if mode == "fast" else search.switchToSelectiveSearchQuality()
    rects = np.asarray(search.process(), dtype=np.float64).reshape(-1, 4)  # x, y, w, h
    rects = rects[(rects[:, 2] >= min_side) & (rects[:, 3] >= min_side)][:max_boxes]
    return box_convert(torch.from_numpy(rects), "xywh", "xyxy").to(torch.float32)


def require_opencv_contrib() -> Any:
    """The cv2 module with its contrib modules, or ImportError saying what to install."""
    try:
        import cv2
    except ImportError:
        raise ImportError("selective search needs OpenCV's contrib modules: pip install 'edgeinc[detect]' "
                          "(opencv-contrib-python-headless)") from None
    if not hasattr(cv2, "ximgproc"):
        raise ImportError(f"OpenCV {cv2.__version__} is installed without the contrib modules (no cv2.ximgproc): "
                          "pip uninstall opencv-python opencv-python-headless, then pip install opencv-contrib-python-headless")
    return cv2


# --- the user's own proposals (COCO results format) --------------------------------------------------------------


@dataclass(frozen=True)
class ProposalFile:
    """Boxes from a COCO results file, grouped by the image they name.

    by_id / by_name: image id -> or file name -> (float32 ``[N, 4]`` xyxy, float32 ``[N]`` scores), in
    file order. Entries name their image with ``image_id`` (matched through the annotation file) or
    ``file_name`` (relative to the images folder, or a bare file name).
    """

    path: Path
    by_id: dict[int, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)
    by_name: dict[str, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)
    entries: int = 0

    def lookup(self, image_id: int | None, file_name: str) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The boxes and scores for one image (by id, then by relative path, then by bare name)."""
        parts = []
        if image_id is not None and image_id in self.by_id:
            parts.append(self.by_id[image_id])
        for key in dict.fromkeys((file_name, PurePosixPath(file_name).name)):
            if key in self.by_name:
                parts.append(self.by_name[key])
                break
        if not parts:
            return None
        return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def read_proposals(path: str | os.PathLike) -> ProposalFile:
    """Read a COCO results file as proposals: a JSON list of objects with ``bbox`` ``[x, y, width,
    height]`` (pixels, finite, width and height >= 0), ``image_id`` (integer) or ``file_name``
    (string), and optionally ``score`` (a finite number; 1 when absent) and ``category_id`` (ignored:
    the patch classifier decides the class). ProposalError naming the file and the field otherwise."""
    path = Path(path)
    data = read_json_file(path, "proposals file", ProposalError)
    if isinstance(data, dict) and "annotations" in data:
        raise ProposalError(f"{path}: top level: an annotation file (with 'annotations'), not proposals; proposals "
                            f"are a COCO results list [{{'image_id' or 'file_name', 'bbox': [x, y, w, h], 'score'}}, ...]")
    if not isinstance(data, list):
        raise ProposalError(f"{path}: top level: expected a list of detections (COCO results format), "
                            f"got {type(data).__name__}")
    groups: dict[tuple[str, Any], tuple[list, list]] = {}
    for i, item in enumerate(data):
        where = f"[{i}]"
        if not isinstance(item, dict):
            raise ProposalError(f"{path}: {where}: expected an object, got {type(item).__name__}")
        if "image_id" in item:
            image_id = item["image_id"]
            if isinstance(image_id, bool) or not isinstance(image_id, int) or image_id < 0:
                raise ProposalError(f"{path}: {where}.image_id: expected a non-negative integer, got {image_id!r}")
            key: tuple[str, Any] = ("id", image_id)
        elif "file_name" in item:
            name = item["file_name"]
            if not isinstance(name, str) or not name.strip():
                raise ProposalError(f"{path}: {where}.file_name: expected a non-empty string, got {name!r}")
            key = ("name", PurePosixPath(name.replace("\\", "/")).as_posix())
        else:
            raise ProposalError(f"{path}: {where}: no 'image_id' or 'file_name' (which image is the box in?)")
        if "bbox" not in item:
            raise ProposalError(f"{path}: {where}.bbox: missing")
        bbox = item["bbox"]
        if (not isinstance(bbox, list) or len(bbox) != 4
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in bbox)):
            raise ProposalError(f"{path}: {where}.bbox: expected 4 finite numbers [x, y, width, height], got {bbox!r}")
        if bbox[2] < 0 or bbox[3] < 0:
            raise ProposalError(f"{path}: {where}.bbox: width and height must be >= 0, got {bbox!r}")
        score = item.get("score", 1.0)
        if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score):
            raise ProposalError(f"{path}: {where}.score: expected a finite number, got {score!r}")
        boxes, scores = groups.setdefault(key, ([], []))
        boxes.append([float(v) for v in bbox])
        scores.append(float(score))
    out = ProposalFile(path, entries=len(data))
    for (kind, key), (boxes, scores) in groups.items():
        xyxy = box_convert(torch.tensor(boxes, dtype=torch.float64), "xywh", "xyxy").to(torch.float32)
        (out.by_id if kind == "id" else out.by_name)[key] = (xyxy, torch.tensor(scores, dtype=torch.float32))
    return out
