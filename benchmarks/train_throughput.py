#!/usr/bin/env python3
"""Training throughput (images/s) of the three variants, measured through the trainer's own step.

Every row runs ``edgeinc.train.trainer.Trainer.train_step`` - forward with both heads, label-smoothed
loss, backward, global-norm clipping, TF-style RMSProp, the weight EMA - exactly as ``edgeinc train``
does, with the recipe's precision (bf16 autocast on CUDA), channels_last, and eager or torch.compile:

* ``synthetic``: random normalised tensors already on the device, no decoding (the model's ceiling;
  what torchvision's reference numbers measure);
* ``real``: the trainer's own batches (``Trainer.train_batches``: its DataLoader, and on CUDA its
  prefetcher) over an ImageNet-like JPEG folder this script writes once under --data-dir: long side
  500 (500x375 mostly, like most of ImageNet), content with natural images' 1/f spectrum, quality 90,
  ~110 KB a file on average like ImageNet's train set (the script measures and prints it). ``--decode
  cpu``: workers decode and crop, ship uint8, the device normalises; ``--decode gpu``: workers read the
  files and draw each crop, nvJPEG decodes, the device crops, flips and normalises. By default the folder
  holds one epoch per real row (batch x (warm-up + real steps)): at batch 256, 55k files, ~6 GB, about a
  minute to write on 16 cores the first time.

    .venv/bin/python benchmarks/train_throughput.py                         # GPU: batch 256, all rows
    .venv/bin/python benchmarks/train_throughput.py --device cpu --depth-multiplier 0.1 --batch 8 \\
        --steps 3 --real-steps 3 --warmup 1 --modes eager --out /tmp/train_throughput_cpu.json   # proves it runs

With ``--device cpu --decode gpu`` the real rows run the GPU-decode path's CPU half (torchvision's CPU
JPEG decoder in place of nvJPEG): a recipe cannot say ``data.decode: gpu`` on a CPU, so the script
swaps in the encoded training set itself. That only proves the path runs; its speed means nothing.

Timing: the device is synchronised before each clock read; ``--warmup`` untimed steps come first and
their time beyond ``warmup x`` the timed rate is reported as ``warm-up extra`` (compilation in the first
compiled row, cuDNN autotuning and the loader's start everywhere). Prints a table and writes JSON: the
card, versions, settings and every row. Goal (issue 3): >= 4,500 img/s at 299 on one H100
(torchvision: 2,211 eager / 3,825 compiled, bf16, batch 256, synthetic), the real loader within 10%.
"""

from __future__ import annotations

import argparse
import os
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
from edgeinc.data import find_split  # noqa: E402
from edgeinc.models import get_variant, list_models  # noqa: E402
from edgeinc.train.distributed import init_distributed  # noqa: E402
from edgeinc.train.setup import train_dataset  # noqa: E402
from edgeinc.train.trainer import Trainer  # noqa: E402
from edgeinc.utils.io import atomic_write_json  # noqa: E402

CLASSES = 10
SPECTRUM_EXPONENT = 1.17  # amplitude ~ 1/f^1.17: measured, 110 KB a file on average over SHAPES at quality 90
QUALITY = 90
# (long side, short side) as in ImageNet, where most images have a long side of 500; 1 in 4 portrait.
SHAPES = ((500, 375), (500, 375), (500, 333), (500, 400), (500, 500))
# A folder written with other settings is not reused: its name carries them.
JPEG_VERSION = f"v2-f{SPECTRUM_EXPONENT}-q{QUALITY}"


def _field(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Two independent real fields (real and imaginary part) with an amplitude spectrum ~ 1/f^a."""
    fy = np.fft.fftfreq(height).astype(np.float32)[:, None]
    fx = np.fft.fftfreq(width).astype(np.float32)[None, :]
    f = np.hypot(fx, fy)
    f[0, 0] = 1.0
    amplitude = f ** np.float32(-SPECTRUM_EXPONENT)
    amplitude[0, 0] = 0.0  # zero mean
    noise = rng.standard_normal((height, width), np.float32) + 1j * rng.standard_normal((height, width), np.float32)
    z = np.fft.ifft2(amplitude * noise)
    return np.stack([z.real / z.real.std(), z.imag / z.imag.std()])


def photo_like(seed: int) -> np.ndarray:
    """uint8 HWC pixels with natural images' statistics: a 1/f luminance field, smoother chroma at half
    resolution (what JPEG's 4:2:0 keeps anyway), random mean colour."""
    rng = np.random.default_rng(seed)
    long, short = SHAPES[int(rng.integers(len(SHAPES)))]
    height, width = (long, short) if rng.random() < 0.25 else (short, long)
    lum = _field(rng, height, width)[0]
    a, b = _field(rng, (height + 1) // 2, (width + 1) // 2).repeat(2, axis=1).repeat(2, axis=2)[:, :height, :width]
    rgb = np.stack([lum + 0.5 * a, lum - 0.25 * (a + b), lum + 0.5 * b], axis=-1)
    rgb = rng.uniform(90, 140, 3).astype(np.float32) + 50 * rgb
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def _write_jpeg(args: tuple[Path, int]) -> int:
    path, seed = args
    if not path.exists():
        tmp = path.with_name(f".{path.name}.tmp")
        Image.fromarray(photo_like(seed)).save(tmp, format="JPEG", quality=QUALITY)
        tmp.replace(path)
    return path.stat().st_size


def write_jpeg_folder(root: Path, images: int, workers: int, console: Console) -> tuple[Path, float]:
    """ROOT/train/class_XX/*.JPEG, ``images`` files (kept and reused: the same seeds give the same files);
    returns the folder and its files' average size in bytes."""
    root = root / JPEG_VERSION
    jobs = []
    for i in range(images):
        folder = root / "train" / f"class_{i % CLASSES:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        jobs.append((folder / f"{i:07d}.JPEG", i))
    tic = time.perf_counter()
    with Pool(workers) as pool:
        sizes = pool.map(_write_jpeg, jobs, chunksize=64)
    console.print(f"JPEG folder {root}: {images} files, average {np.mean(sizes) / 1e3:.1f} KB "
                  f"(ImageNet's train set: ~110 KB), {time.perf_counter() - tic:.1f} s", highlight=False)
    return root, float(np.mean(sizes))


def make_trainer(args: argparse.Namespace, model: str, compiled: bool, data_root: Path) -> Trainer:
    ctx = init_distributed(args.device)
    # build_data refuses data.decode=gpu without CUDA: on a CPU the GPU-decode path is swapped in below.
    swap_in_encoded = args.decode == "gpu" and ctx.device.type != "cuda"
    recipe = Recipe(
        model=ModelSection(name=model, depth_multiplier=args.depth_multiplier),
        data=DataSection(root=str(data_root), workers=args.workers, decode="cpu" if swap_in_encoded else args.decode),
        train=TrainSection(batch_size=args.batch, lr_reference_batch=args.batch, device=args.device,
                           precision=args.precision, compile=compiled, checkpoint_every_steps=0),
    )
    trainer = Trainer(recipe, Path("/nonexistent/edgeinc-benchmark-run"), ctx, resume=False, console=Console(quiet=True))
    if swap_in_encoded:  # the files' bytes and crops drawn in the workers; _prepare decodes them (CPU decoder)
        trainer.train_set = train_dataset(find_split(data_root, "train"), trainer.variant, recipe.data, True,
                                          trainer.classes)
    return trainer


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)  # the clock must not read before the device has done the work


def time_steps(trainer: Trainer, batches, warmup: int, steps: int) -> tuple[float, float, int]:
    """(warm-up seconds, timed seconds, images) for ``warmup`` then ``steps`` steps."""
    dev = trainer.ctx.device
    it = iter(batches)
    _sync(dev)
    start = time.perf_counter()
    for _ in range(warmup):
        trainer.train_step(*next(it))
    _sync(dev)
    timed = time.perf_counter()
    images = 0
    for _ in range(steps):
        batch_images, labels = next(it)
        trainer.train_step(batch_images, labels)
        images += len(labels)  # known on the host: counting forces no sync (the step's report is late on CUDA)
    _sync(dev)
    return timed - start, time.perf_counter() - timed, images


def synthetic_batches(trainer: Trainer, batch: int):
    size = trainer.variant.input_size
    images = torch.randn(batch, 3, size, size, device=trainer.ctx.device)  # float: taken as normalised
    labels = torch.randint(0, len(trainer.classes), (batch,), device=trainer.ctx.device)
    while True:
        yield images, labels


def real_batches(trainer: Trainer):
    trainer.epoch, trainer.step_in_epoch = 0, 0  # train_step advanced the position on synthetic batches
    while True:  # the trainer's own batches, epoch after epoch
        for batch in trainer.train_batches():
            if batch is not None:  # None: every file of the batch unreadable (not in this folder)
                yield batch
        trainer.epoch, trainer.step_in_epoch = trainer.epoch + 1, 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=list_models(), choices=list_models())
    p.add_argument("--batch", type=int, default=256, help="images per step")
    p.add_argument("--steps", type=int, default=50, help="timed steps per synthetic row")
    p.add_argument("--real-steps", type=int, default=200, help="timed steps per real-data row")
    p.add_argument("--warmup", type=int, default=15, help="untimed steps first (compilation happens here)")
    p.add_argument("--modes", nargs="+", default=["eager", "compiled"], choices=["eager", "compiled"])
    p.add_argument("--loaders", "--rows", nargs="+", default=["synthetic", "real"], choices=["synthetic", "real"])
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    p.add_argument("--decode", default="cpu", choices=["cpu", "gpu"], help="real loader: JPEG decode on CPU workers or nvJPEG")
    p.add_argument("--workers", type=int, default=min(12, os.cpu_count() or 1), help="real loader: DataLoader workers")
    p.add_argument("--images", type=int, default=None,
                   help="JPEG files to write (default: enough for one epoch per real row, so no epoch boundary "
                        "falls inside the timed steps)")
    p.add_argument("--depth-multiplier", type=float, default=1.0)
    p.add_argument("--data-dir", type=Path, default=Path("/tmp/edgeinc-train-throughput-jpegs"))
    p.add_argument("--out", type=Path, default=HERE / "results" / "train_throughput.json")
    args = p.parse_args()

    console = Console(width=None if sys.stdout.isatty() else 150)  # piped: wide enough for the table
    # The trainer needs a training folder even for synthetic rows (at least one global batch of files).
    default = args.batch * (args.warmup + args.real_steps + 1) if "real" in args.loaders else args.batch
    data_root, jpeg_bytes = write_jpeg_folder(args.data_dir, max(args.images or default, args.batch, CLASSES),
                                              max(args.workers, 1), console)
    info = machine_info()
    rows, compile_s = [], {}
    for model in args.models:
        for mode in args.modes:
            trainer = make_trainer(args, model, mode == "compiled", data_root)
            for n, loader in enumerate(args.loaders):
                real = loader == "real"
                batches = real_batches(trainer) if real else synthetic_batches(trainer, args.batch)
                steps = args.real_steps if real else args.steps
                warmup_s, seconds, images = time_steps(trainer, batches, args.warmup, steps)
                extra = warmup_s - args.warmup * seconds / steps
                row = {
                    "model": model, "input_size": get_variant(model).input_size, "mode": mode, "loader": loader,
                    "decode": args.decode if real else None, "batch": args.batch, "steps": steps,
                    "images_per_s": images / seconds, "ms_per_step": 1e3 * seconds / steps,
                    "warmup_steps": args.warmup, "warmup_s": warmup_s, "warmup_extra_s": extra,
                    "device": trainer.ctx.device.type, "precision": trainer.precision,
                    "channels_last": trainer.channels_last,
                }
                rows.append(row)
                if mode == "compiled" and n == 0:  # the trainer's first steps are where it compiles
                    compile_s[model] = extra
                console.print(f"{model} {mode} {loader}: {row['images_per_s']:,.1f} img/s, warm-up "
                              f"{warmup_s:.1f} s ({extra:+.1f} s beyond its steps)", highlight=False)
            del trainer, batches
            if torch.cuda.is_available():
                torch.cuda.empty_cache()

    device = rows[0]["device"]
    table = Table(title=f"training throughput on {info['gpu'] if device == 'cuda' else info['cpu']} "
                        f"(batch {args.batch}, depth x{args.depth_multiplier})")
    for col in ("model", "input", "mode", "loader", "precision", "steps", "img/s", "ms/step", "warm-up extra s"):
        table.add_column(col, justify="left" if col in ("model", "mode", "loader") else "right")
    for r in rows:
        loader = r["loader"] + (f" ({r['decode']})" if r["decode"] else "")
        precision = r["precision"] + (" CL" if r["channels_last"] else "")
        table.add_row(r["model"], str(r["input_size"]), r["mode"], loader, precision, str(r["steps"]),
                      f"{r['images_per_s']:,.1f}", f"{r['ms_per_step']:.1f}", f"{r['warmup_extra_s']:.1f}")
    console.print(table)
    for model, seconds in compile_s.items():
        console.print(f"compile time {model}: {seconds:.1f} s (the first compiled row's warm-up beyond its steps)",
                      highlight=False)
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    result = {"benchmark": "train_throughput", "device": device, "card": info["gpu"] if device == "cuda" else None,
              "machine": info, "torch_threads": torch.get_num_threads(), "settings": settings, "rows": rows,
              "compile_s": compile_s, "jpeg_generator": JPEG_VERSION, "jpeg_average_bytes": jpeg_bytes,
              "measured_at": time.strftime("%Y-%m-%d %H:%M:%S %z")}
    atomic_write_json(args.out, result)
    console.print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
