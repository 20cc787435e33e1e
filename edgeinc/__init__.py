"""edgeinc: Inception-v3 and its low-resolution variants, from a training recipe to the edge device."""

import importlib

__version__ = "0.1.0"

__all__ = ["__version__", "create_model", "list_models"]


def __getattr__(name: str):
    # Everything loads on first use, so that `edgeinc --version` and the CLI's argument parsing do not
    # import PyTorch: ``edgeinc.create_model``, ``edgeinc.export(...)`` and ``edgeinc.train(...)``
    # (callable modules), ``edgeinc.runtime``, ``edgeinc.detect``.
    if name in ("create_model", "list_models"):
        return getattr(importlib.import_module(".models", __name__), name)
    if name in ("export", "runtime", "train", "detect", "bench"):
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
