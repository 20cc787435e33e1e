"""``train(recipe)``: the paper's training method on one CPU, one GPU or many (torchrun), resumable
exactly from any moment.

Run directory (only rank 0 writes; every file a user could lose is written atomically)::

    RUN/recipe.resolved.yaml   the fully resolved recipe
    RUN/classes.json           class names in label order
    RUN/model.safetensors      raw weights  } save_weights(..., metadata={"edgeinc.labels", "edgeinc.recipe"}),
    RUN/ema.safetensors        EMA weights  }   written at every epoch end: load_source(RUN) reads them
    RUN/checkpoints/last.pt    full training state (see checkpoint.py), at epoch ends and every
                               train.checkpoint_every_steps steps
    RUN/metrics.csv            one row per epoch; RUN/tb/ TensorBoard logs

Exact resume: the checkpoint is taken between two optimizer steps and holds everything the next
step depends on (weights, BN statistics, EMA, optimizer buffers, RNG streams, the position in the
data), and the data a step sees depends only on (seed, epoch, step) - see sampling.py. On CPU a run
killed at any moment (SIGKILL included) and resumed ends with the same weights, bit for bit.
"""

from __future__ import annotations

import json
import math
import os
import signal
import threading
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from rich.console import Console
from torch import nn
from torch.utils.data import DataLoader

from ..config import RESOLVED_NAME, Recipe, TrainSection, load_recipe, recipe_from_dict
from ..models import InceptionOutputs, count_parameters, create_model, save_weights
from ..models.source import WEIGHT_FILES
from ..utils.io import atomic_write_json, atomic_write_text
from .checkpoint import capture_rng, checkpoint_path, load_checkpoint_state, restore_rng, save_checkpoint
from .distributed import DistContext, convert_sync_batchnorm, init_distributed, shutdown_distributed
from .evaluate import count_correct
from .monitor import Monitor, write_metrics_csv
from .optim import LRSchedule, build_optimizer, set_lr
from .sampling import SeededSamples, ShardSampler, TrainBatchSampler, loader_generator, worker_init

# Keys that may change when a run is resumed; any other difference is refused (not the same run).
RESUMABLE_CHANGES = {
    "train.epochs", "train.checkpoint_every_steps", "train.log_every_steps", "train.eval_every_epochs",
    "data.root", "data.workers", "data.eval_batch_size", "description",
}


class TrainingError(RuntimeError):
    """Training cannot go on (non-finite loss, a run directory in the way, ...); the message says why."""


@dataclass
class TrainResult:
    run_dir: Path
    status: Literal["completed", "interrupted"]
    epochs_completed: int
    global_step: int
    metrics: dict[str, Any]  # the last epoch's row of metrics.csv
    history: list[dict[str, Any]] = field(default_factory=list)
    wall_s: float = 0.0
    stop_signal: int | None = None  # the signal that interrupted the run
    rank: int = 0  # of this process under torchrun

    def to_dict(self) -> dict:
        return {
            "run_dir": str(self.run_dir), "status": self.status, "epochs_completed": self.epochs_completed,
            "global_step": self.global_step, "metrics": self.metrics, "wall_s": self.wall_s,
        }


def default_run_dir(recipe_path: str | os.PathLike | None, recipe: Recipe) -> Path:
    name = Path(recipe_path).stem if recipe_path is not None else recipe.model.name
    return Path("runs") / name


def train(
    recipe: Recipe | str | os.PathLike,
    overrides: list[str] | None = None,
    *,
    out: str | os.PathLike | None = None,
    resume: bool = False,
    console: Console | None = None,
) -> TrainResult:
    """Train from a recipe (a path or a ``Recipe``). ``out``: the run directory (default
    ``runs/<recipe name>``); ``resume``: continue the run in it from its last checkpoint.

    A recipe path that is a run directory resumes that run with its resolved recipe."""
    recipe_path = None
    if not isinstance(recipe, Recipe):
        recipe_path = Path(recipe)
        if recipe_path.is_dir():  # `edgeinc train runs/x --resume`
            out = out or recipe_path
            recipe_path = recipe_path / RESOLVED_NAME
        recipe = load_recipe(recipe_path, overrides)
    elif overrides:
        recipe = recipe.with_overrides(overrides)
    run_dir = Path(out) if out is not None else default_run_dir(recipe_path, recipe)
    ctx = init_distributed(recipe.train.device)
    try:
        trainer = Trainer(recipe, run_dir, ctx, resume, console or Console())
        with trainer.signals():
            return trainer.run()
    finally:
        shutdown_distributed()


class Trainer:
    def __init__(self, recipe: Recipe, run_dir: Path, ctx: DistContext, resume: bool, console: Console) -> None:
        self.recipe, self.run_dir, self.ctx = recipe, run_dir, ctx
        self.console = console if ctx.is_main else Console(quiet=True)
        self.t = recipe.train
        self.stop_signal: int | None = None
        self.state = self._existing_state(resume)
        self._setup_precision()
        self._setup_data()
        self._setup_model()

    # -- set-up ------------------------------------------------------------------------------------

    def _existing_state(self, resume: bool) -> dict | None:
        ckpt = checkpoint_path(self.run_dir)
        if not ckpt.is_file():
            if resume:
                self.console.print(f"no checkpoint in {self.run_dir}: starting a new run there")
            return None
        if not resume:
            raise TrainingError(
                f"{self.run_dir} already holds a run ({ckpt}); continue it with --resume, "
                f"or choose another run directory with --out"
            )
        state = load_checkpoint_state(ckpt)
        saved = recipe_from_dict(state["recipe"], str(ckpt))
        changed = _diff(saved.to_dict(), self.recipe.to_dict())
        refused = [k for k in changed if k not in RESUMABLE_CHANGES]
        if refused:
            detail = "; ".join(f"{k}: {changed[k][0]!r} -> {changed[k][1]!r}" for k in refused)
            raise TrainingError(
                f"cannot resume {self.run_dir}: the recipe differs from the run's ({detail}). Resume with the "
                f"run's recipe (`edgeinc train {self.run_dir} --resume`) or start a new run with --out"
            )
        return state

    def _setup_precision(self) -> None:
        dev = self.ctx.device
        precision = self.t.precision
        if precision == "auto":
            precision = "bf16" if dev.type == "cuda" else "fp32"
        if precision == "fp16" and dev.type != "cuda":
            raise ValueError("train.precision=fp16 needs a CUDA device; use fp32 (or bf16) on the CPU")
        if precision == "bf16" and dev.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise ValueError(f"{torch.cuda.get_device_name(dev)} has no bfloat16; use --set train.precision=fp16")
        self.precision = precision
        self.autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
        # Weights are float32 except in fp64, which exists to compare runs without float32's rounding
        # noise (a deep BN network at init amplifies it ~2x per block).
        self.dtype = torch.float64 if precision == "fp64" else torch.float32
        self.scaler = torch.amp.GradScaler(dev.type) if precision == "fp16" else None
        cl = self.t.channels_last
        self.channels_last = dev.type == "cuda" if cl == "auto" else bool(cl)
        if dev.type == "cuda":
            torch.backends.cudnn.benchmark = True

    def _setup_data(self) -> None:
        from ..data import DataError, ImageFolder, build_transform, find_split
        from ..models import get_variant

        d = self.recipe.data
        self.variant = get_variant(self.recipe.model.name)
        try:
            train_split = find_split(d.root, "train")
        except DataError as e:
            raise DataError(
                f"{e}\nTo try everything offline first: `edgeinc demo`, or `edgeinc data synth demo/patches` "
                f"then `edgeinc train recipes/quickstart.yaml`."
            ) from None
        labels = self.state["labels"] if self.state else None
        self.gpu_decode = d.decode == "gpu"
        if self.gpu_decode and self.ctx.device.type != "cuda":
            raise ValueError(
                f"data.decode=gpu needs a CUDA device (train.device is {self.ctx.device}); use data.decode=cpu"
            )
        # With GPU decoding the workers only read the files; decoding and augmentation run in train_step.
        transform = None if self.gpu_decode else build_transform(self.variant, train=True, scale=d.scale)
        self.train_set = ImageFolder(train_split, transform, on_bad_image=d.on_bad_image, classes=labels,
                                     decode="none" if self.gpu_decode else "cpu")
        self.classes = self.train_set.classes
        n = self.recipe.model.num_classes
        if n is not None and n != len(self.classes):
            raise DataError(
                f"model.num_classes is {n} but {train_split} has {len(self.classes)} class folders; "
                f"set model.num_classes: null to take the number from the data"
            )
        try:
            val_split = find_split(d.root, "val")
        except DataError:
            val_split = None
            self.console.print(f"[yellow]no val split in {d.root}: training without evaluation[/]")
        self.val_set = None
        if val_split is not None:
            self.val_set = ImageFolder(val_split, build_transform(self.variant, train=False),
                                       on_bad_image=d.on_bad_image, classes=self.classes)
        self.steps_per_epoch = TrainBatchSampler(
            len(self.train_set), self.t.batch_size, self.ctx.rank, self.ctx.world_size, self.t.seed, 0
        ).steps_per_epoch
        self.local_batch = self.t.batch_size // self.ctx.world_size

    def _setup_model(self) -> None:
        # Same initial weights on every rank; different dropout streams per rank.
        torch.manual_seed(self.t.seed)
        m = self.recipe.model
        net = create_model(m.name, num_classes=len(self.classes), **m.create_kwargs())
        for module in net.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.momentum = self.t.bn_momentum
        net.to(self.ctx.device, self.dtype)
        if self.channels_last:
            net.to(memory_format=torch.channels_last)
        self.net = net
        self.ema = build_ema(net, self.t)
        if self.t.sync_bn and self.ctx.distributed:
            net = convert_sync_batchnorm(net, self.ctx.device)
        self.optimizer = build_optimizer(self.net, self.t)
        self.schedule = LRSchedule.from_recipe(self.t, self.steps_per_epoch)
        self.criterion = nn.CrossEntropyLoss(label_smoothing=self.t.label_smoothing)
        model: nn.Module = net
        if self.ctx.distributed:
            ids = [self.ctx.device.index] if self.ctx.device.type == "cuda" else None
            model = nn.parallel.DistributedDataParallel(net, device_ids=ids)
        if self.t.compile:
            model = torch.compile(model)
        self.model = model
        torch.manual_seed(self.t.seed + self.ctx.rank)

        self.epoch, self.step_in_epoch, self.global_step = 0, 0, 0
        self.history: list[dict] = []
        self.epoch_stats = {"loss_sum": 0.0, "images": 0, "seconds": 0.0}
        if self.state is not None:
            self._restore(self.state)
            self.state = None  # free the memory

    def _restore(self, state: dict) -> None:
        self.net.load_state_dict(state["model"])
        if self.ema is not None:
            self.ema.module.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        pos = state["position"]
        self.epoch, self.step_in_epoch, self.global_step = pos["epoch"], pos["step_in_epoch"], pos["global_step"]
        self.history = list(state["history"])
        self.epoch_stats = dict(state["epoch_stats"])
        rngs = state["rng"]
        if len(rngs) == self.ctx.world_size:
            restore_rng(rngs[self.ctx.rank], self.ctx.device)
        else:
            self.console.print(f"[yellow]resuming on {self.ctx.world_size} processes a run saved from {len(rngs)}: "
                               "dropout streams restart (the data order is unchanged)[/]")
        self.console.print(f"resumed {self.run_dir} at epoch {self.epoch + 1}, step "
                           f"{self.step_in_epoch}/{self.steps_per_epoch} (global step {self.global_step})")

    # -- signals -----------------------------------------------------------------------------------

    @contextmanager
    def signals(self):
        """SIGTERM and Ctrl-C: finish the current step, save a checkpoint, return. A second Ctrl-C
        stops at once (the last checkpoint stays)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum, _frame):
            if self.stop_signal is not None and signum == signal.SIGINT:
                raise KeyboardInterrupt
            self.stop_signal = signum
            name = signal.Signals(signum).name
            self.console.print(f"\n{name}: saving a checkpoint after this step (Ctrl-C again to stop now)")

        previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield
        finally:
            for s, h in previous.items():
                signal.signal(s, h)

    # -- the loop ----------------------------------------------------------------------------------

    def run(self) -> TrainResult:
        start = time.perf_counter()
        if self.ctx.is_main:
            self._write_run_files()
        self._banner()
        monitor = None
        if self.ctx.is_main:
            monitor = Monitor(self.console, self.run_dir, self.t.epochs, self.steps_per_epoch,
                              self.t.log_every_steps, self.global_step)
        try:
            while self.epoch < self.t.epochs:
                if not self._train_epoch(monitor):
                    self._save_checkpoint()
                    self.ctx.barrier()
                    return self._result("interrupted", start)
                self._end_epoch(monitor)
        finally:
            if monitor is not None:
                monitor.close()
        self.ctx.barrier()
        return self._result("completed", start)

    def train_loader(self) -> DataLoader:
        """The rest of the current epoch, this rank's share of each global batch."""
        d, ctx = self.recipe.data, self.ctx
        sampler = TrainBatchSampler(len(self.train_set), self.t.batch_size, ctx.rank, ctx.world_size, self.t.seed,
                                    self.epoch, self.step_in_epoch)
        from ..data import collate_skip_bad

        return DataLoader(
            SeededSamples(self.train_set, self.t.seed), batch_sampler=sampler, num_workers=d.workers,
            collate_fn=collate_skip_bad, pin_memory=ctx.device.type == "cuda", worker_init_fn=worker_init,
            generator=loader_generator(self.t.seed, self.epoch, ctx.rank), prefetch_factor=4 if d.workers else None,
        )

    def _train_epoch(self, monitor: Monitor | None) -> bool:
        """Train the rest of the current epoch; False when a signal asked to stop."""
        self.model.train()
        if monitor is not None:
            monitor.start_epoch(self.epoch, self.step_in_epoch)
        tic = time.perf_counter()
        try:
            for batch in self.train_loader():
                if batch is None:
                    if self.ctx.distributed:
                        raise TrainingError(f"every image of a batch was unreadable (epoch {self.epoch + 1}, "
                                            f"step {self.step_in_epoch + 1})")
                    self.step_in_epoch += 1  # nothing to learn from: skip the step, keep the position
                    continue
                loss, images = self.train_step(*batch)
                self.epoch_stats["loss_sum"] += loss * images
                self.epoch_stats["images"] += images
                now = time.perf_counter()
                self.epoch_stats["seconds"] += now - tic
                tic = now
                if monitor is not None:
                    lr = self.schedule(self.global_step - 1)  # the rate this step used
                    monitor.step(self.epoch, self.step_in_epoch, self.global_step, images, loss, lr)
                if self._stop_requested():
                    return False
                every = self.t.checkpoint_every_steps
                if every and self.global_step % every == 0 and self.step_in_epoch < self.steps_per_epoch:
                    self._save_checkpoint()
        finally:
            if monitor is not None:
                monitor.end_epoch()
        return True

    def train_step(self, images, labels: torch.Tensor) -> tuple[float, int]:
        """One optimizer step and EMA update on this rank's share of a global batch (a tensor, or the
        encoded files of ``data.decode: gpu``); returns (mean loss, images) over the global batch."""
        dev = self.ctx.device
        if self.gpu_decode:
            from ..data import gpu_decode_batch

            d = self.recipe.data
            images, labels = gpu_decode_batch(images, self.variant, True, dev, scale=d.scale, labels=labels.to(dev),
                                              on_bad_image=d.on_bad_image)
        memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        images = images.to(dev, self.dtype, non_blocking=True).contiguous(memory_format=memory_format)
        labels = labels.to(dev, non_blocking=True)
        lr = self.schedule(self.global_step)
        set_lr(self.optimizer, lr)
        autocast = torch.autocast(dev.type, dtype=self.autocast_dtype) if self.autocast_dtype else nullcontext()
        with autocast:
            out = self.model(images)
            if isinstance(out, InceptionOutputs):
                aux_loss = self.criterion(out.aux_logits.float(), labels)
                loss = self.criterion(out.logits.float(), labels) + self.t.aux_weight * aux_loss
            else:
                loss = self.criterion(out.float(), labels)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
        else:
            loss.backward()
        grad_norm = torch.zeros((), device=dev)
        if self.t.grad_clip_norm is not None:
            grad_norm = nn.utils.clip_grad_norm_(self.net.parameters(), self.t.grad_clip_norm)
        # One small all-reduce: every rank sees the same loss, non-finite check and stop request.
        n = len(labels)
        flags = torch.stack([
            loss.detach().float() * n, torch.tensor(float(n), device=dev), grad_norm.detach().float(),
            torch.tensor(float(self.stop_signal is not None), device=dev),
        ])
        self.ctx.all_reduce_sum(flags)
        total_loss, total_images, norm, stop = flags.tolist()
        mean_loss = total_loss / total_images
        grads_bad = self.scaler is None and not math.isfinite(norm)  # GradScaler skips inf steps itself
        if not math.isfinite(mean_loss) or grads_bad:
            self.optimizer.zero_grad(set_to_none=True)
            self._diverged(mean_loss, norm)
        if stop and self.stop_signal is None:
            self.stop_signal = signal.SIGTERM  # another rank was signalled
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step_in_epoch += 1
        self.global_step += 1
        if self.ema is not None:
            self.ema.update(self.net, step=self.global_step)
        return mean_loss, int(total_images)

    def _stop_requested(self) -> bool:
        return self.stop_signal is not None

    def _diverged(self, loss: float, norm: float) -> None:
        ckpt = checkpoint_path(self.run_dir)
        kept = "no checkpoint was written yet"
        if ckpt.is_file():
            kept = f"the last good checkpoint {ckpt} is kept"
        what = f"loss {loss}" if not math.isfinite(loss) else f"gradient norm {norm}"
        raise TrainingError(
            f"non-finite {what} at epoch {self.epoch + 1}, step {self.step_in_epoch + 1} "
            f"(global step {self.global_step + 1}); {kept}; the weights were not updated. Lower train.lr "
            f"(now {self.schedule(self.global_step):.3g}) or check the data, then resume with "
            f"`edgeinc train {self.run_dir} --resume`"
        )

    def _end_epoch(self, monitor: Monitor | None) -> None:
        e = self.epoch + 1
        last = e == self.t.epochs
        every = self.t.eval_every_epochs
        row: dict[str, Any] = {
            "epoch": e, "global_step": self.global_step, "lr": self.schedule(max(self.global_step - 1, 0)),
            "train_loss": self.epoch_stats["loss_sum"] / max(self.epoch_stats["images"], 1),
            "epoch_time_s": self.epoch_stats["seconds"],
            "images_per_s": self.epoch_stats["images"] / max(self.epoch_stats["seconds"], 1e-9),
        }
        if self.val_set is not None and (last or (every and e % every == 0)):
            row["val_top1"], row["val_top5"] = self._validate(self.net)
            if self.ema is not None:
                row["val_top1_ema"], row["val_top5_ema"] = self._validate(self.ema.module)
        self.history.append(row)
        self.epoch += 1
        self.step_in_epoch = 0
        self.epoch_stats = {"loss_sum": 0.0, "images": 0, "seconds": 0.0}
        if self.ctx.is_main:
            self._save_weights()
        self._save_checkpoint()
        if monitor is not None:
            write_metrics_csv(self.run_dir / "metrics.csv", self.history)
            monitor.epoch_summary(row)

    def _validate(self, model: nn.Module) -> tuple[float, float]:
        from ..data import collate_skip_bad

        ctx = self.ctx
        bs = self.recipe.data.eval_batch_size or self.local_batch
        loader = DataLoader(
            self.val_set, batch_size=bs, sampler=ShardSampler(len(self.val_set), ctx.rank, ctx.world_size),
            num_workers=self.recipe.data.workers, collate_fn=collate_skip_bad, pin_memory=ctx.device.type == "cuda",
            worker_init_fn=worker_init, generator=loader_generator(self.t.seed, self.epoch, ctx.rank),
        )
        c1, c5, n = count_correct(model, loader, ctx.device, autocast_dtype=self.autocast_dtype,
                                  channels_last=self.channels_last, ctx=ctx)
        return (c1 / n, c5 / n) if n else (float("nan"), float("nan"))

    # -- files -------------------------------------------------------------------------------------

    def _write_run_files(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.run_dir / RESOLVED_NAME, self.recipe.to_yaml())
        atomic_write_json(self.run_dir / "classes.json", self.classes)
        if self.history:  # a resumed run: metrics.csv must match the checkpoint
            write_metrics_csv(self.run_dir / "metrics.csv", self.history)

    def _save_weights(self) -> None:
        meta = {"edgeinc.labels": json.dumps(self.classes), "edgeinc.recipe": json.dumps(self.recipe.to_dict())}
        save_weights(self.net, self.run_dir / WEIGHT_FILES["model"], meta)
        if self.ema is not None:
            save_weights(self.ema.module, self.run_dir / WEIGHT_FILES["ema"], meta)

    def _save_checkpoint(self) -> None:
        rngs = self.ctx.gather_objects(capture_rng(self.ctx.device))
        if not self.ctx.is_main:
            return
        state = {
            "recipe": self.recipe.to_dict(),
            "labels": self.classes,
            "model": self.net.state_dict(),
            "ema": self.ema.module.state_dict() if self.ema is not None else None,
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "schedule": {"global_step": self.global_step, "base_lr": self.schedule.base_lr,
                         "steps_per_epoch": self.steps_per_epoch},
            "position": {"epoch": self.epoch, "step_in_epoch": self.step_in_epoch, "global_step": self.global_step},
            "epoch_stats": self.epoch_stats,
            "history": self.history,
            "rng": rngs,
            "world_size": self.ctx.world_size,
            "torch_version": str(torch.__version__),
        }
        save_checkpoint(checkpoint_path(self.run_dir), state)

    # -- reporting ---------------------------------------------------------------------------------

    def _banner(self) -> None:
        ctx, t = self.ctx, self.t
        params = count_parameters(self.net, include_aux=True)
        val = f", {len(self.val_set)} val" if self.val_set is not None else ""
        self.console.print(
            f"[bold]edgeinc train[/] {self.recipe.model.name} (depth x{self.recipe.model.depth_multiplier}, "
            f"{params:,} params, {len(self.classes)} classes) on {len(self.train_set)} train{val} images "
            f"-> {self.run_dir}\n"
            f"  {ctx.world_size} x {ctx.device.type} ({self.precision}{', channels_last' if self.channels_last else ''}"
            f"{', compiled' if t.compile else ''}), global batch {t.batch_size}, {self.steps_per_epoch} steps/epoch, "
            f"{t.optimizer} lr {self.schedule.base_lr:.4g} x{t.lr_decay}/{t.lr_decay_epochs:g} epochs",
            highlight=False,
        )

    def _result(self, status: str, start: float) -> TrainResult:
        if status == "interrupted":
            self.console.print(
                f"stopped at epoch {self.epoch + 1}, step {self.step_in_epoch}/{self.steps_per_epoch}; "
                f"checkpoint saved. Continue with: edgeinc train {self.run_dir} --resume", highlight=False,
            )
        return TrainResult(
            self.run_dir, status, self.epoch, self.global_step, dict(self.history[-1]) if self.history else {},
            list(self.history), time.perf_counter() - start, self.stop_signal, self.ctx.rank,
        )


def build_ema(net: nn.Module, t: TrainSection):
    """timm's ModelEmaV3 over parameters AND BatchNorm statistics. With warm-up the decay at update
    ``n`` is ``min(ema_decay, 1 - n ** -ema_warmup_power)`` (0 at the first update: a copy), so the
    average is usable early instead of being dominated by the random initial weights."""
    from timm.utils import ModelEmaV3

    if t.ema_decay is None:
        return None
    return ModelEmaV3(net, decay=t.ema_decay, use_warmup=t.ema_warmup, warmup_power=t.ema_warmup_power)


def _diff(old: dict, new: dict, prefix: str = "") -> dict[str, tuple[Any, Any]]:
    out: dict[str, tuple[Any, Any]] = {}
    for key in old.keys() | new.keys():
        a, b, path = old.get(key), new.get(key), f"{prefix}{key}"
        if isinstance(a, dict) and isinstance(b, dict):
            out.update(_diff(a, b, path + "."))
        elif a != b:
            out[path] = (a, b)
    return out
