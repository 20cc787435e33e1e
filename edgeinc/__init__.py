"""edgeinc: Inception-v3 and its low-resolution variants, from a training recipe to the edge device."""

__version__ = "0.1.0"

from .models import create_model, list_models  # noqa: E402

__all__ = ["__version__", "create_model", "list_models"]


def __getattr__(name: str):
    # Heavy subpackages load on first use: ``edgeinc.export(...)``, ``edgeinc.train(...)`` (callable
    # modules), ``edgeinc.runtime``.
    if name in ("export", "runtime", "train"):
        import importlib

        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
