"""ImageNet-layout folders (``split/<class>/<image>``): discovery, RGB decoding, bad-image policy."""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, default_collate

log = logging.getLogger("edgeinc.data")

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
LAYOUT = "ROOT/train/<class>/<image> and ROOT/val/<class>/<image> (ImageNet layout)"
# Alpha is composited onto mid-grey rather than dropped: transparent pixels often hold arbitrary
# colours, and 128 normalises to about 0 with Inception's mean/std, i.e. "no signal".
ALPHA_BACKGROUND = (128, 128, 128)

BadImagePolicy = Literal["skip", "fail"]
DecodeMode = Literal["cpu", "none"]


class EncodedImage(NamedTuple):
    """An image file not decoded yet (``ImageFolder(decode="none", crop_params=...)``): its bytes and the
    training crop drawn for it in the worker, under the sample's RNG."""

    data: torch.Tensor  # the file's bytes, 1-D uint8
    params: torch.Tensor  # int64 (7,): edgeinc.data.transforms.CROP_FIELDS


class EncodedBatch(NamedTuple):
    """A batch of ``EncodedImage`` (``collate_skip_bad``), for ``gpu_decode_batch``."""

    data: list[torch.Tensor]
    params: torch.Tensor  # int64 (B, 7)


class DataError(ValueError):
    """A data folder that does not have the expected layout (the message names the folder)."""


class BadImageError(DataError):
    """An image file that cannot be decoded (the message names the file and the reason)."""


def find_split(root: str | os.PathLike, split: Literal["train", "val"]) -> Path:
    """``root/split`` as a folder, or a DataError saying where it looked and what to do."""
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    root = Path(root)
    path = root / split
    if path.is_dir():
        return path
    where = f"{root} does not exist" if not root.exists() else f"{root} has no '{split}' folder"
    raise DataError(
        f"no {split} split at {path}: {where}. Expected {LAYOUT}. Point data.root at such a folder "
        f"(e.g. --set data.root=/path/to/imagenet) or create the synthetic task with "
        f"`edgeinc data synth {root}`."
    )


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode to 3-channel RGB: grayscale is replicated, CMYK uses PIL's conversion, palette
    images are expanded, 16-bit grayscale is scaled to 8 bits, alpha is composited on grey."""
    if image.mode == "RGB":
        return image
    if image.mode in ("I", "I;16", "I;16B", "I;16L"):  # 16-bit PNGs: PIL's convert would clip at 255
        pixels = np.asarray(image, dtype=np.float64) * (255.0 / 65535.0)
        return Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8), "L").convert("RGB")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*ALPHA_BACKGROUND, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def load_rgb(source: str | os.PathLike | bytes) -> Image.Image:
    """Decode a file (or its bytes) fully and convert it to RGB. Decoder errors propagate.

    EXIF orientation is not applied, like torchvision's ImageFolder and TF's decoders, so that the
    CPU and GPU decoding paths see the same pixels.
    """
    with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as image:
        image.load()  # Image.open is lazy: a truncated file only fails here
        return to_rgb(image)


def _is_image(name: str) -> bool:
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


def _list_images(class_dir: Path) -> list[Path]:
    """Every image below ``class_dir``, its sub-folders included. A linked folder is followed only when it
    leads to a folder inside ``class_dir`` not walked yet: a link to ``..`` multiplied a training set 41x
    with other classes' images under this label, and two such loops hung the listing (issue 12); those
    links are skipped with a warning. Linked image files are kept (datasets are often built of links)."""
    root = class_dir.resolve()
    seen = {root}
    files = []
    for dirpath, dirnames, filenames in os.walk(class_dir, followlinks=True):
        kept = []
        for d in sorted(d for d in dirnames if not d.startswith(".")):
            target = (Path(dirpath) / d).resolve()
            if target in seen or not target.is_relative_to(root):
                log.warning("skipping %s: a link to %s, %s", Path(dirpath) / d, target,
                            "a folder already listed (a loop)" if target in seen else f"outside {class_dir}")
                continue
            seen.add(target)
            kept.append(d)
        dirnames[:] = kept
        files.extend(Path(dirpath) / f for f in sorted(filenames) if _is_image(f))
    return files


class ImageFolder(Dataset):
    """One split folder, ``root/<class>/<images>`` (images may sit in nested folders).

    ``__getitem__`` returns ``(image, label)``: the transform's output (the RGB PIL image when
    ``transform`` is None), or with ``decode="none"`` the raw file bytes as a 1-D uint8 tensor for
    ``gpu_decode_batch``. With ``decode="none"`` and ``crop_params`` (``edgeinc.data.transforms.CropParams``)
    the image is an ``EncodedImage``: the bytes and ``crop_params(height, width)``, called with the size
    read from the file's header (nothing is decoded), so a training crop is drawn in the worker under the
    sample's RNG like the CPU transform's. An unreadable image raises BadImageError with
    ``on_bad_image="fail"``; with ``"skip"`` it logs one warning naming it and returns None, which
    ``collate_skip_bad`` drops.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        transform: Callable[[Image.Image], Any] | None = None,
        on_bad_image: BadImagePolicy = "skip",
        classes: list[str] | None = None,
        *,
        decode: DecodeMode = "cpu",
        crop_params: Callable[[int, int], torch.Tensor] | None = None,
    ) -> None:
        if on_bad_image not in ("skip", "fail"):
            raise ValueError(f"on_bad_image must be 'skip' or 'fail', got {on_bad_image!r}")
        if decode not in ("cpu", "none"):
            raise ValueError(f"decode must be 'cpu' or 'none', got {decode!r}")
        if decode == "none" and transform is not None:
            raise ValueError("decode='none' returns encoded bytes; apply the transform in gpu_decode_batch")
        if crop_params is not None and decode != "none":
            raise ValueError("crop_params go with decode='none'; with decode='cpu' the transform draws the crop")
        self.root = Path(root)
        self.transform = transform
        self.on_bad_image = on_bad_image
        self.decode = decode
        self.crop_params = crop_params
        self.classes, self.samples = self._scan(classes)
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}
        self._warned: set[str] = set()  # per process: one warning per bad file, not one per epoch

    def _scan(self, classes: list[str] | None) -> tuple[list[str], list[tuple[str, int]]]:
        root = self.root
        if not root.is_dir():
            what = "is not a folder" if root.exists() else "does not exist"
            raise DataError(f"image folder {root} {what}; expected {root}/<class>/<image>")
        found = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
        if not found:
            loose = [e.name for e in os.scandir(root) if e.is_file() and _is_image(e.name)]
            hint = f" (it holds {len(loose)} images directly)" if loose else ""
            raise DataError(
                f"{root} has no class folders{hint}; expected one folder per class: "
                f"{root}/<class>/<image> ({LAYOUT})"
            )
        if classes is None:
            classes = found
        else:
            classes = list(classes)
            if len(set(classes)) != len(classes):
                raise ValueError(f"duplicate class names in the class list for {root}: {classes}")
            extra = [c for c in found if c not in classes]
            missing = [c for c in classes if c not in found]
            if extra:
                raise DataError(
                    f"{root / extra[0]}: class folder {extra[0]!r} is not in the class list "
                    f"({len(extra)} such folder(s): {extra[:5]}); the run's classes are {classes}"
                )
            if missing:
                raise DataError(f"{root} has no folder for class(es) {missing}; expected {root}/<class>/ for {classes}")
        samples = []
        for label, name in enumerate(classes):
            files = _list_images(root / name)
            if not files:
                raise DataError(
                    f"class folder {root / name} holds no images (extensions: {', '.join(IMAGE_EXTENSIONS)})"
                )
            samples.extend((str(f), label) for f in files)
        return classes, samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Any, int] | None:
        path, label = self.samples[index]
        try:
            if self.decode == "none":
                # Only reading here: decoding (and so corruption) is found in gpu_decode_batch.
                data = torch.from_numpy(np.fromfile(path, dtype=np.uint8))
                if self.crop_params is None:
                    return data, label
                with Image.open(io.BytesIO(data.numpy())) as header:  # lazy: parses the header only
                    width, height = header.size
                return EncodedImage(data, self.crop_params(height, width)), label
            image = load_rgb(path)
        except Exception as e:  # any decoder failure (OSError, SyntaxError, ValueError, ...) is a bad image
            return self._bad(path, e)
        return (self.transform(image) if self.transform is not None else image), label

    def _bad(self, path: str, error: Exception) -> None:
        reason = f"{type(error).__name__}: {error}"
        if self.on_bad_image == "fail":
            raise BadImageError(
                f"cannot read image {path}: {reason} (set data.on_bad_image=skip to skip it)"
            ) from error
        if path not in self._warned:
            self._warned.add(path)
            log.warning("skipping unreadable image %s: %s", path, reason)
        return None


def collate_skip_bad(batch: list[tuple[Any, int] | None]) -> tuple[Any, torch.Tensor] | None:
    """DataLoader collate that drops the None samples of skipped bad images.

    Returns ``(images, labels)``: images stacked into one tensor, a list of 1-D uint8 tensors for
    encoded bytes (``decode="none"``), or an ``EncodedBatch`` for ``EncodedImage`` samples. Which
    samples are dropped depends only on the files, so a resumed run drops the same ones. Returns None
    when every sample of the batch was bad: the caller skips that step.
    """
    kept = [s for s in batch if s is not None]
    if not kept:
        return None
    first = kept[0][0]
    labels = torch.tensor([s[1] for s in kept], dtype=torch.int64)
    if isinstance(first, EncodedImage):
        return EncodedBatch([s[0].data for s in kept], torch.stack([s[0].params for s in kept])), labels
    if isinstance(first, torch.Tensor) and first.dim() == 1:  # encoded files have different lengths
        return [s[0] for s in kept], labels
    images, labels = default_collate(kept)
    return images, labels
