"""``bench()``: artifacts (or a run directory, or a folder of artifacts) in, a report out."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..export.manifest import MANIFEST_NAME, ManifestError, load_manifest
from ..models import CheckpointError, count_macs, count_parameters, load_source
from ..models.source import WEIGHT_FILES
from .machine import machine_info
from .measure import MeasureSpec, measure_in_subprocess
from .report import BenchReport, BenchRow, compute_deltas, merge_into


class BenchError(ValueError):
    """Bad benchmark input (no artifacts, a tampered artifact, data that does not fit the model)."""


@dataclass(frozen=True)
class Item:
    """One thing to measure with one runtime."""

    path: Path
    kind: str  # "checkpoint" | "artifact"
    backend: str | None = None


def _is_run_or_weights(path: Path) -> bool:
    return (path.is_file() and path.suffix == ".safetensors") or (
        path.is_dir() and any((path / name).is_file() for name in WEIGHT_FILES.values())
    )


def discover(paths: list[str | os.PathLike]) -> list[Item]:
    """Run directories / weights files (the PyTorch row), artifact folders or manifests, and folders
    holding artifact folders (e.g. everything ``edgeinc export`` wrote for one run)."""
    items: list[Item] = []
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            raise BenchError(f"{path}: no such artifact, run directory or folder")
        if _is_run_or_weights(path):
            items.append(Item(path, "checkpoint"))
        elif path.name == MANIFEST_NAME or (path.is_dir() and (path / MANIFEST_NAME).is_file()):
            items.append(Item(path if path.is_dir() else path.parent, "artifact"))
        elif path.is_file():
            items.append(Item(path.parent, "artifact"))  # an artifact file: its manifest sits beside it
        else:
            found = sorted(p.parent for p in path.rglob(MANIFEST_NAME))
            if not found:
                raise BenchError(f"{path}: holds no artifact (no {MANIFEST_NAME} below it) and is not a run directory")
            items += [Item(p, "artifact") for p in found]
    if not items:
        raise BenchError("no artifacts to benchmark")
    return items


def _backends_for(fmt: str, backends: dict[str, list[str]] | None) -> list[str | None]:
    # ONNX artifacts run in ONNX Runtime and in OpenVINO (the fastest INT8 path on x86 CPUs here).
    default = {"onnx": ["onnxruntime", "openvino"], "tflite": ["litert"], "tensorrt": ["tensorrt"], "torch": ["torch"]}
    return list((backends or default).get(fmt, default.get(fmt, [None])))


def _base_row(item: Item, backend: str | None) -> tuple[BenchRow, list[str]]:
    """Everything known before running: format, precision, size, parameters, multiply-adds, sha256s.
    Also returns the labels, to check --data against. A tampered artifact raises (sha256)."""
    if item.kind == "checkpoint":
        try:
            src = load_source(item.path)
        except CheckpointError as e:
            raise BenchError(str(e)) from e
        model = src.model
        row = BenchRow(
            artifact=str(item.path), variant=model.variant.name, format="torch", backend="torch", precision="fp32",
            status="ok", size_mb=src.weights_path.stat().st_size / 1e6,
            params=count_parameters(model, include_aux=False), macs=count_macs(model, model.variant.input_size),
            sha256=src.sha256, parent_sha256=src.sha256,
        )
        return row, list(src.labels or [str(i) for i in range(model.num_classes)])
    try:
        manifest, folder = load_manifest(item.path, verify=True)
    except ManifestError as e:
        raise BenchError(str(e)) from e
    row = BenchRow(
        artifact=str(folder), variant=manifest.model.get("variant"), format=manifest.format, backend=backend,
        precision=manifest.precision, status="ok", size_mb=manifest.artifact_bytes / 1e6,
        params=manifest.model.get("parameters"), macs=manifest.model.get("multiply_adds"),
        sha256=manifest.artifact_sha256, parent_sha256=manifest.source.get("sha256"),
    )
    if manifest.status != "ok":  # e.g. a TensorRT-ready ONNX whose engine is still to be built
        row.status, row.reason = "export failed", f"manifest status {manifest.status!r}: {manifest.conversion.get('notes', '')}"
    return row, list(manifest.labels)


def _check_data(data: str | None, labels: list[str], where: str) -> None:
    if data is None:
        return
    from ..data import DataError, ImageFolder

    try:
        classes = ImageFolder(data).classes
    except DataError as e:
        raise BenchError(str(e)) from e
    unknown = sorted(set(classes) - set(labels))
    if unknown:
        raise BenchError(
            f"--data {data}: classes {unknown[:5]}{'...' if len(unknown) > 5 else ''} are not among the labels of "
            f"{where} ({len(labels)} classes, e.g. {labels[:5]}): it was trained on other classes"
        )


def export_everything(source: Path, out: Path, data: str | None, calib: str | None = None) -> list[tuple[Path | None, BenchRow | None]]:
    """Export ``source`` to every registered target and precision. Returns (artifact dir, None) for
    each success and (None, failed row) for each target that could not be built here."""
    from ..export import TARGETS, TensorRTUnavailableError, export

    results: list[tuple[Path | None, BenchRow | None]] = []
    for entry in TARGETS:
        for precision in entry.meta.precisions:
            try:
                result = export(source, entry.name, precision, out=out, calib=calib, val=data)
                results.append((result.directory, None))
            except TensorRTUnavailableError as e:
                results.append((None, BenchRow(artifact=str(e.result.directory), format=entry.meta.artifact_format,
                                               backend="tensorrt", precision=precision, status="export failed",
                                               reason=str(e).splitlines()[0])))
            except Exception as e:  # every failure becomes a row; the rest of the table still gets measured
                results.append((None, BenchRow(artifact=str(out / f"{entry.name}-{precision}"),
                                               format=entry.meta.artifact_format, backend=None, precision=precision,
                                               status="export failed", reason=f"{type(e).__name__}: {e}")))
    return results


def bench(
    paths: list[str | os.PathLike],
    *,
    data: str | os.PathLike | None = None,
    batches: tuple[int, ...] = (1,),
    threads: int | None = None,
    warmup: int = 5,
    runs: int | None = None,
    min_time: float = 3.0,
    out: str | os.PathLike | None = None,
    export: bool = False,
    calib: str | os.PathLike | None = None,
    merge: list[str | os.PathLike] = (),
    backends: dict[str, list[str]] | None = None,
    max_images: int | None = None,
    timeout: float | None = 1800.0,
    progress: Any = None,
) -> BenchReport:
    """Measure every artifact x runtime x batch size; write Markdown, JSON, CSV and a PNG plot to ``out``.

    ``data``: an ImageNet-layout split (class folders) scored with a single central crop.
    ``export``: first export every run directory / weights file to every target and precision.
    ``backends``: format -> runtimes to use (default: onnx -> ONNX Runtime and OpenVINO)."""
    if any(b < 1 for b in batches) or not batches:
        raise BenchError(f"batch sizes must be >= 1, got {list(batches)}")
    threads = threads or len(os.sched_getaffinity(0))
    data = str(data) if data is not None else None
    items = discover(list(paths)) if paths or not merge else []  # --merge alone re-reports device rows
    rows: list[BenchRow] = []
    if export:
        export_root = Path(out or "bench-report") / "artifacts"
        for item in [i for i in items if i.kind == "checkpoint"]:
            for directory, failed in export_everything(item.path, export_root / item.path.stem, data,
                                                       str(calib) if calib else None):
                if failed is not None:
                    rows.append(failed)
                else:
                    items.append(Item(directory, "artifact"))

    plan: list[tuple[Item, BenchRow]] = []
    for item in items:
        fmt = "torch" if item.kind == "checkpoint" else load_manifest(item.path, verify=False)[0].format
        for backend in _backends_for(fmt, backends):
            row, labels = _base_row(item, backend)
            _check_data(data, labels, str(item.path))
            plan.append((Item(item.path, item.kind, backend), row))

    for i, (item, base) in enumerate(plan):
        if progress:
            progress(f"[{i + 1}/{len(plan)}] {item.path} ({base.label})")
        if base.status != "ok":
            rows.append(base)
            continue
        spec = MeasureSpec(str(item.path), item.backend, tuple(batches), threads, warmup, runs, min_time, data, max_images)
        result = measure_in_subprocess(spec, timeout=timeout)
        if not result["ok"]:
            rows.append(base.model_copy(update={"status": "run failed", "reason": result["error"]}))
            continue
        accuracy = result.get("accuracy") or {}
        for batch in batches:
            lat = result["latency"][batch]
            rows.append(base.model_copy(update={
                "backend": result["backend"], "batch": batch, "threads": threads, "peak_mem_mb": result["peak_mem_mb"],
                "top1": accuracy.get("top1"), "top5": accuracy.get("top5"), "images_scored": accuracy.get("images_scored"),
                "mean_ms": lat["mean_ms"], "p50_ms": lat["p50_ms"], "p90_ms": lat["p90_ms"], "p99_ms": lat["p99_ms"],
                "images_per_s": lat["images_per_s"], "runs": lat["runs"],
            }))
    compute_deltas(rows)
    from ..export.manifest import now_iso

    header = {
        "machine": machine_info(), "machine_label": "this machine", "threads": threads, "batches": list(batches),
        "warmup": warmup, "runs": runs, "min_time": min_time, "data": data, "created": now_iso(),
    }
    report = BenchReport(rows, header)
    if merge:
        merge_into(report, list(merge))
    if out is not None:
        report.write(out)
    return report
