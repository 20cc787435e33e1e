#!/usr/bin/env python3
"""Patches per second of the detector's second stage: the 79x79 variant classifying proposed patches.

For each width (depth multiplier; random weights, BatchNorm statistics estimated on synthetic patches
so that activations and INT8 ranges are realistic, as cpu_latency.py does), export ONNX fp32 / int8
(NNCF) and TFLite fp32 / int8 with ``edgeinc.export.export`` (cached under benchmarks/work/, reused
while their checkpoint is unchanged), then time classification with ``edgeinc.bench.bench`` on every
CPU runtime that reads each file (PyTorch for the checkpoint, ONNX Runtime and OpenVINO for ONNX, LiteRT
for TFLite) at each batch size, each in a fresh process pinned to its threads. Separately, in a process
pinned the same way, the cost of getting patches ready: ``crop_patches`` (the exact crop, one box at a
time) + the eval preprocessing (``edgeinc.detect.preprocess_patches``) for a batch of sliding windows on
a rendered 512 px scene, and the batched ``roi_align_patches`` alternative.

    .venv/bin/python benchmarks/patch_throughput.py                                 # x1.0 and x0.5, batch 1,16,64
    .venv/bin/python benchmarks/patch_throughput.py --widths 0.5 --batches 1,16     # a quick check

Goals (issue 10), reported as met / not met per row:
  - cropping + preprocessing <= 10% of the classification time at batch 64;
  - at batch 64 the INT8 path classifies at least as many patches/s as batch 1 does (1000 / its p50 ms).
Writes benchmarks/results/patch_throughput.{md,json} under the machine header. Rows whose cores other
processes used are marked ``contended``: such figures are pessimistic and need a quiet rerun.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from cpu_latency import cached_export  # noqa: E402  (this folder: the same cache of exports)
from edgeinc.bench import bench  # noqa: E402
from edgeinc.bench.contention import CONTENDED_SHARE, CpuWatch  # noqa: E402
from edgeinc.bench.machine import describe, machine_info  # noqa: E402
from edgeinc.bench.measure import run_in_subprocess  # noqa: E402
from edgeinc.bench.timing import measure_latency  # noqa: E402
from edgeinc.data import SHAPE_NAMES, ImageFolder, build_transform, render_scene, synthesize_patch_task  # noqa: E402
from edgeinc.detect import (  # noqa: E402
    DEFAULT_CONTEXT,
    PatchPreprocessing,
    SlidingWindows,
    crop_patches,
    eval_transform,
    preprocess_patches,
    roi_align_patches,
)
from edgeinc.models import create_model, get_variant, save_weights  # noqa: E402
from edgeinc.utils.io import atomic_write_json, atomic_write_text  # noqa: E402

VARIANT = "inception_v3_79"
TARGETS = (("onnx", "fp32"), ("onnx", "int8"), ("tflite", "fp32"), ("tflite", "int8"))
CROP_GOAL = 0.10  # cropping + preprocessing, as a share of the classification time at batch 64
GOAL_BATCH = 64


def calibration_data(work: Path, labels: list[str]) -> Path:
    """Synthetic patches whose class folders carry the model's first labels (exports check the data's
    classes against the model's)."""
    calib = work / "patches"
    if not (calib / "val").is_dir():
        synthesize_patch_task(work / "raw", classes=5, train=16, val=4, size=96, seed=0)
        for split in ("train", "val"):
            (calib / split).mkdir(parents=True, exist_ok=True)
            for i, folder in enumerate(sorted((work / "raw" / split).iterdir())):
                folder.rename(calib / split / labels[i])
    return calib


def make_run(width: float, work: Path, calib: Path, labels: list[str]) -> Path:
    """inception_v3_79 at ``width`` with seeded random weights and BN statistics estimated on the patches."""
    run = work / f"x{width:g}" / "run"
    if (run / "model.safetensors").is_file():
        return run
    torch.manual_seed(0)
    model = create_model(VARIANT, num_classes=len(labels), depth_multiplier=width, aux_logits=False)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None  # cumulative average
    images = ImageFolder(calib / "train", transform=build_transform(get_variant(VARIANT), train=False))
    x = torch.stack([images[i][0] for i in range(0, len(images), max(1, len(images) // 32))][:32])
    with torch.no_grad():
        model.train()(x)
    save_weights(model.eval(), run / "model.safetensors",
                 metadata={"edgeinc.labels": labels, "edgeinc.recipe": {"data": {"root": str(calib)}}})
    return run


def crop_cost(batches: tuple[int, ...], threads: int, min_time: float, size: int, context: int) -> dict:
    """ms per batch of getting patches ready, measured in this (pinned) process: the exact crop +
    eval preprocessing, and roi_align + eval preprocessing, on sliding windows over a rendered scene."""
    torch.set_num_threads(threads)
    variant = get_variant(VARIANT)
    pre = PatchPreprocessing(variant.input_size, variant.mean, variant.std, variant.crop_fraction, variant.interpolation)
    transform = eval_transform(pre)
    image, _ = render_scene(np.random.default_rng(0), 512, SHAPE_NAMES[:5])
    pixels = np.asarray(image)
    tensor = torch.from_numpy(pixels.copy()).permute(2, 0, 1)
    windows = SlidingWindows()((512, 512))
    boxes = windows[torch.from_numpy(np.random.default_rng(1).permutation(len(windows))[:max(batches)])]  # all sizes
    out: dict = {"windows": {"sizes": list(SlidingWindows().sizes), "stride": SlidingWindows().stride}, "rows": {}}
    for batch in batches:
        b = boxes[:batch]
        row = {}
        for name, fn in (
            ("exact", lambda: preprocess_patches(crop_patches(pixels, b, size, context, pre.mean), pre, transform)),
            ("roi_align", lambda: preprocess_patches(roi_align_patches(tensor, b, size, context, pre.mean, dtype=torch.uint8),
                                                     pre, transform)),
        ):
            with CpuWatch() as watch:
                stats = measure_latency(fn, batch=batch, warmup=2, min_time=min_time)
            row[name] = {**stats.to_dict(), "other_cpu_share": watch.result.share if watch.result else None,
                         "contended": watch.result.contended if watch.result else None}
        out["rows"][batch] = row
    return out


def width_of(row) -> float | None:
    """The depth multiplier a bench row belongs to, from its path (WORK/x<width>/...)."""
    match = re.search(r"[/\\]x([0-9.]+)[/\\]", row.artifact)
    return float(match.group(1)) if match else None


def goal_rows(rows: list, crops: dict) -> tuple[list[dict], list[str]]:
    """Per measured row: patches/s, crop share, end to end; and the two goals."""
    table = []
    for r in rows:
        if r.status != "ok" or r.p50_ms is None:
            continue
        crop = crops["rows"].get(r.batch) or crops["rows"].get(str(r.batch))
        crop_ms = crop["exact"]["p50_ms"] if crop else None
        table.append({
            "width": width_of(r), "runtime": f"{r.format}/{r.backend}", "precision": r.precision, "executed": r.executed,
            "batch": r.batch, "p50_ms": r.p50_ms, "patches_per_s": 1000.0 * r.batch / r.p50_ms,
            "crop_ms": crop_ms, "crop_share": crop_ms / r.p50_ms if crop_ms else None,
            "end_to_end_per_s": 1000.0 * r.batch / (r.p50_ms + crop_ms) if crop_ms else None,
            "other_cpu_share": r.other_cpu_share, "contended": r.contended,
        })
    lines = []
    for row in table:
        if row["batch"] == GOAL_BATCH and row["crop_share"] is not None:
            row["crop_goal_met"] = row["crop_share"] <= CROP_GOAL
    for row in table:
        if row["batch"] != GOAL_BATCH or row["precision"] != "int8":
            continue
        single = next((o for o in table if o["batch"] == 1 and o["runtime"] == row["runtime"] and o["width"] == row["width"]
                       and o["precision"] == "int8"), None)
        if single is not None:
            row["batch_goal_met"] = row["patches_per_s"] >= 1000.0 / single["p50_ms"]
            lines.append(f"x{row['width']:g} {row['runtime']} int8: batch {GOAL_BATCH} {row['patches_per_s']:.0f} patches/s "
                         f"vs batch 1 {1000.0 / single['p50_ms']:.0f}: {'met' if row['batch_goal_met'] else 'NOT met'}")
    crop_rows = [r for r in table if "crop_goal_met" in r]
    if crop_rows:
        met = sum(r["crop_goal_met"] for r in crop_rows)
        lines.insert(0, f"cropping + preprocessing <= {100 * CROP_GOAL:.0f}% of classification at batch {GOAL_BATCH}: "
                        f"met in {met} of {len(crop_rows)} rows")
    elif all(r["batch"] != GOAL_BATCH for r in table):
        lines.insert(0, f"goals are stated at batch {GOAL_BATCH}, which this run did not measure")
    return table, lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--widths", default="1.0,0.5", help="depth multipliers (default 1.0,0.5)")
    parser.add_argument("--batches", default="1,16,64")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--classes", type=int, default=81, help="labels of the classifier (default 81: COCO + background)")
    parser.add_argument("--context", type=int, default=DEFAULT_CONTEXT)
    parser.add_argument("--min-time", type=float, default=2.0)
    parser.add_argument("--retry-contended", type=int, default=1)
    parser.add_argument("--no-tflite", action="store_true", help="skip the TFLite exports (minutes each on 2 cores)")
    parser.add_argument("--work", type=Path, default=HERE / "work" / "patch_throughput")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()
    widths = [float(w) for w in args.widths.split(",")]
    batches = tuple(int(b) for b in args.batches.split(","))
    labels = ["background"] + [f"class_{i:03d}" for i in range(args.classes - 1)]
    calib = calibration_data(args.work, labels)
    targets = [t for t in TARGETS if not (args.no_tflite and t[0] == "tflite")]

    paths, failures = [], {}
    for width in widths:
        run = make_run(width, args.work, calib, labels)
        paths.append(run)
        for target, precision in targets:
            t0 = time.perf_counter()
            folder, error = cached_export(run, target, precision, args.work / f"x{width:g}" / "artifacts", calib)
            print(f"x{width:g} {target} {precision}: {'ok' if folder else 'FAILED: ' + str(error)} "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)
            if folder:
                paths.append(folder)
            else:
                failures[f"x{width:g} {target} {precision}"] = error

    load_before = os.getloadavg()
    report = bench(paths, batches=batches, threads=args.threads, min_time=args.min_time, bf16=False,
                   retry_contended=args.retry_contended, progress=lambda m: print(m, flush=True))
    crops = run_in_subprocess(crop_cost, (batches, args.threads, args.min_time, get_variant(VARIANT).input_size,
                                          args.context), args.threads)
    load_after = os.getloadavg()
    if not crops.get("ok"):
        raise SystemExit(f"crop timing failed: {crops.get('error')}")
    rows = sorted(report.rows, key=lambda r: (-(width_of(r) or 0), r.format, r.backend or "", r.precision or "",
                                              r.batch or 0))
    table, goals = goal_rows(rows, crops)
    contended = [t for t in table if t["contended"]] + [
        {"crop": b} for b, row in crops["rows"].items() for v in row.values() if v["contended"]]
    info = machine_info()

    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / "patch_throughput"
    atomic_write_json(stem.with_suffix(".json"), {
        "header": report.header, "machine": info, "threads": args.threads, "batches": list(batches), "widths": widths,
        "classes": args.classes, "context": args.context, "load_average": {"before": load_before, "after": load_after},
        "export_failures": failures, "goals": goals, "rows": table, "crop": crops, "contended_rows": len(contended),
        "bench_rows": [r.model_dump() for r in rows], "command": " ".join(sys.argv),
    })
    quiet = (f"**Contention:** {len(contended)} of {len(table) + 2 * len(crops['rows'])} measurements had other processes "
             f"taking more than {100 * CONTENDED_SHARE:.0f}% of their cores (marked `contended`); load average (1/5/15 min) "
             f"before {' / '.join(f'{x:.1f}' for x in load_before)}, after {' / '.join(f'{x:.1f}' for x in load_after)}. ")
    quiet += ("These figures are pessimistic: the committed table needs a rerun on a quiet machine." if contended
              else "No measurement was contended.")
    lines = [
        "# Patch throughput of the 79x79 variant (the detector's second stage)",
        "",
        describe(info),
        "",
        f"**Settings:** {VARIANT}, widths {', '.join(f'x{w:g}' for w in widths)}, {args.classes} classes, random weights "
        f"with estimated BN statistics; {args.threads} threads (each measuring process pinned to {args.threads} CPUs); "
        f"batch {args.batches}; >= {args.min_time} s of timed runs per row after warm-up; p50 latency of the runner's "
        f"`run` on prepared batches. Crop: `crop_patches` (exact, size 79, context {args.context}) + the eval "
        f"preprocessing for sliding windows of {', '.join(f'{s:g}' for s in crops['windows']['sizes'])} px on a 512 px "
        f"rendered scene, p50 per batch. {report.header['created']}. Command: `{' '.join(sys.argv)}`.",
        "",
        quiet,
        "",
        "**Goals:** " + ("; ".join(goals) if goals else "no row to judge"),
        "",
        "| width | runtime | precision | executed | batch | p50 ms | patches/s | crop ms | crop / classify | "
        "end to end patches/s | others' CPU |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for t in table:
        share = "-" if t["other_cpu_share"] is None else f"{100 * t['other_cpu_share']:.0f}%" + (" contended" if t["contended"] else "")
        flag = {True: " (met)", False: " (NOT met)"}.get(t.get("crop_goal_met"), "")
        crop = "-" if t["crop_ms"] is None else format(t["crop_ms"], ".2f")
        crop_share = "-" if t["crop_share"] is None else format(100 * t["crop_share"], ".1f") + "%"
        end_to_end = "-" if t["end_to_end_per_s"] is None else format(t["end_to_end_per_s"], ".1f")
        width = "-" if t["width"] is None else format(t["width"], "g")
        lines.append(
            f"| x{width} | {t['runtime']} | {t['precision']} | {t['executed'] or '-'} | {t['batch']} | {t['p50_ms']:.2f} | "
            f"{t['patches_per_s']:.1f} | {crop} | {crop_share}{flag} | {end_to_end} | {share} |")
    lines += ["", "Getting patches ready (ms per batch, p50; the same for every runtime):", "",
              "| batch | crop_patches + preprocess | per patch | roi_align_patches + preprocess | per patch | others' CPU |",
              "|---|---|---|---|---|---|"]
    for batch, row in crops["rows"].items():
        e, r = row["exact"], row["roi_align"]
        share = max(v["other_cpu_share"] or 0.0 for v in row.values())
        lines.append(f"| {batch} | {e['p50_ms']:.2f} | {e['p50_ms'] / int(batch):.3f} | {r['p50_ms']:.2f} | "
                     f"{r['p50_ms'] / int(batch):.3f} | {100 * share:.0f}%{' contended' if share > CONTENDED_SHARE else ''} |")
    notes = [f"- {k}: {v}" for k, v in failures.items()]
    notes += [f"- {r.artifact} ({r.label}): {r.status}: {r.reason}" for r in rows if r.status != "ok"]
    if notes:
        lines += ["", "Failures and skipped rows:", *notes]
    atomic_write_text(stem.with_suffix(".md"), "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
