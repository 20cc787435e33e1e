"""Export: a checkpoint to ONNX, TFLite or TensorRT in fp32/fp16/int8, with a manifest.json and
parity checks. ``edgeinc.export(source, target, precision, ...)`` is the API (this module is callable:
it is ``edgeinc.export.export``); ``edgeinc export`` the CLI.

The targets' names and what they support load without PyTorch or ONNX (the CLI offers them as
choices); ``export`` itself, and each target, load on first use."""

import importlib
import sys
import types

from ..artifact import MANIFEST_NAME, Manifest, ManifestError, Precision, load_manifest
from ..scoring import ParityError
from .base import TARGETS, ExportError, ExportOptions, TensorRTUnavailableError, check_target

__all__ = [
    "MANIFEST_NAME", "TARGETS", "ExportError", "ExportOptions", "ExportResult", "Manifest", "ManifestError",
    "ParityError", "Precision", "TensorRTUnavailableError", "check_target", "export", "load_manifest",
]


class _CallableModule(types.ModuleType):
    def __call__(self, *args, **kwargs):
        return self.export(*args, **kwargs)

    def __getattr__(self, name: str):
        if name in ("export", "ExportResult"):
            return getattr(importlib.import_module(".core", __name__), name)
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


sys.modules[__name__].__class__ = _CallableModule
