"""Backbones: the Vision Transformer family and CLIP."""

from .attention import Attention
from .vit import Block, TokenState, VisionTransformer, ViTConfig

__all__ = ["Attention", "Block", "TokenState", "ViTConfig", "VisionTransformer"]
