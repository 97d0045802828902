"""Faithfulness and localisation metrics."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vitkit.explain.metrics import (
    auc,
    deletion_auc,
    energy_in_mask,
    gaussian_blur,
    insertion_auc,
    pointing_game,
    substrate,
)


class WeightedSum(nn.Module):
    """logit_k = Σ_pixels w · x (every class the same): a model whose true importance map is w."""

    def __init__(self, w: torch.Tensor) -> None:
        super().__init__()
        self.w = nn.Parameter(w)

    def forward(self, x):
        s = (x.mean(1) * self.w).sum(dim=(1, 2))
        return torch.stack([s, -s], 1)


@pytest.mark.parametrize("sub", ["blur", "mean"])
def test_deletion_of_a_perfect_map_beats_a_random_one(sub: str) -> None:
    torch.manual_seed(0)
    H = W = 16
    w = torch.zeros(H, W)
    w[4:8, 2:10] = 1.0  # only this region matters
    model = WeightedSum(w)
    x = torch.rand(3, 3, H, W) + 1.0  # positive pixels: removing important ones lowers the score
    if sub == "blur":
        x[:, :, 4:8, 2:10] += 2.0  # so that blurring the region changes it
    t = torch.zeros(3, dtype=torch.long)
    perfect = w.expand(3, H, W)
    rand = torch.rand(3, H, W)
    kw = dict(substrate=sub, step=8, score="logit")
    assert (deletion_auc(model, x, perfect, t, **kw) < deletion_auc(model, x, rand, t, **kw)).all()
    assert (insertion_auc(model, x, perfect, t, **kw) > insertion_auc(model, x, rand, t, **kw)).all()
    # a map on a coarser grid is upsampled: the same region at 4×4 still wins
    coarse = torch.zeros(3, 4, 4)
    coarse[:, 1, 0:3] = 1.0
    assert (deletion_auc(model, x, coarse, t, **kw) < deletion_auc(model, x, rand, t, **kw)).all()


def test_auc_and_substrates_by_hand() -> None:
    frac = torch.tensor([0.0, 0.5, 1.0])
    assert torch.allclose(auc(frac, torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])), torch.tensor([1.0, 0.25]))
    x = torch.full((1, 3, 9, 9), 0.7)
    assert torch.allclose(gaussian_blur(x, 2.0), x, atol=1e-6)  # a constant image is its own blur
    y = torch.rand(2, 3, 8, 8)
    assert torch.allclose(substrate(y, "mean"), y.mean(dim=(2, 3), keepdim=True).expand_as(y))
    b = substrate(y, "blur", blur_sigma=0.2)
    assert b.shape == y.shape and b.std() < y.std()
    with pytest.raises(ValueError, match="substrate"):
        substrate(y, "noise")
    # deleting everything at once: the curve goes from the image's score to the substrate's
    model = WeightedSum(torch.ones(8, 8))
    t = torch.zeros(2, dtype=torch.long)
    full = deletion_auc(model, y, torch.rand(2, 8, 8), t, substrate="mean", step=64, score="logit")
    start, end = model(y)[:, 0], model(substrate(y, "mean"))[:, 0]
    assert torch.allclose(full, (start + end) / 2, atol=1e-4)


def test_pointing_game_and_energy_by_hand() -> None:
    maps = torch.zeros(2, 4, 4)
    maps[0, 1, 1] = 1.0  # peak inside
    maps[1, 3, 3] = 1.0  # peak outside
    masks = torch.zeros(2, 4, 4, dtype=torch.bool)
    masks[:, 0:2, 0:2] = True
    assert pointing_game(maps, masks).tolist() == [True, False]
    assert pointing_game(maps, masks, tolerance=2).tolist() == [True, True]
    m = torch.zeros(1, 4, 4)
    m[0, 0, 0], m[0, 3, 3], m[0, 2, 2] = 3.0, 1.0, -5.0  # negative mass is ignored
    assert torch.allclose(energy_in_mask(m, masks[:1]), torch.tensor([0.75]))
    assert torch.allclose(energy_in_mask(torch.zeros(1, 4, 4), masks[:1]), torch.tensor([0.25]))  # no mass = area
    # maps on a coarser grid are upsampled to the mask
    coarse = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])
    big = torch.zeros(1, 8, 8, dtype=torch.bool)
    big[0, :4, :4] = True
    assert pointing_game(coarse, big).tolist() == [True]
    assert energy_in_mask(coarse, big)[0] > 0.5
