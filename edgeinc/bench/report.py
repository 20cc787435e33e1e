"""Benchmark rows and the report: deltas against each row's FP32 parent, Markdown / JSON / CSV, the
accuracy-latency plot with its Pareto front, and merging rows measured on devices."""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from ..utils.io import atomic_open, atomic_write_json, atomic_write_text
from .baselines import Baseline, paper_baselines
from .contention import CONTENDED_SHARE
from .machine import describe

SCHEMA = "edgeinc.bench/1"
Status = Literal["ok", "export failed", "run failed", "skipped"]


class BenchRow(BaseModel):
    """One artifact x batch size. A missing figure is None, and ``reason`` or the report's notes say why."""

    model_config = ConfigDict(extra="forbid")
    artifact: str
    variant: str | None = None
    format: str  # torch | onnx | tflite | tensorrt
    backend: str | None = None  # the runner: torch, onnxruntime, openvino, litert, tensorrt
    precision: str | None = None  # what the row asked for: the artifact's precision, or a runtime option (bf16)
    executed: str | None = None  # what the runtime's kernels ran, read back from it ("int8 66 + fp32 29")
    executed_ops: dict[str, int] | None = None  # conv / matmul layers by executed precision
    denormals: str | None = None  # "flushed" | "kept" | "runtime default" (no switch)
    batch: int | None = None
    status: Status
    reason: str | None = None
    size_mb: float | None = None
    params: int | None = None
    macs: int | None = None
    top1: float | None = None  # percent, single central crop on --data
    top5: float | None = None
    images_scored: int | None = None
    mean_ms: float | None = None
    p50_ms: float | None = None
    p90_ms: float | None = None
    p99_ms: float | None = None
    images_per_s: float | None = None
    runs: int | None = None
    peak_mem_mb: float | None = None
    threads: int | None = None
    other_cpu_share: float | None = None  # CPU time other processes took on the measured cores, fraction
    contended: bool | None = None  # other_cpu_share above edgeinc.bench.contention.CONTENDED_SHARE
    floor_ms: float | None = None  # multiply-adds x batch / the best kernel rate here for the executed precision
    vs_floor: float | None = None  # p50 / floor (>= 1 unless the measurement is wrong)
    below_floor: bool | None = None  # faster than the floor: a measurement error, flagged, ratio not shown
    emulated: bool | None = None  # measured under an emulator (e.g. aarch64 under qemu): not a device latency
    sha256: str | None = None
    parent_sha256: str | None = None  # the checkpoint this artifact was exported from
    machine: str = "this machine"  # where the row was measured (merged device rows name theirs)
    # against the row's FP32 parent (same checkpoint, batch and machine)
    parent: str | None = None
    top1_drop: float | None = None  # parent top-1 minus this top-1, points
    speedup: float | None = None  # parent mean latency / this mean latency
    size_ratio: float | None = None  # parent size / this size

    @property
    def label(self) -> str:
        return f"{self.format}/{self.backend or '-'} {self.precision or '-'}"


def _pick_parent(row: BenchRow, rows: list[BenchRow]) -> BenchRow | None:
    """The FP32 row of the same checkpoint, batch and machine: same format first, then ONNX Runtime's,
    then the PyTorch checkpoint's. FP32 artifacts compare with the checkpoint itself."""
    candidates = [
        r for r in rows
        if r is not row and r.status == "ok" and r.precision == "fp32" and r.parent_sha256 == row.parent_sha256
        and r.batch == row.batch and r.machine == row.machine and row.parent_sha256 is not None
    ]
    if row.precision == "fp32":
        order = [lambda r: r.format == "torch"]
    else:
        order = [
            lambda r: r.format == row.format and r.backend == row.backend,
            lambda r: r.format == row.format,
            lambda r: r.backend == "onnxruntime",
            lambda r: r.format == "torch",
        ]
    for wanted in order:
        for r in candidates:
            if wanted(r):
                return r
    return None


def compute_deltas(rows: list[BenchRow]) -> None:
    for row in rows:
        parent = _pick_parent(row, rows) if row.status == "ok" else None
        if parent is None:
            continue
        row.parent = parent.label
        if row.top1 is not None and parent.top1 is not None:
            row.top1_drop = parent.top1 - row.top1
        if row.mean_ms and parent.mean_ms:
            row.speedup = parent.mean_ms / row.mean_ms
        if row.size_mb and parent.size_mb:
            row.size_ratio = parent.size_mb / row.size_mb


def _fmt(value: Any, spec: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return format(value, spec or ".2f")
    if isinstance(value, int) and spec == ",":
        return format(value, ",")
    return str(value)


COLUMNS: list[tuple[str, str, str]] = [  # (header, field, format)
    ("variant", "variant", ""), ("format", "format", ""), ("runtime", "backend", ""), ("precision", "precision", ""),
    ("executed", "executed", ""), ("batch", "batch", ""), ("status", "status", ""), ("size MB", "size_mb", ".2f"),
    ("params", "params", ","), ("GMACs", "macs", "gmacs"), ("top-1 %", "top1", ".2f"), ("top-5 %", "top5", ".2f"),
    ("mean ms", "mean_ms", ".2f"), ("p50 ms", "p50_ms", ".2f"), ("p90 ms", "p90_ms", ".2f"),
    ("p99 ms", "p99_ms", ".2f"), ("img/s", "images_per_s", ".1f"), ("peak MB", "peak_mem_mb", ".0f"),
    ("threads", "threads", ""), ("others' CPU", "other_cpu_share", "share"), ("vs", "parent", ""),
    ("top-1 drop", "top1_drop", "+.2f"), ("speed-up", "speedup", ".2fx"), ("size ratio", "size_ratio", ".2fx"),
]
FLOOR_COLUMNS: list[tuple[str, str, str]] = [("floor ms", "floor_ms", ".2f"), ("p50 / floor", "vs_floor", "floor")]


def _cell(row: BenchRow, name: str, spec: str) -> str:
    if spec == "floor" and row.below_floor:
        return "below floor: measurement error"
    value = getattr(row, name)
    if value is None:
        return "-"
    if spec == "gmacs":
        return f"{value / 1e9:.2f}"
    if spec == "share":
        return f"{100 * value:.0f}%" + (" contended" if row.contended else "")
    if spec == "floor":
        return f"{value:.2f}x"
    if spec.endswith("x"):
        return f"{value:{spec[:-1]}}x"
    text = _fmt(value, spec)
    return f"{text} (emulated)" if name == "p50_ms" and row.emulated else text


def _floor_text(dtype: str, best: dict) -> str:
    return f"{dtype} {best['gmacs_per_s']:.1f} GMAC/s ({best['runtime']}, {best['kernel']})"


@dataclass
class BenchReport:
    rows: list[BenchRow]
    header: dict[str, Any]
    baselines: list[Baseline] = field(default_factory=paper_baselines)
    merged_headers: list[dict[str, Any]] = field(default_factory=list)
    files: dict[str, Path] = field(default_factory=dict)

    # -- outputs ------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "header": self.header,
            "rows": [r.model_dump() for r in self.rows],
            "baselines": [b.to_dict() for b in self.baselines],
            "merged": self.merged_headers,
        }

    def columns(self) -> list[tuple[str, str, str]]:
        merged = [("machine", "machine", "")] if self.merged_headers else []  # host and device rows apart
        return merged + COLUMNS + (FLOOR_COLUMNS if any(r.floor_ms is not None for r in self.rows) else [])

    def notes(self) -> list[str]:
        notes = []
        if not any(r.top1 is not None for r in self.rows):
            if self.header.get("data"):
                notes.append(f"top-1 / top-5: no row was scored on {self.header['data']} (every row failed or was skipped).")
            else:
                notes.append("top-1 / top-5: not measured (no `--data` folder given).")
        contended = [r for r in self.rows if r.contended]
        if contended:
            notes.append(f"{len(contended)} row(s) marked contended: other processes used more than "
                         f"{100 * CONTENDED_SHARE:.0f}% of the measured cores during them; their latencies are pessimistic.")
        if any(r.below_floor for r in self.rows):
            notes.append("A row faster than its compute floor is a measurement error (flagged, no ratio shown).")
        if any(r.emulated for r in self.rows):
            notes.append("Latencies marked (emulated) were measured under an emulator: not device figures.")
        for r in self.rows:
            if r.status != "ok":
                notes.append(f"{r.artifact} ({r.label}): {r.status}: {r.reason}")
        return notes

    def to_markdown(self) -> str:
        h = self.header
        out = [
            "# edgeinc benchmark",
            "",
            describe(h["machine"]),
            f"**Settings:** threads {h['threads']}, batch {', '.join(map(str, h['batches']))}, warm-up {h['warmup']}, "
            + (f"{h['runs']} runs" if h.get("runs") else f"at least {h['min_time']} s per measurement")
            + f"; accuracy: {h.get('data') or 'not measured'} (single central crop); denormals "
            + ("flushed to zero" if h.get("flush_denormals", True) else "kept")
            + ("; each measuring process pinned to its threads' CPUs" if h.get("pinned") else "")
            + f"; {h['created']}.",
            *([f"**Compute floors** (best kernel per precision here, {h['floors']['threads']} threads): "
               + "; ".join(_floor_text(d, f) for d, f in h["floors"]["best"].items())] if h.get("floors") else []),
            "",
            "| " + " | ".join(c[0] for c in self.columns()) + " |",
            "|" + "|".join("---" for _ in self.columns()) + "|",
        ]
        for row in self.rows:
            out.append("| " + " | ".join(_cell(row, name, spec) for _, name, spec in self.columns()) + " |")
        for merged in self.merged_headers:
            out.append("")
            out.append(f"Rows measured on **{merged['machine_label']}** (merged from {merged['file']}): {describe(merged['machine'])}")
        out += [
            "",
            "Published ImageNet figures (the paper's single-crop baselines and released checkpoints; not measured here):",
            "",
            "| variant | source | top-1 % | top-5 % | G ops (as published) |",
            "|---|---|---|---|---|",
        ]
        for b in self.baselines:
            out.append(f"| {b.variant} | {b.source} | {_fmt(b.top1)} | {_fmt(b.top5)} | {_fmt(b.gmacs, '.1f')} |")
        notes = self.notes()
        if notes:
            out += ["", "Notes:", *[f"- {n}" for n in notes]]
        return "\n".join(out) + "\n"

    def to_csv(self) -> str:
        buffer = io.StringIO()
        names = list(BenchRow.model_fields)
        writer = csv.DictWriter(buffer, fieldnames=names)
        writer.writeheader()
        for row in self.rows:
            writer.writerow(row.model_dump())
        return buffer.getvalue()

    def plot(self, path: str | os.PathLike) -> Path:
        """Accuracy against latency, one point per artifact (smallest batch), the Pareto front drawn.
        Without accuracy figures, size against latency, and the title says so."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        ok = [r for r in self.rows if r.status == "ok" and r.p50_ms is not None]
        smallest = min((r.batch for r in ok if r.batch), default=None)
        points = [r for r in ok if r.batch == smallest]
        have_acc = any(r.top1 is not None for r in points)
        y_of = (lambda r: r.top1) if have_acc else (lambda r: r.size_mb)
        points = [r for r in points if y_of(r) is not None]
        fig, ax = plt.subplots(figsize=(8, 5.5), dpi=120)
        for i, r in enumerate(sorted(points, key=lambda r: r.p50_ms)):
            ax.scatter(r.p50_ms, y_of(r), s=40)
            where = "" if r.machine == "this machine" else f" @{r.machine}"
            # alternate above/below so that neighbours' labels do not print over each other
            ax.annotate(f"{r.label}{where}", (r.p50_ms, y_of(r)), textcoords="offset points",
                        xytext=(4, 6 if i % 2 == 0 else -12), fontsize=7)
        front = pareto_front(points, y_of, higher_is_better=have_acc)
        if len(front) > 1:
            ax.step([r.p50_ms for r in front], [y_of(r) for r in front], where="post", color="tab:red",
                    linestyle="--", linewidth=1, label="Pareto front")
            ax.legend(loc="best")
        latencies = [r.p50_ms for r in points]
        if latencies and max(latencies) > 5 * min(latencies):
            ax.set_xscale("log")
        ax.set_xlabel(f"p50 latency, batch {smallest}, ms")
        ax.set_ylabel("top-1 % (single central crop)" if have_acc else "size MB")
        title = "accuracy vs latency" if have_acc else "size vs latency (no --data: accuracy not measured)"
        ax.set_title(f"edgeinc: {title}")
        ax.grid(True, alpha=0.3)
        fig.tight_layout()
        path = Path(path)
        with atomic_open(path, "wb") as f:
            fig.savefig(f, format="png")
        plt.close(fig)
        return path

    def write(self, out: str | os.PathLike) -> dict[str, Path]:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out / "bench.json", self.to_dict())
        atomic_write_text(out / "bench.csv", self.to_csv())
        atomic_write_text(out / "bench.md", self.to_markdown())
        files = {"json": out / "bench.json", "csv": out / "bench.csv", "markdown": out / "bench.md"}
        files["plot"] = self.plot(out / "bench.png")
        self.files = files
        return files


def pareto_front(points: list[BenchRow], y_of, higher_is_better: bool = True) -> list[BenchRow]:
    """Points that no other point beats on both latency (lower) and y, sorted by latency."""
    front: list[BenchRow] = []
    best = None
    for r in sorted(points, key=lambda r: (r.p50_ms, -y_of(r) if higher_is_better else y_of(r))):
        y = y_of(r)
        if best is None or (y > best if higher_is_better else y < best):
            front.append(r)
            best = y
    return front


class BenchFileError(ValueError):
    """A JSON file given to --merge that is not an edgeinc benchmark (names the file and the field)."""


def read_bench_json(path: str | os.PathLike) -> tuple[dict[str, Any], list[BenchRow]]:
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise BenchFileError(f"{path}: not a readable JSON file ({e})") from e
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise BenchFileError(f"{path}: field 'schema' must be {SCHEMA!r} (got {data.get('schema') if isinstance(data, dict) else type(data).__name__!r})")
    rows = []
    for i, raw in enumerate(data.get("rows", [])):
        try:
            rows.append(BenchRow.model_validate(raw))
        except ValidationError as e:
            first = e.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise BenchFileError(f"{path}: rows[{i}].{where}: {first['msg']}") from e
    return data.get("header", {}), rows


def merge_into(report: BenchReport, paths: list[str | os.PathLike]) -> None:
    """Fold rows measured elsewhere (deploy/edgeinc_device_bench.py, another machine) into ``report``."""
    for path in paths:
        header, rows = read_bench_json(path)
        machine = header.get("machine") or {}
        label = header.get("machine_label") or machine.get("cpu") or Path(path).stem
        for row in rows:
            if row.machine == "this machine":
                row.machine = label
            if header.get("emulated") and row.emulated is None:
                row.emulated = True  # files whose runner marks only the header
            row.parent = row.top1_drop = row.speedup = row.size_ratio = None
            report.rows.append(row)
        report.merged_headers.append({"file": str(path), "machine_label": label, "machine": machine or {
            "cpu": label, "arch": "?", "cpu_flags": [], "usable_cpus": "?", "gpu": None, "os": "?", "python": "?",
            "libraries": {}}})
    compute_deltas(report.rows)
