"""Token reduction: HiRED (high-resolution token budget), EViT (in-encoder dropping), ToMe (merging).

Each method is pure tensor functions plus ``apply(model, cfg)`` / ``remove(model)`` on a vitkit ViT
or CLIP; attention is read only through the CLS-row read-out (and ToMe's kept keys).
"""

from . import evit, hired, tome
from .evit import EViTConfig
from .hired import HiREDConfig
from .partitions import TokenSet, encode_partitions, partition
from .tome import ToMeConfig

__all__ = ["EViTConfig", "HiREDConfig", "ToMeConfig", "TokenSet", "encode_partitions", "evit", "hired",
           "partition", "tome"]
