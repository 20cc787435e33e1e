"""What a training run is made of, built from the recipe: the numeric precision, the data, the model
with its EMA, optimizer and schedule. The trainer (trainer.py) runs the loop over them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from rich.console import Console
from timm.utils import ModelEmaV3
from torch import nn

from ..config import DataSection, Recipe, TrainSection
from ..data import DataError, ImageFolder, build_transform, find_split
from ..data.transforms import CropParams
from ..models import VariantConfig, create_model, resolve_variant
from .distributed import DistContext, convert_sync_batchnorm
from .optim import LRSchedule, build_optimizer
from .sampling import TrainBatchSampler


@dataclass(frozen=True)
class TrainPrecision:
    name: str  # fp32 | bf16 | fp16 | fp64
    autocast_dtype: torch.dtype | None
    dtype: torch.dtype  # of the weights
    scaler: torch.amp.GradScaler | None
    channels_last: bool
    compiled: bool


def resolve_precision(t: TrainSection, device: torch.device) -> TrainPrecision:
    precision = t.precision
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" else "fp32"
    if precision == "fp16" and device.type != "cuda":
        raise ValueError("train.precision=fp16 needs a CUDA device; use fp32 (or bf16) on the CPU")
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError(f"{torch.cuda.get_device_name(device)} has no bfloat16; use --set train.precision=fp16")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    return TrainPrecision(
        name=precision,
        autocast_dtype={"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision),
        # Weights are float32 except in fp64, which exists to compare runs without float32's rounding
        # noise (a deep BN network at init amplifies it ~2x per block).
        dtype=torch.float64 if precision == "fp64" else torch.float32,
        scaler=torch.amp.GradScaler(device.type) if precision == "fp16" else None,
        channels_last=device.type == "cuda" if t.channels_last == "auto" else bool(t.channels_last),
        compiled=device.type == "cuda" if t.compile == "auto" else bool(t.compile),
    )


@dataclass(frozen=True)
class TrainData:
    variant: VariantConfig
    gpu_decode: bool
    train_set: ImageFolder
    val_set: ImageFolder | None
    classes: list[str]
    steps_per_epoch: int
    local_batch: int  # this process's share of the global batch


def train_dataset(split: Path, variant: VariantConfig, d: DataSection, gpu_decode: bool,
                  classes: list[str] | None = None) -> ImageFolder:
    """The training split as the workers produce it: uint8 images (3, S, S) after the random crop and
    flip, normalised on the device by the trainer (``Normalizer``: 4x less to copy than float32, same
    result bit for bit); or with ``gpu_decode`` the files' bytes and the crop and flip drawn for each
    (``CropParams``: the same draws as the CPU transform's), decoded and augmented on the device."""
    if gpu_decode:
        return ImageFolder(split, on_bad_image=d.on_bad_image, classes=classes, decode="none",
                           crop_params=CropParams(variant, scale=d.scale))
    return ImageFolder(split, build_transform(variant, train=True, scale=d.scale, normalize=False),
                       on_bad_image=d.on_bad_image, classes=classes)


def build_data(recipe: Recipe, ctx: DistContext, labels: list[str] | None, console: Console) -> TrainData:
    """The training and validation splits of ``data.root`` (``labels``: a resumed run's class order)."""
    d, t = recipe.data, recipe.train
    variant = resolve_variant(recipe.model.name, recipe.model.options)
    try:
        train_split = find_split(d.root, "train")
    except DataError as e:
        raise DataError(
            f"{e}\nTo try everything offline first: `edgeinc demo`, or `edgeinc data synth demo/patches` "
            f"then `edgeinc train quickstart`."
        ) from None
    gpu_decode = d.decode == "gpu"
    if gpu_decode and ctx.device.type != "cuda":
        raise ValueError(f"data.decode=gpu needs a CUDA device (train.device is {ctx.device}); use data.decode=cpu")
    train_set = train_dataset(train_split, variant, d, gpu_decode, labels)
    classes = train_set.classes
    n = recipe.model.num_classes
    if n is not None and n != len(classes):
        raise DataError(
            f"model.num_classes is {n} but {train_split} has {len(classes)} class folders; "
            f"set model.num_classes: null to take the number from the data"
        )
    try:
        val_split = find_split(d.root, "val")
    except DataError:
        val_split = None
        console.print(f"[yellow]no val split in {d.root}: training without evaluation[/]")
    val_set = None
    if val_split is not None:
        val_set = ImageFolder(val_split, build_transform(variant, train=False), on_bad_image=d.on_bad_image,
                              classes=classes)
    steps = TrainBatchSampler(len(train_set), t.batch_size, ctx.rank, ctx.world_size, t.seed, 0).steps_per_epoch
    return TrainData(variant, gpu_decode, train_set, val_set, classes, steps, t.batch_size // ctx.world_size)


class CachedModelEma(ModelEmaV3):
    """timm's ModelEmaV3 (weights AND BatchNorm statistics) with the tensor lists built once: its update
    walks both state dicts every step (~1,000 Python objects per step). Valid while the tensors stay
    the same objects: build it after the model has moved to its device and format."""

    @torch.no_grad()
    def apply_update_(self, model: nn.Module, decay: float) -> None:
        if getattr(self, "_pairs_of", None) is not model:
            pairs = list(zip(self.module.state_dict().values(), model.state_dict().values()))
            self._floats = ([e for e, _ in pairs if e.is_floating_point()], [m for e, m in pairs if e.is_floating_point()])
            self._others = [(e, m) for e, m in pairs if not e.is_floating_point()]
            self._pairs_of = model
        self._foreach_lerp_(*self._floats, weight=1.0 - decay)
        for ema_v, model_v in self._others:
            ema_v.copy_(model_v)


def build_ema(net: nn.Module, t: TrainSection) -> ModelEmaV3 | None:
    """timm's ModelEmaV3 over parameters AND BatchNorm statistics. With warm-up the decay at update
    ``n`` is ``min(ema_decay, 1 - n ** -ema_warmup_power)`` (0 at the first update: a copy), so the
    average is usable early instead of being dominated by the random initial weights."""
    if t.ema_decay is None:
        return None
    return CachedModelEma(net, decay=t.ema_decay, use_warmup=t.ema_warmup, warmup_power=t.ema_warmup_power)


@dataclass(frozen=True)
class ModelParts:
    net: nn.Module  # the network itself (its state dict is what is saved)
    model: nn.Module  # what the step calls: net, wrapped in DDP and/or torch.compile
    ema: ModelEmaV3 | None
    optimizer: torch.optim.Optimizer
    schedule: LRSchedule
    criterion: nn.Module


def build_model(recipe: Recipe, classes: list[str], ctx: DistContext, precision: TrainPrecision,
                steps_per_epoch: int) -> ModelParts:
    t, m = recipe.train, recipe.model
    torch.manual_seed(t.seed)  # the same initial weights on every rank
    net = create_model(m.name, num_classes=len(classes), options=m.options)
    for module in net.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.momentum = t.bn_momentum
    net.to(ctx.device, precision.dtype)
    if precision.channels_last:
        net.to(memory_format=torch.channels_last)
    ema = build_ema(net, t)
    if t.sync_bn and ctx.distributed:
        net = convert_sync_batchnorm(net, ctx.device)
    model: nn.Module = net
    if ctx.distributed:
        ids = [ctx.device.index] if ctx.device.type == "cuda" else None
        # gradients written straight into the all-reduce buckets: one copy less per step
        model = nn.parallel.DistributedDataParallel(net, device_ids=ids, gradient_as_bucket_view=True)
    if precision.compiled:
        model = torch.compile(model)
    return ModelParts(net, model, ema, build_optimizer(net, t), LRSchedule.from_recipe(t, steps_per_epoch),
                      nn.CrossEntropyLoss(label_smoothing=t.label_smoothing))
