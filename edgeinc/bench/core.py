"""``bench()``: artifacts (or a run directory, or a folder of artifacts) in, a report out."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..artifact import MANIFEST_NAME, ManifestError, load_manifest, now_iso
from ..models import CheckpointError, count_macs, count_parameters, load_source
from ..rundir import is_model_source
from ..runtime import RUNNERS
from ..utils.cpu import bf16_unavailable_reason
from .floors import apply_floors, measure_floors_in_subprocess
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
    precision: str | None = None  # a runtime precision option (bf16); None: the artifact's own


def discover(paths: list[str | os.PathLike]) -> list[Item]:
    """Run directories / weights files (the PyTorch row), artifact folders or manifests, and folders
    holding artifact folders (e.g. everything ``edgeinc export`` wrote for one run)."""
    items: list[Item] = []
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            raise BenchError(f"{path}: no such artifact, run directory or folder")
        if is_model_source(path):
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


def _runs_for(fmt: str, artifact_precision: str, backends: dict[str, list[str]] | None, bf16: bool) -> list[tuple[str, str | None]]:
    """(runtime, runtime precision option) pairs to measure an artifact with. ONNX artifacts run in ONNX
    Runtime and in OpenVINO (the fastest INT8 path on x86 CPUs here); fp32 artifacts also in bf16 in
    the runtimes that offer it (OpenVINO, PyTorch autocast)."""
    default = {"onnx": ["onnxruntime", "openvino"], "tflite": ["litert"], "tensorrt": ["tensorrt"], "torch": ["torch"],
               "executorch": ["executorch"]}
    runs: list[tuple[str, str | None]] = []
    for backend in (backends or default).get(fmt, default.get(fmt, [])):
        runs.append((backend, None))
        if bf16 and artifact_precision == "fp32" and "bf16" in RUNNERS.meta(backend).runtime_precisions:
            runs.append((backend, "bf16"))
    return runs


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
        artifact=str(folder), variant=manifest.model.variant, format=manifest.format, backend=backend,
        precision=manifest.precision, status="ok", size_mb=manifest.artifact_bytes / 1e6,
        params=manifest.model.parameters, macs=manifest.model.multiply_adds,
        sha256=manifest.artifact_sha256, parent_sha256=manifest.source.sha256,
    )
    if manifest.status != "ok":  # e.g. a TensorRT-ready ONNX whose engine is still to be built
        why = manifest.engine.not_built_because if manifest.engine else manifest.conversion.notes
        row.status, row.reason = "export failed", f"manifest status {manifest.status!r}: {why}"
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


def _measure_with_retries(spec: MeasureSpec, timeout: float | None, retries: int, progress: Any) -> dict[str, Any]:
    """Measure; while a batch size was contended and retries are left, measure again. Keeps the result
    whose worst batch was least contended."""
    best = measure_in_subprocess(spec, timeout=timeout)
    for attempt in range(retries):
        if not best["ok"] or not any(lat.get("contended") for lat in best["latency"].values()):
            break
        if progress:
            progress(f"  contended (others took {_worst_share(best):.0%} of the cores): measuring again ({attempt + 1}/{retries})")
        again = measure_in_subprocess(spec, timeout=timeout)
        if again["ok"] and _worst_share(again) < _worst_share(best):
            best = again
    return best


def _worst_share(result: dict[str, Any]) -> float:
    return max((lat.get("other_cpu_share") or 0.0) for lat in result["latency"].values())


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
    bf16: bool = True,
    flush_denormals: bool = True,
    retry_contended: int = 0,
    floors: bool = False,
    progress: Any = None,
) -> BenchReport:
    """Measure every artifact x runtime x batch size; write Markdown, JSON, CSV and a PNG plot to ``out``.

    ``data``: an ImageNet-layout split (class folders) scored with a single central crop.
    ``export``: first export every run directory / weights file to every target and precision.
    ``backends``: format -> runtimes to use (default: onnx -> ONNX Runtime and OpenVINO).
    ``bf16``: also run fp32 artifacts in bf16 where a runtime offers it (rows skipped, with the reason,
    on CPUs without native bf16). Every row records the precision the runtime executed, read back from it.
    ``flush_denormals``: runners treat denormals as zero (the default). ``retry_contended``: measure a
    row again (up to N times) when other processes took a meaningful share of its cores; the least
    contended measurement is kept. ``floors``: measure this CPU's compute floors and add floor columns."""
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
        if item.kind == "checkpoint":
            fmt, artifact_precision = "torch", "fp32"
        else:
            manifest = load_manifest(item.path, verify=False)[0]
            fmt, artifact_precision = manifest.format, manifest.precision
        for backend, precision in _runs_for(fmt, artifact_precision, backends, bf16):
            row, labels = _base_row(item, backend)
            _check_data(data, labels, str(item.path))
            if precision is not None:
                row.precision = precision
                if row.status == "ok" and (why := bf16_unavailable_reason()) is not None:
                    row.status, row.reason = "skipped", why
            plan.append((Item(item.path, item.kind, backend, precision), row))

    for i, (item, base) in enumerate(plan):
        if progress:
            progress(f"[{i + 1}/{len(plan)}] {item.path} ({base.label})")
        if base.status != "ok":
            rows.append(base)
            continue
        spec = MeasureSpec(str(item.path), item.backend, tuple(batches), threads, warmup, runs, min_time, data, max_images,
                           precision=item.precision, flush_denormals=flush_denormals)
        result = _measure_with_retries(spec, timeout, retry_contended, progress)
        if not result["ok"]:
            rows.append(base.model_copy(update={"status": "run failed", "reason": result["error"]}))
            continue
        accuracy = result.get("accuracy") or {}
        executed = result["executed"]
        denormals = {True: "flushed", False: "kept", None: "runtime default"}[result["flush_denormals"]]
        for batch in batches:
            lat = result["latency"][batch]
            rows.append(base.model_copy(update={
                "backend": result["backend"], "batch": batch, "threads": threads, "peak_mem_mb": result["peak_mem_mb"],
                "precision": result["precision"], "executed": executed["summary"], "executed_ops": executed["ops"],
                "denormals": denormals,
                "top1": accuracy.get("top1"), "top5": accuracy.get("top5"), "images_scored": accuracy.get("images_scored"),
                "mean_ms": lat["mean_ms"], "p50_ms": lat["p50_ms"], "p90_ms": lat["p90_ms"], "p99_ms": lat["p99_ms"],
                "images_per_s": lat["images_per_s"], "runs": lat["runs"],
                "other_cpu_share": lat.get("other_cpu_share"), "contended": lat.get("contended"),
            }))
    floor_info = None
    if floors:
        if progress:
            progress("measuring the compute floors (the best conv / GEMM kernel per precision)")
        measured = measure_floors_in_subprocess(threads, timeout)
        if measured is not None:
            apply_floors(rows, measured)
            floor_info = measured.to_dict()
    compute_deltas(rows)
    header = {
        "machine": machine_info(), "machine_label": "this machine", "threads": threads, "batches": list(batches),
        "warmup": warmup, "runs": runs, "min_time": min_time, "data": data, "created": now_iso(),
        "flush_denormals": flush_denormals, "pinned": True, "retry_contended": retry_contended, "floors": floor_info,
    }
    report = BenchReport(rows, header)
    if merge:
        merge_into(report, list(merge))
    if out is not None:
        report.write(out)
    return report
