"""Folding an input normalisation into the patch embedding is exact."""

from __future__ import annotations

import pytest
import torch

from vitkit.models.input_norm import fold_input_normalization, input_affine
from vitkit.models.vit import VisionTransformer

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@pytest.mark.parametrize("patch_bias", [True, False])
def test_fold_matches_normalising_the_input(patch_bias):
    torch.manual_seed(0)
    ref = VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2, patch_bias=patch_bias).eval()
    folded = VisionTransformer(ref.cfg).eval()
    folded.load_state_dict(ref.state_dict())
    fold_input_normalization(folded, MEAN, STD, input_range=(-1.0, 1.0))
    pixels = torch.rand(2, 3, 32, 32)
    normalised = (pixels - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    with torch.no_grad():
        err = (folded.forward_features(pixels * 2 - 1) - ref.forward_features(normalised)).abs().max().item()
    assert err < 1e-5


def test_input_affine_maps_the_range_ends():
    scale, shift = input_affine((0.5, 0.5, 0.5), (0.25, 0.25, 0.25), input_range=(-1.0, 1.0))
    assert torch.allclose(-1 * scale + shift, torch.full((3,), -2.0, dtype=torch.float64))  # pixel 0
    assert torch.allclose(1 * scale + shift, torch.full((3,), 2.0, dtype=torch.float64))  # pixel 1
    with pytest.raises(ValueError, match="input_range"):
        input_affine(MEAN, STD, input_range=(1.0, 1.0))
