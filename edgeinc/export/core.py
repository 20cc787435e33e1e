"""``export()``: a checkpoint in, an artifact + manifest.json out, checked for parity on the way."""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..artifact import (
    MANIFEST_NAME, Conversion, Manifest, ModelBuild, ModelInfo, Precision, Preprocessing, SourceInfo, VariantInfo,
    now_iso, write_manifest,
)
from ..models import CheckpointError, ModelSource, count_macs, count_parameters, load_source
from ..utils.io import sha256_file
from .base import (
    TARGETS, ExportContext, ExportError, ExportOptions, TargetOutput, TensorRTUnavailableError, check_target,
    staging_dir, tool_versions,
)
from .data import load_images, resolve_folders
from .onnx_io import embed_metadata

TOOLS = ("onnx", "onnxruntime", "onnxslim", "nncf", "onnx2tf", "tensorflow-cpu", "tensorflow", "ai-edge-litert", "tensorrt",
         "executorch", "torchao")


@dataclass
class ExportResult:
    target: str
    precision: Precision
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
    quantization). ``options``: the fields of ``ExportOptions`` (threads, int8_io, tflite_backend,
    qat_steps / qat_lr / qat_images, trt_max_batch / trt_workspace_gib / trt_timing_cache,
    int8_min_agreement).

    Raises ExportError (parity failures included: nothing is left in OUT), or
    TensorRTUnavailableError (the TensorRT-ready ONNX + manifest were written; ``.result``)."""
    _, wanted = check_target(target, precision)
    opts = ExportOptions.from_kwargs(**options)
    _check_arguments(target, wanted, batch, calib_size, max_drop, opts)
    start = time.perf_counter()
    try:
        src = load_source(source, prefer=prefer)
    except CheckpointError as e:
        raise ExportError(str(e)) from e
    labels = src.labels or [f"class_{i}" for i in range(src.model.num_classes)]
    calib_dir, val_dir = resolve_folders(calib, val, src.recipe)
    final = Path(out if out is not None else default_out_dir(source)) / f"{target}-{wanted}"
    variant = src.model.variant

    with staging_dir(final) as work:
        ctx = ExportContext(
            source=src, labels=labels, workdir=work, final_dir=final, batch=batch,
            calib_loader=lambda: load_images(calib_dir, variant, calib_size, labels, seed),
            val_loader=lambda: load_images(val_dir, variant, val_size, labels, seed) if val_dir else None,
            parity_images=parity_images, max_drop=max_drop, options=opts,
        )
        output: TargetOutput = TARGETS.get(target)(ctx, wanted)
        manifest = _manifest(target, output, src, labels, time.perf_counter() - start)
        if output.artifact.suffix == ".onnx":
            embed_metadata(output.artifact, manifest.model_dump(mode="json"))
        _drop_strays(work, {output.artifact.name, *(p.name for p in output.extra_files)})
        manifest = manifest.model_copy(update={"artifact_sha256": sha256_file(output.artifact),
                                               "artifact_bytes": output.artifact.stat().st_size})
        write_manifest(manifest, work)
    result = ExportResult(target, wanted, final, final / manifest.artifact, final / MANIFEST_NAME, manifest,
                          [final / p.name for p in output.extra_files])
    if manifest.status == "needs_engine_build":
        engine = manifest.engine
        raise TensorRTUnavailableError(
            f"TensorRT engine not built: {engine.not_built_because}.\n"
            f"Wrote the TensorRT-ready ONNX {result.artifact}\n"
            f"  and its manifest {result.manifest_path}\n"
            f"Finish on a machine with TensorRT and a CUDA GPU:\n  {engine.finish_with}",
            result,
        )
    return result


def _check_arguments(target: str, precision: Precision, batch: int | None, calib_size: int, max_drop: float | None,
                     opts: ExportOptions) -> None:
    """Bad combinations fail before minutes of work."""
    if batch is not None and batch < 1:
        raise ExportError(f"batch must be >= 1, got {batch}")
    if calib_size < 1:
        raise ExportError(f"calib_size must be >= 1, got {calib_size}")
    if max_drop is not None and precision != Precision.INT8:
        raise ExportError("--max-drop applies to int8 exports only")
    if opts.qat_steps and (target, precision) != ("onnx", Precision.INT8):
        raise ExportError("quantization-aware training (--qat-steps) exports --target onnx --precision int8")
    if opts.qat_steps and max_drop is not None:
        raise ExportError("--qat-steps and --max-drop are alternatives; pass one of them")


def model_info(src: ModelSource) -> ModelInfo:
    model, variant = src.model, src.model.variant
    return ModelInfo(
        variant=variant.name, variant_config=VariantInfo(**variant.to_dict()),
        build=ModelBuild(name=variant.name, num_classes=model.num_classes, options=model.options),
        num_classes=model.num_classes, parameters=count_parameters(model, include_aux=False),
        parameters_with_aux=count_parameters(model, include_aux=True),
        multiply_adds=count_macs(model, variant.input_size),
    )


def _manifest(target: str, output: TargetOutput, src: ModelSource, labels: list[str], seconds: float) -> Manifest:
    spec = output.spec
    return Manifest(
        format=spec.format, target=target, precision=spec.precision, artifact=output.artifact.name,
        artifact_sha256="", artifact_bytes=0,  # filled once the file is final (metadata is embedded first)
        status=output.status, input=spec.input, output=spec.output,
        preprocessing=Preprocessing.from_variant(src.model.variant), labels=labels, model=model_info(src),
        source=SourceInfo(weights=str(src.weights_path), sha256=src.sha256), parity=output.parity,
        quantization=output.quantization, conversion=Conversion(seconds=seconds, **output.conversion),
        files=output.files, engine=output.engine, recipe=src.recipe, tools=tool_versions(*TOOLS), created=now_iso(),
    )


def _drop_strays(folder: Path, keep: set[str]) -> None:
    """Remove intermediate files a target left in its staging folder."""
    for entry in folder.iterdir():
        if entry.name in keep:
            continue
        if entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink()
