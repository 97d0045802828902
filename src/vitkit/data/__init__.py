"""Image decoding and preprocessing."""

from vitkit.data.images import ImageDecodeError, load_image
from vitkit.data.transforms import PreprocessConfig, preprocess, preprocess_batch

__all__ = ["ImageDecodeError", "PreprocessConfig", "load_image", "preprocess", "preprocess_batch"]
