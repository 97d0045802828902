"""Training engine: trainer, checkpoints, distributed helpers."""

from .trainer import TrainConfig, Trainer, TrainResult, model_device

__all__ = ["TrainConfig", "TrainResult", "Trainer", "model_device"]
