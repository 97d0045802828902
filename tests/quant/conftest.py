from __future__ import annotations

import pytest
import torch

from vitkit import VisionTransformer


@pytest.fixture()
def make_vit(one_thread):
    """Tiny ViT factory (32 px, patch 8, width 48, depth 2), weights ×5 so quantization errors show."""

    def make(**kw) -> VisionTransformer:
        torch.manual_seed(0)
        cfg = dict(img_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=3, num_classes=5)
        m = VisionTransformer(**(cfg | kw)).eval()
        with torch.no_grad():
            for p in m.parameters():
                if p.dim() >= 2:
                    p.mul_(5)
        return m

    return make


@pytest.fixture()
def vit(make_vit) -> VisionTransformer:
    return make_vit()


@pytest.fixture()
def images() -> torch.Tensor:
    return torch.randn(16, 3, 32, 32, generator=torch.Generator().manual_seed(1))
