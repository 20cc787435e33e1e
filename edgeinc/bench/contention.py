"""How much of the measured cores other processes used during a measurement (Linux /proc).

Another process busy on one of two cores made ONNX Runtime fp32 take 93 ms instead of 27 (its thread
pool waits on the slowed thread; issue 9), so every measurement records the CPU time others took on
the cores it ran on: the busy time of those cores in /proc/stat (user, nice, system, irq, softirq and
a VM's steal time) minus this process's own CPU time. A row is ``contended`` when others used more
than ``CONTENDED_SHARE`` of those cores' time; ``edgeinc bench --retry-contended N`` measures it again.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

CONTENDED_SHARE = 0.05  # of the measured cores' capacity: a daemon's blip stays below, a busy process does not
_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def pin_threads(threads: int) -> list[int] | None:
    """Restrict this process (and the thread pools it starts later) to ``threads`` of its usable
    CPUs; None where the OS does not allow it."""
    if not hasattr(os, "sched_setaffinity"):
        return None
    usable = sorted(os.sched_getaffinity(0))
    chosen = usable[: max(1, min(threads, len(usable)))]
    try:
        os.sched_setaffinity(0, chosen)
    except OSError:
        return None
    return chosen


def _busy_seconds(cpus: set[int] | None) -> float | None:
    """Busy time of ``cpus`` (all CPUs when None) since boot, from /proc/stat."""
    try:
        with open("/proc/stat") as f:
            lines = [line.split() for line in f if line.startswith("cpu")]
    except OSError:
        return None
    total = 0
    for fields in lines:
        name = fields[0]
        if (cpus is None and name == "cpu") or (cpus is not None and name != "cpu" and int(name[3:]) in cpus):
            user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[1:9])
            total += user + nice + system + irq + softirq + steal
    return total / _TICKS


def _own_seconds() -> float:
    t = os.times()
    return t.user + t.system


@dataclass(frozen=True)
class Contention:
    other_cpu_s: float  # CPU seconds others used on the measured cores
    wall_s: float
    cores: int

    @property
    def share(self) -> float:
        """Others' CPU time as a fraction of the measured cores' capacity over the measurement."""
        return max(0.0, self.other_cpu_s) / max(self.wall_s * self.cores, 1e-9)

    @property
    def contended(self) -> bool:
        return self.share > CONTENDED_SHARE


class CpuWatch:
    """``with CpuWatch(cpus) as watch: ...`` then ``watch.result`` (None where /proc is unreadable)."""

    def __init__(self, cpus: list[int] | None = None) -> None:
        self.cpus = set(cpus) if cpus else (set(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None)
        self.result: Contention | None = None

    def __enter__(self) -> CpuWatch:
        self._busy, self._own, self._wall = _busy_seconds(self.cpus), _own_seconds(), time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        busy = _busy_seconds(self.cpus)
        if busy is None or self._busy is None:
            return
        # Tick granularity (10 ms) can make the difference slightly negative on an idle machine.
        others = (busy - self._busy) - (_own_seconds() - self._own)
        cores = len(self.cpus) if self.cpus else (os.cpu_count() or 1)
        self.result = Contention(others, time.perf_counter() - self._wall, cores)
