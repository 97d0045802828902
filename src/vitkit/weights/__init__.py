"""Checkpoint formats → vitkit: Hugging Face, timm, open_clip converters and the universal loader."""

from .io import CheckpointError, read_state_dict, save_state_dict
from .load import load, load_into, read_checkpoint, save

__all__ = ["CheckpointError", "load", "load_into", "read_checkpoint", "read_state_dict", "save", "save_state_dict"]
