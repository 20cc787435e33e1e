"""The Runner protocol: load an artifact with its manifest, run a numpy batch, return float logits.

Every runner takes the same input: a float32 NCHW batch normalised with the model's mean/std (what
``edgeinc.data.build_transform(variant, train=False)`` produces, or ``normalize(pixels, runner)`` from
decoded pixels). ``prepare`` turns it into the artifact's own layout and dtype (NHWC, int8 with the
manifest's scale/zero point); ``run`` executes that native batch and returns float32 logits
(dequantized); ``predict`` is both. Benchmarks time ``run`` on prepared batches.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ..artifact import RunnerSpec
from ..registry import Registry
from ..utils.cpu import bf16_unavailable_reason


class RuntimeUnavailableError(ValueError):
    """The backend's package (or device) is missing; the message says what to install."""


@dataclass(frozen=True)
class Executed:
    """The precision a runtime's compute kernels actually run, read back from the runtime after the
    model was loaded (never inferred from the file name): ``ops`` counts the convolutions and fully
    connected / matmul layers by the precision they execute in (fp32, fp16, bf16, int8)."""

    ops: dict[str, int]
    source: str  # where it was read: "OpenVINO runtime model", "ONNX Runtime optimized graph", ...
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def main(self) -> str:
        """The precision most compute layers run in ("unknown" when nothing could be read)."""
        return max(self.ops, key=self.ops.get) if self.ops else "unknown"

    @property
    def summary(self) -> str:
        """``int8``, or ``int8 66 + fp32 29`` when layers run in several precisions."""
        if len(self.ops) <= 1:
            return self.main
        return " + ".join(f"{p} {n}" for p, n in sorted(self.ops.items(), key=lambda kv: -kv[1]))

    def to_dict(self) -> dict[str, Any]:
        return {"summary": self.summary, "ops": dict(self.ops), "source": self.source, "notes": list(self.notes)}

    @classmethod
    def count(cls, precisions: list[str], source: str, notes: tuple[str, ...] = ()) -> Executed:
        return cls(dict(Counter(precisions)), source, notes)


@runtime_checkable
class Runner(Protocol):
    name: str  # the registry name of the backend
    threads: int | None
    precision: str  # what this runner was asked to run: the artifact's precision, or a runtime option (bf16)
    executed: Executed  # what the runtime actually runs, read back from it
    flush_denormals: bool | None  # None: the runtime has no switch
    labels: list[str]
    input: dict[str, Any]  # name, shape, layout, dtype, quantization (the manifest's input spec)
    preprocessing: dict[str, Any]  # input_size, mean, std, crop_fraction, interpolation
    variant: str  # the registered model it is a variant of

    def prepare(self, images: np.ndarray) -> np.ndarray: ...

    def run(self, batch: np.ndarray) -> np.ndarray: ...

    def predict(self, images: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class RunnerInfo:
    formats: tuple[str, ...]  # manifest formats it reads ("onnx", "tflite", "tensorrt", "torch")
    description: str
    extra: str  # the pip extra that installs it
    # Precisions it can run an fp32 artifact in, beyond the artifact's own (a runtime option, not a file).
    runtime_precisions: tuple[str, ...] = ()


# name -> class(path: Path, spec: RunnerSpec | None, threads, precision, flush_denormals, **options) -> Runner
RUNNERS: Registry[type] = Registry("runner")

# The backend used when none is named, by artifact format.
DEFAULT_BACKEND = {"onnx": "onnxruntime", "tflite": "litert", "tensorrt": "tensorrt", "torch": "torch",
                   "executorch": "executorch"}


def quantize(x: np.ndarray, spec: dict | None, dtype: str) -> np.ndarray:
    """float -> the integer dtype with real = (q - zero_point) * scale; float dtypes pass through."""
    if dtype in ("float32", "float16"):
        return x.astype(dtype, copy=False)
    if spec is None:
        raise ValueError(f"a {dtype} input needs quantization parameters in the manifest")
    info = np.iinfo(dtype)
    q = np.round(x / spec["scale"] + spec["zero_point"])
    return np.clip(q, info.min, info.max).astype(dtype)


def dequantize(y: np.ndarray, spec: dict | None) -> np.ndarray:
    if spec is None or y.dtype.kind == "f":
        return y.astype(np.float32, copy=False)
    return ((y.astype(np.float32) - spec["zero_point"]) * spec["scale"]).astype(np.float32)


def normalize(pixels: np.ndarray, preprocessing: dict[str, Any]) -> np.ndarray:
    """Decoded, already cropped and resized images (N, H, W, 3), uint8 or float in [0, 1] ->
    the normalised NCHW float32 batch every runner takes."""
    x = pixels.astype(np.float32) / 255.0 if pixels.dtype == np.uint8 else pixels.astype(np.float32)
    mean = np.asarray(preprocessing["mean"], np.float32)
    std = np.asarray(preprocessing["std"], np.float32)
    return np.ascontiguousarray(((x - mean) / std).transpose(0, 3, 1, 2))


def requested_precision(name: str, artifact_precision: str, precision: str | None) -> str:
    """The precision a runner is asked to run: the artifact's own, or a runtime option such as bf16
    for an fp32 artifact where the runtime and the CPU support it (else RuntimeUnavailableError)."""
    if precision is None or precision == artifact_precision:
        return artifact_precision
    info: RunnerInfo = RUNNERS.meta(name)
    if precision not in info.runtime_precisions or artifact_precision != "fp32":
        raise RuntimeUnavailableError(
            f"the {name} runner cannot run a {artifact_precision} artifact in {precision} "
            f"(runtime precisions it offers for fp32 artifacts: {', '.join(info.runtime_precisions) or 'none'})"
        )
    if precision == "bf16" and (why := bf16_unavailable_reason()) is not None:
        raise RuntimeUnavailableError(f"bf16 skipped: {why}; emulated bf16 would measure something else")
    return precision


class ManifestRunner:
    """Shared behaviour of the runners of exported files: layout/dtype conversion from the artifact's
    ``RunnerSpec`` (its manifest's, or an export's in-memory one), and batches cut to what the runtime
    accepts (a fixed batch is padded; a maximum batch splits)."""

    name = "?"
    flush_denormals: bool | None = None

    def __init__(self, path: Path, spec: RunnerSpec, threads: int | None = None, precision: str | None = None) -> None:
        self.path = path
        self.spec = spec
        self.threads = threads
        self.precision = requested_precision(self.name, spec.precision, precision)
        self.labels = list(spec.labels)
        self.input = spec.input.model_dump()
        self.output = spec.output.model_dump()
        self.preprocessing = spec.preprocessing.model_dump()

    @property
    def variant(self) -> str:
        return self.spec.variant

    @property
    def fixed_batch(self) -> int | None:
        first = self.input["shape"][0]
        return first if isinstance(first, int) else None

    @property
    def max_batch(self) -> int | None:
        """The largest batch the runtime accepts at once (None: any)."""
        return self.fixed_batch

    def prepare(self, images: np.ndarray) -> np.ndarray:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected a normalised NCHW batch (N, 3, H, W), got shape {images.shape}")
        x = images.transpose(0, 2, 3, 1) if self.input["layout"] == "NHWC" else images
        return np.ascontiguousarray(quantize(x, self.input["quantization"], self.input["dtype"]))

    def run(self, batch: np.ndarray) -> np.ndarray:
        step, fixed = self.max_batch, self.fixed_batch
        if step is None or len(batch) == step or (fixed is None and len(batch) <= step):
            return dequantize(self._run(batch), self.output["quantization"])
        outs = []
        for start in range(0, len(batch), step):
            chunk = batch[start : start + step]
            n = len(chunk)
            if fixed is not None and n < fixed:
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], fixed - n, axis=0)])
            outs.append(self._run(chunk)[:n])
        return dequantize(np.concatenate(outs), self.output["quantization"])

    def predict(self, images: np.ndarray) -> np.ndarray:
        return self.run(self.prepare(images))

    def _run(self, batch: np.ndarray) -> np.ndarray:
        raise NotImplementedError
