"""Self-supervised pretraining of vitkit's ViT: MAE and FSFM with region-guided (CRFR-P) masking."""

from .fsfm import FSFM, FSFMConfig, attach_ema, ema_momentum
from .mae import MAE, MAEConfig, encode_visible, masked_mse, patch_targets, patchify, visible_only
from .masking import crfr_p_mask, mask_to_ids, patch_regions, random_mask

__all__ = [
    "FSFM",
    "FSFMConfig",
    "MAE",
    "MAEConfig",
    "attach_ema",
    "crfr_p_mask",
    "ema_momentum",
    "encode_visible",
    "mask_to_ids",
    "masked_mse",
    "patch_regions",
    "patch_targets",
    "patchify",
    "random_mask",
    "visible_only",
]
