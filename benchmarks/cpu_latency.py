#!/usr/bin/env python3
"""CPU latency of the full-width variants x runtimes x precisions, against this CPU's compute floor.

For each variant (random weights, BatchNorm statistics estimated on synthetic patches, so activations
and INT8 ranges are realistic), export ONNX fp32/int8 and TFLite fp32/int8 (edgeinc.export), then time
every artifact in every runtime that reads it (PyTorch, ONNX Runtime, OpenVINO, LiteRT) with
``edgeinc.bench`` at each batch size. Each row gets its ratio to its FP32 parent (from the report)
and to the compute floor: multiply-adds / the peak multiply-add rate this script measures on this CPU
(fp32: a large torch matmul; int8: ONNX Runtime's u8 x s8 MatMulInteger, its fastest int8 GEMM here).

    .venv/bin/python benchmarks/cpu_latency.py                       # all three variants, batch 1 and 8
    .venv/bin/python benchmarks/cpu_latency.py --variants inception_v3 --no-tflite --min-time 2

Writes benchmarks/results/cpu_latency.{md,json,csv,png}. Exports are cached under
benchmarks/work/ (git-ignored) and reused when their parent checkpoint is unchanged.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from edgeinc.bench import bench  # noqa: E402
from edgeinc.bench.machine import describe  # noqa: E402
from edgeinc.data import synthesize_patch_task  # noqa: E402
from edgeinc.export import ExportError, export, load_manifest  # noqa: E402
from edgeinc.models import create_model, get_variant, save_weights  # noqa: E402
from edgeinc.utils.io import atomic_write_json, atomic_write_text  # noqa: E402


def peak_fp32_macs(threads: int, n: int = 2048, reps: int = 10) -> float:
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        a @ b
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return n**3 / best


def peak_int8_macs(threads: int, n: int = 2048, reps: int = 10) -> float:
    import onnxruntime as ort
    from onnx import TensorProto, helper

    inputs = [helper.make_tensor_value_info("A", TensorProto.UINT8, [n, n]),
              helper.make_tensor_value_info("B", TensorProto.INT8, [n, n])]
    output = helper.make_tensor_value_info("Y", TensorProto.INT32, [n, n])
    graph = helper.make_graph([helper.make_node("MatMulInteger", ["A", "B"], ["Y"])], "peak", inputs, [output])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    session = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feeds = {"A": rng.integers(0, 255, (n, n), dtype=np.uint8), "B": rng.integers(-128, 127, (n, n), dtype=np.int8)}
    for _ in range(3):
        session.run(None, feeds)
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        session.run(None, feeds)
        best = min(best, time.perf_counter() - t0)
    return n**3 / best


def make_run(variant: str, work: Path, calib: Path, labels: list[str]) -> Path:
    """A full-width model with seeded random weights and BN statistics estimated on the patches."""
    from edgeinc.data import ImageFolder, build_transform

    run = work / variant / "run"
    if (run / "model.safetensors").is_file():
        return run
    torch.manual_seed(0)
    model = create_model(variant, num_classes=len(labels))
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None  # cumulative average
    images = ImageFolder(calib / "train", transform=build_transform(get_variant(variant), train=False))
    x = torch.stack([images[i][0] for i in range(0, len(images), max(1, len(images) // 32))][:32])
    with torch.no_grad():
        model.train()(x)
    save_weights(model.eval(), run / "model.safetensors",
                 metadata={"edgeinc.labels": labels, "edgeinc.recipe": {"data": {"root": str(calib)}}})
    return run


def cached_export(run: Path, target: str, precision: str, out: Path, calib: Path) -> tuple[Path | None, str | None]:
    folder = out / f"{target}-{precision}"
    try:
        manifest, _ = load_manifest(folder)
        from edgeinc.utils.io import sha256_file

        if manifest.source["sha256"] == sha256_file(run / "model.safetensors"):
            return folder, None
    except Exception:
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
    parser.add_argument("--no-tflite", action="store_true", help="skip the TFLite exports (minutes each on 2 cores)")
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
    paths: list[Path] = []
    failures: dict[str, str] = {}
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
        run = make_run(variant, args.work, calib, labels)
        paths.append(run)
        for target, precision in targets:
            t0 = time.perf_counter()
            folder, error = cached_export(run, target, precision, args.work / variant / "artifacts", calib)
            print(f"{variant} {target} {precision}: {'ok' if folder else 'FAILED: ' + str(error)} ({time.perf_counter() - t0:.0f} s)", flush=True)
            if folder:
                paths.append(folder)
            else:
                failures[f"{variant} {target} {precision}"] = error

    load_before = os.getloadavg()
    peaks = {"fp32": peak_fp32_macs(args.threads), "int8": peak_int8_macs(args.threads)}
    report = bench(paths, batches=batches, threads=args.threads, min_time=args.min_time,
                   progress=lambda m: print(m, flush=True))
    load_after = os.getloadavg()
    rows = []
    for r in report.rows:
        row = r.model_dump()
        peak = peaks["int8" if r.precision == "int8" else "fp32"]
        if r.status == "ok" and r.macs:
            row["floor_ms"] = r.macs * r.batch / peak * 1e3
            row["vs_floor"] = r.p50_ms / row["floor_ms"]
        rows.append(row)

    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / "cpu_latency"
    report.write(args.work / "report")  # the generic report files, incl. the plot
    (args.out / "cpu_latency.png").write_bytes((args.work / "report" / "bench.png").read_bytes())
    atomic_write_json(stem.with_suffix(".json"), {
        "header": report.header, "peak_macs_per_s": peaks, "load_average": {"before": load_before, "after": load_after}, "export_failures": failures, "rows": rows,
        "command": " ".join(sys.argv),
    })
    lines = [
        "# CPU latency of the full-width variants",
        "",
        describe(report.header["machine"]),
        f"**Settings:** {args.threads} threads, batch {args.batches}, >= {args.min_time} s of timed runs per row "
        f"(after warm-up), inputs are synthetic patches; random weights with estimated BN statistics, 1000 classes. "
        f"Measured peak: fp32 {peaks['fp32'] / 1e9:.1f} GMAC/s (torch matmul), int8 {peaks['int8'] / 1e9:.1f} GMAC/s "
        f"(ONNX Runtime MatMulInteger u8 x s8). {report.header['created']}. Command: `{' '.join(sys.argv)}`.",
        "",
        f"**Load average** (1/5/15 min) before: {' / '.join(f'{x:.1f}' for x in load_before)}, after: "
        f"{' / '.join(f'{x:.1f}' for x in load_after)} on {report.header['machine']['usable_cpus']} CPUs: "
        "it counts this script's own exports (just before) and measuring processes; well above the threads used means other jobs shared the cores and these latencies are pessimistic.",
        "",
        "| variant | runtime | precision | batch | status | size MB | GMACs | p50 ms | p90 ms | p99 ms | img/s | peak MB | vs FP32 parent | speed-up | floor ms | p50 / floor |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        def f(key, spec=".1f"):
            return "-" if row.get(key) is None else format(row[key], spec)
        lines.append(
            f"| {row['variant']} | {row['format']}/{row['backend']} | {row['precision']} | {row['batch'] or '-'} | "
            f"{row['status']} | {f('size_mb')} | {'-' if row['macs'] is None else format(row['macs'] / 1e9, '.2f')} | "
            f"{f('p50_ms')} | {f('p90_ms')} | {f('p99_ms')} | {f('images_per_s')} | {f('peak_mem_mb', '.0f')} | "
            f"{row['parent'] or '-'} | {'-' if row['speedup'] is None else format(row['speedup'], '.2f') + 'x'} | "
            f"{f('floor_ms')} | {'-' if row.get('vs_floor') is None else format(row['vs_floor'], '.2f') + 'x'} |"
        )
    if failures or any(r["status"] != "ok" for r in rows):
        lines += ["", "Failures:"] + [f"- {k}: {v}" for k, v in failures.items()]
        lines += [f"- {r['artifact']} ({r['backend']}): {r['status']}: {r['reason']}" for r in rows if r["status"] != "ok"]
    atomic_write_text(stem.with_suffix(".md"), "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
