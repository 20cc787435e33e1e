"""Training the paper's way (section 8): recipe -> run directory; evaluation with single or multi-crop.

``edgeinc.train(recipe, overrides, out=..., resume=...)`` is ``edgeinc.train.train``. The pieces: the
loop (trainer.py), checkpointing and the run directory's files (checkpoint.py), evaluation
(evaluate.py), what the user sees (monitor.py), the optimizer and schedule (optim.py), the data order
(sampling.py), processes and devices (distributed.py)."""

import sys
import types

from .checkpoint import TrainingError
from .evaluate import CROP_SCHEMES, EvalResult, MultiCrop, evaluate
from .optim import LRSchedule, build_optimizer, scaled_lr
from .setup import build_ema
from .trainer import TrainResult, train

__all__ = [
    "CROP_SCHEMES", "EvalResult", "LRSchedule", "MultiCrop", "TrainResult", "TrainingError",
    "build_ema", "build_optimizer", "evaluate", "scaled_lr", "train",
]


class _CallableModule(types.ModuleType):
    def __call__(self, *args, **kwargs) -> TrainResult:
        return train(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
