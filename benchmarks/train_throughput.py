#!/usr/bin/env python3
"""Training throughput (images/s) of the three variants, measured through the trainer's own step.

Every row runs ``edgeinc.train.loop.Trainer.train_step`` - forward with both heads, label-smoothed
loss, backward, global-norm clipping, TF-style RMSProp, the weight EMA - exactly as ``edgeinc train``
does, with the recipe's precision (bf16 autocast on CUDA), channels_last, and eager or torch.compile:

* ``synthetic``: random tensors already on the device (the model's ceiling; what torchvision's
  reference numbers measure);
* ``real``: the trainer's own loader (DataLoader workers decoding and augmenting JPEGs, or
  ``--decode gpu`` for nvJPEG) over an ImageNet-like JPEG folder this script writes itself
  (~400x350 pixels, quality 90, cached under --data-dir).

    .venv/bin/python benchmarks/train_throughput.py                         # GPU: batch 256, all rows
    .venv/bin/python benchmarks/train_throughput.py --device cpu --depth-multiplier 0.1 --batch 8 \\
        --steps 3 --warmup 1 --modes eager --out /tmp/train_throughput_cpu.json   # proves it runs

Prints a table and writes JSON: the card, versions, settings and every row. Goal (issue 3): >= 4,500
img/s at 299 on one H100 (torchvision: 2,211 eager / 3,825 compiled, bf16, batch 256, synthetic), the
real loader within 10% of synthetic.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from rich.console import Console
from rich.table import Table

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from edgeinc.bench.machine import machine_info  # noqa: E402
from edgeinc.config import DataSection, ModelSection, Recipe, TrainSection  # noqa: E402
from edgeinc.models import get_variant, list_models  # noqa: E402
from edgeinc.train.distributed import init_distributed  # noqa: E402
from edgeinc.train.loop import Trainer  # noqa: E402
from edgeinc.utils.io import atomic_write_json  # noqa: E402

CLASSES = 10


def _write_jpeg(args: tuple[Path, int]) -> None:
    path, seed = args
    if path.exists():
        return
    rng = np.random.default_rng(seed)
    w, h = int(rng.integers(300, 500)), int(rng.integers(250, 450))
    # Low-frequency colour fields plus fine noise: JPEG sizes and decode cost like photographs (~100 KB).
    coarse = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).resize((w, h), Image.BICUBIC)
    pixels = np.asarray(coarse, dtype=np.int16) + rng.integers(-24, 25, (h, w, 3), dtype=np.int16)
    tmp = path.with_name(f".{path.name}.tmp")
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(tmp, format="JPEG", quality=90)
    tmp.replace(path)


def write_jpeg_folder(root: Path, images: int, workers: int) -> Path:
    jobs = []
    for i in range(images):
        folder = root / "train" / f"class_{i % CLASSES:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        jobs.append((folder / f"{i:07d}.JPEG", i))
    with Pool(workers) as pool:
        pool.map(_write_jpeg, jobs, chunksize=64)
    return root


def make_trainer(args: argparse.Namespace, model: str, compiled: bool, data_root: Path) -> Trainer:
    recipe = Recipe(
        model=ModelSection(name=model, depth_multiplier=args.depth_multiplier),
        data=DataSection(root=str(data_root), workers=args.workers, decode=args.decode),
        train=TrainSection(batch_size=args.batch, lr_reference_batch=args.batch, device=args.device,
                           precision=args.precision, compile=compiled, checkpoint_every_steps=0),
    )
    ctx = init_distributed(args.device)
    return Trainer(recipe, Path("/nonexistent/edgeinc-benchmark-run"), ctx, resume=False, console=Console(quiet=True))


def time_steps(trainer: Trainer, batches, warmup: int, steps: int) -> tuple[float, int]:
    """(seconds, images) for ``steps`` steps after ``warmup`` (train_step synchronises every step)."""
    it = iter(batches)
    for _ in range(warmup):
        trainer.train_step(*next(it))
    images, start = 0, time.perf_counter()
    for _ in range(steps):
        images += trainer.train_step(*next(it))[1]
    return time.perf_counter() - start, images


def synthetic_batches(trainer: Trainer, batch: int):
    size = trainer.variant.input_size
    images = torch.randn(batch, 3, size, size, device=trainer.ctx.device)
    labels = torch.randint(0, len(trainer.classes), (batch,), device=trainer.ctx.device)
    while True:
        yield images, labels


def real_batches(trainer: Trainer):
    trainer.epoch, trainer.step_in_epoch = 0, 0  # train_step advanced the position on synthetic batches
    while True:  # the trainer's loader, epoch after epoch
        for batch in trainer.train_loader():
            yield batch
        trainer.epoch, trainer.step_in_epoch = trainer.epoch + 1, 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=list_models(), choices=list_models())
    p.add_argument("--batch", type=int, default=256, help="images per step")
    p.add_argument("--steps", type=int, default=50, help="timed steps per row")
    p.add_argument("--warmup", type=int, default=15, help="untimed steps first (compilation happens here)")
    p.add_argument("--modes", nargs="+", default=["eager", "compiled"], choices=["eager", "compiled"])
    p.add_argument("--loaders", nargs="+", default=["synthetic", "real"], choices=["synthetic", "real"])
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    p.add_argument("--decode", default="cpu", choices=["cpu", "gpu"], help="real loader: JPEG decode on CPU workers or nvJPEG")
    p.add_argument("--workers", type=int, default=12, help="real loader: DataLoader workers")
    p.add_argument("--depth-multiplier", type=float, default=1.0)
    p.add_argument("--data-dir", type=Path, default=Path("/tmp/edgeinc-train-throughput-jpegs"))
    p.add_argument("--out", type=Path, default=HERE / "results" / "train_throughput.json")
    args = p.parse_args()

    console = Console()
    images_needed = args.batch * (args.warmup + args.steps)
    data_root = write_jpeg_folder(args.data_dir, max(images_needed, CLASSES), max(args.workers, 1))
    info = machine_info()
    rows = []
    for model in args.models:
        for mode in args.modes:
            trainer = make_trainer(args, model, mode == "compiled", data_root)
            for loader in args.loaders:
                batches = synthetic_batches(trainer, args.batch) if loader == "synthetic" else real_batches(trainer)
                seconds, images = time_steps(trainer, batches, args.warmup, args.steps)
                row = {
                    "model": model, "input_size": get_variant(model).input_size, "mode": mode, "loader": loader,
                    "decode": args.decode if loader == "real" else None, "batch": args.batch, "steps": args.steps,
                    "images_per_s": images / seconds, "ms_per_step": 1e3 * seconds / args.steps,
                    "device": trainer.ctx.device.type, "precision": trainer.precision,
                    "channels_last": trainer.channels_last,
                }
                rows.append(row)
                console.print(f"{model} {mode} {loader}: {row['images_per_s']:,.1f} img/s", highlight=False)
            del trainer
            if torch.cuda.is_available():
                torch.cuda.empty_cache()

    device = rows[0]["device"]
    table = Table(title=f"training throughput on {info['gpu'] if device == 'cuda' else info['cpu']} "
                        f"(batch {args.batch}, depth x{args.depth_multiplier})")
    for col in ("model", "input", "mode", "loader", "precision", "img/s", "ms/step"):
        table.add_column(col, justify="left" if col in ("model", "mode", "loader") else "right")
    for r in rows:
        loader = r["loader"] + (f" ({r['decode']})" if r["decode"] else "")
        precision = r["precision"] + (" CL" if r["channels_last"] else "")
        table.add_row(r["model"], str(r["input_size"]), r["mode"], loader, precision, f"{r['images_per_s']:,.1f}",
                      f"{r['ms_per_step']:.1f}")
    console.print(table)
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    result = {"benchmark": "train_throughput", "device": device, "card": info["gpu"] if device == "cuda" else None,
              "machine": info, "torch_threads": torch.get_num_threads(), "settings": settings, "rows": rows,
              "measured_at": time.strftime("%Y-%m-%d %H:%M:%S %z")}
    atomic_write_json(args.out, result)
    console.print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
