"""``export()``: a checkpoint in, an artifact + manifest.json out, checked for parity on the way."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..models import CheckpointError, count_macs, count_parameters, load_source
from ..models.weights import model_spec
from .base import PRECISIONS, TARGETS, ExportContext, ExportError, TensorRTUnavailableError, check_target, staging_dir, tool_versions
from .data import load_images, resolve_folders
from .manifest import MANIFEST_NAME, Manifest, finalize

# Imported for their registrations.
from . import onnx_target, tensorrt_target, tflite_target  # noqa: E402,F401

TOOLS = ("onnx", "onnxruntime", "onnxslim", "nncf", "onnx2tf", "tensorflow-cpu", "tensorflow", "ai-edge-litert", "tensorrt")


@dataclass
class ExportResult:
    target: str
    precision: str
    directory: Path
    artifact: Path
    manifest_path: Path
    manifest: Manifest
    files: list[Path] = field(default_factory=list)

    def __str__(self) -> str:
        return f"{self.target} {self.precision}: {self.artifact} (+ {self.manifest_path.name})"


def default_out_dir(source: str | os.PathLike) -> Path:
    source = Path(source)
    name = source.name if source.is_dir() else source.stem
    return Path("artifacts") / name


def export(
    source: str | os.PathLike,
    target: str = "onnx",
    precision: str = "fp32",
    *,
    calib: str | os.PathLike | None = None,
    calib_size: int = 128,
    val: str | os.PathLike | None = None,
    val_size: int | None = None,
    batch: int | None = None,
    out: str | os.PathLike | None = None,
    max_drop: float | None = None,
    parity_images: int = 32,
    seed: int = 0,
    prefer: str = "ema",
    **options: Any,
) -> ExportResult:
    """Export a run directory or weights file to ``OUT/<target>-<precision>/`` (artifact + manifest.json).

    ``batch``: a fixed batch size (None: a dynamic batch axis where the format allows it; TFLite is
    fixed at 1 then). ``calib``: a folder of images or an ImageNet-layout root (default: the
    recipe's ``data.root``/train); ``val``: the labelled validation split (default: beside the
    calibration data) used for INT8 accuracy and ``max_drop`` (top-1 points, accuracy-controlled
    quantization). ``options``: ``int8_io`` ("int8"/"uint8", TFLite), ``tflite_backend``
    ("auto"/"flatbuffer_direct"/"tf_converter"), ``trt_max_batch``, ``trt_workspace_gib``,
    ``trt_timing_cache``, ``qat_steps``/``qat_lr``/``qat_images`` (QAT instead of PTQ), ``threads``,
    ``int8_min_agreement`` (the INT8 parity gate's top-1 agreement, default 0.8).

    Raises ExportError (parity failures included: nothing is left in OUT), or
    TensorRTUnavailableError (the TensorRT-ready ONNX + manifest were written; ``.result``)."""
    info = check_target(target, precision)
    if precision not in PRECISIONS:
        raise ExportError(f"unknown precision {precision!r} (one of {', '.join(PRECISIONS)})")
    if batch is not None and batch < 1:
        raise ExportError(f"batch must be >= 1, got {batch}")
    if calib_size < 1:
        raise ExportError(f"calib_size must be >= 1, got {calib_size}")
    if max_drop is not None and precision != "int8":
        raise ExportError("--max-drop applies to int8 exports only")
    if options.get("qat_steps") and (target, precision) != ("onnx", "int8"):
        raise ExportError("quantization-aware training (--qat-steps) exports --target onnx --precision int8")
    if options.get("qat_steps") and max_drop is not None:
        raise ExportError("--qat-steps and --max-drop are alternatives; pass one of them")
    start = time.perf_counter()
    try:
        src = load_source(source, prefer=prefer)
    except CheckpointError as e:
        raise ExportError(str(e)) from e
    model = src.model
    variant = model.variant
    labels = src.labels or [f"class_{i}" for i in range(model.num_classes)]
    calib_dir, val_dir = resolve_folders(calib, val, src.recipe)
    out_dir = Path(out) if out is not None else default_out_dir(source)
    final = out_dir / f"{target}-{precision}"

    with staging_dir(final) as work:
        ctx = ExportContext(
            source=src, labels=labels, workdir=work, final_dir=final, batch=batch,
            calib_loader=lambda: load_images(calib_dir, variant, calib_size, labels, seed),
            val_loader=lambda: load_images(val_dir, variant, val_size, labels, seed) if val_dir else None,
            parity_images=parity_images, max_drop=max_drop, options=options,
        )
        output = TARGETS.get(target)(ctx, precision)
        fields = {
            "format": info.artifact_format,
            "target": target,
            "precision": precision,
            "artifact": output.artifact.name,
            "preprocessing": {
                "input_size": variant.input_size, "mean": list(variant.mean), "std": list(variant.std),
                "crop_fraction": variant.crop_fraction, "interpolation": variant.interpolation,
            },
            "labels": labels,
            "model": {
                "variant": variant.name,
                "variant_config": variant.to_dict(),
                "build": model_spec(model),
                "num_classes": model.num_classes,
                "parameters": count_parameters(model, include_aux=False),
                "parameters_with_aux": count_parameters(model, include_aux=True),
                "multiply_adds": count_macs(model, variant.input_size),
            },
            "source": {"weights": str(src.weights_path), "sha256": src.sha256},
            "recipe": src.recipe,
            "tools": tool_versions(*TOOLS),
            **output.fields,
        }
        fields["conversion"] = {**fields.get("conversion", {}), "seconds": time.perf_counter() - start}
        if fields["format"] == "onnx" or output.artifact.suffix == ".onnx":
            onnx_target.embed_metadata(output.artifact, fields)
        _drop_strays(work, {output.artifact.name, *(p.name for p in output.extra_files)})
        manifest = finalize(fields, work)
    result = ExportResult(
        target, precision, final, final / manifest.artifact, final / MANIFEST_NAME, manifest,
        [final / p.name for p in output.extra_files],
    )
    if manifest.status == "needs_engine_build":
        engine = manifest.engine or {}
        raise TensorRTUnavailableError(
            f"TensorRT engine not built: {engine.get('not_built_because')}.\n"
            f"Wrote the TensorRT-ready ONNX {result.artifact}\n"
            f"  and its manifest {result.manifest_path}\n"
            f"Finish on a machine with TensorRT and a CUDA GPU:\n  {engine.get('finish_with')}",
            result,
        )
    return result


def _drop_strays(folder: Path, keep: set[str]) -> None:
    """Remove intermediate files a target left in its staging folder."""
    import shutil

    for entry in folder.iterdir():
        if entry.name in keep:
            continue
        if entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink()
