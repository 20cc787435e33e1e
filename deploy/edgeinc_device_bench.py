#!/usr/bin/env python3
"""Time (and optionally score) an edgeinc TFLite artifact on the device itself.

Needs only numpy and LiteRT (`pip install ai-edge-litert`), or tflite_runtime where only that exists;
scoring a folder of images also needs Pillow. Everything else comes from the artifact's manifest.json
(input layout, dtype and quantization, mean/std, crop fraction, labels). Writes the same JSON rows as
`edgeinc bench`, so `edgeinc bench --merge device.json ...` folds them into the workstation's report.

    python3 edgeinc_device_bench.py ARTIFACT_DIR [--data VAL_DIR] [--threads 4] [--runs 200] [--out device.json]

ARTIFACT_DIR holds the .tflite file and its manifest.json (what `edgeinc export --target tflite` wrote).
VAL_DIR is an ImageNet-layout split: one folder per class name, images inside.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import resource
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

SCHEMA = "edgeinc.bench/1"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


def fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def load_interpreter(path: Path, threads: int):
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        try:
            from tflite_runtime.interpreter import Interpreter  # older devices
        except ImportError:
            fail("neither ai-edge-litert nor tflite_runtime is installed: pip install ai-edge-litert")
    interpreter = Interpreter(model_path=str(path), num_threads=threads)
    interpreter.allocate_tensors()
    return interpreter


def read_manifest(folder: Path) -> tuple[dict, Path]:
    manifest_path = folder / "manifest.json" if folder.is_dir() else folder
    if not manifest_path.is_file():
        fail(f"{folder}: no manifest.json (copy the whole artifact folder that edgeinc export wrote)")
    manifest = json.loads(manifest_path.read_text())
    if manifest.get("format") != "tflite":
        fail(f"{manifest_path}: field 'format' is {manifest.get('format')!r}; this runner reads tflite artifacts")
    artifact = manifest_path.parent / manifest["artifact"]
    if not artifact.is_file():
        fail(f"{manifest_path}: its artifact {artifact} is missing")
    digest = hashlib.sha256(artifact.read_bytes()).hexdigest()
    if digest != manifest["artifact_sha256"]:
        fail(f"{artifact}: sha256 does not match the manifest's artifact_sha256 (the file changed after export)")
    return manifest, artifact


def to_input(images: np.ndarray, spec: dict) -> np.ndarray:
    """Normalised NCHW float32 -> the artifact's layout and dtype (quantized where it says so)."""
    x = images.transpose(0, 2, 3, 1) if spec["layout"] == "NHWC" else images
    if spec["dtype"] in ("int8", "uint8"):
        q = spec["quantization"]
        info = np.iinfo(spec["dtype"])
        x = np.clip(np.round(x / q["scale"] + q["zero_point"]), info.min, info.max)
    return np.ascontiguousarray(x.astype(spec["dtype"]))


def from_output(y: np.ndarray, spec: dict) -> np.ndarray:
    if spec.get("quantization") and y.dtype.kind in "iu":
        q = spec["quantization"]
        return (y.astype(np.float32) - q["zero_point"]) * q["scale"]
    return y.astype(np.float32)


def preprocess(path: Path, pre: dict) -> np.ndarray:
    """The paper's single central crop: crop the central fraction, resize, normalise (as edgeinc does)."""
    try:
        from PIL import Image
    except ImportError:
        fail("scoring images needs Pillow: pip install pillow")
    with Image.open(path) as im:
        im = im.convert("RGB")
        w, h = im.size
        # TF-slim's central_crop arithmetic, as edgeinc's CentralFractionCrop; PIL's bilinear resize
        # antialiases like torchvision's, so figures agree with the workstation's to rounding.
        left, top = int((w - w * pre["crop_fraction"]) / 2), int((h - h * pre["crop_fraction"]) / 2)
        size = pre["input_size"]
        im = im.crop((left, top, w - left, h - top)).resize((size, size), Image.BILINEAR)
        x = np.asarray(im, dtype=np.float32) / 255.0
    x = (x - np.asarray(pre["mean"], np.float32)) / np.asarray(pre["std"], np.float32)
    return x.transpose(2, 0, 1)


def invoke(interpreter, batch: np.ndarray) -> np.ndarray:
    inp = interpreter.get_input_details()[0]
    out = interpreter.get_output_details()[0]
    interpreter.set_tensor(inp["index"], batch)
    interpreter.invoke()
    return interpreter.get_tensor(out["index"])


def score(interpreter, manifest: dict, folder: Path, limit: int | None) -> dict:
    labels = manifest["labels"]
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir())
    unknown = [c for c in classes if c not in labels]
    if not classes or unknown:
        fail(f"{folder}: expected one folder per class among the model's labels; not labels: {unknown[:5]}")
    samples = [(p, labels.index(c)) for c in classes for p in sorted((folder / c).iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES]
    samples = samples[:limit] if limit else samples
    top1 = top5 = 0
    for path, label in samples:
        logits = from_output(invoke(interpreter, to_input(preprocess(path, manifest["preprocessing"])[None], manifest["input"])), manifest["output"])[0]
        order = np.argsort(-logits)
        top1 += int(order[0] == label)
        top5 += int(label in order[:5])
    n = max(len(samples), 1)
    return {"top1": 100.0 * top1 / n, "top5": 100.0 * top5 / n, "images_scored": len(samples)}


def machine() -> dict:
    cpu, flags = platform.processor() or platform.machine(), []
    try:
        text = Path("/proc/cpuinfo").read_text()
        for line in text.splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Hardware") and cpu == (platform.processor() or platform.machine()):
                cpu = value.strip()
            if key.strip() in ("flags", "Features") and not flags:
                flags = [f for f in value.split() if f in ("neon", "asimd", "asimddp", "i8mm", "avx2", "avx512_vnni", "sve")]
    except OSError:
        pass
    libs = {}
    for name in ("ai-edge-litert", "tflite-runtime", "numpy"):
        try:
            from importlib.metadata import version

            libs[name] = version(name)
        except Exception:
            continue
    return {"cpu": cpu, "arch": platform.machine(), "cpu_flags": flags, "logical_cpus": os.cpu_count(),
            "usable_cpus": os.cpu_count(), "gpu": None, "os": platform.platform(), "python": platform.python_version(),
            "libraries": libs}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("artifact", type=Path, help="artifact folder (with manifest.json) or its manifest.json")
    parser.add_argument("--data", type=Path, help="ImageNet-layout split folder to score (needs Pillow)")
    parser.add_argument("--max-images", type=int)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--label", default=platform.node() or "device", help="machine name shown in the merged report")
    parser.add_argument("--out", type=Path, default=Path("device_bench.json"))
    args = parser.parse_args(argv)

    manifest, artifact = read_manifest(args.artifact)
    interpreter = load_interpreter(artifact, args.threads)
    spec = manifest["input"]
    batch = spec["shape"][0] if isinstance(spec["shape"][0], int) else 1
    size = manifest["preprocessing"]["input_size"]
    # Timing input: the first images of --data, else random pixels - never zeros (kernels may shortcut them).
    if args.data:
        paths = sorted(p for p in args.data.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)[:batch]
        if not paths:
            fail(f"{args.data}: no images found")
        images = np.stack([preprocess(paths[i % len(paths)], manifest["preprocessing"]) for i in range(batch)])
    else:
        rng = np.random.default_rng(0)
        images = rng.normal(0.0, 0.5, (batch, 3, size, size)).astype(np.float32)
    x = to_input(images, spec)
    for _ in range(args.warmup):
        invoke(interpreter, x)
    times = []
    for _ in range(args.runs):
        t0 = time.perf_counter()
        invoke(interpreter, x)
        times.append((time.perf_counter() - t0) * 1e3)
    ms = np.asarray(times)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1024 * 1024 if sys.platform == "darwin" else 1024)
    accuracy = score(interpreter, manifest, args.data, args.max_images) if args.data else {}
    row = {
        "artifact": str(args.artifact), "variant": manifest["model"].get("variant"), "format": "tflite",
        "backend": "litert", "precision": manifest["precision"], "batch": batch, "status": "ok",
        "size_mb": manifest["artifact_bytes"] / 1e6, "params": manifest["model"].get("parameters"),
        "macs": manifest["model"].get("multiply_adds"), "top1": accuracy.get("top1"), "top5": accuracy.get("top5"),
        "images_scored": accuracy.get("images_scored"), "mean_ms": float(ms.mean()),
        "p50_ms": float(np.percentile(ms, 50)), "p90_ms": float(np.percentile(ms, 90)),
        "p99_ms": float(np.percentile(ms, 99)), "images_per_s": batch / (float(ms.mean()) / 1e3), "runs": len(times),
        "peak_mem_mb": peak, "threads": args.threads, "sha256": manifest["artifact_sha256"],
        "parent_sha256": manifest["source"].get("sha256"), "machine": args.label,
    }
    report = {
        "schema": SCHEMA,
        "header": {"machine": machine(), "machine_label": args.label, "threads": args.threads, "batches": [batch],
                   "warmup": args.warmup, "runs": args.runs, "min_time": None, "data": str(args.data) if args.data else None,
                   "created": datetime.now(timezone.utc).isoformat(timespec="seconds")},
        "rows": [row], "baselines": [], "merged": [],
    }
    tmp = args.out.with_name(args.out.name + ".tmp")
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    os.replace(tmp, args.out)  # never a half-written report
    print(f"{row['variant']} {row['precision']}: p50 {row['p50_ms']:.2f} ms, mean {row['mean_ms']:.2f} ms "
          f"({args.threads} threads)" + (f", top-1 {row['top1']:.2f}%" if accuracy else "") + f" -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
