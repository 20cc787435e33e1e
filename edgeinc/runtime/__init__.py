"""Runners: one protocol, one registry, one loader.

    runner = load_runner("artifacts/quickstart/tflite-int8")   # backend from the manifest's format
    logits = runner.predict(images)                            # normalised NCHW float32 in, float logits out
    runner.executed.summary                                    # what the runtime's kernels actually run

A runner needs only the artifact's ``RunnerSpec`` (edgeinc.artifact): from its manifest, or in memory
(``open_runner``) while an export checks the file it just wrote.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..artifact import RunnerSpec, load_manifest
from ..rundir import is_model_source
from . import backends  # noqa: F401  (registers the runners)
from .backends import tensorrt_available
from .base import DEFAULT_BACKEND, RUNNERS, Executed, Runner, RunnerInfo, RuntimeUnavailableError, dequantize, normalize, quantize


def _runner_class(fmt: str, backend: str | None, where: object) -> type:
    name = backend or DEFAULT_BACKEND[fmt]
    info: RunnerInfo = RUNNERS.meta(name)  # unknown name: UnknownNameError with suggestions
    if fmt not in info.formats:
        readers = [e.name for e in RUNNERS if fmt in e.meta.formats]
        raise ValueError(f"runner {name!r} cannot run a {fmt} artifact ({where}); runners for {fmt}: {', '.join(readers)}")
    return RUNNERS.get(name)


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
    path = Path(path)
    if is_model_source(path):
        return _runner_class("torch", backend, path)(path, None, threads=threads, precision=precision,
                                                      flush_denormals=flush_denormals, **kwargs)
    manifest, folder = load_manifest(path)
    return open_runner(folder / manifest.artifact, manifest.runner_spec(), backend, threads, precision=precision,
                       flush_denormals=flush_denormals, **kwargs)


def open_runner(
    artifact: str | os.PathLike,
    spec: RunnerSpec,
    backend: str | None = None,
    threads: int | None = None,
    *,
    precision: str | None = None,
    flush_denormals: bool = True,
    **kwargs,
) -> Runner:
    """A runner for the file ``artifact`` described by ``spec`` (an in-memory manifest: no sha256 check)."""
    return _runner_class(spec.format, backend, artifact)(Path(artifact), spec, threads=threads, precision=precision,
                                                         flush_denormals=flush_denormals, **kwargs)


__all__ = [
    "DEFAULT_BACKEND", "RUNNERS", "Executed", "Runner", "RunnerInfo", "RuntimeUnavailableError", "dequantize",
    "load_runner", "normalize", "open_runner", "quantize", "tensorrt_available",
]
