"""The header every benchmark result carries: machine, OS, library versions."""

from __future__ import annotations

import importlib.metadata
import os
import platform
from functools import cache

from ..utils.cpu import cpu_class, cpu_flags, cpuinfo, usable_cpus

LIBRARIES = (
    "edgeinc", "torch", "torchvision", "numpy", "onnx", "onnxruntime", "onnxslim", "nncf", "onnx2tf",
    "tensorflow-cpu", "ai-edge-litert", "tflite-runtime", "openvino", "tensorrt", "timm",
)


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
    info = cpuinfo()
    return {
        "cpu": info.get("model name") or info.get("Hardware") or platform.processor() or platform.machine(),
        "arch": platform.machine(),
        "cpu_class": cpu_class(),
        "cpu_flags": cpu_flags(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": len(usable_cpus()),
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
        f"**Machine:** {info['cpu']} ({info['arch']}, class {info.get('cpu_class', '?')}, {info['usable_cpus']} usable CPUs; "
        f"flags: {' '.join(info['cpu_flags']) or 'n/a'}); GPU: {info['gpu'] or 'none'}; {info['os']}; "
        f"Python {info['python']}.  \n**Libraries:** {libs}."
    )
