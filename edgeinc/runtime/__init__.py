"""Runners: one protocol, one registry, one loader.

    runner = load_runner("artifacts/quickstart/tflite-int8")   # backend from the manifest's format
    logits = runner.predict(images)                            # normalised NCHW float32 in, float logits out
"""

from __future__ import annotations

import os
from pathlib import Path

from . import backends  # noqa: F401  (registers the runners)
from .backends import litert_predict, tensorrt_available
from .base import DEFAULT_BACKEND, RUNNERS, Executed, Runner, RunnerInfo, RuntimeUnavailableError, dequantize, normalize, quantize


def _is_checkpoint(path: Path) -> bool:
    return path.suffix in (".safetensors", ".pt", ".pth") or (
        path.is_dir() and any((path / f).is_file() for f in ("ema.safetensors", "model.safetensors"))
    )


def load_runner(
    path: str | os.PathLike,
    backend: str | None = None,
    threads: int | None = None,
    *,
    precision: str | None = None,
    flush_denormals: bool = True,
    **kwargs,
) -> Runner:
    """A runner for an artifact (its folder, file or manifest.json) or a checkpoint (run dir / weights).

    ``backend``: a registered runner name (default: by the artifact's format: onnx -> onnxruntime,
    tflite -> litert, tensorrt -> tensorrt, checkpoint -> torch). ``threads``: intra-op threads.
    ``precision``: None runs the artifact's own precision; ``"bf16"`` runs an fp32 artifact in bf16
    where the runner offers it (OpenVINO, PyTorch autocast) and the CPU has native bf16, else
    RuntimeUnavailableError. ``flush_denormals``: treat denormal floats as zero (default; off: as computed).
    What the runtime then executes is read back into ``runner.executed``.
    The artifact's sha256 is checked against its manifest before anything is loaded."""
    from ..export.manifest import load_manifest

    path = Path(path)
    if _is_checkpoint(path):
        fmt, manifest, artifact = "torch", None, path
    else:
        manifest, folder = load_manifest(path)
        fmt, artifact = manifest.format, folder / manifest.artifact
    name = backend or DEFAULT_BACKEND[fmt]
    info: RunnerInfo = RUNNERS.meta(name)
    if fmt not in info.formats:
        readers = [e.name for e in RUNNERS if fmt in e.meta.formats]
        raise ValueError(f"runner {name!r} cannot run a {fmt} artifact ({path}); runners for {fmt}: {', '.join(readers)}")
    return RUNNERS.get(name)(artifact, manifest, threads=threads, precision=precision, flush_denormals=flush_denormals,
                             **kwargs)


__all__ = [
    "DEFAULT_BACKEND", "RUNNERS", "Executed", "Runner", "RunnerInfo", "RuntimeUnavailableError", "dequantize", "litert_predict",
    "load_runner", "normalize", "quantize", "tensorrt_available",
]
