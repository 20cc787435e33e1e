"""Patches for the detector's second stage: R-CNN's warp with context, one definition for training and
inference.

Conventions (torchvision.ops): boxes are float ``[N, 4]`` ``(x1, y1, x2, y2)`` in pixel coordinates
where pixel ``(i, j)`` covers ``[j, j + 1) x [i, i + 1)``, so ``[0, 0, W, H]`` is the whole image;
image sizes are ``(height, width)``.

R-CNN (rbgirshick/rcnn ``rcnn_extract_regions``/``im_crop``) dilates each box so that, once warped to
``size x size``, ``context`` pixels of its surroundings show on every side: a side of ``w`` pixels maps
to ``size - 2 * context`` output pixels, so the dilated side is ``w * size / (size - 2 * context)``
around the same centre. The dilated box is rounded to whole pixels (each edge to the nearest integer,
halves up: ``floor(x + 0.5)``; at least one pixel wide), the part of it outside the image is the
model's mean colour (it normalises to about 0), and that region is resized to ``size x size`` with the
eval transform's resize (bilinear, antialiased; ``edgeinc.data.build_transform``). ``crop_patches``
is that definition: training patches are cut with it and inference must crop with it too.
``roi_align_patches`` is the batched torch approximation (CPU or GPU) on the same rounded regions.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from PIL import Image
from torchvision.ops import box_area, clip_boxes_to_image, roi_align
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as F

from ..data.folder import to_rgb

# Every variant's recorded normalisation mean (edgeinc.models.get_variant(name).mean; a test checks it).
INCEPTION_MEAN = (0.5, 0.5, 0.5)
DEFAULT_CONTEXT = 16  # R-CNN's padding, in output pixels
# The eval transform's resize (edgeinc.data.transforms: v2.Resize(..., antialias=True), the variants'
# "bilinear"); a test checks that crop_patches equals it.
INTERPOLATION = InterpolationMode.BILINEAR
# roi_align_patches against crop_patches, absolute differences in grey levels (0-255) over all pixels and
# channels, measured on rendered detection scenes at sizes 79 and 151 (boxes of 4-8 px upsampled up to 8x,
# 8-60 px, 80-240 px downsampled up to 5x; inside, partly and wholly outside the image): mean <= 1.2,
# 99.9th percentile <= 33, max 132. The large ones sit in the outermost pixels of upsampled patches:
# roi_align interpolates with the image just outside the region where the resize repeats the region's
# edge (inside a 6-pixel border the max was 1.3); under downsampling the two filters differ (box filter
# of bilinear samples vs an antialiasing triangle). Bounds, with margin for other CPUs:
ROI_ALIGN_MEAN_TOLERANCE = 2.0
ROI_ALIGN_P999_TOLERANCE = 48.0
ROI_ALIGN_MAX_TOLERANCE = 160.0

BoxesLike = torch.Tensor | np.ndarray | Sequence[Sequence[float]]
ImageLike = np.ndarray | Image.Image | torch.Tensor


def as_boxes(boxes: BoxesLike, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Boxes as a ``[N, 4]`` tensor of ``dtype`` (on the input's device for a tensor). An empty list,
    or any empty input, is ``[0, 4]``; another shape raises ValueError naming the expected one."""
    if isinstance(boxes, torch.Tensor):
        tensor = boxes
    else:
        try:
            tensor = torch.as_tensor(np.asarray(boxes, dtype=np.float64))
        except (TypeError, ValueError) as e:  # ragged lists, strings
            raise ValueError(f"boxes must have shape [N, 4] (x1, y1, x2, y2) of numbers: {e}") from None
    if tensor.numel() == 0 and tensor.dim() <= 2 and (tensor.dim() < 2 or tensor.shape[-1] in (0, 4)):
        return tensor.new_zeros((0, 4), dtype=dtype)
    if tensor.dim() != 2 or tensor.shape[1] != 4:
        raise ValueError(f"boxes must have shape [N, 4] (x1, y1, x2, y2), got shape {list(tensor.shape)}")
    return tensor.to(dtype)


def check_boxes(
    boxes: BoxesLike, image_size: tuple[int, int], strict: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Clip boxes to the image and say which are usable.

    Args:
        boxes: ``[N, 4]`` xyxy in pixels (tensor, array or nested list; ``[]`` is an empty list).
        image_size: ``(height, width)``, torchvision's order.
        strict: raise ValueError naming the first invalid box (its index, coordinates and why).

    Returns:
        ``(clipped, valid)``: float32 ``[N, 4]`` boxes clipped to ``[0, width] x [0, height]``
        (``torchvision.ops.clip_boxes_to_image``; rows that are not valid are zeros) and bool ``[N]``.
        A box is invalid when a coordinate is NaN or infinite, when ``x2 <= x1`` or ``y2 <= y1``, or when
        nothing of it is left after clipping (entirely outside the image). Boxes partly outside are
        clipped and valid.
    """
    height, width = (int(v) for v in image_size)
    if height <= 0 or width <= 0:
        raise ValueError(f"image_size must be (height, width) with both > 0, got {tuple(image_size)}")
    b = as_boxes(boxes)
    finite = torch.isfinite(b).all(dim=1)
    wide = b[:, 2] > b[:, 0]  # False for NaN too
    tall = b[:, 3] > b[:, 1]
    clipped = clip_boxes_to_image(torch.where(finite[:, None], b, 0.0), (height, width))
    inside = box_area(clipped) > 0  # ordered boxes only (checked above): both sides > 0 after clipping
    valid = finite & wide & tall & inside
    if strict and not bool(valid.all()):
        i = int(torch.nonzero(~valid)[0])
        why = ("a coordinate is not finite (NaN or inf)" if not finite[i] else "x2 <= x1" if not wide[i]
               else "y2 <= y1" if not tall[i] else f"entirely outside the {width}x{height} image (no area after clipping)")
        raise ValueError(f"box {i} {b[i].tolist()} is invalid: {why}")
    return torch.where(valid[:, None], clipped, 0.0), valid


def check_context(size: int, context: int) -> None:
    """ValueError unless ``0 <= context`` and ``2 * context < size`` (integers)."""
    if not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be a positive integer, got {size!r}")
    if not isinstance(context, int) or context < 0 or 2 * context >= size:
        raise ValueError(f"context must be an integer with 0 <= context and 2 * context < size ({size}), got {context!r}")


def context_regions(boxes: BoxesLike, size: int, context: int = DEFAULT_CONTEXT) -> torch.Tensor:
    """The whole-pixel region each patch shows: boxes dilated by ``size / (size - 2 * context)`` around
    their centres, each edge rounded to the nearest integer (halves up), at least one pixel wide.

    Args: boxes ``[N, 4]`` xyxy (finite, ``x2 > x1``, ``y2 > y1``; see ``check_boxes``).
    Returns: int64 ``[N, 4]`` xyxy (on the input's device), which may reach outside the image.
    """
    check_context(size, context)
    b = as_boxes(boxes, torch.float64)  # float64: both crop paths round the same numbers the same way
    if not bool(torch.isfinite(b).all()) or bool(((b[:, 2] <= b[:, 0]) | (b[:, 3] <= b[:, 1])).any()):
        bad = int(torch.nonzero(~(torch.isfinite(b).all(1) & (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])))[0])
        raise ValueError(f"box {bad} {b[bad].tolist()} cannot be cropped: coordinates must be finite with "
                         f"x2 > x1 and y2 > y1 (check_boxes filters such boxes)")
    centre = (b[:, :2] + b[:, 2:]) / 2
    half = (b[:, 2:] - b[:, :2]) * (size / (size - 2 * context)) / 2
    low = torch.floor(centre - half + 0.5)
    high = torch.maximum(torch.floor(centre + half + 0.5), low + 1)
    return torch.cat([low, high], dim=1).to(torch.int64)


def mean_fill(mean: Sequence[float] = INCEPTION_MEAN) -> tuple[int, int, int]:
    """The model's mean colour as 8-bit RGB (``floor(m * 255 + 0.5)``: 0.5 -> 128), the fill outside
    the image."""
    if len(mean) != 3 or not all(0.0 <= float(m) <= 1.0 for m in mean):
        raise ValueError(f"mean must be 3 values in [0, 1] (RGB, as in the variant's metadata), got {tuple(mean)}")
    return tuple(int(np.floor(float(m) * 255.0 + 0.5)) for m in mean)  # type: ignore[return-value]


def _hwc_uint8(image: ImageLike) -> np.ndarray:
    """uint8 (H, W, 3) numpy from HxWx3 numpy, a PIL image (any mode, via to_rgb) or a CHW uint8 tensor."""
    if isinstance(image, Image.Image):
        return np.asarray(to_rgb(image))
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"a numpy image must be uint8 HxWx3 (RGB), got {image.dtype} {list(image.shape)}")
        return image
    if isinstance(image, torch.Tensor):
        if image.dtype != torch.uint8 or image.dim() != 3 or image.shape[0] != 3:
            raise ValueError(f"a tensor image must be uint8 3xHxW (CHW, RGB), got {image.dtype} {list(image.shape)}")
        return image.permute(1, 2, 0).cpu().numpy()
    raise TypeError(f"image must be a numpy array, PIL image or torch tensor, got {type(image).__name__}")


def crop_patches(
    image: ImageLike,
    boxes: BoxesLike,
    size: int,
    context: int = DEFAULT_CONTEXT,
    mean: Sequence[float] = INCEPTION_MEAN,
) -> np.ndarray:
    """R-CNN's warp: the patch of each box with ``context`` output pixels of surroundings on every side.

    Args:
        image: RGB, as uint8 ``H x W x 3`` numpy (HWC), a PIL image (converted with
            ``edgeinc.data.to_rgb``) or a uint8 ``3 x H x W`` tensor (CHW, torchvision's layout).
        boxes: ``[N, 4]`` xyxy in pixels; finite with ``x2 > x1`` and ``y2 > y1``, and may lie partly or
            wholly outside the image (``check_boxes`` clips and filters).
        size: output side in pixels (the model's input size, e.g. 79).
        context: output pixels of context per side, ``0 <= context`` and ``2 * context < size``.
        mean: the model's normalisation mean in [0, 1]; the area outside the image is ``mean_fill(mean)``.

    Returns:
        uint8 ``(N, size, size, 3)`` (HWC, RGB). The region of ``context_regions`` is resized with
        ``v2.functional.resize(..., bilinear, antialias=True)`` on its uint8 CHW tensor: the same kernel
        and the same pixels as the eval transform's resize.
    """
    pixels = _hwc_uint8(image)
    regions = context_regions(boxes, size, context).tolist()
    fill = np.array(mean_fill(mean), dtype=np.uint8)
    height, width, _ = pixels.shape
    out = np.empty((len(regions), size, size, 3), dtype=np.uint8)
    for i, (x1, y1, x2, y2) in enumerate(regions):
        # Regions are assembled in numpy, contiguous HWC: torch's copies of strided uint8 slices were
        # 100x slower here (2 busy cores), and the resize gives the same pixels for any memory layout.
        if x1 >= 0 and y1 >= 0 and x2 <= width and y2 <= height:
            region = np.ascontiguousarray(pixels[y1:y2, x1:x2])
        else:  # partly or wholly outside: the mean colour there, the image where there is one
            region = np.empty((y2 - y1, x2 - x1, 3), dtype=np.uint8)
            region[...] = fill
            ix1, iy1, ix2, iy2 = max(x1, 0), max(y1, 0), min(x2, width), min(y2, height)
            if ix2 > ix1 and iy2 > iy1:
                region[iy1 - y1:iy2 - y1, ix1 - x1:ix2 - x1] = pixels[iy1:iy2, ix1:ix2]
        patch = F.resize(torch.from_numpy(region).permute(2, 0, 1), [size, size], interpolation=INTERPOLATION,
                         antialias=True)
        out[i] = patch.permute(1, 2, 0).numpy()
    return out


def _rois(boxes: torch.Tensor | Sequence[torch.Tensor], batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(batch index int64 [K], xyxy [K, 4]) from roi_align's box formats."""
    if isinstance(boxes, (list, tuple)):
        if len(boxes) != batch:
            raise ValueError(f"{len(boxes)} box tensors for {batch} images: give one [L, 4] tensor per image")
        parts = [as_boxes(b, torch.float64) for b in boxes]
        index = torch.cat([torch.full((len(p),), i, dtype=torch.int64) for i, p in enumerate(parts)])
        return index, torch.cat(parts) if parts else torch.zeros(0, 4, dtype=torch.float64)
    if isinstance(boxes, torch.Tensor) and boxes.dim() == 2 and boxes.shape[1] == 5:
        index = boxes[:, 0].to(torch.int64).cpu()
        if len(index) and (int(index.min()) < 0 or int(index.max()) >= batch):
            raise ValueError(f"batch indices in boxes[:, 0] must be in [0, {batch}), got {index.unique().tolist()}")
        return index, boxes[:, 1:].to(torch.float64)
    b = as_boxes(boxes, torch.float64)
    if batch != 1:
        raise ValueError(f"[N, 4] boxes need a single image, got a batch of {batch}: give [K, 5] boxes "
                         f"(batch index, x1, y1, x2, y2) or a list of [L, 4] tensors, one per image")
    return torch.zeros(len(b), dtype=torch.int64), b


def roi_align_patches(
    images: torch.Tensor,
    boxes: torch.Tensor | Sequence[torch.Tensor],
    size: int,
    context: int = DEFAULT_CONTEXT,
    mean: Sequence[float] = INCEPTION_MEAN,
    *,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """The batched torch version of ``crop_patches`` (any device): ``torchvision.ops.roi_align`` over the
    same ``context_regions``, on the image padded with the mean colour.

    Args:
        images: uint8 ``(3, H, W)`` or ``(B, 3, H, W)`` RGB, on any device.
        boxes: xyxy in pixels, as roi_align takes them: ``[N, 4]`` (one image), ``[K, 5]`` with the batch
            index first, or a list of ``[L_i, 4]`` tensors, one per image.
        size, context, mean: as in ``crop_patches``.
        dtype: ``torch.float32`` (grey levels 0-255, not rounded) or ``torch.uint8`` (rounded).

    Returns:
        ``(N, 3, size, size)`` on the images' device, in box order. ``aligned=True`` (pixel centres at
        +0.5, as the boxes' convention) and ``sampling_ratio=-1`` (adaptive: ``ceil(region / size)``
        samples per bin along each axis, a box filter approximating the antialiased resize). Against
        ``crop_patches`` the absolute difference is at most ``ROI_ALIGN_MEAN_TOLERANCE`` (2) grey levels
        on average, ``ROI_ALIGN_P999_TOLERANCE`` (48) at the 99.9th percentile and
        ``ROI_ALIGN_MAX_TOLERANCE`` (160) at worst: the worst pixels are the outermost ones of upsampled
        patches, where roi_align reads the image just outside the region and the resize repeats the
        region's edge. Train on ``crop_patches``; use this where a batched device crop is worth that.
    """
    if images.dim() == 3:
        images = images[None]
    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be uint8 (3, H, W) or (B, 3, H, W), got {images.dtype} {list(images.shape)}")
    if dtype not in (torch.float32, torch.uint8):
        raise ValueError(f"dtype must be torch.float32 or torch.uint8, got {dtype}")
    batch, _, height, width = images.shape
    index, coords = _rois(boxes, batch)
    regions = context_regions(coords, size, context).cpu()
    if len(regions) == 0:
        return torch.zeros((0, 3, size, size), dtype=dtype, device=images.device)
    # One margin for the batch, as far as the furthest region reaches out: the mean colour there.
    margin = max(0, int(-regions[:, :2].min()), int((regions[:, 2] - width).max()), int((regions[:, 3] - height).max()))
    fill = torch.tensor(mean_fill(mean), dtype=torch.float32, device=images.device)[:, None, None]
    padded = fill.expand(batch, 3, height + 2 * margin, width + 2 * margin).clone()
    padded[:, :, margin:margin + height, margin:margin + width] = images
    rois = torch.cat([index[:, None].to(torch.float32), (regions + margin).to(torch.float32)], dim=1)
    out = roi_align(padded, rois.to(images.device), output_size=(size, size), spatial_scale=1.0,
                    sampling_ratio=-1, aligned=True)
    return out.round().clamp(0, 255).to(torch.uint8) if dtype == torch.uint8 else out


def batch_slices(count: int, batch_size: int) -> Iterator[slice]:
    """Consecutive slices of at most ``batch_size`` covering ``range(count)``: batch thousands of boxes
    with ``boxes[s]`` for ``s`` in ``batch_slices(len(boxes), 256)``."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    for start in range(0, count, batch_size):
        yield slice(start, min(start + batch_size, count))
