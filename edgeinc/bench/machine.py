"""The header every benchmark result carries: machine, OS, library versions."""

from __future__ import annotations

import importlib.metadata
import os
import platform
from functools import cache

# CPU features that decide which kernels run (INT8 gains much with VNNI / Arm dot-product, little without).
_INTERESTING_FLAGS = (
    "sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni",
    "avx512_bf16", "amx_int8", "amx_bf16", "neon", "asimd", "asimddp", "i8mm", "sve", "bf16",
)
LIBRARIES = (
    "edgeinc", "torch", "torchvision", "numpy", "onnx", "onnxruntime", "onnxslim", "nncf", "onnx2tf",
    "tensorflow-cpu", "ai-edge-litert", "tflite-runtime", "openvino", "tensorrt", "timm",
)


def _cpuinfo() -> dict[str, str]:
    info: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key in ("model name", "flags", "Features", "Hardware", "CPU part") and key not in info:
                    info[key] = value.strip()
    except OSError:
        pass
    return info


def cpu_flags() -> list[str]:
    info = _cpuinfo()
    flags = set((info.get("flags") or info.get("Features") or "").split())
    return [f for f in _INTERESTING_FLAGS if f in flags]


def library_versions() -> dict[str, str]:
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def gpu_name() -> str | None:
    try:
        import torch

        if torch.cuda.is_available():
            return torch.cuda.get_device_name(0)
    except Exception:  # a broken CUDA install must not stop a CPU benchmark
        return None
    return None


@cache
def machine_info() -> dict:
    info = _cpuinfo()
    return {
        "cpu": info.get("model name") or info.get("Hardware") or platform.processor() or platform.machine(),
        "arch": platform.machine(),
        "cpu_flags": cpu_flags(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "gpu": gpu_name(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "libraries": library_versions(),
    }


def describe(info: dict | None = None) -> str:
    """One Markdown paragraph for report headers."""
    info = info or machine_info()
    libs = ", ".join(f"{k} {v}" for k, v in info["libraries"].items())
    return (
        f"**Machine:** {info['cpu']} ({info['arch']}, {info['usable_cpus']} usable CPUs; "
        f"flags: {' '.join(info['cpu_flags']) or 'n/a'}); GPU: {info['gpu'] or 'none'}; {info['os']}; "
        f"Python {info['python']}.  \n**Libraries:** {libs}."
    )
