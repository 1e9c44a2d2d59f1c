"""Training and fine-tuning SAM with the paper's interactive recipe (`samflow train CONFIG.yaml`)."""

from samflow.train.config import DataConfig, TrainConfig, load_train_config
from samflow.train.loop import TrainResult, export_weights, interactive_loss, train

__all__ = ["DataConfig", "TrainConfig", "TrainResult", "export_weights", "interactive_loss", "load_train_config",
           "train"]
