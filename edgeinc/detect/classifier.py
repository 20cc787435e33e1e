"""The patch classifier: the detector's second stage on any runner (PyTorch, ONNX Runtime, OpenVINO,
LiteRT, TensorRT).

Inference sees what training and ``edgeinc eval`` saw. A training patch is ``crop_patches(image, box,
size=input_size, context, mean)`` written as a PNG (``edgeinc data patches``); ``edgeinc eval`` reads
such a PNG through ``build_transform(variant, train=False)``: a central crop of ``crop_fraction``, a
resize back to ``input_size`` (bilinear, antialiased) and the mean/std normalisation. ``classify`` cuts
each box with the same ``crop_patches`` and applies the same tensor operations
(``edgeinc.data.transforms``' eval ops, built from the runner's preprocessing), batched: for a patch
PNG the normalised tensor the runner gets is the one ``build_transform`` gives for that file, bit for
bit (tests/test_detect.py).

Which crop is used when (``crop=``):
  ``"auto"`` (default): ``crop_patches`` (exact, numpy, one box at a time) unless the image is a torch
      tensor on a device other than the CPU, or the runner is PyTorch on such a device: then
      ``roi_align_patches`` crops the whole batch there (no host round trip of the image).
  ``"exact"``: always ``crop_patches``. ``"roi_align"``: always ``roi_align_patches`` (CPU or device;
      it differs from ``crop_patches`` by ``ROI_ALIGN_*_TOLERANCE`` grey levels, see crops.py).
On the CPU the exact crop stays the default whatever the runner: it is the training crop, and it costs
little beside classification (benchmarks/patch_throughput.py measures both crops per batch).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import InterpolationMode, v2

from ..data.folder import to_rgb
from ..data.synth import BACKGROUND
from ..data.transforms import TRAIN_RATIO, TRAIN_SCALE, _tensor_ops
from .crops import (
    DEFAULT_CONTEXT,
    BoxesLike,
    ImageLike,
    batch_slices,
    check_boxes,
    check_context,
    crop_patches,
    roi_align_patches,
)

DEFAULT_BATCH_SIZE = 64  # patches per runner call: bounds memory for thousands of boxes
CropMode = Literal["auto", "exact", "roi_align"]


@dataclass(frozen=True)
class PatchPreprocessing:
    """The eval preprocessing a runner records (``runner.preprocessing``), typed: the fields
    ``edgeinc.data.transforms`` reads from a variant."""

    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    crop_fraction: float
    interpolation: str

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "runner.preprocessing") -> PatchPreprocessing:
        """Checked copy of a preprocessing dict; ValueError naming ``source`` and the field."""
        def field(key: str) -> Any:
            if key not in data:
                raise ValueError(f"{source}: '{key}' missing (expected input_size, mean, std, crop_fraction, interpolation)")
            return data[key]

        size = field("input_size")
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"{source}.input_size: expected a positive integer, got {size!r}")
        triples = {}
        for key in ("mean", "std"):
            value = field(key)
            if (not isinstance(value, (list, tuple)) or len(value) != 3
                    or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in value)):
                raise ValueError(f"{source}.{key}: expected 3 finite numbers (RGB), got {value!r}")
            triples[key] = tuple(float(v) for v in value)
        if any(v <= 0 for v in triples["std"]):
            raise ValueError(f"{source}.std: must be > 0, got {triples['std']}")
        fraction = field("crop_fraction")
        if not isinstance(fraction, (int, float)) or not 0.0 < fraction <= 1.0:
            raise ValueError(f"{source}.crop_fraction: expected a number in (0, 1], got {fraction!r}")
        interpolation = field("interpolation")
        try:
            InterpolationMode(interpolation)
        except ValueError:
            raise ValueError(f"{source}.interpolation: unknown interpolation {interpolation!r} "
                             f"(one of {', '.join(m.value for m in InterpolationMode)})") from None
        return cls(size, triples["mean"], triples["std"], float(fraction), str(interpolation))


def eval_transform(preprocessing: PatchPreprocessing) -> Callable[[torch.Tensor], torch.Tensor]:
    """The eval transform's tensor operations for this preprocessing (``edgeinc.data.transforms``:
    central crop of ``crop_fraction``, resize to ``input_size`` with the variant's interpolation and
    antialiasing, float scaling, normalisation): uint8 ``(N, 3, H, W)`` (any device) -> float32
    ``(N, 3, S, S)``. Applied to a batch it gives each image what ``build_transform(variant,
    train=False)`` gives for that image alone (the same kernels, per image)."""
    # PatchPreprocessing has exactly the fields _tensor_ops reads from a VariantConfig.
    return v2.Compose(_tensor_ops(preprocessing, False, TRAIN_SCALE, TRAIN_RATIO, False))  # type: ignore[arg-type]


def preprocess_patches(patches: np.ndarray | torch.Tensor, preprocessing: PatchPreprocessing,
                       transform: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """Cropped patches -> the normalised batch a runner takes.

    Args:
        patches: uint8 ``(N, S, S, 3)`` numpy (HWC, as ``crop_patches`` returns) or uint8 ``(N, 3, S, S)``
            tensor (CHW, as ``roi_align_patches(..., dtype=torch.uint8)`` returns; any device).
        preprocessing: the runner's preprocessing. ``transform``: ``eval_transform(preprocessing)``, if
            already built.
    Returns: float32 ``(N, 3, input_size, input_size)`` on the patches' device.
    """
    if isinstance(patches, np.ndarray):
        if patches.dtype != np.uint8 or patches.ndim != 4 or patches.shape[3] != 3:
            raise ValueError(f"patches must be uint8 (N, S, S, 3), got {patches.dtype} {list(patches.shape)}")
        tensor = torch.from_numpy(patches).permute(0, 3, 1, 2)
    else:
        if patches.dtype != torch.uint8 or patches.dim() != 4 or patches.shape[1] != 3:
            raise ValueError(f"patches must be uint8 (N, 3, S, S), got {patches.dtype} {list(patches.shape)}")
        tensor = patches
    if len(tensor) == 0:
        size = preprocessing.input_size
        return torch.zeros((0, 3, size, size), dtype=torch.float32, device=tensor.device)
    # Contiguous NCHW: the resize gives the same values for any layout, and runs faster on this one.
    return (transform or eval_transform(preprocessing))(tensor.contiguous())


@dataclass(frozen=True)
class PatchResult:
    """What ``classify`` says about N boxes (CPU tensors, box order kept).

    boxes: float32 ``[N, 4]`` xyxy clipped to the image (zeros where not valid).
    valid: bool ``[N]``; boxes that are not valid (a coordinate NaN or inf, ``x2 <= x1``, ``y2 <= y1``,
        nothing left inside the image) are not classified.
    probs: float32 ``[N, K]`` softmax over all K classes (NaN rows where not valid).
    labels: int64 ``[N]`` argmax over all classes, background included (-1 where not valid).
    scores: float32 ``[N]`` the probability of that class (NaN where not valid).
    background: float32 ``[N]`` the probability of the class named ``background`` (NaN where not
        valid, or everywhere when the model has no such class: see ``background_index``).
    class_names: the model's K labels, in logit order.
    """

    boxes: torch.Tensor
    valid: torch.Tensor
    probs: torch.Tensor
    labels: torch.Tensor
    scores: torch.Tensor
    background: torch.Tensor
    class_names: tuple[str, ...]

    @property
    def background_index(self) -> int | None:
        return self.class_names.index(BACKGROUND) if BACKGROUND in self.class_names else None

    def __len__(self) -> int:
        return len(self.boxes)

    @classmethod
    def from_probs(cls, boxes: torch.Tensor, valid: torch.Tensor, probs: torch.Tensor,
                   class_names: Sequence[str]) -> PatchResult:
        """Labels, scores and background from a ``[N, K]`` probability matrix (rows where ``valid`` is
        False are set to NaN)."""
        names = tuple(class_names)
        if probs.dim() != 2 or probs.shape != (len(boxes), len(names)):
            raise ValueError(f"probs must be [N, K] = [{len(boxes)}, {len(names)}], got {list(probs.shape)}")
        probs = torch.where(valid[:, None], probs.to(torch.float32), torch.nan)
        scores, labels = torch.where(valid[:, None], probs, -1.0).max(dim=1)
        labels = torch.where(valid, labels, -1)
        scores = torch.where(valid, scores, torch.nan)
        background = probs[:, names.index(BACKGROUND)] if BACKGROUND in names else torch.full((len(boxes),), torch.nan)
        return cls(boxes, valid, probs, labels, scores, background.clone(), names)


class PatchScorer(Protocol):
    """Anything the detector can score proposals with: a PatchClassifier, or a stand-in (a baseline,
    a test double) with the same two faces."""

    class_names: tuple[str, ...]

    def classify(self, image: ImageLike, boxes: BoxesLike, context: int = DEFAULT_CONTEXT,
                 batch_size: int | None = None, strict: bool = False) -> PatchResult: ...


def image_size_of(image: ImageLike) -> tuple[int, int]:
    """(height, width) of an HxWx3 array, a PIL image or a 3xHxW tensor."""
    if isinstance(image, Image.Image):
        return image.height, image.width
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"a numpy image must be uint8 HxWx3 (RGB), got {image.dtype} {list(image.shape)}")
        return int(image.shape[0]), int(image.shape[1])
    if isinstance(image, torch.Tensor):
        if image.dim() != 3 or image.shape[0] != 3:
            raise ValueError(f"a tensor image must be uint8 3xHxW (CHW, RGB), got {image.dtype} {list(image.shape)}")
        return int(image.shape[1]), int(image.shape[2])
    raise TypeError(f"image must be a numpy array, PIL image or torch tensor, got {type(image).__name__}")


def check_batch_size(batch_size: int | None) -> int:
    batch = DEFAULT_BATCH_SIZE if batch_size is None else batch_size
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    return batch


class PatchClassifier:
    """Classify the patches of proposed boxes with any runner (see the module's docstring for the
    preprocessing and the crop paths).

        classifier = PatchClassifier.load("artifacts/quickstart/onnx-int8")
        result = classifier.classify(image, boxes)    # image HxWx3 uint8 / PIL; boxes [N, 4] xyxy pixels
        result.labels, result.scores, result.background, result.probs
    """

    def __init__(self, runner: Any) -> None:
        self.runner = runner
        where = f"{getattr(runner, 'name', 'runner')}.preprocessing"
        self.preprocessing = PatchPreprocessing.from_dict(dict(runner.preprocessing), where)
        self.class_names: tuple[str, ...] = tuple(runner.labels)
        if not self.class_names:
            raise ValueError("the runner has no labels: the classifier cannot name its classes")
        self._transform = eval_transform(self.preprocessing)

    @classmethod
    def load(cls, source: str | os.PathLike, backend: str | None = None, threads: int | None = None,
             **runner_options: Any) -> PatchClassifier:
        """A classifier over ``edgeinc.runtime.load_runner(source, backend, threads)``: a run directory, a
        ``.safetensors`` weights file, or an exported artifact (its folder or manifest.json), on any
        runner (torch, onnxruntime, openvino, litert, tensorrt). Labels and preprocessing come from
        the run or manifest."""
        from ..runtime import load_runner

        return cls(load_runner(source, backend=backend, threads=threads, **runner_options))

    @property
    def name(self) -> str:
        return str(getattr(self.runner, "name", type(self.runner).__name__))

    @property
    def background_index(self) -> int | None:
        return self.class_names.index(BACKGROUND) if BACKGROUND in self.class_names else None

    def _device(self) -> torch.device | None:
        """The runner's torch device when it is PyTorch on a device other than the CPU."""
        device = getattr(self.runner, "device", None)
        if self.name == "torch" and device is not None and torch.device(device).type != "cpu":
            return torch.device(device)
        return None

    def crop_path(self, image: ImageLike, crop: CropMode = "auto") -> str:
        """``"exact"`` or ``"roi_align"``: the crop ``classify`` uses for this image (module docstring)."""
        if crop not in ("auto", "exact", "roi_align"):
            raise ValueError(f"crop must be 'auto', 'exact' or 'roi_align', got {crop!r}")
        if crop != "auto":
            return crop
        on_device = isinstance(image, torch.Tensor) and image.device.type != "cpu"
        return "roi_align" if on_device or self._device() is not None else "exact"

    def _prepare(self, image: ImageLike, path: str) -> np.ndarray | torch.Tensor:
        """The image once per call, in the form the crop path reads: HxWx3 uint8 numpy for the exact
        crop; a 3xHxW uint8 tensor on the crop's device for roi_align."""
        if path == "exact":
            if isinstance(image, Image.Image):
                return np.asarray(to_rgb(image))
            if isinstance(image, torch.Tensor):
                _chw_tensor(image)  # checks dtype and layout
                return image.permute(1, 2, 0).cpu().numpy()
            return image
        tensor = _chw_tensor(image)
        device = self._device()
        return tensor.to(device) if device is not None and tensor.device.type == "cpu" else tensor

    def patches(self, image: ImageLike, boxes: torch.Tensor, context: int = DEFAULT_CONTEXT,
                crop: CropMode = "auto") -> torch.Tensor:
        """The normalised runner input for boxes that are valid (``check_boxes``): float32
        ``(N, 3, S, S)``, on the CPU for the exact path, on the crop's device for roi_align."""
        path = self.crop_path(image, crop)
        return self._patches(self._prepare(image, path), boxes, context, path)

    def _patches(self, prepared: np.ndarray | torch.Tensor, boxes: torch.Tensor, context: int, path: str) -> torch.Tensor:
        size, mean = self.preprocessing.input_size, self.preprocessing.mean
        if path == "exact":
            pixels = crop_patches(prepared, boxes, size, context, mean)
        else:
            pixels = roi_align_patches(prepared, boxes.to(prepared.device), size, context, mean, dtype=torch.uint8)
        return preprocess_patches(pixels, self.preprocessing, self._transform)

    def classify(
        self,
        image: ImageLike,
        boxes: BoxesLike,
        context: int = DEFAULT_CONTEXT,
        batch_size: int | None = None,
        strict: bool = False,
        *,
        crop: CropMode = "auto",
    ) -> PatchResult:
        """Classify the patch of each box.

        Args:
            image: RGB, uint8 ``H x W x 3`` numpy, a PIL image (any mode, converted to RGB) or a uint8
                ``3 x H x W`` tensor (any device).
            boxes: ``[N, 4]`` float xyxy in pixels (tensor, array or nested list; ``[]`` is none).
                Boxes partly outside the image are clipped to it; boxes with a NaN or infinite
                coordinate, ``x2 <= x1``, ``y2 <= y1`` or nothing inside the image are not classified
                and marked not valid.
            context: output pixels of context per side, as the training patches were cut (``edgeinc
                data patches --context``).
            batch_size: patches per runner call (default 64): memory stays bounded for any N. A
                fixed-batch artifact (TFLite batch 1) is chunked by its runner.
            strict: raise ValueError naming the first invalid box (index, coordinates, why) instead.
            crop: which crop function (module docstring).
        Returns: a PatchResult with N rows.
        """
        batch = check_batch_size(batch_size)
        check_context(self.preprocessing.input_size, context)
        clipped, valid = check_boxes(boxes, image_size_of(image), strict=strict)
        path = self.crop_path(image, crop)
        prepared = self._prepare(image, path)  # converted (or moved to the device) once, not once per batch
        probs = torch.full((len(clipped), len(self.class_names)), torch.nan, dtype=torch.float32)
        index = torch.nonzero(valid)[:, 0]
        for part in batch_slices(len(index), batch):
            rows = index[part]
            x = self._patches(prepared, clipped[rows], context, path)
            logits = np.asarray(self.runner.predict(np.ascontiguousarray(x.cpu().numpy(), dtype=np.float32)))
            if logits.shape != (len(rows), len(self.class_names)):
                raise ValueError(f"runner {self.name} returned logits of shape {list(logits.shape)} for {len(rows)} "
                                 f"patches and {len(self.class_names)} labels")
            probs[rows] = torch.softmax(torch.from_numpy(logits).to(torch.float32), dim=1)
        return PatchResult.from_probs(clipped, valid, probs, self.class_names)


def _chw_tensor(image: ImageLike) -> torch.Tensor:
    """uint8 3xHxW tensor from a numpy HWC array, a PIL image or a tensor (kept on its device)."""
    if isinstance(image, torch.Tensor):
        if image.dtype != torch.uint8 or image.dim() != 3 or image.shape[0] != 3:
            raise ValueError(f"a tensor image must be uint8 3xHxW (CHW, RGB), got {image.dtype} {list(image.shape)}")
        return image
    if isinstance(image, Image.Image):
        image = np.asarray(to_rgb(image))
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"a numpy image must be uint8 HxWx3 (RGB), got {getattr(image, 'dtype', type(image))}")
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
