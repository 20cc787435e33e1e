#!/usr/bin/env python3
"""CPU latency of the full-width variants x runtimes x precisions, against this CPU's compute floors.

For each variant (random weights, BatchNorm statistics estimated on synthetic patches, so activations
and INT8 ranges are realistic), export ONNX fp32/fp16/int8, TFLite fp32/int8 and ExecuTorch fp32/int8 (edgeinc.export), then
time every artifact in every runtime that reads it (PyTorch, ONNX Runtime, OpenVINO, LiteRT, ExecuTorch; fp32 also
in bf16 in OpenVINO and PyTorch where the CPU has native bf16) with ``edgeinc.bench`` at each batch
size. Every row records the precision the runtime executed (read back from it), the CPU time other
processes took on its cores (``contended`` rows are measured again, ``--retry-contended``), its ratio
to its FP32 parent, and its ratio to the compute floor of the executed precision: multiply-adds / the
best conv or GEMM rate any installed runtime reaches here (edgeinc/bench/floors.py). A row faster
than its floor is flagged as a measurement error.

    .venv/bin/python benchmarks/cpu_latency.py                       # all three variants, batch 1 and 8
    .venv/bin/python benchmarks/cpu_latency.py --variants inception_v3 --no-tflite --min-time 2

Run it on a quiet machine (nothing else on its cores: the contention column shows it). Writes
benchmarks/results/cpu_latency_<cpu class>.{md,json,png}, one set per machine class (x86-avx2,
x86-avx512-vnni-bf16, ...). Exports are cached under benchmarks/work/ (git-ignored) and reused when
their parent checkpoint is unchanged; `--export-only` makes them (on a busy machine, if need be) and stops.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path


HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from edgeinc.bench import bench  # noqa: E402
from edgeinc.bench.contention import CONTENDED_SHARE  # noqa: E402
from edgeinc.bench.machine import describe  # noqa: E402
from edgeinc.data import synthesize_patch_task  # noqa: E402
from edgeinc.export import ExportError, ManifestError, export, load_manifest  # noqa: E402
from edgeinc.testing import calibrated_run  # noqa: E402
from edgeinc.utils.io import atomic_write_json, atomic_write_text, sha256_file  # noqa: E402


def cached_export(run: Path, target: str, precision: str, out: Path, calib: Path) -> tuple[Path | None, str | None]:
    folder = out / f"{target}-{precision}"
    try:
        manifest, _ = load_manifest(folder)
        if manifest.source.sha256 == sha256_file(run / "model.safetensors"):
            return folder, None
    except ManifestError:  # none yet, or from an older edgeinc
        pass
    try:
        # random weights: INT8 top-1 agreement with FP32 is reported, not gated (export_full_width.py does the same)
        result = export(run, target, precision, out=out, calib=calib, calib_size=64, int8_min_agreement=0.0)
        return result.directory, None
    except ExportError as e:
        return None, str(e)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", nargs="+", default=["inception_v3", "inception_v3_151", "inception_v3_79"])
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--min-time", type=float, default=3.0)
    parser.add_argument("--retry-contended", type=int, default=2, help="re-measure contended rows up to N times")
    parser.add_argument("--no-tflite", action="store_true", help="skip the TFLite exports (minutes each on 2 cores)")
    parser.add_argument("--no-executorch", action="store_true", help="skip the ExecuTorch .pte exports")
    parser.add_argument("--export-only", action="store_true",
                        help="make (or reuse) the exports and stop: exports may run on a busy machine, timing may not")
    parser.add_argument("--work", type=Path, default=HERE / "work" / "cpu_latency")
    parser.add_argument("--reuse", type=Path, default=HERE / "work" / "full_width",
                        help="export_full_width.py's --work folder: its checkpoints and artifacts are timed as they are")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()
    batches = tuple(int(b) for b in args.batches.split(","))

    labels = [f"class_{i:03d}" for i in range(1000)]  # ImageNet-sized classifier: the paper's cost
    calib = args.work / "patches"
    if not (calib / "val").is_dir():
        # the synthetic patches, their class folders renamed to the model's first labels (the export
        # checks a data folder's classes against the model's)
        synthesize_patch_task(args.work / "raw", classes=5, train=16, val=4, size=320, seed=0)
        for split in ("train", "val"):
            (calib / split).mkdir(parents=True, exist_ok=True)
            for i, folder in enumerate(sorted((args.work / "raw" / split).iterdir())):
                folder.rename(calib / split / labels[i])

    targets = [("onnx", "fp32"), ("onnx", "fp16"), ("onnx", "int8")] + ([] if args.no_tflite else [("tflite", "fp32"), ("tflite", "int8")])
    targets += [] if args.no_executorch else [("executorch", "fp32"), ("executorch", "int8")]
    paths: list[Path] = []
    failures: dict[str, str] = {}
    exports_log = args.work / "exports.json"  # the load average right after each export: how busy the machine was
    made = json.loads(exports_log.read_text()) if exports_log.is_file() else {}
    for variant in args.variants:
        reused = args.reuse / "runs" / variant
        if (reused / "model.safetensors").is_file():
            paths.append(reused)
            found = sorted(p.parent for p in (args.reuse / "artifacts" / variant).glob("*/manifest.json"))
            # TensorRT-ready ONNX files are for a GPU; CPU rows come from the onnx and tflite artifacts
            found = [p for p in found if not p.name.startswith("tensorrt") and not (args.no_tflite and p.name.startswith("tflite"))]
            paths += found
            print(f"{variant}: reusing {reused} and {len(found)} artifacts", flush=True)
            continue
        # random weights, BN statistics estimated on the patches (the classifier stays random: latency only)
        run = calibrated_run(variant, args.work / variant / "run", calib, labels=labels, fit_classifier=False)
        paths.append(run)
        for target, precision in targets:
            t0 = time.perf_counter()
            fresh = not (args.work / variant / "artifacts" / f"{target}-{precision}" / "manifest.json").is_file()
            folder, error = cached_export(run, target, precision, args.work / variant / "artifacts", calib)
            print(f"{variant} {target} {precision}: {'ok' if folder else 'FAILED: ' + str(error)} ({time.perf_counter() - t0:.0f} s)", flush=True)
            if folder:
                paths.append(folder)
                if fresh:
                    made[f"{variant} {target} {precision}"] = os.getloadavg()[0]
                    atomic_write_json(exports_log, made)
            else:
                failures[f"{variant} {target} {precision}"] = error

    if args.export_only:
        print(f"{len(paths)} runs and artifacts ready in {args.work}; export failures: {failures or 'none'}")
        return 1 if failures else 0
    load_before = os.getloadavg()
    report = bench(paths, batches=batches, threads=args.threads, min_time=args.min_time, floors=True,
                   retry_contended=args.retry_contended, progress=lambda m: print(m, flush=True))
    load_after = os.getloadavg()
    rows = [r.model_dump() for r in report.rows]
    floors = report.header["floors"]

    args.out.mkdir(parents=True, exist_ok=True)
    cpu_class = report.header["machine"]["cpu_class"]
    stem = args.out / f"cpu_latency_{cpu_class}"
    report.write(args.work / "report")  # the generic report files, incl. the plot
    (stem.with_suffix(".png")).write_bytes((args.work / "report" / "bench.png").read_bytes())
    goals = goal_check(report.rows, "inception_v3")
    goals["executorch"] = executorch_check(report.rows, args.variants)
    atomic_write_json(stem.with_suffix(".json"), {
        "header": report.header, "load_average": {"before": load_before, "after": load_after},
        "export_failures": failures, "goals": goals, "rows": rows, "command": " ".join(sys.argv),
    })
    isa = floors["isa_peak"]
    lines = [
        f"# CPU latency of the full-width variants ({cpu_class})",
        "",
        describe(report.header["machine"]),
        f"**Settings:** {args.threads} threads (each measuring process pinned to {args.threads} CPUs), batch {args.batches}, "
        f">= {args.min_time} s of timed runs per row (after warm-up), denormals flushed to zero, inputs are synthetic "
        f"patches; random weights with estimated BN statistics, 1000 classes. {report.header['created']}. "
        f"Command: `{' '.join(sys.argv)}`.",
        "",
        "**Compute floors** (the best conv / GEMM kernel per precision among the installed runtimes, "
        f"{args.threads} threads; ISA peak beside it: {next(iter(isa.values()))['assumes'].split(', ', 1)[-1] if isa else 'clock unknown'}):",
        "",
        "| precision | best kernel | runtime | GMAC/s | ISA peak GMAC/s |",
        "|---|---|---|---|---|",
    ]
    for dtype, best in floors["best"].items():
        peak = isa.get(dtype, {}).get("gmacs_per_s")
        lines.append(f"| {dtype} | {best['kernel']} | {best['runtime']} | {best['gmacs_per_s']:.1f} | "
                     f"{'-' if peak is None else f'{peak:.0f}'} |")
    contended = [r for r in report.rows if r.contended]
    lines += [
        "",
        f"**Quiet?** Load average (1/5/15 min) before: {' / '.join(f'{x:.1f}' for x in load_before)}, after: "
        f"{' / '.join(f'{x:.1f}' for x in load_after)} (it counts this script's own exports and measuring processes). "
        f"Each row records the share of its cores' time other processes took during it; {len(contended)} of "
        f"{len(report.rows)} rows stayed contended (> {100 * CONTENDED_SHARE:.0f}%) after up to {args.retry_contended} "
        "re-measurements.",
        "",
        "**Goals at 299, batch 1, 2 threads** (ratios, so they hold on any class): " + "; ".join(goals["lines"]),
        "",
        "**ExecuTorch against the best of LiteRT, ONNX Runtime and OpenVINO** at batch 1, same executed precision "
        "(goal <= 1.2x): " + "; ".join(goals["executorch"]["lines"]),
        "",
        "| variant | runtime | precision | executed | batch | status | size MB | GMACs | p50 ms | p90 ms | img/s | "
        "others' CPU | vs FP32 parent | speed-up | floor ms | p50 / floor |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report.rows:
        def f(value, spec=".1f"):
            return "-" if value is None else format(value, spec)
        ratio = "below floor: measurement error" if r.below_floor else ("-" if r.vs_floor is None else f"{r.vs_floor:.2f}x")
        share = "-" if r.other_cpu_share is None else f"{100 * r.other_cpu_share:.0f}%" + (" contended" if r.contended else "")
        lines.append(
            f"| {r.variant} | {r.format}/{r.backend} | {r.precision} | {r.executed or '-'} | {r.batch or '-'} | {r.status} | "
            f"{f(r.size_mb)} | {'-' if r.macs is None else format(r.macs / 1e9, '.2f')} | {f(r.p50_ms)} | {f(r.p90_ms)} | "
            f"{f(r.images_per_s)} | {share} | {r.parent or '-'} | {'-' if r.speedup is None else f'{r.speedup:.2f}x'} | "
            f"{f(r.floor_ms)} | {ratio} |"
        )
    lines += ["", "**Exports** (a cached export keeps the conversion time of when it was made; the 1-minute load average "
              "right after it says how busy the 2 cores were: above 2, the time is pessimistic):", "",
              "| variant | target | precision | file | MB | conversion s | load after | outside the delegate |",
              "|---|---|---|---|---|---|---|---|"]
    unrecorded = 0
    for folder in paths:
        if (folder / "manifest.json").is_file():
            m, _ = load_manifest(folder, verify=False)
            outside = m.conversion.settings.get("non_delegated_ops", "-")
            load = made.get(f"{m.model.variant} {m.target} {m.precision}")
            unrecorded += load is None
            lines.append(f"| {m.model.variant} | {m.target} | {m.precision} | {m.artifact} | {m.artifact_bytes / 1e6:.1f} | "
                         f"{m.conversion.seconds:.0f} | {'not recorded' if load is None else f'{load:.1f}'} | {outside} |")
    if unrecorded:
        lines += ["", f"{unrecorded} exports were made before their load was recorded, while other jobs shared the cores: "
                  "their conversion times are pessimistic."]
    notes = [f"- {k}: {v}" for k, v in failures.items()]
    notes += [f"- {r.artifact} ({r.label}): {r.status}: {r.reason}" for r in report.rows if r.status != "ok"]
    if notes:
        lines += ["", "Failures and skipped rows:", *notes]
    atomic_write_text(stem.with_suffix(".md"), "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


# The goals for the 299 variant at batch 1 with 2 threads, as ratios to the compute floor.
GOALS = {"int8": 1.25, "fp32": 1.15, "bf16": 1.25}


def goal_check(rows, variant: str) -> dict:
    """The best p50 per executed precision at batch 1 for ``variant``, against its floor and the goal."""
    out: dict = {"lines": []}
    for dtype, goal in GOALS.items():
        candidates = [r for r in rows if r.variant == variant and r.batch == 1 and r.status == "ok" and r.executed_ops
                      and max(r.executed_ops, key=r.executed_ops.get) == dtype and r.floor_ms and not r.below_floor]
        if not candidates:
            out["lines"].append(f"{dtype}: no row")
            continue
        best = min(candidates, key=lambda r: r.p50_ms)
        ratio = best.p50_ms / best.floor_ms
        out[dtype] = {"p50_ms": best.p50_ms, "floor_ms": best.floor_ms, "ratio": ratio, "goal": goal, "met": ratio <= goal,
                      "row": best.label, "contended": best.contended}
        out["lines"].append(f"{dtype} {best.p50_ms:.1f} ms ({best.label}) = {ratio:.2f}x its floor "
                            f"{best.floor_ms:.1f} ms, goal <= {goal}x: {'met' if ratio <= goal else 'NOT met'}")
    return out


def executorch_check(rows, variants: list[str]) -> dict:
    """Each variant's ExecuTorch .pte at batch 1 against the fastest other runtime at the same executed precision."""
    out: dict = {"lines": []}
    for variant in variants:
        for dtype in ("fp32", "int8"):
            same = [r for r in rows if r.variant == variant and r.batch == 1 and r.status == "ok" and r.executed_ops
                    and max(r.executed_ops, key=r.executed_ops.get) == dtype and r.backend != "torch"]
            pte = [r for r in same if r.backend == "executorch"]
            others = [r for r in same if r.backend in ("litert", "onnxruntime", "openvino")]
            if not pte or not others:
                continue
            best = min(others, key=lambda r: r.p50_ms)
            ratio = pte[0].p50_ms / best.p50_ms
            out[f"{variant} {dtype}"] = {"executorch_ms": pte[0].p50_ms, "best_ms": best.p50_ms, "best": best.label,
                                         "ratio": ratio, "met": ratio <= 1.2}
            out["lines"].append(f"{variant} {dtype} {pte[0].p50_ms:.1f} ms vs {best.p50_ms:.1f} ({best.label}) = "
                                f"{ratio:.2f}x ({'met' if ratio <= 1.2 else 'NOT met'})")
    return out


if __name__ == "__main__":
    raise SystemExit(main())
