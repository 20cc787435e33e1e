"""Training the paper's way (section 8): recipe -> run directory; evaluation with single or multi-crop.

``edgeinc.train(recipe, overrides, out=..., resume=...)`` is ``edgeinc.train.train``."""

import sys
import types

from .evaluate import CROP_SCHEMES, EvalResult, MultiCrop, evaluate
from .loop import TrainingError, TrainResult, train
from .optim import LRSchedule, build_optimizer, scaled_lr

__all__ = [
    "CROP_SCHEMES", "EvalResult", "LRSchedule", "MultiCrop", "TrainResult", "TrainingError",
    "build_optimizer", "evaluate", "scaled_lr", "train",
]


class _CallableModule(types.ModuleType):
    def __call__(self, *args, **kwargs) -> TrainResult:
        return train(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
