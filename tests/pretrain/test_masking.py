"""CRFR-P and random masking: exact ratio, region coverage, index bookkeeping."""

import pytest
import torch

from vitkit.pretrain.masking import (
    crfr_p_mask,
    crfr_p_mask_one,
    dominant_region,
    mask_to_ids,
    num_masked,
    patch_regions,
    random_mask,
)


def region_map(seed: int, size: int = 32) -> torch.Tensor:
    """Rectangles of ids 1..5 on background 0, random sizes (some larger than the 75% budget)."""
    g = torch.Generator().manual_seed(seed)
    m = torch.zeros(size, size, dtype=torch.long)
    for r in range(1, 6):
        y0, x0 = torch.randint(0, size - 4, (2,), generator=g).tolist()
        h, w = torch.randint(2, size, (2,), generator=g).tolist()
        m[y0:y0 + h, x0:x0 + w] = r
    return m


def test_patch_regions_touch_by_any_pixel():
    m = torch.zeros(8, 8, dtype=torch.long)
    m[3, 3] = 2  # one pixel inside patch (0, 0) of a 4-px grid
    m[4:8, 4:8] = 1
    t = patch_regions(m, 4)  # (1, 3, 4)
    assert t.shape == (1, 3, 4)
    assert t[0, 2].tolist() == [True, False, False, False]
    assert t[0, 1].tolist() == [False, False, False, True]
    assert t[0, 0].tolist() == [True, True, True, False]
    assert dominant_region(m, 4, 3)[0].tolist() == [0, 0, 0, 1]


@pytest.mark.parametrize("ratio", [0.75, 0.5, 0.3])
@pytest.mark.parametrize("seed", range(12))
def test_crfr_p_exact_ratio_and_covers_chosen_region(seed, ratio):
    m = region_map(seed)
    patch = 4
    touches = patch_regions(m, patch)[0]
    dom = dominant_region(m, patch, touches.shape[0])[0]
    g = torch.Generator().manual_seed(seed)
    N = touches.shape[1]
    k = num_masked(N, ratio)
    for chosen in touches.any(1).nonzero().flatten().tolist():
        mask, region, c = crfr_p_mask_one(touches, dom, ratio, chosen=chosen, generator=g)
        assert c == chosen
        assert int(mask.sum()) == k  # exactly the ratio
        assert torch.equal(region, touches[chosen])
        n_region = int(region.sum())
        if n_region <= k:
            assert bool(mask[region].all())  # every patch touching the chosen region is masked
        else:
            assert int((mask & region).sum()) == k and not bool((mask & ~region).any())  # unmask part of it


def test_crfr_p_other_regions_masked_in_proportion():
    # region 1 = left 2 columns of patches, region 2 = next 6 columns, region 3 = last 8: a 16×16 grid
    m = torch.zeros(64, 64, dtype=torch.long)
    m[:, :8], m[:, 8:32], m[:, 32:] = 1, 2, 3
    touches, dom = patch_regions(m, 4)[0], dominant_region(m, 4, 4)[0]
    mask, region, _ = crfr_p_mask_one(touches, dom, 0.5, chosen=1, generator=torch.Generator().manual_seed(0))
    # budget 128: region 1 (32 patches) whole, then 96 of the other 224 patches at the same share
    share = 96 / 224
    grid = mask.view(16, 16)
    assert int(grid[:, :2].sum()) == 32
    assert abs(int(grid[:, 2:8].sum()) - share * 96) <= 2
    assert abs(int(grid[:, 8:].sum()) - share * 128) <= 2


def test_crfr_p_batch_and_default_choice_skips_background():
    maps = torch.stack([region_map(s) for s in range(4)])
    g = torch.Generator().manual_seed(1)
    mask, region = crfr_p_mask(maps, 4, 0.75, generator=g)
    assert mask.shape == region.shape == (4, 64)
    assert (mask.sum(1) == num_masked(64, 0.75)).all()
    bg_only = patch_regions(maps, 4)[:, 0]
    assert not any(torch.equal(region[b], bg_only[b]) and not bg_only[b].all() for b in range(4))
    # a map with only background: CRFR-P degenerates to uniform masking at the same ratio
    mask0, region0 = crfr_p_mask(torch.zeros(2, 32, 32, dtype=torch.long), 4, 0.75, generator=g)
    assert (mask0.sum(1) == 48).all() and region0.all()


def test_random_mask_and_ids_round_trip():
    g = torch.Generator().manual_seed(0)
    mask = random_mask(5, 49, 0.75, generator=g)
    assert (mask.sum(1) == 37).all()
    keep, masked, restore = mask_to_ids(mask)
    assert keep.shape == (5, 12) and masked.shape == (5, 37)
    assert torch.equal(torch.cat([keep, masked], 1).gather(1, restore), torch.arange(49).expand(5, -1))
    assert not mask.gather(1, keep).any() and mask.gather(1, masked).all()
    assert (keep.diff(dim=1) > 0).all()  # ascending patch order
    with pytest.raises(ValueError, match="same number"):
        mask_to_ids(torch.tensor([[True, False], [True, True]]))
    with pytest.raises(ValueError, match="mask ratio"):
        random_mask(1, 4, 1.0)
