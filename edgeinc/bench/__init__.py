"""Benchmarks: latency, parameters, multiply-adds, size and accuracy of every artifact, beside the
paper's single-crop baselines. ``bench(paths, ...)`` is the API; ``edgeinc bench`` the CLI."""

from .baselines import Baseline, paper_baselines
from .core import BenchError, bench, discover
from .machine import machine_info
from .report import SCHEMA, BenchFileError, BenchReport, BenchRow, merge_into, pareto_front, read_bench_json
from .timing import LatencyStats, measure_latency, summarize_latencies

__all__ = [
    "SCHEMA", "Baseline", "BenchError", "BenchFileError", "BenchReport", "BenchRow", "LatencyStats", "bench",
    "discover", "machine_info", "measure_latency", "merge_into", "paper_baselines", "pareto_front",
    "read_bench_json", "summarize_latencies",
]
