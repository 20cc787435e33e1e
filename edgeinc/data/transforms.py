"""Inception preprocessing at a variant's input size, on PIL images (CPU workers) or decoded tensors
on any device (``gpu_decode_batch``). Both paths share the same tensor operations.

Training on a device ships uint8 from the workers: the geometry (crop, resize, flip) runs on uint8
where the image is, and the float conversion + normalisation (``Normalizer``) runs on the whole batch
on the device - bit for bit what ``build_transform`` gives per image on the CPU."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import torch
from PIL import Image
from torchvision.io import ImageReadMode, decode_jpeg
from torchvision.transforms import InterpolationMode, v2

from ..models import VariantConfig, get_variant
from .folder import BadImageError, BadImagePolicy, EncodedBatch, load_rgb, log

# Paper / TF-slim: random crops of 8-100% of the area with aspect ratio 3/4-4/3.
TRAIN_SCALE = (0.08, 1.0)
TRAIN_RATIO = (3 / 4, 4 / 3)
_JPEG_MAGIC = b"\xff\xd8\xff"
# The columns of a crop-parameter row (``CropParams``), drawn per sample in the loader workers.
CROP_FIELDS = ("top", "left", "height", "width", "flip", "image_height", "image_width")


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


class Normalizer:
    """uint8 pixels -> float32 normalised with ``mean``/``std``: ``ToDtype(float32, scale=True)`` then
    ``Normalize`` (torchvision's kernels), on one image or a whole batch ``(..., 3, H, W)`` on any device.
    The last step of ``build_transform``; elementwise, so a batch normalised at once equals its images
    normalised one by one, bit for bit. The mean/std tensors live on ``device``: built once there, they
    cost no host-to-device copy (on CUDA: no host wait) per call."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], device: torch.device | str = "cpu") -> None:
        if not all(std):
            raise ValueError(f"normalisation std has a zero: {list(std)}")
        self.mean = torch.tensor(list(mean), dtype=torch.float32, device=device)
        self.std = torch.tensor(list(std), dtype=torch.float32, device=device)

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        if pixels.dtype != torch.uint8:
            raise TypeError(f"Normalizer takes uint8 pixels, got {pixels.dtype}")
        images = v2.functional.to_dtype(pixels, torch.float32, scale=True)
        # Tensors of the image's dtype and device pass through normalize's as_tensor without a copy.
        return v2.functional.normalize(images, mean=self.mean.to(images.device), std=self.std.to(images.device))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(mean={self.mean.tolist()}, std={self.std.tolist()})"


@functools.lru_cache(maxsize=16)
def _normalizer(mean: tuple[float, ...], std: tuple[float, ...], device: torch.device) -> Normalizer:
    # One per (mean, std, device), so that repeated gpu_decode_batch calls copy nothing to the device.
    return Normalizer(mean, std, device)


def _variant(variant: VariantConfig | str) -> VariantConfig:
    return get_variant(variant) if isinstance(variant, str) else variant


def _train_geometry(variant: VariantConfig, scale: tuple[float, float], ratio: tuple[float, float],
                    flip: bool) -> list[v2.Transform]:
    """The training transform's random geometry: RandomResizedCrop, then (``flip``) RandomHorizontalFlip."""
    if not 0.0 < scale[0] <= scale[1] <= 1.0:
        raise ValueError(f"crop scale must satisfy 0 < min <= max <= 1, got {scale}")
    interpolation = InterpolationMode(variant.interpolation)
    geometry: list[v2.Transform] = [v2.RandomResizedCrop(variant.input_size, scale=scale, ratio=ratio,
                                                         interpolation=interpolation, antialias=True)]
    if flip:
        geometry.append(v2.RandomHorizontalFlip())
    return geometry


def _tensor_ops(
    variant: VariantConfig,
    train: bool,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    flip: bool,
    normalize: bool = True,
) -> list[Callable]:
    """uint8 CHW image (any device) -> normalised float32 (3, S, S); ``normalize=False``: the uint8
    (3, S, S) before the float conversion (``Normalizer`` does the rest, on a batch)."""
    size = variant.input_size
    if train:
        geometry: list[Callable] = list(_train_geometry(variant, scale, ratio, flip))
    else:
        # TF-slim's order: crop the centre, then resize it to the input size.
        geometry = [
            CentralFractionCrop(variant.crop_fraction),
            v2.Resize((size, size), interpolation=InterpolationMode(variant.interpolation), antialias=True),
        ]
    return [*geometry, *([Normalizer(variant.mean, variant.std)] if normalize else []), v2.ToPureTensor()]


def build_transform(
    variant: VariantConfig | str,
    train: bool,
    *,
    scale: tuple[float, float] = TRAIN_SCALE,
    ratio: tuple[float, float] = TRAIN_RATIO,
    flip: bool = True,
    normalize: bool = True,
) -> Callable[[Image.Image], torch.Tensor]:
    """RGB PIL image -> float32 tensor (3, input_size, input_size), normalised with the variant's
    mean/std. ``train``: random-resized crop (``scale`` of the area, ``ratio`` aspect) and horizontal
    flip; evaluation: central crop of ``variant.crop_fraction``, then resize. Randomness comes from
    torch's global generator (per DataLoader worker: seeded by the loader's generator).

    ``normalize=False``: the uint8 (3, S, S) image before the float conversion, for loaders that ship
    uint8 (4x less to copy) and normalise the batch on the device with ``Normalizer(mean, std, device)``:
    the same result, bit for bit."""
    variant = _variant(variant)
    return v2.Compose([v2.ToImage(), *_tensor_ops(variant, train, tuple(scale), tuple(ratio), flip, normalize)])


class CropParams:
    """The training transform's random draws for one image, without decoding it: called with the image's
    (height, width) (``ImageFolder(decode="none", crop_params=...)`` reads them from the file header)
    under the sample's RNG, it makes the same generator calls in the same order as ``build_transform(
    variant, train=True)`` (RandomResizedCrop's parameters, then RandomHorizontalFlip's draw), so the same
    sample gets the same crop box and flip on both paths. Returns int64 (7,): ``CROP_FIELDS``."""

    def __init__(self, variant: VariantConfig | str, *, scale: tuple[float, float] = TRAIN_SCALE,
                 ratio: tuple[float, float] = TRAIN_RATIO, flip: bool = True) -> None:
        self.crop, *rest = _train_geometry(_variant(variant), tuple(scale), tuple(ratio), flip)
        self.flip = rest[0] if rest else None

    def __call__(self, height: int, width: int) -> torch.Tensor:
        # RandomResizedCrop.make_params reads only the size of what it is given: an empty (0, H, W) tensor.
        box = self.crop.make_params([torch.empty((0, height, width), dtype=torch.uint8)])
        # RandomHorizontalFlip (torchvision's _RandomApplyTransform.forward) flips when rand(1) < p.
        flipped = self.flip is not None and bool(torch.rand(1) < self.flip.p)
        return torch.tensor([box["top"], box["left"], box["height"], box["width"], int(flipped), height, width],
                            dtype=torch.int64)

    def resized_crop(self, image: torch.Tensor, params: Sequence[int]) -> torch.Tensor:
        """The crop of a row of parameters, resized to the input size: RandomResizedCrop's own kernel call."""
        return self.crop.transform(image, dict(zip(CROP_FIELDS[:4], params[:4])))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.crop}, flip={self.flip is not None})"


def _decode_on_cpu(data: torch.Tensor) -> torch.Tensor:
    # The CPU path's own decoder and RGB conversion, so both paths agree on odd images.
    return v2.functional.pil_to_tensor(load_rgb(data.numpy().tobytes()))


def _decode(
    encoded: Sequence[torch.Tensor], device: torch.device, paths: Sequence[str] | None
) -> list[torch.Tensor | BadImageError]:
    """Each file to a uint8 RGB tensor on ``device``, or the BadImageError that names it."""
    out: list[torch.Tensor | BadImageError] = [None] * len(encoded)  # type: ignore[list-item]
    jpegs = [i for i, e in enumerate(encoded) if bytes(e[:3].tolist()) == _JPEG_MAGIC]
    if jpegs and device.type == "cuda":
        # torchvision's nvJPEG decoder allocates its outputs on this stream but writes them from its own
        # stream, and the hardware engine does not wait for work queued here (pytorch/vision#9606): a
        # block freed on this stream while queued kernels still read it could be overwritten. Wait for
        # this stream first; on the trainer's prefetch stream that work is long finished.
        torch.cuda.current_stream(device).synchronize()
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


def _host_to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    # A plain copy to CUDA from pageable memory waits for the stream's queued work; from pinned memory
    # with non_blocking it does not (PyTorch's pin_memory / non_blocking guide).
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def gpu_decode_batch(
    encoded: Sequence[torch.Tensor] | EncodedBatch,
    variant: VariantConfig | str,
    train: bool,
    device: torch.device | str,
    *,
    scale: tuple[float, float] = TRAIN_SCALE,
    ratio: tuple[float, float] = TRAIN_RATIO,
    flip: bool = True,
    params: torch.Tensor | None = None,
    labels: torch.Tensor | None = None,
    paths: Sequence[str] | None = None,
    on_bad_image: BadImagePolicy = "fail",
    normalize: bool = True,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Decode encoded files (``ImageFolder(decode="none")``) on ``device`` and apply the same
    train/eval transform as ``build_transform``: float32 (B, 3, S, S) on ``device`` (``normalize=False``:
    the uint8 batch, for ``Normalizer``).

    JPEGs are decoded with ``torchvision.io.decode_jpeg(device=...)`` (nvJPEG on CUDA, batched); other
    formats on the CPU. Then per image only the uint8 crop + resize (the sizes differ), then the batch is
    stacked and flipped and normalised at once. Training crops come from ``params`` (int64 (B, 7),
    ``CROP_FIELDS``: drawn per sample in the workers by ``CropParams``; an ``EncodedBatch`` carries them),
    else they are drawn here per image from torch's global generator. A file that cannot be decoded
    raises BadImageError (named by ``paths`` if given). With ``labels`` the call returns ``(images,
    labels)``, and ``on_bad_image="skip"`` drops bad files and their labels (logging a warning); without
    labels nothing can be dropped, so bad files always raise.
    """
    variant = _variant(variant)
    device = torch.device(device)
    if isinstance(encoded, EncodedBatch):
        encoded, params = encoded.data, encoded.params if params is None else params
    if on_bad_image not in ("skip", "fail"):
        raise ValueError(f"on_bad_image must be 'skip' or 'fail', got {on_bad_image!r}")
    if labels is not None and len(labels) != len(encoded):
        raise ValueError(f"{len(encoded)} encoded images but {len(labels)} labels")
    if params is not None and (not train or tuple(params.shape) != (len(encoded), len(CROP_FIELDS))):
        raise ValueError(f"params: expected int64 ({len(encoded)}, {len(CROP_FIELDS)}) crop parameters "
                         f"({', '.join(CROP_FIELDS)}) for training, got {tuple(params.shape)} with train={train}")
    decoded = _decode(encoded, device, paths)
    crops = CropParams(variant, scale=scale, ratio=ratio, flip=flip)
    if train and params is None:  # drawn here, image after image, as the CPU transform would
        params = torch.stack([crops(*image.shape[-2:]) if not isinstance(image, BadImageError)
                              else torch.zeros(len(CROP_FIELDS), dtype=torch.int64) for image in decoded])
    rows = params.tolist() if params is not None else None
    keep = []
    for i, image in enumerate(decoded):
        if rows is not None and not isinstance(image, BadImageError) and tuple(image.shape[-2:]) != tuple(rows[i][5:]):
            name = paths[i] if paths is not None else f"batch item {i}"
            image = decoded[i] = BadImageError(
                f"cannot read image {name}: its header says {rows[i][6]}x{rows[i][5]} but it decodes to "
                f"{image.shape[-1]}x{image.shape[-2]} (the crop drawn for it would not fit)")
        if isinstance(image, BadImageError):
            if on_bad_image == "fail" or labels is None:
                raise image
            log.warning("skipping unreadable image: %s", image)
        else:
            keep.append(i)
    size = variant.input_size
    if not keep:
        images = torch.empty(0, 3, size, size, device=device, dtype=torch.uint8)
    elif rows is not None:
        # Per image only the uint8 crop + resize (the sizes differ); then one flip for the whole batch.
        images = torch.stack([crops.resized_crop(decoded[i], rows[i]) for i in keep])
        flips = params[keep, CROP_FIELDS.index("flip")].bool()
        if flips.any():
            images = torch.where(_host_to_device(flips, device)[:, None, None, None], images.flip(-1), images)
    else:
        geometry = v2.Compose(_tensor_ops(variant, False, tuple(scale), tuple(ratio), False, normalize=False))
        images = torch.stack([geometry(decoded[i]) for i in keep])
    if normalize:
        images = _normalizer(tuple(variant.mean), tuple(variant.std), device)(images)
    if labels is None:
        return images
    if len(keep) < len(labels):
        labels = labels[_host_to_device(torch.tensor(keep, dtype=torch.int64), labels.device)]
    return images, labels
