#!/usr/bin/env python3
"""Build a TensorRT engine from an edgeinc TensorRT-ready ONNX and its manifest.json.

Stand-alone: needs only Python 3.9+ and TensorRT's Python package (10.x or 11.x) on the device; it
does not import edgeinc. This file is the one home of the engine builder: ``edgeinc export --target
tensorrt`` imports it where TensorRT is present, and ``deploy/build_trt_engine.py`` (a link to it, or
``python -m edgeinc.deploy.build_trt_engine``) is what to carry to the device.

    python build_trt_engine.py ARTIFACT_DIR/manifest.json [--workspace-gib 4] [--timing-cache FILE]

What it does, with TensorRT's documented Python API:
* a strongly typed network (``NetworkDefinitionCreationFlag.STRONGLY_TYPED``; required for INT8/FP16
  in 10.x without the deprecated builder flags; 11.x makes every network strongly typed and deprecates
  the flag): precision comes from the ONNX itself - the Q/DQ nodes of the int8 ONNX (explicit
  quantization), the float16 tensors of the fp16 ONNX; fp32 engines clear TF32, which is on by default
  and would round fp32 convolutions to a 10-bit mantissa on Ampere and newer;
* ``OnnxParser``, one optimization profile for the manifest's batch range, a timing cache that is
  read and written back (a rebuild on the same GPU is fast; a cache from another GPU or version is
  refused by TensorRT and a fresh one is started, with a warning), detailed profiling verbosity (so
  the runner can read each layer's precision back), ``build_serialized_network``;
* the engine file beside the ONNX, and the manifest updated in place (atomically): format
  "tensorrt", the engine's sha256 and size, TensorRT version, GPU name and compute capability.

trtexec equivalent (TensorRT's command-line tool) for an input named ``input`` at 299x299 with a dynamic
batch (a fixed-batch ONNX takes no shape flags: trtexec refuses them for a static model):

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
import warnings
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


def is_static(min_shape: tuple[int, ...], max_shape: tuple[int, ...]) -> bool:
    return tuple(min_shape) == tuple(max_shape)


def trtexec_command(onnx_path: Path, engine_path: Path, input_name: str, min_shape, opt_shape, max_shape) -> str:
    """The trtexec line that builds the same engine (shape flags only for a dynamic batch)."""
    import shlex

    def shape(s) -> str:
        return "x".join(map(str, s))

    cmd = f"trtexec --onnx={shlex.quote(str(onnx_path))} --stronglyTyped --saveEngine={shlex.quote(str(engine_path))}"
    if not is_static(min_shape, max_shape):
        cmd += (f" --minShapes={input_name}:{shape(min_shape)} --optShapes={input_name}:{shape(opt_shape)}"
                f" --maxShapes={input_name}:{shape(max_shape)}")
    return cmd


def _network_flags(trt) -> int:
    """STRONGLY_TYPED: required on 10.x (enum value 1); on 11.x every network is strongly typed and the
    flag (value 0 there) is accepted and ignored, so setting it is right for both."""
    return 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)


def _timing_cache(config, cache_path: Path | None, notes: list[str]):
    """The builder's timing cache: the file's, if TensorRT accepts it (same GPU and version), else a
    fresh one (a copied artifact folder brings the cache of the GPU it was built on)."""
    data = cache_path.read_bytes() if cache_path is not None and cache_path.is_file() else b""
    cache = config.create_timing_cache(data)
    if cache is not None and config.set_timing_cache(cache, ignore_mismatch=False):
        return cache
    if data:
        message = f"timing cache {cache_path} was made for another GPU or TensorRT version: starting a fresh one"
        warnings.warn(message, stacklevel=2)
        notes.append(message)
    cache = config.create_timing_cache(b"")
    if cache is None or not config.set_timing_cache(cache, ignore_mismatch=False):
        notes.append("TensorRT refused an empty timing cache: building without one")
        return None
    return cache


def build_engine(
    onnx_path: Path,
    engine_path: Path,
    input_name: str,
    min_shape: tuple[int, ...],
    opt_shape: tuple[int, ...],
    max_shape: tuple[int, ...],
    workspace_gib: float = 4.0,
    timing_cache: Path | None = None,
    precision: str = "fp32",
) -> dict:
    """Build and write the engine; returns what the manifest records about it."""
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(_network_flags(trt))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"{onnx_path}: TensorRT's ONNX parser failed: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
    if precision == "fp32" and hasattr(trt.BuilderFlag, "TF32"):
        config.clear_flag(trt.BuilderFlag.TF32)  # fp32 parity holds on Ampere and newer
    if hasattr(trt, "ProfilingVerbosity"):
        config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED  # per-layer precisions for the runner
    profile = builder.create_optimization_profile()
    profile.set_shape(input_name, min_shape, opt_shape, max_shape)
    config.add_optimization_profile(profile)
    notes: list[str] = []
    _timing_cache(config, timing_cache, notes)
    start = time.perf_counter()
    plan = builder.build_serialized_network(network, config)
    seconds = time.perf_counter() - start
    if plan is None:
        raise RuntimeError(f"{onnx_path}: TensorRT could not build an engine (see the log above)")
    _atomic_write(engine_path, bytes(plan))
    if timing_cache is not None:
        cache = config.get_timing_cache()
        if cache is None:
            notes.append(f"TensorRT returned no timing cache: {timing_cache} not written")
        else:
            _atomic_write(timing_cache, bytes(cache.serialize()))
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
        "notes": notes,
    }


def profile_shapes(manifest: dict) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    p = manifest["engine"]["profile"]
    return tuple(p["min"]), tuple(p["opt"]), tuple(p["max"])


def build_from_manifest(manifest_path: Path, workspace_gib: float = 4.0, timing_cache: Path | None = None) -> dict:
    """Build the engine the manifest asks for and update the manifest to describe it."""
    manifest = json.loads(manifest_path.read_text())
    if manifest.get("target") != "tensorrt":
        raise SystemExit(f"{manifest_path}: not a TensorRT export (field 'target' is {manifest.get('target')!r})")
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
    info = build_engine(onnx_path, engine_path, manifest["input"]["name"], lo, opt, hi, workspace_gib, timing_cache,
                        manifest.get("precision", "fp32"))
    files = dict(manifest.get("files") or {})
    files[onnx_name] = {"sha256": known, "bytes": onnx_path.stat().st_size, "role": "TensorRT-ready ONNX"}
    engine = {**manifest["engine"], **info, "not_built_because": None, "finish_with": None}
    manifest.update(
        format="tensorrt", status="ok", artifact=engine_path.name, artifact_sha256=_sha256(engine_path),
        artifact_bytes=engine_path.stat().st_size, files=files, engine=engine,
    )
    conversion = dict(manifest.get("conversion") or {})
    conversion["steps"] = {**conversion.get("steps", {}), "engine_build": info["build_seconds"]}
    conversion["settings"] = {**conversion.get("settings", {}),
                              "engine_built": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    manifest["conversion"] = conversion
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
    for note in engine.get("notes", []):
        print(f"note: {note}", file=sys.stderr)
    print(f"wrote {path.parent / manifest['artifact']} (TensorRT {engine['tensorrt_version']}, {engine['gpu']['name']}, "
          f"{engine['build_seconds']:.1f} s) and updated {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
