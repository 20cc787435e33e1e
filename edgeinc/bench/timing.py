"""Latency measurement done right: warm-up, enough runs for stable percentiles, and synchronisation
for asynchronous runtimes (the runner's ``synchronize``)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class LatencyStats:
    runs: int
    batch: int
    mean_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    min_ms: float
    images_per_s: float  # batch / mean latency

    def to_dict(self) -> dict:
        return asdict(self)


def summarize_latencies(seconds: list[float] | np.ndarray, batch: int) -> LatencyStats:
    ms = np.asarray(seconds, dtype=np.float64) * 1e3
    if ms.size == 0:
        raise ValueError("no timed runs")
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    mean = float(ms.mean())
    return LatencyStats(
        runs=int(ms.size), batch=batch, mean_ms=mean, p50_ms=float(p50), p90_ms=float(p90),
        p99_ms=float(p99), min_ms=float(ms.min()), images_per_s=batch / (mean / 1e3),
    )


def measure_latency(
    run: Callable[[], object],
    batch: int,
    warmup: int = 5,
    runs: int | None = None,
    min_time: float = 3.0,
    min_runs: int = 10,
    max_runs: int = 10_000,
    synchronize: Callable[[], None] | None = None,
) -> LatencyStats:
    """Time ``run()`` after ``warmup`` calls: exactly ``runs`` times, or else until ``min_time``
    seconds have passed and at least ``min_runs`` runs were made (so p99 means something)."""
    if warmup < 0 or (runs is not None and runs < 1):
        raise ValueError("warmup must be >= 0 and runs >= 1")
    sync = synchronize or (lambda: None)
    for _ in range(warmup):
        run()
    sync()
    times: list[float] = []
    start = time.perf_counter()
    while True:
        t0 = time.perf_counter()
        run()
        sync()
        times.append(time.perf_counter() - t0)
        if runs is not None:
            if len(times) >= runs:
                break
        elif (len(times) >= min_runs and time.perf_counter() - start >= min_time) or len(times) >= max_runs:
            break
    return summarize_latencies(times, batch)
