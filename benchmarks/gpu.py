#!/usr/bin/env python3
"""The GPU figures in one prepared run (under 8 minutes on an H100/H200): training images/s and inference.

    python benchmarks/gpu.py [--out benchmarks/results] [--budget-s 420]
    python benchmarks/gpu.py --device cpu --depth-multiplier 0.1 --batch 4 --steps 2   # proves it runs, no GPU

Rows (each skipped with its reason where the piece is missing):
* training images/s of the three variants through the trainer's own step (benchmarks/train_throughput.py:
  bf16 autocast, channels_last, eager and torch.compile, synthetic tensors), at ``--train-batch``;
* inference, PyTorch: fp16 and bf16 autocast at batch 256 (images/s), batch 1 eager and replayed as a CUDA
  graph (ms), channels_last;
* ONNX Runtime's CUDA execution provider on the fp32 and fp16 ONNX (where onnxruntime-gpu is installed);
* TensorRT fp16 engine built from the fp16 ONNX (where the tensorrt package is importable), through
  edgeinc's own builder and runner.
Writes ``gpu_<card>.json`` and ``.md`` with the card, driver, versions and settings. Timing uses CUDA
events after warm-up; every row says what it measured. Nothing here has run yet in this project:
no GPU was lent to the sessions that wrote it (see the issue's closing notes).
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from edgeinc.models import create_model, list_models  # noqa: E402
from edgeinc.testing import estimate_bn_statistics  # noqa: E402


def timed(fn, device: torch.device, warmup: int, runs: int) -> float:
    """Median seconds of ``fn()`` after ``warmup`` calls (CUDA events on a GPU, wall clock on the CPU)."""
    for _ in range(warmup):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
        times = []
        for _ in range(runs):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
    else:
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def model_for(name: str, device: torch.device, depth: float) -> torch.nn.Module:
    torch.manual_seed(0)
    model = create_model(name, num_classes=1000, depth_multiplier=depth, aux_logits=False)
    size = model.variant.input_size
    estimate_bn_statistics(model, torch.rand(8, 3, size, size) * 2 - 1)  # sane activations, no denormal storms
    return model.to(device).to(memory_format=torch.channels_last).eval()


def torch_rows(name: str, device: torch.device, depth: float, batch: int, warmup: int, runs: int) -> list[dict]:
    model = model_for(name, device, depth)
    size = model.variant.input_size
    rows = []
    x = torch.randn(batch, 3, size, size, device=device).contiguous(memory_format=torch.channels_last)
    for dtype, precision in ((torch.float16, "fp16"), (torch.bfloat16, "bf16")):
        if device.type == "cpu" and dtype == torch.float16:
            rows.append({"variant": name, "runtime": "torch", "precision": "fp16", "batch": batch, "status": "skipped",
                         "reason": "fp16 autocast is for CUDA"})
            continue
        with torch.inference_mode(), torch.autocast(device.type, dtype=dtype):
            seconds = timed(lambda: model(x), device, warmup, runs)
        rows.append({"variant": name, "runtime": "torch eager (autocast, channels_last)", "precision": precision,
                     "batch": batch, "status": "ok", "ms": seconds * 1e3, "images_per_s": batch / seconds})
    one = x[:1].clone()
    with torch.inference_mode(), torch.autocast(device.type, dtype=torch.float16 if device.type == "cuda" else torch.bfloat16):
        seconds = timed(lambda: model(one), device, warmup, runs)
    rows.append({"variant": name, "runtime": "torch eager (autocast)", "precision": "fp16" if device.type == "cuda" else "bf16",
                 "batch": 1, "status": "ok", "ms": seconds * 1e3, "images_per_s": 1 / seconds})
    if device.type != "cuda":
        rows.append({"variant": name, "runtime": "torch CUDA graph", "precision": "fp16", "batch": 1, "status": "skipped",
                     "reason": "CUDA graphs need a CUDA device"})
        return rows
    # batch 1 is launch-bound: one CUDA graph replays the ~300 kernels without the Python and launch costs
    static = one.clone()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.float16), torch.cuda.stream(side):
        for _ in range(3):
            model(static)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.float16), torch.cuda.graph(graph):
        model(static)
    seconds = timed(graph.replay, device, warmup, runs)
    rows.append({"variant": name, "runtime": "torch CUDA graph (autocast)", "precision": "fp16", "batch": 1, "status": "ok",
                 "ms": seconds * 1e3, "images_per_s": 1 / seconds})
    return rows


def onnx_files(name: str, depth: float, work: Path) -> dict[str, Path]:
    """fp32 and fp16 ONNX of the variant, through edgeinc's own ONNX writers (dynamic batch)."""
    from edgeinc.export.onnx_io import export_fp32_onnx, to_fp16

    model = model_for(name, torch.device("cpu"), depth).to(memory_format=torch.contiguous_format)
    fp32 = export_fp32_onnx(model, work / f"{name}_fp32.onnx", model.variant.input_size, None)
    return {"fp32": fp32, "fp16": to_fp16(fp32, work / f"{name}_fp16.onnx")}


def ort_cuda_rows(name: str, files: dict[str, Path], size: int, batches: list[int], warmup: int, runs: int) -> list[dict]:
    import numpy as np

    try:
        import onnxruntime as ort
    except ImportError:
        return [{"variant": name, "runtime": "onnxruntime CUDA", "status": "skipped", "reason": "onnxruntime not installed"}]
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return [{"variant": name, "runtime": "onnxruntime CUDA", "status": "skipped",
                 "reason": f"no CUDAExecutionProvider (providers: {ort.get_available_providers()}; needs onnxruntime-gpu)"}]
    rows = []
    for precision, path in files.items():
        session = ort.InferenceSession(str(path), providers=["CUDAExecutionProvider"])
        for batch in batches:
            x = np.random.default_rng(0).standard_normal((batch, 3, size, size), dtype=np.float32)
            seconds = timed(lambda: session.run(None, {"input": x}), torch.device("cpu"), warmup, runs)  # host-synchronous
            rows.append({"variant": name, "runtime": "onnxruntime CUDA (host in/out)", "precision": precision,
                         "batch": batch, "status": "ok", "ms": seconds * 1e3, "images_per_s": batch / seconds})
    return rows


def tensorrt_rows(name: str, files: dict[str, Path], size: int, batches: list[int], warmup: int, runs: int,
                  work: Path) -> list[dict]:
    from edgeinc.runtime import tensorrt_available

    ok, why = tensorrt_available()
    if not ok:
        return [{"variant": name, "runtime": "tensorrt", "status": "skipped", "reason": why}]
    from edgeinc.deploy.build_trt_engine import build_engine

    engine = work / f"{name}_fp16.engine"
    hi = max(batches)
    info = build_engine(files["fp16"], engine, "input", (1, 3, size, size), (hi, 3, size, size), (hi, 3, size, size),
                        timing_cache=work / "timing.cache", precision="fp16")
    import tensorrt as trt

    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    cuda_engine = runtime.deserialize_cuda_engine(engine.read_bytes())
    context = cuda_engine.create_execution_context()
    out = torch.empty(hi, 1000, device="cuda", dtype=torch.float32)
    rows = []
    for batch in batches:
        x = torch.randn(batch, 3, size, size, device="cuda")
        if not context.set_input_shape("input", tuple(x.shape)):
            rows.append({"variant": name, "runtime": "tensorrt", "batch": batch, "status": "run failed",
                         "reason": "set_input_shape refused the batch"})
            continue
        context.set_tensor_address("input", x.data_ptr())
        context.set_tensor_address("logits", out.data_ptr())
        stream = torch.cuda.current_stream()
        seconds = timed(lambda: context.execute_async_v3(stream.cuda_stream), torch.device("cuda"), warmup, runs)
        rows.append({"variant": name, "runtime": f"tensorrt {trt.__version__} (device in/out)", "precision": "fp16",
                     "batch": batch, "status": "ok", "ms": seconds * 1e3, "images_per_s": batch / seconds,
                     "build_s": info["build_seconds"]})
    return rows


def training_rows(args, device: str) -> list[dict]:
    """benchmarks/train_throughput.py in a subprocess (its own process: clean memory, its own compile)."""
    out = Path(tempfile.mkdtemp(prefix="gpu-train-")) / "train.json"
    cmd = [sys.executable, str(HERE / "train_throughput.py"), "--device", device, "--batch", str(args.train_batch),
           "--steps", str(args.steps), "--warmup", str(args.warmup), "--depth-multiplier", str(args.depth_multiplier),
           "--modes", *args.modes, "--out", str(out), "--rows", "synthetic"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=args.budget_s)
    if done.returncode != 0 or not out.is_file():
        return [{"runtime": "train_throughput.py", "status": "run failed", "reason": (done.stdout + done.stderr)[-1500:]}]
    return [{**row, "runtime": f"train step ({row.get('mode')})"} for row in json.loads(out.read_text()).get("rows", [])]


def header(device: torch.device) -> dict:
    from edgeinc.bench.machine import machine_info

    info = machine_info()
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info["gpu_detail"] = {"name": props.name, "memory_gib": props.total_memory / 2**30,
                              "capability": f"{props.major}.{props.minor}", "cuda": torch.version.cuda}
    return {"machine": info, "torch": torch.__version__, "python": platform.python_version()}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda")
    p.add_argument("--models", nargs="+", default=list_models(), choices=list_models())
    p.add_argument("--batch", type=int, default=256, help="the large inference batch")
    p.add_argument("--train-batch", type=int, default=256)
    p.add_argument("--steps", type=int, default=30, help="timed training steps per row")
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--runs", type=int, default=50, help="timed inference runs per row")
    p.add_argument("--modes", nargs="+", default=["eager", "compiled"])
    p.add_argument("--depth-multiplier", type=float, default=1.0, help="< 1 only to smoke-test the script")
    p.add_argument("--budget-s", type=float, default=420, help="the training rows' time limit")
    p.add_argument("--no-train", action="store_true")
    p.add_argument("--out", type=Path, default=HERE / "results")
    args = p.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("no CUDA device here: nothing to measure (use --device cpu to smoke-test the script)", file=sys.stderr)
        return 3
    start = time.perf_counter()
    rows = [] if args.no_train else training_rows(args, args.device)
    work = Path(tempfile.mkdtemp(prefix="gpu-bench-"))
    for name in args.models:
        rows += torch_rows(name, device, args.depth_multiplier, args.batch, args.warmup, args.runs)
        files = onnx_files(name, args.depth_multiplier, work)
        size = create_model(name, num_classes=1, depth_multiplier=0.1).variant.input_size
        rows += ort_cuda_rows(name, files, size, [1, args.batch], args.warmup, args.runs)
        rows += tensorrt_rows(name, files, size, [1, args.batch], args.warmup, args.runs, work)
    report = {"header": header(device), "settings": vars(args) | {"out": str(args.out)}, "rows": rows,
              "seconds": time.perf_counter() - start}
    card = (report["header"]["machine"].get("gpu") or args.device).replace(" ", "_")
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"gpu_{card}"
    stem.with_suffix(".json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    lines = [f"# GPU figures ({card})", "", f"torch {torch.__version__}; {json.dumps(report['header'].get('machine', {}).get('gpu_detail', {}))}",
             f"Command: `{' '.join(sys.argv)}`; {report['seconds']:.0f} s.", "",
             "| variant | runtime | precision | batch | status | ms | images/s | note |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        def f(key, spec):
            return "-" if r.get(key) is None else format(r[key], spec)
        lines.append(f"| {r.get('variant', r.get('model', '-'))} | {r.get('runtime')} | {r.get('precision', '-')} | "
                     f"{r.get('batch', '-')} | {r.get('status', 'ok')} | {f('ms', '.2f')} | {f('images_per_s', '.0f')} | "
                     f"{r.get('reason', '') or ''} |")
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
