"""Training engine: trainer, checkpoints, distributed helpers."""

from .trainer import TrainConfig, Trainer, TrainResult

__all__ = ["TrainConfig", "TrainResult", "Trainer"]
