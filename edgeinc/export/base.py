"""What every export target shares: the target registry, the options, errors, the context handed to a
target, and staging.

Targets are registered here with what they support (precisions, file suffix, the manifest format they
write) and imported when used, so that the command line offers their names without loading PyTorch,
ONNX or TensorFlow.
"""

from __future__ import annotations

import contextlib
import difflib
import importlib.metadata
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from ..artifact import Parity, Precision, RunnerSpec
from ..registry import Registry
from ..runtime import DEFAULT_BACKEND, RuntimeUnavailableError, open_runner
from ..scoring import TOLERANCES, Tolerance, check_parity

if TYPE_CHECKING:
    from ..models import ModelSource
    from .data import ImageBatch


class ExportError(ValueError):
    """An export that cannot be done or did not pass its checks; the message says why."""


class TensorRTUnavailableError(ExportError):
    """TensorRT or a CUDA device is missing: the TensorRT-ready ONNX and its manifest were written
    (``result``), and the message names them and the command that finishes the build."""

    def __init__(self, message: str, result: Any) -> None:
        super().__init__(message)
        self.result = result


def missing_extra(package: str, extra: str) -> ExportError:
    return ExportError(f"{package} is not installed: pip install 'edgeinc[{extra}]'")


@dataclass(frozen=True)
class TargetInfo:
    precisions: tuple[Precision, ...]
    description: str
    artifact_format: str  # the manifest's "format" of what the target writes
    suffix: str  # the artifact file's suffix


# name -> export function(ctx: ExportContext, precision: Precision) -> TargetOutput
TARGETS: Registry[Callable[..., "TargetOutput"]] = Registry("export target")
_FP = (Precision.FP32, Precision.FP16, Precision.INT8)
TARGETS.register_lazy("onnx", "edgeinc.export.onnx_target:export_onnx",
                      TargetInfo(_FP, "ONNX opset 17 (int8: NNCF Q/DQ)", "onnx", ".onnx"))
TARGETS.register_lazy("tflite", "edgeinc.export.tflite_target:export_tflite",
                      TargetInfo(_FP, "TFLite via onnx2tf, run by LiteRT", "tflite", ".tflite"))
TARGETS.register_lazy("tensorrt", "edgeinc.export.tensorrt_target:export_tensorrt",
                      TargetInfo(_FP, "TensorRT engine (strongly typed, from ONNX)", "tensorrt", ".engine"))
TARGETS.register_lazy("executorch", "edgeinc.export.executorch_target:export_executorch",
                      TargetInfo((Precision.FP32, Precision.INT8), "ExecuTorch .pte, XNNPACK delegate (int8: PT2E)",
                                 "executorch", ".pte"))


def check_target(target: str, precision: str) -> tuple[TargetInfo, Precision]:
    info: TargetInfo = TARGETS.meta(target)  # unknown target: UnknownNameError listing the registered ones
    supported = ", ".join(f"{e.name}: {'/'.join(e.meta.precisions)}" for e in TARGETS)
    try:
        wanted = Precision(precision)
    except ValueError:
        raise ExportError(f"unknown precision {precision!r} (one of {', '.join(Precision)}; targets: {supported})") from None
    if wanted not in info.precisions:
        raise ExportError(
            f"target {target!r} does not support precision {precision!r} "
            f"(it supports {', '.join(info.precisions)}; all targets: {supported})"
        )
    return info, wanted


@dataclass(frozen=True)
class ExportOptions:
    """Target-specific options of ``export(...)`` (keyword arguments there; flags on the command line)."""

    threads: int | None = None  # threads of the parity / accuracy runs
    int8_min_agreement: float | None = None  # the INT8 parity gate's top-1 agreement (default 0.8)
    int8_io: Literal["int8", "uint8"] = "int8"  # TFLite full-integer input/output dtype
    tflite_backend: Literal["auto", "flatbuffer_direct", "tf_converter"] = "auto"
    qat_steps: int | None = None  # > 0: quantization-aware training instead of post-training quantization
    qat_lr: float = 1e-5
    qat_batch_size: int = 16
    qat_images: int = 2048
    qat_data: str | None = None  # labelled training images for QAT (default: the calibration folder)
    trt_max_batch: int = 32
    trt_workspace_gib: float = 4.0
    trt_timing_cache: str | None = None

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> ExportOptions:
        known = {f.name for f in fields(cls)}
        for name in kwargs:
            if name not in known:
                close = difflib.get_close_matches(name, known, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else f" (options: {', '.join(sorted(known))})"
                raise ExportError(f"unknown export option {name!r}{hint}")
        options = cls(**{k: v for k, v in kwargs.items() if v is not None})
        checks = {"int8_io": ("int8", "uint8"), "tflite_backend": ("auto", "flatbuffer_direct", "tf_converter")}
        for name, allowed in checks.items():
            if getattr(options, name) not in allowed:
                raise ExportError(f"export option {name} must be one of {', '.join(allowed)}, got {getattr(options, name)!r}")
        if options.qat_steps is not None and options.qat_steps < 1:
            raise ExportError(f"qat_steps must be >= 1, got {options.qat_steps}")
        return options


def tool_versions(*names: str) -> dict[str, str]:
    out = {}
    for name in ("edgeinc", "torch", "numpy", *names):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            out[name] = importlib.metadata.version(name)
    return out


@dataclass
class TargetOutput:
    """What a target hands back: the main artifact and the manifest parts it alone knows."""

    artifact: Path
    spec: RunnerSpec  # format, precision, input/output tensors (as the file has them)
    parity: list[Parity]
    conversion: dict[str, Any]  # edgeinc.artifact.Conversion fields, "seconds" filled by export()
    quantization: Any = None  # edgeinc.artifact.QuantizationReport
    engine: Any = None  # edgeinc.artifact.EngineInfo
    status: str = "ok"
    files: dict[str, Any] = field(default_factory=dict)  # name -> edgeinc.artifact.FileEntry
    extra_files: list[Path] = field(default_factory=list)


@dataclass
class ExportContext:
    """Everything a target needs: the model and its provenance, the images, the options."""

    source: ModelSource
    labels: list[str]
    workdir: Path  # the staging folder the target writes into
    final_dir: Path  # where the staging folder lands when the export succeeds
    batch: int | None  # None: dynamic batch axis
    calib_loader: Callable[[], ImageBatch]
    val_loader: Callable[[], ImageBatch | None]
    parity_images: int
    max_drop: float | None
    options: ExportOptions
    _cache: dict[str, Any] = field(default_factory=dict)

    @property
    def variant(self):
        return self.source.model.variant

    @property
    def threads(self) -> int | None:
        return self.options.threads

    @property
    def stem(self) -> str:
        return self.variant.name

    def tolerance(self, precision: str) -> Tolerance:
        """The parity gate; ``int8_min_agreement`` overrides INT8's top-1 agreement bar."""
        tol = TOLERANCES[precision]
        if precision == "int8" and self.options.int8_min_agreement is not None:
            return Tolerance(tol.rtol, float(self.options.int8_min_agreement), tol.margin)
        return tol

    def calibration(self) -> ImageBatch:
        if "calib" not in self._cache:
            self._cache["calib"] = self.calib_loader()
        return self._cache["calib"]

    def validation(self) -> ImageBatch | None:
        if "val" not in self._cache:
            self._cache["val"] = self.val_loader()
        return self._cache["val"]

    def parity_batch(self) -> np.ndarray:
        """Images for parity checks: validation images where there are, else calibration images."""
        val = self.validation()
        images = val.images if val is not None and len(val) else self.calibration().images
        return images[: self.parity_images]

    def require_validation(self, why: str) -> ImageBatch:
        val = self.validation()
        if val is None or val.labels is None:
            raise ExportError(
                f"{why} needs a labelled validation split (<class>/<image> folders): none was found "
                f"beside the calibration data; pass --val DIR"
            )
        return val

    def reference_logits(self) -> np.ndarray:
        """The PyTorch model's logits on the parity images (computed once per export)."""
        if "reference" not in self._cache:
            from ..runtime.backends import torch_model_logits

            self._cache["reference"] = torch_model_logits(self.source.model, self.parity_batch())
        return self._cache["reference"]

    def run(self, path: Path, spec: RunnerSpec, images: np.ndarray, backend: str | None = None) -> np.ndarray:
        """Logits of the file at ``path`` through the runner a user would use (an in-memory spec: the
        manifest is not written yet)."""
        try:
            return open_runner(path, spec, backend, threads=self.threads).predict(images)
        except RuntimeUnavailableError as e:
            raise ExportError(str(e)) from e

    def check(self, path: Path, spec: RunnerSpec, check: str, reference: tuple[np.ndarray, str] | None = None,
              backend: str | None = None) -> Parity:
        """The parity gate of the file at ``path`` on the parity images, against PyTorch or against
        ``reference`` = (logits, what they are); raises ParityError."""
        logits, name = reference or (self.reference_logits(), "pytorch fp32")
        candidate = self.run(path, spec, self.parity_batch(), backend)
        return check_parity(logits, candidate, self.tolerance(spec.precision), check, name,
                            backend or DEFAULT_BACKEND[spec.format])


@contextlib.contextmanager
def staging_dir(final: Path) -> Iterator[Path]:
    """A fresh folder beside ``final``; on success it replaces ``final`` in one rename, on failure it
    is removed, so a half-written export is never left where a good one is expected."""
    final.parent.mkdir(parents=True, exist_ok=True)
    # What a killed export of this folder left behind (one export per target folder at a time).
    for stale in [*final.parent.glob(f".{final.name}.partial-*"), *final.parent.glob(f".{final.name}.old-*")]:
        shutil.rmtree(stale, ignore_errors=True)
    work = Path(tempfile.mkdtemp(prefix=f".{final.name}.partial-", dir=final.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(work, 0o777 & ~umask)  # mkdtemp makes it private; the export is an ordinary folder
    try:
        yield work
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    old = None
    if final.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{final.name}.old-", dir=final.parent))
        os.replace(final, old / final.name)
    os.replace(work, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
