"""Named architectures: ``create_model(name, pretrained=False | path)``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from .clip import CLIP, CLIPConfig, TextConfig
from .hybrid import HybridCNNTransformer, HybridConfig
from .visiongru import VisionGRU, VisionGRUConfig
from .vit import VisionTransformer, ViTConfig

_IMAGENET = dict(family="vit")
_DINO = dict(patch_size=14, img_size=518, layer_scale=True, layer_scale_init=1.0, family="dinov2")
_CLIP_V = dict(pre_norm=True, patch_bias=False, act="quick_gelu", norm_eps=1e-5, family="clip")

# name → ViTConfig kwargs (vision models) or ("clip", vision kwargs, text kwargs)
_VIT: dict[str, dict[str, Any]] = {
    "vit_test": dict(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=4, num_classes=10),
    "vit_tiny_patch16_224": dict(embed_dim=192, depth=12, num_heads=3, **_IMAGENET),
    "vit_small_patch16_224": dict(embed_dim=384, depth=12, num_heads=6, **_IMAGENET),
    "vit_base_patch16_224": dict(embed_dim=768, depth=12, num_heads=12, **_IMAGENET),
    "vit_base_patch32_224": dict(patch_size=32, embed_dim=768, depth=12, num_heads=12, **_IMAGENET),
    "vit_large_patch16_224": dict(embed_dim=1024, depth=24, num_heads=16, **_IMAGENET),
    "deit_tiny_distilled_patch16_224": dict(embed_dim=192, depth=12, num_heads=3, dist_token=True, family="deit"),
    "deit_small_distilled_patch16_224": dict(embed_dim=384, depth=12, num_heads=6, dist_token=True, family="deit"),
    "deit_base_distilled_patch16_224": dict(embed_dim=768, depth=12, num_heads=12, dist_token=True, family="deit"),
    "dinov2_vits14": dict(embed_dim=384, depth=12, num_heads=6, **_DINO),
    "dinov2_vitb14": dict(embed_dim=768, depth=12, num_heads=12, **_DINO),
    "dinov2_vitl14": dict(embed_dim=1024, depth=24, num_heads=16, **_DINO),
    "dinov2_vits14_reg": dict(embed_dim=384, depth=12, num_heads=6, num_reg_tokens=4, pos_antialias=True, **_DINO),
    "dinov2_vitb14_reg": dict(embed_dim=768, depth=12, num_heads=12, num_reg_tokens=4, pos_antialias=True, **_DINO),
}
_CLIP: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "clip_test": (
        dict(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=4, proj_dim=32, **_CLIP_V),
        dict(vocab_size=49408, context_length=16, width=32, depth=2, num_heads=4, proj_dim=32),
    ),
    "clip_vit_b32": (
        dict(patch_size=32, embed_dim=768, depth=12, num_heads=12, proj_dim=512, **_CLIP_V),
        dict(width=512, depth=12, num_heads=8, proj_dim=512),
    ),
    "clip_vit_b16": (
        dict(patch_size=16, embed_dim=768, depth=12, num_heads=12, proj_dim=512, **_CLIP_V),
        dict(width=512, depth=12, num_heads=8, proj_dim=512),
    ),
    "clip_vit_l14": (
        dict(patch_size=14, embed_dim=1024, depth=24, num_heads=16, proj_dim=768, **_CLIP_V),
        dict(width=768, depth=12, num_heads=12, proj_dim=768),
    ),
}

# name → VisionGRUConfig kwargs; micro has the parameter count of vit_tiny_patch16_224 (5.5 M, for comparisons)
_GRU: dict[str, dict[str, Any]] = {
    "visiongru_test": dict(img_size=32, dims=(16, 32, 48, 64), depths=(1, 1, 1, 1), num_classes=10),
    "visiongru_nano": dict(dims=(24, 48, 96, 192), depths=(2, 2, 6, 2)),  # 2.9 M
    "visiongru_micro": dict(dims=(32, 64, 128, 256), depths=(2, 2, 7, 2)),  # 5.5 M
    "visiongru_tiny": dict(dims=(72, 144, 288, 576), depths=(2, 2, 8, 2)),  # 29.6 M, the paper's Ti
}


# the evidence-map CNN-Transformer (models/hybrid.py); stride = stem_stride · 2^(stages − 1)
_HYBRID: dict[str, dict[str, Any]] = {
    "hybrid_test": dict(img_size=32, trunk_widths=(8, 16), trunk_depths=(1, 1), dim=32, depth=1, num_heads=2,
                        window=4, num_classes=10),
    "hybrid_resnet_small_224": dict(trunk_widths=(64, 128, 256), trunk_depths=(2, 2, 2), dim=256, depth=2,
                                    num_heads=8, window=8),
    # the paper's BagNet variant in spirit: a 19-px receptive field (the ResNet stack's: 103 px), window 10
    "hybrid_bagnet_small_224": dict(trunk_widths=(64, 128, 256), trunk_depths=(2, 2, 2), dim=256, depth=2,
                                    num_heads=8, window=10, trunk="bagnet"),
}


def list_models() -> list[str]:
    return sorted({**_VIT, **_HYBRID, **_GRU}) + sorted(_CLIP)


def model_config(name: str, **overrides) -> ViTConfig | CLIPConfig | HybridConfig | VisionGRUConfig:
    if name in _VIT:
        return ViTConfig(**{**_VIT[name], **overrides})
    if name in _HYBRID:
        return HybridConfig(**{**_HYBRID[name], **overrides})
    if name in _GRU:
        return VisionGRUConfig(**{**_GRU[name], **overrides})
    if name in _CLIP:
        v, t = _CLIP[name]
        return CLIPConfig(ViTConfig(**{**v, **overrides.pop("vision", {})}), TextConfig(**{**t, **overrides.pop("text", {})}))
    raise ValueError(f"unknown model {name!r}; available: {', '.join(list_models())}")


def create_model(name: str, pretrained: bool | str | Path = False, **overrides) -> nn.Module:
    """A registry model, randomly initialised, or with weights from ``pretrained`` (a checkpoint path).

    vitkit ships no weights and downloads none by name: ``pretrained=True`` raises and says how to load.
    """
    if pretrained is True:
        raise ValueError(
            f"vitkit ships no weights for {name!r}: pass pretrained=PATH (a local checkpoint) or use "
            "vitkit.load('hf-hub:org/name') to download one explicitly"
        )
    cfg = model_config(name, **overrides)
    if isinstance(cfg, CLIPConfig):
        model: nn.Module = CLIP(cfg)
    elif isinstance(cfg, HybridConfig):
        model = HybridCNNTransformer(cfg)
    elif isinstance(cfg, VisionGRUConfig):
        model = VisionGRU(cfg)
    else:
        model = VisionTransformer(cfg)
    from ..weights.load import default_preprocess, load_into, read_checkpoint

    size = (cfg.vision if isinstance(cfg, CLIPConfig) else cfg).img_size
    model.preprocess = default_preprocess(cfg, size)
    if pretrained:
        sd = read_checkpoint(pretrained)[2]
        load_into(model, sd, str(pretrained))
    return model
