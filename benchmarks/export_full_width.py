#!/usr/bin/env python3
"""Export figures of the full-width variants (inception_v3 at 299 and inception_v3_79): every target and
precision that runs here, with parity, size and conversion time.

    .venv/bin/python benchmarks/export_full_width.py [--variants inception_v3,inception_v3_79] [--threads 2]

The conv weights are random (nothing is downloaded), with BatchNorm statistics re-estimated on the
synthetic images (TOOLCHAIN trap 9: otherwise eval-mode logits are ~1e12) and the 1000-class classifier
fitted on those random features (a linear probe), so decisions are clear-cut and INT8 top-1 agreement
means something - but random features make near-ties, so the INT8 agreement gate is off here
(``int8_min_agreement=0``) and the agreement is reported as measured. Images are the synthetic patch
task, written by the script. Rows report parity
(top-1 agreement, max abs error), size and time; accuracy is benchmarks/quickstart_int8.py's job. TFLite fp32 is converted by both onnx2tf back ends so their times can
be compared. TensorRT rows are the TensorRT-ready ONNX checked in ONNX Runtime (no TensorRT here).

Writes benchmarks/results/export_full_width.{json,md} with the machine, versions and threads.
Expected duration on 2 quiet cores: ~15-25 minutes (run it when the machine is quiet).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"

TARGETS = [("onnx", "fp32"), ("onnx", "fp16"), ("onnx", "int8"), ("tflite", "fp32"), ("tflite", "fp16"),
           ("tflite", "int8"), ("tensorrt", "fp16"), ("tensorrt", "int8")]


def make_checkpoint(name: str, data: Path, run: Path, images: int = 64, depth_multiplier: float = 1.0) -> Path:
    """A calibrated random run (edgeinc.testing) with a 1000-class classifier fitted on its random features:
    clear-cut decisions make INT8 top-1 agreement meaningful."""
    from edgeinc.testing import calibrated_run

    return calibrated_run(name, run, data, labels=[f"class_{i}" for i in range(1000)], images=images,
                          fit_steps=200, depth_multiplier=depth_multiplier)


def make_data(root: Path) -> Path:
    """The synthetic patch task, its class folders renamed to the model's first label names."""
    from edgeinc.data import synthesize_patch_task

    synthesize_patch_task(root / "raw", classes=5, train=16, val=8, size=340, seed=0)
    for split in ("train", "val"):
        for i, folder in enumerate(sorted((root / "raw" / split).iterdir())):
            (root / split).mkdir(parents=True, exist_ok=True)
            folder.rename(root / split / f"class_{i}")
    return root


def row(result, extra: dict | None = None) -> dict:
    m = result.manifest
    parity = m.parity[-1]  # the check that judged the artifact itself
    out = {
        "variant": m.model.variant, "target": m.target, "precision": m.precision, "file": result.artifact.name,
        "status": m.status, "size_mb": m.artifact_bytes / 1e6, "conversion_s": m.conversion.seconds,
        "converter_s": m.conversion.steps.get("convert"), "backend": m.conversion.backend,
        "parity_vs": parity.reference, "parity_runtime": parity.runtime, "max_abs_error": parity.max_abs_error,
        "max_abs_logit": parity.reference_max_abs_logit, "top1_agreement": parity.top1_agreement,
        "parity_images": parity.images, "parameters": m.model.parameters, "multiply_adds": m.model.multiply_adds,
    }
    if m.quantization:
        out["int8_size_ratio"] = m.quantization.size.ratio
    return {**out, **(extra or {})}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", default="inception_v3,inception_v3_79")
    parser.add_argument("--results", type=Path, default=RESULTS, help="where the .json/.md go")
    parser.add_argument("--threads", type=int, default=2, help="threads for PyTorch and the parity runs")
    parser.add_argument("--calib-size", type=int, default=64)
    parser.add_argument("--work", type=Path, help="keep data/checkpoints/artifacts here (default: a temp folder)")
    parser.add_argument("--depth-multiplier", type=float, default=1.0, help="< 1 only to smoke-test the script")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from edgeinc.bench.machine import describe, machine_info
    from edgeinc.export import ExportError, TensorRTUnavailableError, export

    torch.set_num_threads(args.threads)
    work = args.work or Path(tempfile.mkdtemp(prefix="export-full-width-"))
    data = make_data(work / "data") if not (work / "data" / "val").is_dir() else work / "data"
    rows = []
    for name in args.variants.split(","):
        run = make_checkpoint(name, data, work / "runs" / name, depth_multiplier=args.depth_multiplier)
        jobs = [(t, p, {}) for t, p in TARGETS] + [("tflite", "fp32", {"tflite_backend": "tf_converter"})]
        for target, precision, options in jobs:
            out = work / "artifacts" / name / ("tf_converter" if options else "")
            start = time.perf_counter()
            print(f"{name}: {target} {precision} {options or ''}", flush=True)
            try:
                result = export(run, target, precision, out=out, calib_size=args.calib_size, threads=args.threads,
                                int8_min_agreement=0.0, **options)
            except TensorRTUnavailableError as e:
                result = e.result
            except ExportError as e:
                status = " ".join(f"failed: {e}".split()).replace("|", "/")
                rows.append({"variant": name, "target": target, "precision": precision, "status": status,
                             "conversion_s": time.perf_counter() - start})
                print(f"  FAILED: {e}", flush=True)
                continue
            rows.append(row(result))
            print(f"  {rows[-1]['size_mb']:.1f} MB, {rows[-1]['conversion_s']:.1f} s, agreement "
                  f"{rows[-1]['top1_agreement']:.3f}, max abs error {rows[-1]['max_abs_error']:.3g}", flush=True)
    report = {"machine": machine_info(), "threads": args.threads, "calib_size": args.calib_size,
              "depth_multiplier": args.depth_multiplier,
              "weights": "random conv weights, BatchNorm statistics re-estimated and the 1000-class classifier fitted on 64 synthetic images", "rows": rows}
    results = args.results
    results.mkdir(parents=True, exist_ok=True)
    (results / "export_full_width.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = ["# Export of the full-width variants", "", describe(report["machine"]), "",
             f"Threads: {args.threads}. Weights: {report['weights']}; INT8 agreement gate off (reported as measured). "
             "Parity on 32 synthetic images against the "
             "reference named (PyTorch fp32, or ONNX Runtime fp32 for TFLite). TensorRT: the TensorRT-ready ONNX, "
             "checked in ONNX Runtime (no TensorRT on this machine).", "",
             "| variant | target | precision | file | back end | size MB | INT8 size ratio | conversion s | "
             "max abs error (max logit) | top-1 agreement | status |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "size_mb" not in r:
            lines.append(f"| {r['variant']} | {r['target']} | {r['precision']} | | | | | {r['conversion_s']:.1f} | | | {r['status']} |")
            continue
        ratio = f"{r['int8_size_ratio']:.2f}x" if r.get("int8_size_ratio") else ""
        lines.append(
            f"| {r['variant']} | {r['target']} | {r['precision']} | {r['file']} | {r['backend'] or ''} | {r['size_mb']:.1f} | "
            f"{ratio} | {r['conversion_s']:.1f} | {r['max_abs_error']:.3g} ({r['max_abs_logit']:.3g}) | "
            f"{r['top1_agreement']:.3f} | {r['status']} |")
    (results / "export_full_width.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
