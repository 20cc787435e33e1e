"""Export: a checkpoint to ONNX, TFLite or TensorRT in fp32/fp16/int8, with a manifest.json and
parity checks. ``edgeinc.export(source, target, precision, ...)`` is the API (this module is callable:
it is ``edgeinc.export.export``); ``edgeinc export`` the CLI."""

import sys
import types

from .base import PRECISIONS, TARGETS, ExportError, ParityError, TensorRTUnavailableError, check_target
from .core import ExportResult, export
from .manifest import MANIFEST_NAME, Manifest, ManifestError, load_manifest

__all__ = [
    "MANIFEST_NAME", "PRECISIONS", "TARGETS", "ExportError", "ExportResult", "Manifest", "ManifestError",
    "ParityError", "TensorRTUnavailableError", "check_target", "export", "load_manifest",
]


class _CallableModule(types.ModuleType):
    def __call__(self, *args, **kwargs) -> ExportResult:
        return export(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
