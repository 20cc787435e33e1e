"""What a user sees during training (rank 0 only): a progress bar with images/s, loss and lr (log
lines instead when the output is not a terminal), one summary line per epoch, ``metrics.csv`` and
TensorBoard logs in the run directory."""

from __future__ import annotations

import csv
import io
import sys
import time
import types
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from ..utils.io import atomic_write_text

METRICS_COLUMNS = (
    "epoch", "global_step", "lr", "train_loss", "images_per_s", "epoch_time_s",
    "val_top1", "val_top5", "val_top1_ema", "val_top5_ema",
)


def write_metrics_csv(path: Path, history: list[dict]) -> None:
    """``metrics.csv`` rewritten (atomically) from the history kept in the checkpoint, so it always
    matches the checkpoint a resumed run starts from."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=METRICS_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for row in history:
        writer.writerow({k: ("" if row.get(k) is None else row[k]) for k in METRICS_COLUMNS})
    atomic_write_text(path, buffer.getvalue())


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}%"  # accuracies are percent (edgeinc.artifact.Accuracy)


def _summary_writer(log_dir: Path, purge_step: int | None):
    # TensorBoard imports TensorFlow for file I/O when it is installed (the tflite extra): 12 s and
    # 1 GB for nothing. The module below is TensorBoard's own switch to its built-in stub.
    sys.modules.setdefault("tensorboard.compat.notf", types.ModuleType("tensorboard.compat.notf"))
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(str(log_dir), purge_step=purge_step)


class Monitor:
    def __init__(
        self, console: Console, run_dir: Path, epochs: int, steps_per_epoch: int, log_every: int, start_step: int
    ) -> None:

        self.console = console
        self.epochs, self.steps_per_epoch, self.log_every = epochs, steps_per_epoch, log_every
        # purge_step drops events a killed run logged after the checkpoint it resumes from
        self.tb = _summary_writer(run_dir / "tb", start_step or None)
        self.progress: Progress | None = None
        self.task = None
        self._window_start = time.perf_counter()
        self._window_images = 0

    # -- steps -------------------------------------------------------------------------------------

    def start_epoch(self, epoch: int, done_steps: int) -> None:
        self._window_start, self._window_images = time.perf_counter(), 0
        if self.console.is_terminal:
            self.progress = Progress(
                TextColumn("epoch {task.fields[epoch]}/{task.fields[epochs]}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[ips]} img/s  loss {task.fields[loss]}  lr {task.fields[lr]}"),
                TimeElapsedColumn(), TimeRemainingColumn(), console=self.console, transient=True,
            )
            self.progress.start()
            self.task = self.progress.add_task(
                "train", total=self.steps_per_epoch, completed=done_steps,
                epoch=epoch + 1, epochs=self.epochs, ips="-", loss="-", lr="-",
            )

    def step(self, epoch: int, step_in_epoch: int, global_step: int, images: int, loss: float, lr: float) -> None:
        self._window_images += images
        if self.progress is not None:
            self.progress.update(self.task, completed=step_in_epoch)
        if global_step % self.log_every and step_in_epoch != self.steps_per_epoch:
            return
        elapsed = time.perf_counter() - self._window_start
        ips = self._window_images / elapsed if elapsed > 0 else 0.0
        self._window_start, self._window_images = time.perf_counter(), 0
        self.tb.add_scalar("train/loss", loss, global_step)
        self.tb.add_scalar("train/lr", lr, global_step)
        self.tb.add_scalar("train/images_per_s", ips, global_step)
        if self.progress is not None:
            self.progress.update(self.task, ips=f"{ips:,.0f}", loss=f"{loss:.4f}", lr=f"{lr:.3g}")
        else:
            self.console.print(
                f"epoch {epoch + 1}/{self.epochs} step {step_in_epoch}/{self.steps_per_epoch}  "
                f"loss {loss:.4f}  lr {lr:.3g}  {ips:,.0f} img/s", highlight=False,
            )

    def end_epoch(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None

    # -- epochs ------------------------------------------------------------------------------------

    def epoch_summary(self, row: dict) -> None:
        step = row["global_step"]
        for key in ("train_loss", "val_top1", "val_top5", "val_top1_ema", "val_top5_ema", "images_per_s"):
            if row.get(key) is not None:
                self.tb.add_scalar(f"epoch/{key}", row[key], step)
        self.tb.flush()
        val = ""
        if row.get("val_top1") is not None:
            val = f"  val top-1 {_pct(row['val_top1'])} top-5 {_pct(row['val_top5'])}"
            if row.get("val_top1_ema") is not None:
                val += f" | EMA top-1 {_pct(row['val_top1_ema'])} top-5 {_pct(row['val_top5_ema'])}"
        self.console.print(
            f"[bold]epoch {row['epoch']}/{self.epochs}[/]  train loss {row['train_loss']:.4f}{val}  "
            f"lr {row['lr']:.3g}  {row['epoch_time_s']:.1f} s  {row['images_per_s']:,.0f} img/s",
            highlight=False,
        )

    def close(self) -> None:
        self.end_epoch()
        self.tb.close()
