"""Top-1 / top-5 of a trained model on an ImageNet-layout split, single or multi-crop.

Crop schemes (S = the variant's input size; predictions are softmax probabilities averaged over views):

* ``1``: the paper's single crop - the central 87.5% of the image, resized to S x S (TF-slim
  ``central_fraction=0.875``).
* ``144``: Table 4's 144 crops, read as GoogLeNet's scheme (Szegedy et al. 2014, section 8): the image
  is resized so its shorter side is S x {256, 288, 320, 352} / 224 (4 scales); the left, centre and
  right squares (top, middle, bottom for portrait images) are taken (3 squares); from each square the
  4 corner and the centre S x S crops plus the whole square resized to S x S (6 views); each view and its
  mirror image (x 2): 4 x 3 x 6 x 2 = 144.
* ``12``: the paper does not define its 12 crops; here they are the 144 scheme at one scale and one
  square: shorter side S / 0.875 (= S x 256/224, the scale the single crop sees), the centre square,
  its 4 corners + centre + the whole square, each with its mirror: 1 x 1 x 6 x 2 = 12.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from torchvision.transforms import InterpolationMode, v2

from ..artifact import Accuracy
from ..models import VariantConfig
from ..scoring import accuracy_from_counts
from .distributed import DistContext, resolve_device
from .sampling import ShardSampler

CROP_SCHEMES = (1, 12, 144)
GOOGLENET_SCALES = (256, 288, 320, 352)  # shorter side for a 224 input (Szegedy et al. 2014)


class MultiCrop:
    """RGB PIL image -> float32 (V, 3, S, S): the views of the 12- or 144-crop scheme, normalised."""

    def __init__(self, variant: VariantConfig, crops: int) -> None:
        if crops not in (12, 144):
            raise ValueError(f"multi-crop schemes are 12 and 144, got {crops}")
        self.size = variant.input_size
        self.scales = [s / 224 for s in GOOGLENET_SCALES] if crops == 144 else [1 / variant.crop_fraction]
        self.all_squares = crops == 144
        self.interpolation = InterpolationMode(variant.interpolation)
        self.normalize = v2.Normalize(mean=list(variant.mean), std=list(variant.std))
        self.crops = crops

    def __call__(self, image) -> torch.Tensor:
        img = v2.functional.pil_to_tensor(image)
        s, F = self.size, v2.functional
        views = []
        for scale in self.scales:
            short = max(round(s * scale), s)
            scaled = F.resize(img, short, interpolation=self.interpolation, antialias=True)  # shorter side = short
            h, w = scaled.shape[-2:]
            offsets = [0, (max(h, w) - short) // 2, max(h, w) - short] if self.all_squares else [(max(h, w) - short) // 2]
            for o in offsets:
                square = F.crop(scaled, 0, o, short, short) if w >= h else F.crop(scaled, o, 0, short, short)
                views += F.five_crop(square, [s, s])  # 4 corners + centre
                views.append(F.resize(square, [s, s], interpolation=self.interpolation, antialias=True))
        views += [F.horizontal_flip(v) for v in views]
        batch = torch.stack(views).to(torch.float32) / 255.0
        return self.normalize(batch)


def eval_transform(variant: VariantConfig, crops: int):
    if crops == 1:
        from ..data import build_transform

        return build_transform(variant, train=False)
    return MultiCrop(variant, crops)


@torch.no_grad()
def count_correct(
    model: torch.nn.Module,
    loader: DataLoader,
    device: torch.device,
    *,
    autocast_dtype: torch.dtype | None = None,
    channels_last: bool = False,
    ctx: DistContext | None = None,
) -> Accuracy:
    """Top-1 / top-5 (percent) over ``loader``, summed over ranks. Batches of (B, V, 3, S, S)
    multi-crop views are averaged in probability over V. No image: a DataError."""
    was_training = model.training
    model.eval()
    totals = torch.zeros(3, dtype=torch.float64, device=device)
    k = min(5, getattr(model, "num_classes", 5))
    for batch in loader:
        if batch is None:  # every image of the batch was unreadable (and skipped)
            continue
        images, labels = batch
        images = images.to(device, next(model.parameters()).dtype, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        views = images.shape[1] if images.dim() == 5 else 1
        flat = images.flatten(0, 1) if views > 1 else images
        if channels_last:
            flat = flat.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            logits = model(flat)
        probs = logits.float().softmax(-1).view(len(labels), views, -1).mean(1)
        top = probs.topk(k, dim=-1).indices
        hits = top.eq(labels[:, None])
        totals += torch.stack([hits[:, 0].sum(), hits.any(-1).sum(), torch.tensor(len(labels), device=device)]).double()
    if ctx is not None:
        ctx.all_reduce_sum(totals)
    model.train(was_training)
    c1, c5, n = (int(x) for x in totals.tolist())
    if n == 0:
        from ..data import DataError

        raise DataError("no readable images to evaluate")
    return accuracy_from_counts(c1, c5, n, k)


@dataclass(frozen=True)
class EvalResult:
    accuracy: Accuracy  # percent, like every other report
    crops: int
    model: str
    weights: str
    sha256: str
    data: str
    classes: int

    @property
    def top1(self) -> float:
        return self.accuracy.top1

    @property
    def top5(self) -> float:
        return self.accuracy.top5

    @property
    def images(self) -> int:
        return self.accuracy.images

    def to_dict(self) -> dict:
        return {**asdict(self), "accuracy": self.accuracy.model_dump(), "top1": self.top1, "top5": self.top5,
                "images": self.images}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


def resolve_eval_split(data: str | os.PathLike) -> Path:
    """``DIR/val`` when DIR is a dataset root, else DIR itself (a split folder of class folders)."""
    data = Path(data)
    if (data / "val").is_dir():
        return data / "val"
    if not data.is_dir():
        from ..data import DataError

        raise DataError(f"evaluation data {data} does not exist; expected a split folder DIR/<class>/<image> "
                        f"or a dataset root with DIR/val")
    return data


def evaluate(
    source: str | os.PathLike,
    data: str | os.PathLike,
    crops: int = 1,
    *,
    prefer: str = "ema",
    batch_size: int = 64,
    workers: int = 2,
    device: str = "auto",
    on_bad_image: str = "skip",
) -> EvalResult:
    """Evaluate a run directory (EMA weights by default) or a weights file on ``data``."""
    from ..data import DataError, ImageFolder, collate_skip_bad
    from ..models import load_source

    if crops not in CROP_SCHEMES:
        raise ValueError(f"crops must be one of {CROP_SCHEMES}, got {crops}")
    src = load_source(source, prefer=prefer)
    split = resolve_eval_split(data)
    model = src.model
    try:
        dataset = ImageFolder(split, eval_transform(model.variant, crops), on_bad_image=on_bad_image, classes=src.labels)
    except DataError as e:
        raise DataError(f"{split} does not fit the model {src.weights_path} (classes {src.labels}): {e}") from None
    if len(dataset.classes) != model.num_classes:
        raise DataError(f"{split} has {len(dataset.classes)} classes but {src.weights_path} predicts {model.num_classes}")
    dev = resolve_device(device)
    model.to(dev)
    loader = DataLoader(
        dataset, batch_size=max(1, batch_size // crops), sampler=ShardSampler(len(dataset)), num_workers=workers,
        collate_fn=collate_skip_bad, pin_memory=dev.type == "cuda",
    )
    dtype = torch.bfloat16 if dev.type == "cuda" else None
    try:
        acc = count_correct(model, loader, dev, autocast_dtype=dtype)
    except DataError as e:
        raise DataError(f"{split}: {e}") from None
    return EvalResult(acc, crops, src.name, str(src.weights_path), src.sha256, str(split), len(dataset.classes))
