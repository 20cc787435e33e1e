"""What this CPU can execute natively, from its flags: the kernels a runtime picks depend on it.

The CPU under this project changes from machine to machine (AVX2 only; AVX-512 with VNNI; with
avx512_bf16 or AMX), so precisions and tolerances are chosen from these facts, never assumed.
"""

from __future__ import annotations

import os
import platform
from functools import cache

# Flags that decide which kernels run (INT8 gains much with VNNI / Arm dot-product, little without).
INTERESTING_FLAGS = (
    "sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni",
    "avx512_bf16", "avx512_fp16", "amx_tile", "amx_int8", "amx_bf16", "neon", "asimd", "asimddp", "i8mm",
    "sve", "sme", "sme2", "bf16",
)
# Native bfloat16 arithmetic: x86 AVX-512 BF16 / AMX, Arm's BF16 extension.
BF16_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")


@cache
def cpuinfo() -> dict[str, str]:
    """The first value of each interesting key of /proc/cpuinfo (empty off Linux)."""
    info: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key in ("model name", "flags", "Features", "Hardware", "CPU part", "cpu MHz") and key not in info:
                    info[key] = value.strip()
    except OSError:
        pass
    return info


@cache
def all_flags() -> frozenset[str]:
    info = cpuinfo()
    return frozenset((info.get("flags") or info.get("Features") or "").split())


def cpu_flags() -> list[str]:
    """The interesting flags this CPU has, in a fixed order."""
    flags = all_flags()
    return [f for f in INTERESTING_FLAGS if f in flags]


def has_native_bf16() -> bool:
    return any(f in all_flags() for f in BF16_FLAGS)


def bf16_unavailable_reason() -> str | None:
    """None where bf16 runs natively here, else why a bf16 row is skipped."""
    if has_native_bf16():
        return None
    return f"this CPU has no native bfloat16 ({' / '.join(BF16_FLAGS)} not among its flags)"


def cpu_class() -> str:
    """A short name for the kind of CPU, used to keep benchmark results per machine class:
    ``x86-avx2``, ``x86-avx512``, ``x86-avx512-vnni``, ``x86-avx512-vnni-bf16``, ``x86-amx``, ``arm64-...``."""
    flags = all_flags()
    arch = platform.machine()
    if arch in ("aarch64", "arm64"):
        parts = ["arm64"] + [f for f in ("asimddp", "i8mm", "bf16", "sve") if f in flags]
        return "-".join(parts)
    if "amx_tile" in flags:
        return "x86-amx"
    if "avx512f" in flags:
        parts = ["x86-avx512"] + [name for flag, name in (("avx512_vnni", "vnni"), ("avx512_bf16", "bf16")) if flag in flags]
        return "-".join(parts)
    if "avx2" in flags:
        return "x86-avx2" + ("-vnni" if "avx_vnni" in flags else "")
    return f"{arch}-baseline"


def usable_cpus() -> list[int]:
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
