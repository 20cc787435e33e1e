"""TFLite through onnx2tf, checked in the LiteRT interpreter against ONNX Runtime.

Files say what they are:
  <variant>_fp32.tflite                   float32 weights and activations
  <variant>_fp16.tflite                   float16 weights (dequantized at load), float32 compute and IO
  <variant>_full_int8_<io>io.tflite       full-integer: int8 weights and activations, int8/uint8 IO,
                                          calibrated on the export's calibration images
onnx2tf's weights-only "dynamic range" model is never written (it is not an INT8 model).

Back ends (onnx2tf 2.x names them ``tflite_backend``):
  flatbuffer_direct  writes the flatbuffer straight from the ONNX graph: Inception-v3 fp32 in ~11 s
                     instead of ~200 s. Used for fp32 when onnx2tf >= 2 is installed; its fp16 file
                     did not run in LiteRT and its full-integer path fails on Inception-v3 (padded
                     average pools -> PADV2; shared tensors forced to one scale across concatenations),
                     so fp16 and int8 use the TensorFlow converter.
  tf_converter       onnx2tf -> Keras -> TFLiteConverter (onnx2tf 1.x's only path): correct in every
                     precision; also the fallback when the direct path fails or breaks parity. Run by
                     _onnx2tf_job.py, which converts from onnx2tf's concrete functions instead of
                     re-serialising the Keras model for each file and makes only the full-integer
                     model (not onnx2tf's four other quantized variants): ~6x faster than onnx2tf's
                     defaults on a small Inception-v3.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..artifact import ConversionAttempt, Precision, Preprocessing, RunnerSpec, TensorSpec
from ..runtime.backends import litert_interpreter, litert_io
from ..scoring import ParityError
from ..utils.io import sha256_file
from .base import ExportContext, ExportError, TargetOutput
from .data import denormalize_nhwc
from .onnx_target import fp32_onnx
from .quantize import quantization_report

BACKENDS = ("auto", "flatbuffer_direct", "tf_converter")
FULL_INT8_SUFFIX = "_full_integer_quant.tflite"
ONNX2TF_TIMEOUT_S = 3600


def onnx2tf_version() -> str | None:
    try:
        return importlib.metadata.version("onnx2tf")
    except importlib.metadata.PackageNotFoundError:
        return None


def _plan(precision: Precision, backend: str) -> list[str]:
    """The back ends to try, in order."""
    version = onnx2tf_version()
    if version is None:
        raise ExportError("onnx2tf is not installed: `make install` (it is installed with --no-deps, TOOLCHAIN trap 1)")
    has_direct = int(version.split(".")[0]) >= 2
    if backend not in BACKENDS:
        raise ExportError(f"tflite back end must be one of {BACKENDS}, got {backend!r}")
    if backend == "flatbuffer_direct":
        if not has_direct:
            raise ExportError(f"onnx2tf {version} has no flatbuffer_direct back end (needs onnx2tf >= 2)")
        if precision != "fp32":
            raise ExportError(f"flatbuffer_direct is used for fp32 only (its {precision} output is not correct for Inception-v3)")
        return ["flatbuffer_direct"]
    if backend == "auto" and has_direct and precision == "fp32":
        return ["flatbuffer_direct", "tf_converter"]
    return ["tf_converter"]


def _sample_images(pixels_nhwc: np.ndarray) -> np.ndarray:
    """20 x 128 x 128 x 3 in [0, 1] from the calibration images (what onnx2tf would download)."""
    import torch

    x = torch.from_numpy(pixels_nhwc[:20]).permute(0, 3, 1, 2)
    x = torch.nn.functional.interpolate(x, size=(128, 128), mode="bilinear", align_corners=False)
    x = x.permute(0, 2, 3, 1).clamp(0, 1).numpy()
    reps = -(-20 // len(x))
    return np.ascontiguousarray(np.concatenate([x] * reps)[:20]).astype(np.float32)


def run_onnx2tf(onnx_path: Path, out_dir: Path, backend: str, precision: str, ctx: ExportContext) -> tuple[list[Path], float]:
    """One onnx2tf conversion in a subprocess with its own working folder; the .tflite files it made."""
    work = Path(tempfile.mkdtemp(prefix="onnx2tf-", dir=ctx.workdir)).resolve()
    calib = ctx.calibration()
    pixels = denormalize_nhwc(calib.images, ctx.variant.mean, ctx.variant.std)
    np.save(work / "sample.npy", _sample_images(pixels))
    convert: dict[str, Any] = {
        "input_onnx_file_path": str(onnx_path.resolve()),
        "output_folder_path": str(out_dir.resolve()),
        "batch_size": ctx.batch or 1,
        "copy_onnx_input_output_names_to_tflite": True,
        "non_verbose": True,
        "not_use_onnxsim": True,  # already simplified by onnxslim at export
    }
    if int(onnx2tf_version().split(".")[0]) >= 2:
        convert["tflite_backend"] = backend
    job: dict[str, Any] = {"sample_npy": str(work / "sample.npy"), "convert": convert}
    if precision == "int8":
        np.save(work / "calib.npy", pixels)
        job["full_int8"] = {
            "calib_npy": str(work / "calib.npy"), "mean": list(ctx.variant.mean), "std": list(ctx.variant.std),
            "io": ctx.options.int8_io, "out": str(out_dir.resolve() / f"{onnx_path.stem}{FULL_INT8_SUFFIX}"),
        }
    spec = work / "spec.json"
    spec.write_text(json.dumps(job))
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
    start = time.perf_counter()
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "edgeinc.export._onnx2tf_job", str(spec)],
            cwd=work, env=env, capture_output=True, text=True, timeout=ONNX2TF_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired as e:
        raise ExportError(f"onnx2tf ({backend}) did not finish in {ONNX2TF_TIMEOUT_S} s") from e
    seconds = time.perf_counter() - start
    shutil.rmtree(work, ignore_errors=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        raise ExportError(f"onnx2tf ({backend}) failed converting {onnx_path.name}:\n{tail}")
    return sorted(out_dir.glob("*.tflite")), seconds


def _pick(files: list[Path], precision: str) -> Path:
    suffix = {"fp32": "_float32.tflite", "fp16": "_float16.tflite", "int8": FULL_INT8_SUFFIX}[precision]
    found = [f for f in files if f.name.endswith(suffix)]
    if not found:
        raise ExportError(f"onnx2tf wrote no *{suffix} file (it wrote: {[f.name for f in files]})")
    return found[0]


def export_tflite(ctx: ExportContext, precision: Precision) -> TargetOutput:
    if precision == Precision.INT8:  # before minutes of conversion, not after
        ctx.require_validation("an INT8 export (it reports FP32 vs INT8 accuracy)")
    onnx_path, onnx_spec, onnx_parity = fp32_onnx(ctx)
    reference = (ctx.run(onnx_path, onnx_spec, ctx.parity_batch()), "onnxruntime fp32 (the exported ONNX)")
    io = ctx.options.int8_io
    name = {"fp32": "fp32", "fp16": "fp16", "int8": f"full_int8_{io}io"}[precision]
    final = ctx.workdir / f"{ctx.stem}_{name}.tflite"
    attempts: list[ConversionAttempt] = []
    for backend in _plan(precision, ctx.options.tflite_backend):
        attempt = ConversionAttempt(backend=backend)
        attempts.append(attempt)
        out_dir = Path(tempfile.mkdtemp(prefix=f"tflite-{backend}-", dir=ctx.workdir))
        try:
            files, attempt.seconds = run_onnx2tf(onnx_path, out_dir, backend, precision, ctx)
            chosen = _pick(files, precision)
            spec = tflite_spec(chosen, ctx, precision)
            parity = ctx.check(chosen, spec, f"{precision} TFLite ({backend}) vs ONNX Runtime fp32", reference)
        except (ExportError, ParityError) as e:
            attempt.error = str(e)[-2000:]
            shutil.rmtree(out_dir, ignore_errors=True)
            continue
        float_file = next((f for f in files if f.name.endswith("_float32.tflite")), None)
        float_bytes = float_file.stat().st_size if float_file else None
        os.replace(chosen, final)
        shutil.rmtree(out_dir, ignore_errors=True)
        break
    else:
        errors = "\n".join(f"- {a.backend}: {a.error}" for a in attempts)
        raise ExportError(f"TFLite {precision} export failed with every back end tried:\n{errors}")

    notes = {
        "fp32": "float32 weights and activations",
        "fp16": "float16 weights, dequantized to float32 at load; float32 input/output",
        "int8": f"full integer: int8 weights (per-channel) and activations, {io} input/output",
    }[precision]
    conversion = {
        "tool": f"onnx2tf {onnx2tf_version()}", "backend": attempts[-1].backend, "attempts": attempts, "notes": notes,
        "steps": {"onnx_export": ctx._cache["onnx_export_seconds"], "convert": attempts[-1].seconds},
        "settings": {"batch": ctx.batch or 1, "parent_onnx_sha256": sha256_file(onnx_path)},
    }
    quantization = None
    if precision == Precision.INT8:
        quantization = quantization_report(
            ctx, "tflite-full-int8",
            "TFLiteConverter full-integer post-training quantization of onnx2tf's graph (built-in ops only)",
            "int8, per-channel, symmetric", f"int8, per tensor, asymmetric (TFLite scheme); {io} input/output",
            (onnx_path, onnx_spec), (final, spec), float_bytes, attempts[-1].seconds or 0.0,
            details={"io": {"dtype": io, "input": _q(spec.input), "output": _q(spec.output)},
                     "fp32_size_from": "the float32 .tflite onnx2tf wrote beside it"},
        )
    onnx_path.unlink()
    return TargetOutput(final, spec, [onnx_parity, parity], conversion, quantization=quantization)


def _q(tensor) -> dict | None:
    return tensor.quantization.model_dump() if tensor.quantization else None


def tflite_spec(path: Path, ctx: ExportContext, precision: Precision) -> RunnerSpec:
    """The file's own input/output tensors (NHWC, dtype, quantization), read from the interpreter."""
    try:
        in_spec, out_spec = litert_io(litert_interpreter(path))
    except ValueError as e:  # RuntimeUnavailableError: LiteRT is missing or refuses the file
        raise ExportError(str(e)) from e
    return RunnerSpec(format="tflite", precision=precision, input=TensorSpec(**in_spec), output=TensorSpec(**out_spec),
                      preprocessing=Preprocessing.from_variant(ctx.variant), labels=ctx.labels, variant=ctx.variant.name)
