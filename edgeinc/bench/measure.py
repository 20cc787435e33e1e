"""Measuring one artifact: latency at each batch size, peak memory, and single-crop accuracy.

Each artifact is measured in a fresh child process (``measure_in_subprocess``) so that its peak
memory is its own, a crashing runtime becomes a "run failed" row instead of ending the benchmark,
and one runtime's thread pools do not slow the next one.
"""

from __future__ import annotations

import dataclasses
import multiprocessing as mp
import os
import resource
import queue as queue_module
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..scoring import top_k
from .contention import CpuWatch, pin_threads
from .timing import measure_latency


@dataclass(frozen=True)
class MeasureSpec:
    path: str
    backend: str | None
    batches: tuple[int, ...]
    threads: int
    warmup: int = 5
    runs: int | None = None
    min_time: float = 3.0
    data: str | None = None  # an ImageNet-layout split folder (class folders) for top-1 / top-5
    max_images: int | None = None  # cap on images scored (None: all)
    device: str = "cpu"  # for the PyTorch runner
    precision: str | None = None  # None: the artifact's own; "bf16": the runtime option (OpenVINO, PyTorch)
    flush_denormals: bool = True
    pin: bool = True  # pin the measuring process to ``threads`` CPUs where the OS allows it
    extra: dict[str, Any] = field(default_factory=dict)  # runner options (e.g. OpenVINO's hint)


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MB.

    On Linux, ru_maxrss survives exec: a spawned child starts with the parent's peak (1.5 GB after the
    demo's training, on every row). VmHWM belongs to the process's own address space, so it is read first.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # Linux KiB, macOS bytes
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def variant_for(runner) -> Any:
    """The runner's preprocessing as a VariantConfig, so images are prepared exactly as the manifest says."""
    from ..models import MODELS

    pre = runner.preprocessing
    base = MODELS.meta(runner.variant)
    return dataclasses.replace(
        base, input_size=pre["input_size"], mean=tuple(pre["mean"]), std=tuple(pre["std"]),
        crop_fraction=pre["crop_fraction"], interpolation=pre["interpolation"],
    )


def sample_images(variant, count: int, data: str | None, seed: int = 0) -> np.ndarray:
    """``count`` normalised NCHW images for timing: from ``data`` when given, else synthetic patches
    rendered in memory (real image statistics, never zeros, which some kernels shortcut)."""
    from ..data import SHAPE_NAMES, ImageFolder, build_transform, render_patch

    transform = build_transform(variant, train=False)
    if data is not None:
        dataset = ImageFolder(data, transform=transform, on_bad_image="skip")
        items = [dataset[i] for i in range(min(count, len(dataset)))]
        images = [img.numpy() for item in items if item is not None for img in [item[0]]]
    else:
        images = []
    rng = np.random.default_rng(seed)
    while len(images) < count:
        shape = SHAPE_NAMES[int(rng.integers(len(SHAPE_NAMES)))]
        images.append(transform(render_patch(rng, variant.input_size, shape, SHAPE_NAMES)).numpy())
    return np.stack(images[:count]).astype(np.float32)


def score(runner, variant, data: str, max_images: int | None, batch: int = 32) -> dict[str, Any]:
    """Top-1 / top-5 (percent) of a single central crop, the paper's protocol. The folder's classes
    must be the model's labels (by name), else the figures would be meaningless."""
    from ..data import ImageFolder, build_transform

    labels = list(runner.labels)
    dataset = ImageFolder(data, transform=build_transform(variant, train=False), on_bad_image="skip")
    if not set(dataset.classes) <= set(labels):
        raise ValueError(
            f"{data}: its classes {dataset.classes[:6]}{'...' if len(dataset.classes) > 6 else ''} do not match "
            f"the model's labels {labels[:6]}{'...' if len(labels) > 6 else ''}"
        )
    to_label = {name: labels.index(name) for name in dataset.classes}
    n = len(dataset) if max_images is None else min(max_images, len(dataset))
    top1 = top5 = seen = 0
    for start in range(0, n, batch):
        items = [dataset[i] for i in range(start, min(start + batch, n))]
        items = [it for it in items if it is not None]
        if not items:
            continue
        x = np.stack([img.numpy() for img, _ in items]).astype(np.float32)
        y = np.array([to_label[dataset.classes[lab]] for _, lab in items])
        logits = runner.predict(x)
        k = min(5, logits.shape[1])
        topk = top_k(logits, k)
        top1 += int((topk[:, 0] == y).sum())
        top5 += int((topk == y[:, None]).any(axis=1).sum())
        seen += len(items)
    if seen == 0:
        raise ValueError(f"{data}: no readable images to score")
    return {"top1": 100.0 * top1 / seen, "top5": 100.0 * top5 / seen, "images_scored": seen}


def measure(spec: MeasureSpec) -> dict[str, Any]:
    """Load, time each batch size, then score. Returns {"latency": {batch: stats}, "peak_mem_mb", ...}."""
    from ..runtime import load_runner

    kwargs = dict(spec.extra)
    if spec.backend in (None, "torch") and Path(spec.path).suffix in ("", ".safetensors") and spec.device != "cpu":
        kwargs["device"] = spec.device
    runner = load_runner(spec.path, backend=spec.backend, threads=spec.threads, precision=spec.precision,
                         flush_denormals=spec.flush_denormals, **kwargs)
    variant = variant_for(runner)
    images = sample_images(variant, max(spec.batches), spec.data)
    result: dict[str, Any] = {"backend": runner.name, "latency": {}, "input": runner.input,
                              "precision": runner.precision, "executed": runner.executed.to_dict(),
                              "flush_denormals": runner.flush_denormals}
    for batch in spec.batches:
        prepared = runner.prepare(images[:batch])
        with CpuWatch() as watch:
            stats = measure_latency(
                lambda: runner.run(prepared), batch=batch, warmup=spec.warmup, runs=spec.runs, min_time=spec.min_time,
                synchronize=getattr(runner, "synchronize", None),
            )
        result["latency"][batch] = stats.to_dict()
        if watch.result is not None:
            result["latency"][batch].update(other_cpu_share=watch.result.share, contended=watch.result.contended)
    result["peak_mem_mb"] = peak_rss_mb()  # before scoring, whose batches would inflate it
    if spec.data is not None:
        result["accuracy"] = score(runner, variant, spec.data, spec.max_images)
    return result


def _child(fn, args: tuple, threads: int, pin: bool, queue) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    if pin:
        pin_threads(threads)  # before any runtime starts its thread pool
    try:
        queue.put({"ok": True, **fn(*args)})
    except BaseException as e:  # reported as a "run failed" row with the reason
        queue.put({"ok": False, "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()})


def run_in_subprocess(fn, args: tuple, threads: int, pin: bool = True, timeout: float | None = None) -> dict[str, Any]:
    """``fn(*args)`` (a dict) in a fresh spawned process with ``threads`` threads, pinned to as many
    CPUs: ``{"ok": True, **result}``, or ``{"ok": False, "error": ...}`` when it raised, crashed or
    ran past ``timeout`` seconds."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(fn, args, threads, pin, queue), daemon=True)
    proc.start()
    deadline = None if timeout is None else time.monotonic() + timeout
    result = None
    while result is None and (deadline is None or time.monotonic() < deadline):
        try:
            result = queue.get(timeout=1.0)
        except queue_module.Empty:
            if not proc.is_alive() and queue.empty():
                break  # died without answering (a segfault in a runtime, killed for memory, ...)
    proc.join(5)
    if proc.is_alive():
        proc.kill()
        proc.join()
    if result is None:
        why = f"timed out after {timeout:.0f} s" if timeout else f"the runtime process died (exit code {proc.exitcode})"
        return {"ok": False, "error": why}
    return result


def measure_in_subprocess(spec: MeasureSpec, timeout: float | None = None) -> dict[str, Any]:
    return run_in_subprocess(measure, (spec,), spec.threads, spec.pin, timeout)
