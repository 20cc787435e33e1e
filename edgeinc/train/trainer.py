"""``train(recipe)``: the paper's training method on one CPU, one GPU or many (torchrun), resumable
exactly from any moment.

The run directory is edgeinc.rundir's contract, written by ``RunStore`` (checkpoint.py); only rank 0
writes. Exact resume: the checkpoint is taken between two optimizer steps and holds everything the
next step depends on (weights, BN statistics, EMA, optimizer buffers, RNG streams, the position in
the data), and the data a step sees depends only on (seed, epoch, step) - see sampling.py. On CPU a run
killed at any moment (SIGKILL included) and resumed ends with the same weights, bit for bit.

One optimizer step per global batch: each process takes its share (``batch_size / world size``) and
accumulates gradients over micro-batches of ``train.micro_batch_size`` (BatchNorm normalises each,
as each of the paper's 50 replicas normalised its 32 images), so the paper's batch of 1600 trains on
one GPU. Every step ends with one small all-reduce of the step's flags (loss, gradient norm, a stop
request, a failed batch, non-finite weights) from which every rank decides the same way: a signal on
one rank stops all of them at the same step. On CUDA the flags are read one step late, so the host
never waits for the device inside a step.
"""

from __future__ import annotations

import math
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import torch
from rich.console import Console
from torch import nn
from torch.utils.data import DataLoader

from ..config import Recipe, find_recipe, load_recipe
from ..data import collate_skip_bad, gpu_decode_batch
from ..data.folder import EncodedBatch
from ..data.transforms import Normalizer
from ..models import InceptionOutputs, count_parameters
from ..rundir import RunDir
from .checkpoint import RunStore, TrainingError, capture_rng, restore_rng
from .distributed import DistContext, init_distributed, shutdown_distributed
from .evaluate import count_correct
from .monitor import Monitor
from .optim import set_lr
from .sampling import SeededSamples, ShardSampler, TrainBatchSampler, loader_generator, worker_init
from .setup import build_data, build_model, resolve_precision

# The step's all-reduced flags, in this order.
FLAGS = ("loss_sum", "images", "grad_norm", "stop", "bad_batch", "bad_weights")


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
    force: bool = False,
    console: Console | None = None,
) -> TrainResult:
    """Train from a recipe (a path, a shipped recipe's name, or a ``Recipe``). ``out``: the run
    directory (default ``runs/<recipe name>``); ``resume``: continue the run in it from its last
    checkpoint; ``force``: start a new run in a directory that holds one (its files are replaced).

    A recipe path that is a run directory resumes that run with its resolved recipe."""
    recipe_path = None
    if not isinstance(recipe, Recipe):
        recipe_path = Path(recipe)
        if recipe_path.is_dir():  # `edgeinc train runs/x --resume`
            out = out or recipe_path
            recipe_path = RunDir(recipe_path).recipe
            if not recipe_path.is_file():
                raise TrainingError(f"{recipe_path.parent}: not a run directory (no {recipe_path.name}); "
                                    f"give a recipe file or a shipped recipe's name")
        elif resume and not recipe_path.exists() and (out is None or not Path(out).exists()):
            raise TrainingError(f"{recipe_path}: no such run directory to resume")
        else:
            recipe_path = find_recipe(recipe_path)
        recipe = load_recipe(recipe_path, overrides)
    elif overrides:
        recipe = recipe.with_overrides(overrides)
    run_dir = Path(out) if out is not None else default_run_dir(recipe_path, recipe)
    ctx = init_distributed(recipe.train.device)
    try:
        trainer = Trainer(recipe, run_dir, ctx, resume, console or Console(), force=force)
        with trainer.signals():
            return trainer.run()
    finally:
        shutdown_distributed()


def _wide(logits: torch.Tensor) -> torch.Tensor:
    """Logits for the loss: bf16 / fp16 upcast to float32; fp32 and fp64 as they are (an fp64 run's loss
    in float32 made micro-batch accumulation differ from one batch by 2e-10)."""
    return logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits


class _Failed:
    """An exception raised while preparing a batch ahead, raised again when that batch is due."""

    def __init__(self, error: Exception) -> None:
        self.error = error


class Prefetcher:
    """Batch k+1 prepared (``prepare``: decoding, augmentation, the copy to the device, normalisation) on
    a side CUDA stream while step k runs on the current stream: nvJPEG, the per-image crops and the
    host's Python for them leave the step's critical path.

    Synchronisation (PyTorch's CUDA semantics): the current stream waits for the side stream before it
    uses a batch (``wait_stream``, recorded before the next batch's work is queued, so it does not wait
    for that), and every tensor made on the side stream is ``record_stream``-ed on the current one, so
    the caching allocator does not hand its memory to the side stream again while the step still reads
    it. A batch whose preparation raised raises when it is due, not a step early; a batch in which no
    image survived decoding (``on_bad_image: skip``) comes out as None, like one whose files all failed
    in the workers. On another device it prepares one batch ahead on the host (what the tests run)."""

    def __init__(self, batches: Iterable, prepare: Callable[..., tuple[torch.Tensor, torch.Tensor]],
                 device: torch.device) -> None:
        self.batches, self.prepare, self.device = batches, prepare, device
        self.stream = torch.cuda.Stream(device) if device.type == "cuda" else None

    def _start(self, it: Iterator) -> Any:
        """Queue the next batch's preparation; StopIteration at the end."""
        try:
            batch = next(it)
            if batch is None:
                return None
            with torch.cuda.stream(self.stream) if self.stream is not None else nullcontext():
                return self.prepare(*batch)
        except StopIteration:
            raise
        except Exception as e:  # a loader worker's or the decoder's error, for when this batch is due
            return _Failed(e)

    def _finish(self, prepared: Any) -> tuple[torch.Tensor, torch.Tensor] | None:
        if isinstance(prepared, _Failed):
            raise prepared.error
        if prepared is None:
            return None
        if self.stream is not None:
            current = torch.cuda.current_stream(self.device)
            current.wait_stream(self.stream)
            for t in prepared:
                t.record_stream(current)
        return prepared if len(prepared[1]) else None

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor] | None]:
        it = iter(self.batches)
        try:
            pending = self._start(it)
        except StopIteration:
            return
        while True:
            ready = self._finish(pending)
            try:
                pending = self._start(it)
            except StopIteration:
                yield ready
                return
            yield ready


class Trainer:
    _loader: DataLoader | None = None  # kept across epochs: see train_loader

    def __init__(self, recipe: Recipe, run_dir: Path, ctx: DistContext, resume: bool, console: Console,
                 force: bool = False) -> None:
        self.recipe, self.run_dir, self.ctx = recipe, run_dir, ctx
        self.console = console if ctx.is_main else Console(quiet=True)
        self.t = recipe.train
        self.store = RunStore(RunDir(run_dir))
        self.stop_signal: int | None = None  # a signal this process received
        self.stop_agreed = False  # every rank has agreed to stop after the current step
        self.state = self.store.existing_state(recipe, resume, force, self.console)
        self._setup()

    # -- set-up ------------------------------------------------------------------------------------

    def _setup(self) -> None:
        precision = resolve_precision(self.t, self.ctx.device)
        self.precision, self.autocast_dtype, self.dtype = precision.name, precision.autocast_dtype, precision.dtype
        self.scaler, self.channels_last, self.compiled = precision.scaler, precision.channels_last, precision.compiled
        # On CUDA the host must not wait for the device inside a step: the flags are read a step late.
        self.flags_late = self.ctx.device.type == "cuda"
        data = build_data(self.recipe, self.ctx, self.state["labels"] if self.state else None, self.console)
        self.variant, self.gpu_decode, self.train_set, self.val_set = data.variant, data.gpu_decode, data.train_set, data.val_set
        self.classes, self.steps_per_epoch, self.local_batch = data.classes, data.steps_per_epoch, data.local_batch
        parts = build_model(self.recipe, self.classes, self.ctx, precision, self.steps_per_epoch)
        self.net, self.model, self.ema, self.optimizer = parts.net, parts.model, parts.ema, parts.optimizer
        self.schedule, self.criterion = parts.schedule, parts.criterion
        self.micro_batch = self._micro_batch_size()
        torch.manual_seed(self.t.seed + self.ctx.rank)  # same initial weights everywhere, dropout streams per rank

        self.epoch, self.step_in_epoch, self.global_step = 0, 0, 0
        self.history: list[dict] = []
        self.epoch_stats = {"loss_sum": 0.0, "images": 0, "seconds": 0.0}
        self._pending: tuple[torch.Tensor, int] | None = None  # (flags, step) not read yet (CUDA)
        if self.state is not None:
            self._restore(self.state)
            self.state = None  # free the memory

    def _micro_batch_size(self) -> int:
        """Images per forward/backward on this process: the recipe's, or on CUDA ("auto") the largest
        divisor of the per-process batch that a probe step says fits in 80% of the free memory."""
        micro = self.t.micro_batch_size
        if isinstance(micro, int):
            return min(micro, self.local_batch)
        if micro is None or self.ctx.device.type != "cuda":
            return self.local_batch
        probe = min(16, self.local_batch)
        size = self.variant.input_size
        free, _total = torch.cuda.mem_get_info(self.ctx.device)
        torch.cuda.reset_peak_memory_stats(self.ctx.device)
        before = torch.cuda.memory_allocated(self.ctx.device)
        images = torch.zeros(probe, 3, size, size, device=self.ctx.device, dtype=self.dtype)
        labels = torch.zeros(probe, dtype=torch.long, device=self.ctx.device)
        buffers = {name: b.clone() for name, b in self.net.named_buffers()}  # the probe must not move BN statistics
        self.model.train()
        self._forward_backward(images, labels, weight=0.0)  # no update; the gradients are dropped
        self.optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():
            for name, b in self.net.named_buffers():
                b.copy_(buffers[name])
        per_image = (torch.cuda.max_memory_allocated(self.ctx.device) - before) / probe
        fits = max(1, int(0.8 * free / max(per_image, 1.0)))
        divisors = [d for d in range(1, self.local_batch + 1) if self.local_batch % d == 0 and d <= fits]
        return max(divisors)

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
        """SIGTERM and Ctrl-C: finish the current step, save a checkpoint, return. The request travels
        in the next step's flags, so every rank stops after the same step. A second Ctrl-C stops at
        once (the last checkpoint stays)."""
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
            self.store.write_run_files(self.recipe, self.classes, self.history)
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
        """The rest of the current epoch, this rank's share of each global batch.

        One DataLoader for the whole run: its batch sampler is moved to the current (epoch, step) before
        each pass, and with workers they persist across epochs (``persistent_workers``: no start-up and
        no empty prefetch queue at each epoch). The data stays exactly what it was: the sampler yields
        (epoch, index) keys in the main process and each sample's augmentation is seeded from (seed,
        epoch, index) in whichever worker computes it, so worker seeds (drawn once, from the first
        epoch's ``loader_generator``) do not matter."""
        d, ctx, t = self.recipe.data, self.ctx, self.t
        loader = self._loader
        if loader is None:
            sampler = TrainBatchSampler(len(self.train_set), t.batch_size, ctx.rank, ctx.world_size, t.seed,
                                        self.epoch, self.step_in_epoch)
            # Pinned batches copy to CUDA without a host wait; encoded files are read by nvJPEG from
            # the host, through its own pinned buffers, so pinning them would only cost time.
            pin = ctx.device.type == "cuda" and not self.gpu_decode
            loader = self._loader = DataLoader(
                SeededSamples(self.train_set, t.seed), batch_sampler=sampler, num_workers=d.workers,
                collate_fn=collate_skip_bad, pin_memory=pin, worker_init_fn=worker_init,
                generator=loader_generator(t.seed, self.epoch, ctx.rank), prefetch_factor=4 if d.workers else None,
                persistent_workers=d.workers > 0,
            )
        loader.batch_sampler.move_to(self.epoch, self.step_in_epoch)
        return loader

    def _close_loader(self) -> None:
        """Stop the persistent workers (the loader's iterator shuts them down when it is freed)."""
        self._loader = None

    def train_batches(self) -> Iterable:
        """The batches ``train_step`` takes for the rest of the current epoch: the loader's, or on CUDA
        prepared one step ahead on a side stream (``Prefetcher``)."""
        loader = self.train_loader()
        if self.ctx.device.type != "cuda":
            return loader
        return Prefetcher(loader, self._prepare, self.ctx.device)

    def _train_epoch(self, monitor: Monitor | None) -> bool:
        """Train the rest of the current epoch; False when the ranks agreed to stop."""
        self.model.train()
        if monitor is not None:
            monitor.start_epoch(self.epoch, self.step_in_epoch)
        tic = time.perf_counter()
        finished = False
        try:
            for batch in self.train_batches():
                if batch is None and not self.ctx.distributed:
                    self.step_in_epoch += 1  # every image unreadable, nothing to learn from: skip the step
                    continue
                report = self.train_step(*batch) if batch is not None else self.train_step(None, None)
                now = time.perf_counter()
                self.epoch_stats["seconds"] += now - tic
                tic = now
                if report is not None and monitor is not None:
                    step, loss, images = report
                    monitor.step(self.epoch, self.step_in_epoch, step, images, loss, self.schedule(step - 1))
                if self.stop_agreed:
                    return False
                every = self.t.checkpoint_every_steps
                if every and self.global_step % every == 0 and self.step_in_epoch < self.steps_per_epoch:
                    self._save_checkpoint()
            self._settle()  # the epoch's last step, before the epoch ends
            finished = True
        finally:
            if monitor is not None:
                monitor.end_epoch()
            if not finished or self.stop_agreed or self.epoch + 1 >= self.t.epochs:
                self._close_loader()  # the run ends here: its workers are not needed any more
        return not self.stop_agreed

    def _forward_backward(self, images: torch.Tensor, labels: torch.Tensor, weight: float) -> torch.Tensor:
        """Loss of one micro-batch (both heads), its gradients accumulated with ``weight`` (its share of
        the global batch's mean); the unweighted mean loss, detached."""
        dev = self.ctx.device
        autocast = torch.autocast(dev.type, dtype=self.autocast_dtype) if self.autocast_dtype else nullcontext()
        with autocast:
            out = self.model(images)
            if isinstance(out, InceptionOutputs):
                loss = self.criterion(_wide(out.logits), labels) + self.t.aux_weight * self.criterion(_wide(out.aux_logits), labels)
            else:
                loss = self.criterion(_wide(out), labels)
        scaled = loss * weight
        (self.scaler.scale(scaled) if self.scaler is not None else scaled).backward()
        return loss.detach()

    def _micro_batches(self, images: torch.Tensor, labels: torch.Tensor):
        """(images, labels, weight, is_last): chunks of ``micro_batch`` of this rank's share."""
        n = len(labels)
        starts = list(range(0, n, self.micro_batch))
        for i, start in enumerate(starts):
            end = min(start + self.micro_batch, n)
            yield images[start:end], labels[start:end], (end - start) / n, i == len(starts) - 1

    @cached_property
    def _normalizer(self) -> Normalizer:
        return Normalizer(self.variant.mean, self.variant.std, self.ctx.device)

    def _prepare(self, images, labels) -> tuple[torch.Tensor, torch.Tensor]:
        """A batch as the model takes it, on the device: encoded files (``data.decode: gpu``) decoded and
        augmented there; uint8 pixels from the workers normalised there, the whole batch at once (the
        transform's last step, bit for bit); float tensors (already normalised: synthetic batches) as
        they are. A batch the ``Prefetcher`` prepared passes through unchanged."""
        dev = self.ctx.device
        memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        if isinstance(images, list):  # crops would be drawn here, from this process's RNG: no exact resume
            raise TrainingError("encoded training files came without their crops; build the training set with "
                                "edgeinc.train.setup.train_dataset (ImageFolder(decode='none', crop_params=...))")
        if isinstance(images, EncodedBatch):
            d = self.recipe.data
            images, labels = gpu_decode_batch(images, self.variant, True, dev, scale=d.scale, labels=labels.to(dev),
                                              on_bad_image=d.on_bad_image, normalize=False)
        if images.dtype == torch.uint8:
            # channels_last on the uint8 pixels (1 byte a value); the float ops keep the layout
            images = images.to(dev, non_blocking=True).contiguous(memory_format=memory_format)
            images = self._normalizer(images)
        images = images.to(dev, self.dtype, non_blocking=True).contiguous(memory_format=memory_format)
        return images, labels.to(dev, non_blocking=True)

    def train_step(self, images, labels: torch.Tensor | None) -> tuple[int, float, int] | None:
        """One optimizer step and EMA update on this rank's share of a global batch (a tensor, or the
        encoded files of ``data.decode: gpu``; None when every image of it was unreadable: every rank
        then stops together). Returns (global step, mean loss over the global batch, images) for the
        step whose flags were read now - this one, or on CUDA the previous one - or None."""
        dev = self.ctx.device
        bad_batch = images is None
        if bad_batch:  # still take part in the collectives, so that the other ranks do not hang
            size = self.variant.input_size
            images, labels = torch.zeros(1, 3, size, size), torch.zeros(1, dtype=torch.long)
        images, labels = self._prepare(images, labels)
        set_lr(self.optimizer, self.schedule(self.global_step))
        loss_sum = torch.zeros((), device=dev, dtype=torch.float64)
        for x, y, weight, last in self._micro_batches(images, labels):
            # DDP all-reduces the gradients once, on the last micro-batch
            sync = nullcontext() if last or not self.ctx.distributed else self.model.no_sync()
            with sync:
                loss_sum += self._forward_backward(x, y, weight).double() * len(y)
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        grad_norm = torch.zeros((), device=dev)
        if self.t.grad_clip_norm is not None:
            grad_norm = nn.utils.clip_grad_norm_(self.net.parameters(), self.t.grad_clip_norm)
        weights_ok = self._pending_weights_ok()
        # torch.full launches a fill kernel; torch.tensor(x, device="cuda") would copy from the host and wait
        # for the device, the very sync reading the flags a step late avoids.
        flags = torch.stack([
            loss_sum.float(), torch.full((), float(len(labels)), device=dev), grad_norm.detach().float(),
            torch.full((), float(self.stop_signal is not None), device=dev), torch.full((), float(bad_batch), device=dev),
            (~weights_ok).float() if weights_ok is not None else torch.zeros((), device=dev),
        ])
        self.ctx.all_reduce_sum(flags)
        report = None
        if self.flags_late:
            report = self._settle()  # the previous step's flags, long computed by now
        else:
            report = self._check(flags, self.global_step + 1, before_update=True)
        self._update()
        if self.flags_late:
            self._pending = (flags, self.global_step)
        elif not self._weights_finite():
            self._weights_diverged(self.global_step)
        return report

    def _update(self) -> None:
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

    def _pending_weights_ok(self) -> torch.Tensor | None:
        """On CUDA: are the weights the previous update wrote finite (a device tensor, read a step late)."""
        if not self.flags_late or self.global_step == 0:
            return None
        norms = torch._foreach_norm([p.detach() for p in self.net.parameters()])
        return torch.stack(norms).sum().isfinite()

    def _weights_finite(self) -> bool:
        return all(bool(p.isfinite().all()) for p in self.net.parameters())

    def _settle(self) -> tuple[int, float, int] | None:
        """Read the flags of a step that were left on the device (CUDA), and act on them."""
        if self._pending is None:
            return None
        flags, step = self._pending
        self._pending = None
        return self._check(flags, step, before_update=False)

    def _check(self, flags: torch.Tensor, step: int, before_update: bool) -> tuple[int, float, int]:
        values = dict(zip(FLAGS, flags.tolist()))
        if values["bad_batch"]:
            raise TrainingError(f"every image of a batch was unreadable on {int(values['bad_batch'])} process(es) "
                                f"(epoch {self.epoch + 1}, step {step}); see the warnings above for the files")
        if values["bad_weights"]:
            self._weights_diverged(step - 1)
        mean_loss = values["loss_sum"] / values["images"]
        grads_bad = self.scaler is None and not math.isfinite(values["grad_norm"])  # GradScaler skips inf steps itself
        if not math.isfinite(mean_loss) or grads_bad:
            self.optimizer.zero_grad(set_to_none=True)
            self._diverged(mean_loss, values["grad_norm"], step, before_update)
        if values["stop"]:
            self.stop_agreed = True  # decided from the agreed flags only: every rank stops after this step
            self.stop_signal = self.stop_signal or signal.SIGTERM  # another rank was signalled
        self.epoch_stats["loss_sum"] += values["loss_sum"]
        self.epoch_stats["images"] += int(values["images"])
        return step, mean_loss, int(values["images"])

    def _kept(self) -> str:
        ckpt = self.store.run.checkpoint
        return f"the last good checkpoint {ckpt} is kept" if ckpt.is_file() else "no checkpoint was written yet"

    def _diverged(self, loss: float, norm: float, step: int, before_update: bool) -> None:
        what = f"loss {loss}" if not math.isfinite(loss) else f"gradient norm {norm}"
        weights = ("the weights were not updated" if before_update
                   else "the update it made in memory was not saved")
        raise TrainingError(
            f"non-finite {what} at epoch {self.epoch + 1}, step {self.step_in_epoch + (1 if before_update else 0)} "
            f"(global step {step}); {self._kept()}; {weights}. Lower train.lr "
            f"(now {self.schedule(step - 1):.3g}) or check the data, then resume with "
            f"`edgeinc train {self.run_dir} --resume`"
        )

    def _weights_diverged(self, step: int) -> None:
        raise TrainingError(
            f"the weights hold NaN or inf after the update of global step {step} (lr "
            f"{self.schedule(max(step - 1, 0)):.3g}); they were not saved: {self._kept()}. Lower train.lr, "
            f"then resume with `edgeinc train {self.run_dir} --resume`"
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
            self.store.save_weights(self.net, self.ema.module if self.ema is not None else None, self.classes, self.recipe)
        self._save_checkpoint()
        if monitor is not None:
            self.store.save_metrics(self.history)
            monitor.epoch_summary(row)

    def _validate(self, model: nn.Module) -> tuple[float, float]:
        """Top-1 / top-5 in percent on the validation split (every rank scores its shard)."""
        from ..data import collate_skip_bad

        ctx = self.ctx
        bs = self.recipe.data.eval_batch_size or self.micro_batch
        loader = DataLoader(
            self.val_set, batch_size=bs, sampler=ShardSampler(len(self.val_set), ctx.rank, ctx.world_size),
            num_workers=self.recipe.data.workers, collate_fn=collate_skip_bad, pin_memory=ctx.device.type == "cuda",
            worker_init_fn=worker_init, generator=loader_generator(self.t.seed, self.epoch, ctx.rank),
        )
        acc = count_correct(model, loader, ctx.device, autocast_dtype=self.autocast_dtype,
                            channels_last=self.channels_last, ctx=ctx)
        return acc.top1, acc.top5

    def _save_checkpoint(self) -> None:
        self._settle()  # never save an update whose flags were not read
        if self.flags_late and not self._weights_finite():
            self._weights_diverged(self.global_step)
        rngs = self.ctx.gather_objects(capture_rng(self.ctx.device))
        if not self.ctx.is_main:
            return
        self.store.save_state({
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
        })

    # -- reporting ---------------------------------------------------------------------------------

    def _banner(self) -> None:
        ctx, t = self.ctx, self.t
        params = count_parameters(self.net, include_aux=True)
        val = f", {len(self.val_set)} val" if self.val_set is not None else ""
        micro = f" in micro-batches of {self.micro_batch}" if self.micro_batch < self.local_batch else ""
        self.console.print(
            f"[bold]edgeinc train[/] {self.recipe.model.name} (depth x{self.recipe.model.depth_multiplier}, "
            f"{params:,} params, {len(self.classes)} classes) on {len(self.train_set)} train{val} images "
            f"-> {self.run_dir}\n"
            f"  {ctx.world_size} x {ctx.device.type} ({self.precision}{', channels_last' if self.channels_last else ''}"
            f"{', compiled' if self.compiled else ''}), global batch {t.batch_size}{micro}, "
            f"{self.steps_per_epoch} steps/epoch, {t.optimizer} lr {self.schedule.base_lr:.4g} "
            f"x{t.lr_decay}/{t.lr_decay_epochs:g} epochs",
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
