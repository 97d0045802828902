"""vitkit: one Vision Transformer backbone, fifteen methods that compose."""

# the `_`-aliased imports: the methods vitkit.load can re-apply file their restorers on import
from .adapt import lora as _lora  # noqa: F401
from .adapt import prompts as _prompts  # noqa: F401
from .models import VisionTransformer, ViTConfig
from .models.clip import CLIP, ZeroShotClassifier
from .models.registry import create_model, list_models
from .quant import int8 as _int8  # noqa: F401
from .quant import ptq as _ptq  # noqa: F401
from .reduce import evit as _evit  # noqa: F401
from .reduce import hired as _hired  # noqa: F401
from .reduce import tome as _tome  # noqa: F401
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
