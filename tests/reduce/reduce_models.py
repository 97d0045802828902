"""Tiny backbones for the token-reduction tests: plain ViT, DeiT/DINOv2-style prefixes, CLIP vision,
and a ViT whose qkv/proj are wrapped (as LoRA or quantization wrappers do)."""

from __future__ import annotations

import torch
from torch import nn

import vitkit
from vitkit.models.vit import VisionTransformer


class Wrapped(nn.Module):
    """A stand-in for a LoRA/quant wrapper: keeps ``base_layer``, adds a low-rank delta."""

    def __init__(self, base: nn.Linear) -> None:
        super().__init__()
        self.base_layer = base
        self.a = nn.Parameter(torch.randn(4, base.in_features) * 0.02)
        self.b = nn.Parameter(torch.randn(base.out_features, 4) * 0.02)

    def forward(self, x):
        return self.base_layer(x) + x @ self.a.t() @ self.b.t()


def wrap_linears(model: VisionTransformer) -> VisionTransformer:
    for blk in model.blocks:
        blk.attn.qkv = Wrapped(blk.attn.qkv)
        blk.attn.proj = Wrapped(blk.attn.proj)
    return model


def make(kind: str) -> nn.Module:
    torch.manual_seed(0)
    if kind == "vit":
        return VisionTransformer(img_size=32, patch_size=4, embed_dim=32, depth=3, num_heads=4, num_classes=5).eval()
    if kind == "prefix":  # DeiT distillation token + DINOv2 registers
        return VisionTransformer(img_size=32, patch_size=4, embed_dim=32, depth=3, num_heads=4, num_classes=5,
                                 dist_token=True, num_reg_tokens=2, layer_scale=True, layer_scale_init=0.5).eval()
    if kind == "clip":
        return vitkit.create_model("clip_test").eval()
    if kind == "wrapped":
        return wrap_linears(make("vit")).eval()
    raise KeyError(kind)


BACKBONES = ["vit", "prefix", "clip", "wrapped"]


def encode(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Final tokens (B, N, C) of the vision tower."""
    return getattr(model, "visual", model).forward_features(x)


def encode_with_state(model: nn.Module, x: torch.Tensor):
    """(final tokens (B, N, C), the forward's TokenState) of the vision tower."""
    return getattr(model, "visual", model).forward_features(x, return_state=True)


def image_for(model: nn.Module, batch: int = 2) -> torch.Tensor:
    vis = getattr(model, "visual", model)
    h, w = vis.cfg.img_size
    return torch.randn(batch, 3, h, w)
