"""``manifest.json``: the contract between export, runners, benchmarks and devices.

It sits beside its artifact and holds everything a runner needs (input name, shape, layout, dtype and
quantization, normalisation, labels) and everything a report needs (variant, parameters,
multiply-adds, parity, accuracy, sizes, tool versions, conversion time, the recipe, sha256s).
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..utils.io import atomic_write_json, sha256_file

MANIFEST_NAME = "manifest.json"
SCHEMA_VERSION = 1


class QuantParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    scale: float
    zero_point: int


class TensorSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    shape: list[int | str]  # a string names a dynamic axis ("batch")
    layout: Literal["NCHW", "NHWC", "NC"]
    dtype: Literal["float32", "float16", "int8", "uint8"]
    quantization: QuantParams | None = None  # real = (q - zero_point) * scale


class Preprocessing(BaseModel):
    model_config = ConfigDict(extra="forbid")
    input_size: int
    mean: list[float]
    std: list[float]
    crop_fraction: float
    interpolation: str
    pixel_range: str = "[0, 1]"  # normalised input = (pixel - mean) / std, pixel in this range


class Manifest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    schema_version: int = Field(SCHEMA_VERSION, ge=1)
    format: Literal["onnx", "tflite", "tensorrt"]
    target: str
    precision: Literal["fp32", "fp16", "int8"]
    artifact: str  # file name, relative to the manifest's folder
    artifact_sha256: str
    artifact_bytes: int
    status: Literal["ok", "needs_engine_build"] = "ok"
    input: TensorSpec
    output: TensorSpec
    preprocessing: Preprocessing
    labels: list[str]
    model: dict[str, Any]  # variant name + metadata, build options, parameters, multiply-adds
    source: dict[str, Any]  # the parent checkpoint: path and sha256
    parity: dict[str, Any]
    quantization: dict[str, Any] | None = None
    conversion: dict[str, Any]  # seconds, tool/back end, notes
    files: dict[str, dict[str, Any]] = Field(default_factory=dict)  # other files: name -> {sha256, bytes, role}
    engine: dict[str, Any] | None = None  # TensorRT: version, GPU, profile
    recipe: dict[str, Any] | None = None
    tools: dict[str, str]
    created: str


class ManifestError(ValueError):
    """A manifest that is missing, malformed, or does not match its artifact (names the file)."""


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def file_entry(path: Path, role: str) -> dict[str, Any]:
    return {"sha256": sha256_file(path), "bytes": path.stat().st_size, "role": role}


def finalize(fields: dict[str, Any], folder: Path) -> Manifest:
    """Validate ``fields``, fill the artifact's sha256 and size, write ``folder/manifest.json`` atomically."""
    artifact = folder / fields["artifact"]
    fields = {**fields, "artifact_sha256": sha256_file(artifact), "artifact_bytes": artifact.stat().st_size}
    fields.setdefault("created", now_iso())
    try:
        manifest = Manifest.model_validate(fields)
    except ValidationError as e:  # a bug in a target, not a user error: say which field
        raise ManifestError(f"{folder / MANIFEST_NAME}: invalid manifest: {e}") from e
    atomic_write_json(folder / MANIFEST_NAME, manifest.model_dump(mode="json"))
    return manifest


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
    except (OSError, json.JSONDecodeError) as e:
        raise ManifestError(f"{manifest_path}: not a readable JSON manifest ({e})") from e
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
