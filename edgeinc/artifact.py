"""The artifact contract: ``manifest.json``, the typed record that travels with every exported model.

It sits beside its artifact and holds everything a runner needs (``RunnerSpec``: format, precision,
input name/shape/layout/dtype and quantization, normalisation, labels) and everything a report needs
(the model and its complexity, parity checks, quantization report, conversion, sizes, tool versions,
the recipe, sha256s). Export writes it, runtimes, benchmarks, the detector stage and devices read it;
export and runtime both depend on this module, never the other way round.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .config import ModelOptions
from .utils.io import atomic_write_json, sha256_file

MANIFEST_NAME = "manifest.json"
# 2: typed parts (parity a list of checks, quantization / conversion / engine typed, model options).
SCHEMA_VERSION = 2


class Precision(StrEnum):
    """What an artifact stores, or a runtime option (bf16 runs an fp32 artifact in bfloat16)."""

    FP32 = "fp32"
    FP16 = "fp16"
    BF16 = "bf16"
    INT8 = "int8"


class Part(BaseModel):
    model_config = ConfigDict(extra="forbid")


class QuantParams(Part):
    scale: float
    zero_point: int


class TensorSpec(Part):
    name: str
    shape: list[int | str]  # a string names a dynamic axis ("batch")
    layout: Literal["NCHW", "NHWC", "NC"]
    dtype: Literal["float32", "float16", "int8", "uint8"]
    quantization: QuantParams | None = None  # real = (q - zero_point) * scale


class Preprocessing(Part):
    input_size: int
    mean: list[float]
    std: list[float]
    crop_fraction: float
    interpolation: str
    pixel_range: str = "[0, 1]"  # normalised input = (pixel - mean) / std, pixel in this range

    @classmethod
    def from_variant(cls, variant: Any) -> Preprocessing:
        """A model's ``VariantConfig`` -> the preprocessing its evaluation transform applies."""
        return cls(input_size=variant.input_size, mean=list(variant.mean), std=list(variant.std),
                   crop_fraction=variant.crop_fraction, interpolation=variant.interpolation)


class VariantInfo(Part):
    """``VariantConfig.to_dict()``: the receptive-field variant and its computed grids."""

    name: str
    input_size: int
    first_conv_stride: int
    first_maxpool: bool
    stem: str
    grids: list[int]
    min_input_size: int
    mean: list[float]
    std: list[float]
    crop_fraction: float
    interpolation: str
    paper_top1: float | None = None


class ModelBuild(Part):
    """What rebuilds the network: ``create_model(name, num_classes=..., options=...)``."""

    name: str
    num_classes: int
    options: ModelOptions


class ModelInfo(Part):
    variant: str
    variant_config: VariantInfo
    build: ModelBuild
    num_classes: int
    parameters: int  # inference graph (no aux head)
    parameters_with_aux: int
    multiply_adds: int  # one image at the variant's input size


class SourceInfo(Part):
    """The checkpoint the artifact was exported from."""

    weights: str
    sha256: str


class ToleranceInfo(Part):
    rtol: float | None
    min_agreement: float
    margin: float


class Parity(Part):
    """One parity check: an exported model's logits against a reference on the same images."""

    check: str  # what was compared, e.g. "fp32 ONNX vs PyTorch"
    reference: str  # "pytorch fp32", "onnxruntime fp32 (the exported ONNX)"
    runtime: str  # the runner that produced the candidate logits
    images: int
    max_abs_error: float
    mean_abs_error: float
    reference_max_abs_logit: float
    max_rel_error: float
    top1_agreement: float
    decisive_images: int
    decisive_top1_agreement: float | None
    topk_overlap: float
    tolerance: ToleranceInfo
    max_abs_error_bound: float | None = None
    passed: bool
    problems: list[str] = Field(default_factory=list)


class Accuracy(Part):
    """Top-1 / top-5 in percent (top-5 is top-k with k = min(5, classes)); the one accuracy type of
    evaluation, export reports and benchmarks."""

    top1: float
    top5: float
    images: int
    top5_k: int = 5


class SplitInfo(Part):
    """An image folder an export read: calibration or validation images."""

    folder: str
    images: int
    of: int  # images in the folder (a random subset may be used)
    labelled: bool


class QuantAccuracy(Part):
    split: SplitInfo
    fp32: Accuracy
    int8: Accuracy
    fp32_runtime: str
    int8_runtime: str
    top1_drop_points: float
    top5_drop_points: float

    @classmethod
    def compare(cls, split: SplitInfo, fp32: Accuracy, int8: Accuracy, fp32_runtime: str, int8_runtime: str) -> QuantAccuracy:
        return cls(split=split, fp32=fp32, int8=int8, fp32_runtime=fp32_runtime, int8_runtime=int8_runtime,
                   top1_drop_points=fp32.top1 - int8.top1, top5_drop_points=fp32.top5 - int8.top5)


class SizeInfo(Part):
    fp32_bytes: int | None
    int8_bytes: int
    ratio: float | None  # fp32 / int8


class QuantizationReport(Part):
    """How an INT8 artifact was quantized and what it cost: the same report for every quantizer."""

    quantizer: str  # the QUANTIZERS name: nncf, nncf-accuracy-control, qat, tensorrt, tflite-full-int8
    method: str
    weights: str
    activations: str
    calibration: SplitInfo
    accuracy: QuantAccuracy
    size: SizeInfo
    kept_in_float: list[str] = Field(default_factory=list)  # compute ops left in float (names)
    seconds: float | None = None
    details: dict[str, Any] = Field(default_factory=dict)  # quantizer-specific: QAT losses, accuracy control, IO


class ConversionAttempt(Part):
    backend: str
    seconds: float | None = None
    error: str | None = None


class Conversion(Part):
    seconds: float  # the whole export, checks included
    tool: str
    backend: str | None = None
    notes: str | None = None
    steps: dict[str, float] = Field(default_factory=dict)  # seconds per step: onnx export, quantize, convert...
    attempts: list[ConversionAttempt] = Field(default_factory=list)
    settings: dict[str, Any] = Field(default_factory=dict)  # opset, exporter, batch, simplifier, parent sha256...


class BatchProfile(Part):
    input: str
    min: list[int]
    opt: list[int]
    max: list[int]


class EngineInfo(Part):
    """A TensorRT engine: what it was (or is to be) built from and with."""

    onnx: str
    profile: BatchProfile
    strongly_typed: bool = True
    built: bool = False
    not_built_because: str | None = None
    finish_with: str | None = None
    tensorrt_version: str | None = None
    gpu: dict[str, str] | None = None
    workspace_gib: float | None = None
    build_seconds: float | None = None
    timing_cache: str | None = None
    notes: list[str] = Field(default_factory=list)


class FileEntry(Part):
    sha256: str
    bytes: int
    role: str


class RunnerSpec(Part):
    """What a runner needs to run an artifact: given by a manifest, or in memory while exporting (the
    parity checks of an export run the file through the same runner a user will)."""

    format: Literal["onnx", "tflite", "tensorrt", "executorch"]
    precision: Precision
    input: TensorSpec
    output: TensorSpec
    preprocessing: Preprocessing
    labels: list[str]
    variant: str
    quantizer: str | None = None
    engine: EngineInfo | None = None


class Manifest(Part):
    schema_version: int = Field(SCHEMA_VERSION, ge=1)
    format: Literal["onnx", "tflite", "tensorrt", "executorch"]
    target: str
    precision: Precision
    artifact: str  # file name, relative to the manifest's folder
    artifact_sha256: str
    artifact_bytes: int
    status: Literal["ok", "needs_engine_build"] = "ok"
    input: TensorSpec
    output: TensorSpec
    preprocessing: Preprocessing
    labels: list[str]
    model: ModelInfo
    source: SourceInfo
    parity: list[Parity]  # every check the export passed, in order; the last one judged the artifact itself
    quantization: QuantizationReport | None = None
    conversion: Conversion
    files: dict[str, FileEntry] = Field(default_factory=dict)  # other files: name -> sha256, bytes, role
    engine: EngineInfo | None = None  # TensorRT: version, GPU, profile
    recipe: dict[str, Any] | None = None  # the training recipe, as resolved (edgeinc.config.Recipe.to_dict)
    tools: dict[str, str]
    created: str

    def runner_spec(self) -> RunnerSpec:
        return RunnerSpec(format=self.format, precision=self.precision, input=self.input, output=self.output,
                          preprocessing=self.preprocessing, labels=self.labels, variant=self.model.variant,
                          quantizer=self.quantization.quantizer if self.quantization else None, engine=self.engine)


class ManifestError(ValueError):
    """A manifest that is missing, malformed, or does not match its artifact (names the file)."""


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def file_entry(path: Path, role: str) -> FileEntry:
    return FileEntry(sha256=sha256_file(path), bytes=path.stat().st_size, role=role)


def write_manifest(manifest: Manifest, folder: Path) -> Path:
    path = folder / MANIFEST_NAME
    atomic_write_json(path, manifest.model_dump(mode="json"))
    return path


def find_manifest(path: str | os.PathLike) -> Path:
    """A manifest file, an artifact folder, or an artifact file -> its manifest.json."""
    path = Path(path)
    if path.is_dir():
        candidate = path / MANIFEST_NAME
    elif path.name == MANIFEST_NAME or path.suffix == ".json":
        candidate = path
    else:
        candidate = path.parent / MANIFEST_NAME
    if not candidate.is_file():
        raise ManifestError(f"{path}: no {MANIFEST_NAME} found (looked for {candidate})")
    return candidate


def load_manifest(path: str | os.PathLike, verify: bool = True) -> tuple[Manifest, Path]:
    """(manifest, its folder). ``verify``: the artifact exists and its sha256 matches the manifest."""
    manifest_path = find_manifest(path)
    try:
        data = json.loads(manifest_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ManifestError(f"{manifest_path}: not a readable JSON manifest ({e})") from e
    version = data.get("schema_version") if isinstance(data, dict) else None
    if isinstance(version, int) and version < SCHEMA_VERSION:
        raise ManifestError(f"{manifest_path}: field 'schema_version' is {version}, written by an older edgeinc; "
                            f"export the model again (this edgeinc reads schema {SCHEMA_VERSION})")
    try:
        manifest = Manifest.model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ManifestError(f"{manifest_path}: field {where!r}: {first['msg']} ({e.error_count()} problem(s))") from e
    folder = manifest_path.parent
    if verify:
        artifact = folder / manifest.artifact
        if not artifact.is_file():
            raise ManifestError(f"{manifest_path}: its artifact {artifact} is missing")
        digest = sha256_file(artifact)
        if digest != manifest.artifact_sha256:
            raise ManifestError(
                f"{artifact}: sha256 {digest[:12]}... does not match the manifest's {manifest.artifact_sha256[:12]}... "
                f"(the file changed after export)"
            )
    return manifest, folder
