#!/usr/bin/env python3
"""Time (and optionally score) an edgeinc TFLite or ExecuTorch artifact on the device itself.

A TFLite artifact needs only numpy and LiteRT (`pip install ai-edge-litert`), or tflite_runtime where only
that exists. An ExecuTorch .pte needs numpy and `executorch` - whose Python runtime links and imports
PyTorch (`pip install torch executorch==1.5.1`; no torch-free ExecuTorch runtime is on PyPI: the C++
executor_runner is that route). Scoring a folder of images also needs Pillow. Everything else comes from
the artifact's manifest.json (input layout, dtype and quantization, mean/std, crop fraction, labels).
Writes the same JSON rows as `edgeinc bench`, so `edgeinc bench --merge device.json ...` folds them into the workstation's report.

    python3 edgeinc_device_bench.py ARTIFACT_DIR [--data DIR] [--threads 4] [--runs 200] [--out device.json]
                                    [--dump-logits outputs.npy] [--label pi5] [--emulated]

ARTIFACT_DIR holds the .tflite (or .pte) file and its manifest.json (what `edgeinc export --target tflite`
or `--target executorch` wrote).
DIR is either an ImageNet-layout split (one folder per class name, images inside: top-1/top-5 are
scored) or a flat folder of images, JPEG/PNG mixed (outputs only, no labels). --dump-logits writes the
float logits of every image (N x classes, .npy) and FILE.npy.json naming the images in the same order.
Exit status 2 on bad input (missing or altered files, unreadable images), with an `error:` line.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import resource
import struct
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

SCHEMA = "edgeinc.bench/1"
LOGITS_SCHEMA = "edgeinc.logits/1"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
EMULATED_NOTE = "measured under emulation (qemu-user): latency is not a device figure"
# CPU features that decide which kernels run (INT8 gains much with Arm dot-product / i8mm or VNNI).
FLAGS = ("neon", "asimd", "asimddp", "i8mm", "bf16", "sve", "sve2", "sme", "sme2", "avx2", "avx512_vnni", "avx_vnni")
# arm64 AT_HWCAP / AT_HWCAP2 bits (linux/arch/arm64/include/uapi/asm/hwcap.h) for the FLAGS above
ARM64_HWCAP = {1: "asimd", 20: "asimddp", 22: "sve"}
ARM64_HWCAP2 = {1: "sve2", 13: "i8mm", 14: "bf16", 23: "sme", 37: "sme2"}
# /proc/cpuinfo on Arm names no model, only implementer and part numbers: the common Arm Ltd. cores
ARM_PARTS = {0xD03: "Cortex-A53", 0xD04: "Cortex-A35", 0xD05: "Cortex-A55", 0xD07: "Cortex-A57", 0xD08: "Cortex-A72",
             0xD09: "Cortex-A73", 0xD0A: "Cortex-A75", 0xD0B: "Cortex-A76", 0xD0C: "Neoverse-N1", 0xD0D: "Cortex-A77",
             0xD40: "Neoverse-V1", 0xD41: "Cortex-A78", 0xD44: "Cortex-X1", 0xD46: "Cortex-A510", 0xD47: "Cortex-A710",
             0xD48: "Cortex-X2", 0xD49: "Neoverse-N2", 0xD4D: "Cortex-A715", 0xD4E: "Cortex-X3", 0xD4F: "Neoverse-V2",
             0xD80: "Cortex-A520", 0xD81: "Cortex-A720", 0xD82: "Cortex-X4"}


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
    try:
        interpreter = Interpreter(model_path=str(path), num_threads=threads)
        interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as e:
        fail(f"{path}: LiteRT cannot load this model ({e})")
    return interpreter


class ExecuTorchModel:
    """A .pte through ExecuTorch's Python runtime (it needs PyTorch; inputs and outputs are float32)."""

    def __init__(self, path: Path, threads: int) -> None:
        try:
            import torch
            from executorch.extension.pybindings import portable_lib
            from executorch.runtime import Runtime
        except ImportError as e:
            fail(f"ExecuTorch's Python runtime is not importable ({e}): pip install torch executorch==1.5.1")
        portable_lib._unsafe_reset_threadpool(threads)  # before any load: the pool is process-wide
        self.torch, self.portable_lib = torch, portable_lib
        try:
            self.program = Runtime.get().load_program(path)  # kept referenced while its method lives
            self.method = self.program.load_method("forward")
        except RuntimeError as e:
            fail(f"{path}: ExecuTorch cannot load this model ({e})")

    def invoke(self, batch: np.ndarray) -> np.ndarray:
        return self.method.execute([self.torch.from_numpy(np.ascontiguousarray(batch))])[0].numpy()

    def describe(self) -> dict:
        """The backends this ExecuTorch build registered (XnnpackBackend must be one: a .pte whose delegate
        is missing fails to load) and the thread pool it runs with."""
        return {"runtime": "executorch", "backends": sorted(self.portable_lib._get_registered_backend_names()),
                "threads": self.portable_lib._threadpool_get_thread_count()}


class LiteRTModel:
    def __init__(self, path: Path, threads: int) -> None:
        self.interpreter = load_interpreter(path, threads)

    def invoke(self, batch: np.ndarray) -> np.ndarray:
        return invoke(self.interpreter, batch)

    def describe(self) -> dict | None:
        return delegation(self.interpreter)


# manifest format -> (runner row's backend, the class that runs it)
RUNTIMES = {"tflite": ("litert", LiteRTModel), "executorch": ("executorch", ExecuTorchModel)}


def read_manifest(folder: Path) -> tuple[dict, Path]:
    manifest_path = folder / "manifest.json" if folder.is_dir() else folder
    if not manifest_path.is_file():
        fail(f"{folder}: no manifest.json (copy the whole artifact folder that edgeinc export wrote)")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        fail(f"{manifest_path}: not a readable JSON manifest ({e})")
    if not isinstance(manifest, dict):
        fail(f"{manifest_path}: not an edgeinc manifest (a JSON object is expected)")
    if manifest.get("format") not in RUNTIMES:
        fail(f"{manifest_path}: field 'format' is {manifest.get('format')!r}; this runner reads "
             f"{' and '.join(RUNTIMES)} artifacts")
    for key in ("artifact", "artifact_sha256", "input", "output", "preprocessing", "labels", "precision"):
        if key not in manifest:
            fail(f"{manifest_path}: field {key!r} is missing")
    artifact = manifest_path.parent / manifest["artifact"]
    if not artifact.is_file():
        fail(f"{manifest_path}: its artifact {artifact} is missing")
    digest = hashlib.sha256(artifact.read_bytes()).hexdigest()
    if digest != manifest["artifact_sha256"]:
        fail(f"{artifact}: sha256 {digest[:16]}... does not match field 'artifact_sha256' "
             f"{str(manifest['artifact_sha256'])[:16]}... of {manifest_path} (the file changed after export)")
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
    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            w, h = im.size
            # TF-slim's central_crop arithmetic, as edgeinc's CentralFractionCrop; PIL's bilinear resize
            # antialiases like torchvision's, so figures agree with the workstation's to rounding.
            left, top = int((w - w * pre["crop_fraction"]) / 2), int((h - h * pre["crop_fraction"]) / 2)
            size = pre["input_size"]
            im = im.crop((left, top, w - left, h - top)).resize((size, size), Image.BILINEAR)
            x = np.asarray(im, dtype=np.float32) / 255.0
    except OSError as e:  # PIL's UnidentifiedImageError and truncated files are OSErrors
        fail(f"{path}: not a readable image ({e})")
    x = (x - np.asarray(pre["mean"], np.float32)) / np.asarray(pre["std"], np.float32)
    return x.transpose(2, 0, 1)


def list_images(folder: Path, labels: list[str]) -> tuple[list[tuple[Path, int | None]], bool]:
    """(image, label index or None) in a fixed order, and whether the folder is labelled.

    A folder of class folders is a labelled split; a folder of images alone gives outputs only."""
    if not folder.is_dir():
        fail(f"{folder}: --data must be a folder (of class folders, or of images)")
    entries = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    dirs = [p for p in entries if p.is_dir()]
    files = [p for p in entries if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    if dirs and files:
        fail(f"{folder}: holds both images and folders; give one folder per class (scored) or only images (outputs)")
    if files:
        return [(p, None) for p in files], False
    unknown = [d.name for d in dirs if d.name not in labels]
    if not dirs or unknown:
        fail(f"{folder}: expected images, or one folder per class among the model's labels; not labels: {unknown[:5]}")
    samples = [(p, labels.index(d.name)) for d in dirs for p in sorted(d.iterdir())
               if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    if not samples:
        fail(f"{folder}: its class folders hold no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return samples, True


def delegation(interpreter) -> dict | None:
    """How many nodes the model has and how many delegate kernels (XNNPACK partitions) replaced them:
    a model that fails to delegate on one CPU shows a different count. None where the API is absent."""
    try:
        names = [op["op_name"] for op in interpreter._get_ops_details()]  # private, but in every LiteRT release
    except Exception:
        return None
    return {"nodes": len(names), "delegate_nodes": names.count("DELEGATE")}


def invoke(interpreter, batch: np.ndarray) -> np.ndarray:
    inp = interpreter.get_input_details()[0]
    out = interpreter.get_output_details()[0]
    interpreter.set_tensor(inp["index"], batch)
    interpreter.invoke()
    return interpreter.get_tensor(out["index"])


def outputs(model, manifest: dict, paths: list[Path], batch: int) -> np.ndarray:
    """Float logits of every image, in the model's own batch size (the last batch padded by repetition)."""
    rows = []
    for start in range(0, len(paths), batch):
        chunk = paths[start:start + batch]
        images = np.stack([preprocess(p, manifest["preprocessing"]) for p in chunk])
        if len(chunk) < batch:
            images = np.concatenate([images, np.repeat(images[-1:], batch - len(chunk), axis=0)])
        y = from_output(model.invoke(to_input(images, manifest["input"])), manifest["output"])
        rows.append(y.reshape(batch, -1)[:len(chunk)])
    return np.concatenate(rows)


def accuracy(logits: np.ndarray, labels: list[int]) -> dict:
    order = np.argsort(-logits, axis=1, kind="stable")  # ties to the lower index on every CPU (edgeinc.scoring.top_k)
    target = np.asarray(labels)
    top1 = int((order[:, 0] == target).sum())
    top5 = int((order[:, :5] == target[:, None]).any(axis=1).sum())
    n = len(labels)
    return {"top1": 100.0 * top1 / n, "top5": 100.0 * top5 / n, "images_scored": n}


def _cpuinfo() -> dict:
    info = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() and key.strip() not in info:
                info[key.strip()] = value.strip()
    except OSError:
        pass
    return info


def _arm64_hwcaps() -> list[str]:
    """What the kernel (or qemu-user) tells this process the CPU can do: the bits XNNPACK's cpuinfo reads."""
    try:
        raw = Path("/proc/self/auxv").read_bytes()
    except OSError:
        return []
    found = set()
    for key, value in struct.iter_unpack("QQ", raw[: len(raw) // 16 * 16]):
        bits = {16: ARM64_HWCAP, 26: ARM64_HWCAP2}.get(key, {})
        found.update(name for bit, name in bits.items() if value >> bit & 1)
    return [f for f in FLAGS if f in found]


def cpu_name(info: dict, arch: str) -> str:
    if info.get("model name") or info.get("Hardware"):
        return info.get("model name") or info["Hardware"]
    if "CPU part" in info:
        try:
            implementer, part = int(info.get("CPU implementer", "0"), 16), int(info["CPU part"], 16)
        except ValueError:
            return arch
        variant, revision = info.get("CPU variant", "?"), info.get("CPU revision", "?")
        known = ARM_PARTS.get(part) if implementer == 0x41 else None
        name = f"Arm {known}" if known else f"CPU implementer {implementer:#x} part {part:#x}"
        return f"{name} r{int(variant, 16) if variant.startswith('0x') else variant}p{revision}"
    return platform.processor() or arch


def emulation(declared: bool) -> str | None:
    """Why this run is emulated, or None. qemu-user before 8.x leaves the host's /proc/cpuinfo in place,
    so an Arm process that reads an x86 CPU there is emulated; newer qemu, or a synthesized cpuinfo,
    cannot be seen from inside: --emulated says so."""
    arch, info = platform.machine(), _cpuinfo()
    if arch.lower() in ("aarch64", "arm64") or arch.lower().startswith("arm"):
        if "vendor_id" in info and "flags" in info:
            return f"{arch} process on an x86-64 CPU ({info.get('model name', 'unknown')}): qemu-user emulation"
    if declared:
        return "declared with --emulated"
    return None


def cpu_class(arch: str, flags: set) -> str:
    """The machine class edgeinc keeps benchmark results by (edgeinc.utils.cpu.cpu_class)."""
    if arch.lower() in ("aarch64", "arm64"):
        return "-".join(["arm64"] + [f for f in ("asimddp", "i8mm", "bf16", "sve") if f in flags])
    if "amx_tile" in flags:
        return "x86-amx"
    if "avx512f" in flags:
        return "-".join(["x86-avx512"] + [n for f, n in (("avx512_vnni", "vnni"), ("avx512_bf16", "bf16")) if f in flags])
    if "avx2" in flags:
        return "x86-avx2" + ("-vnni" if "avx_vnni" in flags else "")
    return f"{arch}-baseline"


def machine(emulated: str | None) -> dict:
    info = _cpuinfo()
    arch = platform.machine()
    cpu = cpu_name(info, arch)
    flags = set((info.get("Features") or info.get("flags") or "").split())
    cpu_flags = [f for f in FLAGS if f in flags]
    if arch.lower() in ("aarch64", "arm64") and (emulated or not info.get("Features")):
        cpu_flags = _arm64_hwcaps() or cpu_flags  # the guest CPU's features, not the emulating host's
        flags = set(cpu_flags)
    libs = {}
    for name in ("ai-edge-litert", "tflite-runtime", "executorch", "torch", "numpy", "pillow"):
        try:
            from importlib.metadata import version

            libs[name] = version(name)
        except Exception:
            continue
    found = {"cpu": cpu, "arch": arch, "cpu_class": cpu_class(arch, flags), "cpu_flags": cpu_flags,
             "logical_cpus": os.cpu_count(),
             "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
             "gpu": None, "os": platform.platform(), "python": platform.python_version(), "libraries": libs}
    if emulated:
        # edgeinc's report prints cpu and arch: both say it, so a merged row is never read as a device's
        where = f"{arch} emulated by qemu-user on {cpu}" if "vendor_id" in info else f"{cpu}, emulated"
        found.update(cpu=f"{where} ({EMULATED_NOTE})", arch=f"{arch} (emulated)", emulated=True)
    return found


def atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)  # never a half-written file


def dump_logits(path: Path, logits: np.ndarray, samples: list, folder: Path, manifest: dict, args, emulated) -> Path:
    """FILE.npy (float32, images x classes, dequantized) and FILE.npy.json (the images, in order)."""
    import io

    buffer = io.BytesIO()
    np.save(buffer, logits.astype(np.float32))
    atomic_write(path, buffer.getvalue())
    sidecar = path.with_name(path.name + ".json")
    meta = {
        "schema": LOGITS_SCHEMA, "artifact": manifest["artifact"], "sha256": manifest["artifact_sha256"],
        "precision": manifest["precision"], "input": manifest["input"], "output": manifest["output"],
        "label_names": manifest["labels"], "data": str(folder), "threads": args.threads,
        "arch": platform.machine(), "emulated": bool(emulated),
        "images": [p.relative_to(folder).as_posix() for p, _ in samples], "labels": [y for _, y in samples],
        "predicted": [int(i) for i in np.argmax(logits, axis=1)],
    }
    atomic_write(sidecar, (json.dumps(meta, indent=1) + "\n").encode())
    return sidecar


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("artifact", type=Path, help="artifact folder (with manifest.json) or its manifest.json")
    parser.add_argument("--data", type=Path, help="a folder of class folders (scored) or of images (outputs only); needs Pillow")
    parser.add_argument("--max-images", type=int, help="use at most this many images of --data")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--label", default=None, help="machine name shown in the merged report (default: host name)")
    parser.add_argument("--out", type=Path, default=Path("device_bench.json"))
    parser.add_argument("--dump-logits", type=Path, metavar="FILE.npy",
                        help="write the float logits of every --data image, and FILE.npy.json naming them in order")
    parser.add_argument("--emulated", action="store_true",
                        help="mark the run as emulated (qemu-user is also detected): latency is not a device figure")
    args = parser.parse_args(argv)
    for name, low in (("threads", 1), ("runs", 1), ("warmup", 0), ("max_images", 1)):
        value = getattr(args, name)
        if value is not None and value < low:
            fail(f"--{name.replace('_', '-')} must be >= {low}, got {value}")
    if args.dump_logits and not args.data:
        fail("--dump-logits needs --data (the images whose outputs it writes)")

    manifest, artifact = read_manifest(args.artifact)
    emulated = emulation(args.emulated)
    label = args.label or ((f"{platform.machine()} (emulated)" if emulated else platform.node()) or "device")
    samples, labelled = list_images(args.data, manifest["labels"]) if args.data else ([], False)
    samples = samples[:args.max_images] if args.max_images else samples
    backend, runtime = RUNTIMES[manifest["format"]]
    model = runtime(artifact, args.threads)
    spec = manifest["input"]
    batch = spec["shape"][0] if isinstance(spec["shape"][0], int) and spec["shape"][0] > 0 else 1
    size = manifest["preprocessing"]["input_size"]
    # Timing input: the first images of --data, else random pixels - never zeros (kernels may shortcut them).
    if samples:
        images = np.stack([preprocess(samples[i % len(samples)][0], manifest["preprocessing"]) for i in range(batch)])
    else:
        rng = np.random.default_rng(0)
        images = rng.normal(0.0, 0.5, (batch, 3, size, size)).astype(np.float32)
    x = to_input(images, spec)
    for _ in range(args.warmup):
        model.invoke(x)
    times = []
    for _ in range(args.runs):
        t0 = time.perf_counter()
        model.invoke(x)
        times.append((time.perf_counter() - t0) * 1e3)
    ms = np.asarray(times)
    logits = outputs(model, manifest, [p for p, _ in samples], batch) if samples else None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1024 * 1024 if sys.platform == "darwin" else 1024)
    scored = accuracy(logits, [y for _, y in samples]) if labelled else {}
    row = {
        "artifact": str(args.artifact), "variant": manifest.get("model", {}).get("variant"), "format": manifest["format"],
        "backend": backend, "precision": manifest["precision"], "batch": batch, "status": "ok",
        "size_mb": manifest.get("artifact_bytes", artifact.stat().st_size) / 1e6,
        "params": manifest.get("model", {}).get("parameters"), "macs": manifest.get("model", {}).get("multiply_adds"),
        "top1": scored.get("top1"), "top5": scored.get("top5"),
        "images_scored": scored.get("images_scored"), "mean_ms": float(ms.mean()),
        "p50_ms": float(np.percentile(ms, 50)), "p90_ms": float(np.percentile(ms, 90)),
        "p99_ms": float(np.percentile(ms, 99)), "images_per_s": batch / (float(ms.mean()) / 1e3), "runs": len(times),
        "peak_mem_mb": peak, "threads": args.threads, "sha256": manifest["artifact_sha256"],
        "parent_sha256": manifest.get("source", {}).get("sha256"), "machine": label,
    }
    if emulated:  # edgeinc's report marks the latency "(emulated)"; left out otherwise (older edgeinc rejects it)
        row["emulated"] = True
    header = {"machine": machine(emulated), "machine_label": label, "threads": args.threads, "batches": [batch],
              "warmup": args.warmup, "runs": args.runs, "min_time": None, "data": str(args.data) if args.data else None,
              "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "emulated": bool(emulated),
              "interpreter": model.describe()}
    if emulated:
        header.update(emulation=emulated, latency_note=EMULATED_NOTE)
    report = {"schema": SCHEMA, "header": header, "rows": [row], "baselines": [], "merged": []}
    atomic_write(args.out, (json.dumps(report, indent=2) + "\n").encode())
    if args.dump_logits:
        dump_logits(args.dump_logits, logits, samples, args.data, manifest, args, emulated)
    if samples and not labelled:  # a flat folder: its outputs are the result
        for (path, _), y in zip(samples, logits):
            print(f"{path.name}: {manifest['labels'][int(np.argmax(y))]} ({float(np.max(y)):.3f})")
    print(f"{row['variant']} {row['precision']}: p50 {row['p50_ms']:.2f} ms, mean {row['mean_ms']:.2f} ms "
          f"({args.threads} threads{', EMULATED: not a device figure' if emulated else ''})"
          + (f", top-1 {row['top1']:.2f}% of {row['images_scored']}" if scored else "")
          + (f", outputs of {len(samples)} images" if samples and not labelled else "") + f" -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
