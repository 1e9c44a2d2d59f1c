"""Training and fine-tuning SAM with the paper's interactive recipe (`samflow train CONFIG.yaml`)."""

import sys
import types
from typing import Any

from samflow.train.config import DataConfig, TrainConfig, load_train_config
from samflow.train.loop import TrainResult, export_weights, interactive_loss, train

__all__ = ["DataConfig", "TrainConfig", "TrainResult", "export_weights", "interactive_loss", "load_train_config",
           "train"]


class _CallableModule(types.ModuleType):
    """`samflow.train(config)` has always run training; the package keeps that name callable."""

    def __call__(self, *args: Any, **kwargs: Any) -> TrainResult:
        return train(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
