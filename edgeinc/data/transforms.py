"""Inception preprocessing at a variant's input size, on PIL images (CPU workers) or decoded tensors
on any device (``gpu_decode_batch``). Both paths share the same tensor operations."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from PIL import Image
from torchvision.io import ImageReadMode, decode_jpeg
from torchvision.transforms import InterpolationMode, v2

from ..models import VariantConfig, get_variant
from .folder import BadImageError, BadImagePolicy, load_rgb, log

# Paper / TF-slim: random crops of 8-100% of the area with aspect ratio 3/4-4/3.
TRAIN_SCALE = (0.08, 1.0)
TRAIN_RATIO = (3 / 4, 4 / 3)
_JPEG_MAGIC = b"\xff\xd8\xff"


class CentralFractionCrop:
    """TF-slim's ``tf.image.central_crop``: keep the central ``fraction`` of each side.

    Same integer arithmetic as TF (start = int((side - side * fraction) / 2), size = side - 2 * start),
    so the crop is exactly centred.
    """

    def __init__(self, fraction: float) -> None:
        if not 0.0 < fraction <= 1.0:
            raise ValueError(f"crop fraction must be in (0, 1], got {fraction}")
        self.fraction = fraction

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        height, width = v2.functional.get_size(image)
        top = int((height - height * self.fraction) / 2)
        left = int((width - width * self.fraction) / 2)
        return v2.functional.crop(image, top, left, height - 2 * top, width - 2 * left)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(fraction={self.fraction})"


def _variant(variant: VariantConfig | str) -> VariantConfig:
    return get_variant(variant) if isinstance(variant, str) else variant


def _tensor_ops(
    variant: VariantConfig,
    train: bool,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    flip: bool,
) -> list[Callable]:
    """uint8 CHW image (any device) -> normalised float32 (3, S, S)."""
    size = variant.input_size
    interpolation = InterpolationMode(variant.interpolation)
    if not 0.0 < scale[0] <= scale[1] <= 1.0:
        raise ValueError(f"crop scale must satisfy 0 < min <= max <= 1, got {scale}")
    if train:
        geometry = [v2.RandomResizedCrop(size, scale=scale, ratio=ratio, interpolation=interpolation, antialias=True)]
        if flip:
            geometry.append(v2.RandomHorizontalFlip())
    else:
        # TF-slim's order: crop the centre, then resize it to the input size.
        geometry = [
            CentralFractionCrop(variant.crop_fraction),
            v2.Resize((size, size), interpolation=interpolation, antialias=True),
        ]
    return [
        *geometry,
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(mean=list(variant.mean), std=list(variant.std)),
        v2.ToPureTensor(),
    ]


def build_transform(
    variant: VariantConfig | str,
    train: bool,
    *,
    scale: tuple[float, float] = TRAIN_SCALE,
    ratio: tuple[float, float] = TRAIN_RATIO,
    flip: bool = True,
) -> Callable[[Image.Image], torch.Tensor]:
    """RGB PIL image -> float32 tensor (3, input_size, input_size), normalised with the variant's
    mean/std. ``train``: random-resized crop (``scale`` of the area, ``ratio`` aspect) and horizontal
    flip; evaluation: central crop of ``variant.crop_fraction``, then resize. Randomness comes from
    torch's global generator (per DataLoader worker: seeded by the loader's generator)."""
    variant = _variant(variant)
    return v2.Compose([v2.ToImage(), *_tensor_ops(variant, train, tuple(scale), tuple(ratio), flip)])


def _decode_on_cpu(data: torch.Tensor) -> torch.Tensor:
    # The CPU path's own decoder and RGB conversion, so both paths agree on odd images.
    return v2.functional.pil_to_tensor(load_rgb(data.numpy().tobytes()))


def _decode(
    encoded: Sequence[torch.Tensor], device: torch.device, paths: Sequence[str] | None
) -> list[torch.Tensor | BadImageError]:
    """Each file to a uint8 RGB tensor on ``device``, or the BadImageError that names it."""
    out: list[torch.Tensor | BadImageError] = [None] * len(encoded)  # type: ignore[list-item]
    jpegs = [i for i, e in enumerate(encoded) if bytes(e[:3].tolist()) == _JPEG_MAGIC]
    if jpegs:
        try:  # one batched call: nvJPEG decodes the whole batch at once on CUDA
            for i, image in zip(jpegs, decode_jpeg([encoded[i] for i in jpegs], mode=ImageReadMode.RGB, device=device)):
                out[i] = image
        except Exception:  # some file failed the whole call: decode them one by one
            for i in jpegs:
                try:
                    out[i] = decode_jpeg(encoded[i], mode=ImageReadMode.RGB, device=device)
                except Exception:
                    pass  # left to the CPU decoder below, which names the reason if it fails too
    for i, data in enumerate(encoded):
        if out[i] is not None:
            continue
        try:
            # PNG, BMP, WebP, and JPEGs the device decoder rejects (e.g. CMYK) decode on the CPU.
            out[i] = _decode_on_cpu(data).to(device, non_blocking=True)
        except Exception as e:
            name = paths[i] if paths is not None else f"batch item {i}"
            out[i] = BadImageError(f"cannot read image {name}: {type(e).__name__}: {e}")
    return out


def gpu_decode_batch(
    encoded: Sequence[torch.Tensor],
    variant: VariantConfig | str,
    train: bool,
    device: torch.device | str,
    *,
    scale: tuple[float, float] = TRAIN_SCALE,
    ratio: tuple[float, float] = TRAIN_RATIO,
    flip: bool = True,
    labels: torch.Tensor | None = None,
    paths: Sequence[str] | None = None,
    on_bad_image: BadImagePolicy = "fail",
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Decode encoded files (``ImageFolder(decode="none")``) on ``device`` and apply the same
    train/eval transform as ``build_transform``: float32 (B, 3, S, S) on ``device``.

    JPEGs are decoded with ``torchvision.io.decode_jpeg(device=...)`` (nvJPEG on CUDA); other formats on
    the CPU. A file that cannot be decoded raises BadImageError (named by ``paths`` if given). With
    ``labels`` the call returns ``(images, labels)``, and ``on_bad_image="skip"`` drops bad files and
    their labels (logging a warning); without labels nothing can be dropped, so bad files always raise.
    """
    variant = _variant(variant)
    device = torch.device(device)
    if on_bad_image not in ("skip", "fail"):
        raise ValueError(f"on_bad_image must be 'skip' or 'fail', got {on_bad_image!r}")
    if labels is not None and len(labels) != len(encoded):
        raise ValueError(f"{len(encoded)} encoded images but {len(labels)} labels")
    transform = v2.Compose(_tensor_ops(variant, train, tuple(scale), tuple(ratio), flip))
    decoded = _decode(encoded, device, paths)
    keep = []
    for i, image in enumerate(decoded):
        if isinstance(image, BadImageError):
            if on_bad_image == "fail" or labels is None:
                raise image
            log.warning("skipping unreadable image: %s", image)
        else:
            keep.append(i)
    # Crops differ in size per image, so the geometry runs per image; the batch is stacked after.
    images = torch.stack([transform(decoded[i]) for i in keep]) if keep else torch.empty(
        0, 3, variant.input_size, variant.input_size, device=device
    )
    if labels is None:
        return images
    return images, labels[torch.tensor(keep, dtype=torch.int64, device=labels.device)]
