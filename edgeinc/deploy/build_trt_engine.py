#!/usr/bin/env python3
"""Build a TensorRT engine from an edgeinc TensorRT-ready ONNX and its manifest.json.

Stand-alone: needs only Python 3.9+ and TensorRT's Python package (10.x or 11.x) on the device; it
does not import edgeinc. ``edgeinc export --target tensorrt`` uses the same code where TensorRT is
present; elsewhere it writes the ONNX + manifest and names this script (``deploy/build_trt_engine.py``
is an identical copy to carry to the device).

    python build_trt_engine.py ARTIFACT_DIR/manifest.json [--workspace-gib 4] [--timing-cache FILE]

What it does, with TensorRT's Python API:
* a strongly typed network (``NetworkDefinitionCreationFlag.STRONGLY_TYPED``; required for INT8/FP16
  in 10.x without the deprecated builder flags, always on in 11.x where those flags are removed):
  precision comes from the ONNX itself - the Q/DQ nodes of the int8 ONNX (explicit quantization),
  the float16 tensors of the fp16 ONNX;
* ``OnnxParser``, one optimization profile for the manifest's batch range, a timing cache that is
  read and written back (so a rebuild on the same GPU is fast), ``build_serialized_network``;
* the engine file beside the ONNX, and the manifest updated in place (atomically): format
  "tensorrt", the engine's sha256 and size, TensorRT version, GPU name and compute capability.

trtexec equivalent (TensorRT's command-line tool), for an input named ``input`` at 299x299:

    trtexec --onnx=MODEL.onnx --stronglyTyped --saveEngine=MODEL.engine \\
        --minShapes=input:1x3x299x299 --optShapes=input:8x3x299x299 --maxShapes=input:32x3x299x299 \\
        --timingCacheFile=timing.cache
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def gpu_info() -> dict:
    """Name and compute capability of GPU 0 (nvidia-smi; TensorRT has no query for the name)."""
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,compute_cap,driver_version", "--format=csv,noheader", "-i", "0"],
            capture_output=True, text=True, timeout=30, check=True,
        ).stdout.strip()
        name, cap, driver = (v.strip() for v in out.split(","))
        return {"name": name, "compute_capability": cap, "driver": driver}
    except (OSError, subprocess.SubprocessError, ValueError):
        return {"name": "unknown", "compute_capability": "unknown", "driver": "unknown"}


def build_engine(
    onnx_path: Path,
    engine_path: Path,
    input_name: str,
    min_shape: tuple[int, ...],
    opt_shape: tuple[int, ...],
    max_shape: tuple[int, ...],
    workspace_gib: float = 4.0,
    timing_cache: Path | None = None,
) -> dict:
    """Build and write the engine; returns what the manifest records about it."""
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    # EXPLICIT_BATCH is implied since 10.0; STRONGLY_TYPED is accepted (and ignored) by 11.x.
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"{onnx_path}: TensorRT's ONNX parser failed: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
    profile = builder.create_optimization_profile()
    profile.set_shape(input_name, min_shape, opt_shape, max_shape)
    config.add_optimization_profile(profile)
    cache_bytes = timing_cache.read_bytes() if timing_cache is not None and timing_cache.is_file() else b""
    cache = config.create_timing_cache(cache_bytes)
    config.set_timing_cache(cache, ignore_mismatch=False)
    start = time.perf_counter()
    plan = builder.build_serialized_network(network, config)
    seconds = time.perf_counter() - start
    if plan is None:
        raise RuntimeError(f"{onnx_path}: TensorRT could not build an engine (see the log above)")
    _atomic_write(engine_path, bytes(plan))
    if timing_cache is not None:
        _atomic_write(timing_cache, bytes(config.get_timing_cache().serialize()))
    return {
        "tensorrt_version": trt.__version__,
        "gpu": gpu_info(),
        "strongly_typed": True,
        "profile": {"input": input_name, "min": list(min_shape), "opt": list(opt_shape), "max": list(max_shape)},
        "workspace_gib": workspace_gib,
        "build_seconds": seconds,
        "timing_cache": str(timing_cache) if timing_cache is not None else None,
        "onnx": onnx_path.name,
        "built": True,
    }


def profile_shapes(manifest: dict) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    p = manifest["engine"]["profile"]
    return tuple(p["min"]), tuple(p["opt"]), tuple(p["max"])


def build_from_manifest(manifest_path: Path, workspace_gib: float = 4.0, timing_cache: Path | None = None) -> dict:
    """Build the engine the manifest asks for and update the manifest to describe it."""
    manifest = json.loads(manifest_path.read_text())
    if manifest.get("target") != "tensorrt":
        raise SystemExit(f"{manifest_path}: not a TensorRT export (target {manifest.get('target')!r})")
    folder = manifest_path.parent
    onnx_name = manifest["engine"]["onnx"]
    onnx_path = folder / onnx_name
    if not onnx_path.is_file():
        raise SystemExit(f"{manifest_path}: the ONNX {onnx_path} is missing")
    known = manifest["artifact_sha256"] if manifest["artifact"] == onnx_name else manifest["files"][onnx_name]["sha256"]
    if _sha256(onnx_path) != known:
        raise SystemExit(f"{onnx_path}: sha256 does not match the manifest (the file changed after export)")
    engine_path = onnx_path.with_suffix(".engine")
    lo, opt, hi = profile_shapes(manifest)
    info = build_engine(onnx_path, engine_path, manifest["input"]["name"], lo, opt, hi, workspace_gib, timing_cache)
    files = dict(manifest.get("files") or {})
    files[onnx_name] = {"sha256": known, "bytes": onnx_path.stat().st_size, "role": "TensorRT-ready ONNX"}
    manifest.update(
        format="tensorrt", status="ok", artifact=engine_path.name, artifact_sha256=_sha256(engine_path),
        artifact_bytes=engine_path.stat().st_size, files=files, engine={**manifest["engine"], **info},
    )
    manifest["conversion"] = {**manifest.get("conversion", {}), "engine_build_seconds": info["build_seconds"],
                              "engine_built": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    manifest["tools"] = {**manifest.get("tools", {}), "tensorrt": info["tensorrt_version"]}
    _atomic_write(manifest_path, (json.dumps(manifest, indent=2) + "\n").encode())
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("manifest", type=Path, help="manifest.json of a --target tensorrt export")
    parser.add_argument("--workspace-gib", type=float, default=4.0)
    parser.add_argument("--timing-cache", type=Path, default=None, help="read and updated (default: beside the ONNX)")
    args = parser.parse_args(argv)
    path = args.manifest / "manifest.json" if args.manifest.is_dir() else args.manifest
    cache = args.timing_cache or path.parent / "timing.cache"
    manifest = build_from_manifest(path, args.workspace_gib, cache)
    engine = manifest["engine"]
    print(f"wrote {path.parent / manifest['artifact']} (TensorRT {engine['tensorrt_version']}, {engine['gpu']['name']}, "
          f"{engine['build_seconds']:.1f} s) and updated {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
