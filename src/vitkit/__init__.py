"""vitkit: one Vision Transformer backbone, fifteen methods that compose."""

from .models import VisionTransformer, ViTConfig
from .models.clip import CLIP, ZeroShotClassifier
from .models.registry import create_model, list_models
from .weights import load, save

__version__ = "0.1.0"
__all__ = [
    "CLIP",
    "VisionTransformer",
    "ViTConfig",
    "ZeroShotClassifier",
    "__version__",
    "create_model",
    "list_models",
    "load",
    "save",
]
