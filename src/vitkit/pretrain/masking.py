"""Patch masks for masked image modelling: uniform random masking (MAE) and CRFR-P region masking (FSFM).

Pure tensor functions. A mask is a (B, N) bool tensor over the patch grid in row-major order, True =
masked (hidden from the encoder). :func:`mask_to_ids` turns a mask with the same count per row into
the index lists the encoder and decoder need (``ids_keep``, ``ids_masked``, ``ids_restore``).

CRFR-P ("covering a random facial region, proportionally", FSFM, CVPR 2025), generalised to any
region map: pick one region, mask every patch touching it, spend the remaining budget on the other
regions in proportion to their size, then fill (or, if the region alone is larger than the budget,
unmask part of it) so that exactly ``round(ratio · N)`` patches are masked.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def num_masked(n: int, ratio: float) -> int:
    """Masked patches out of ``n`` at ``ratio``; at least 1 and at most n − 1 (one patch stays visible)."""
    if not 0.0 < ratio < 1.0:
        raise ValueError(f"mask ratio must be in (0, 1), got {ratio}")
    return min(max(int(round(ratio * n)), 1), n - 1)


def random_mask(batch: int, n: int, ratio: float, *, generator: torch.Generator | None = None,
                device: torch.device | str = "cpu") -> Tensor:
    """MAE masking: per row a uniformly random set of ``num_masked(n, ratio)`` patches → (B, N) bool."""
    k = num_masked(n, ratio)
    noise = torch.rand(batch, n, generator=generator).to(device)
    order = noise.argsort(dim=1)
    mask = torch.zeros(batch, n, dtype=torch.bool, device=device)
    mask.scatter_(1, order[:, :k], True)
    return mask


def mask_to_ids(mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(B, N) bool mask with the same number of masked patches per row →
    ``ids_keep`` (B, K) visible patch positions (ascending), ``ids_masked`` (B, N − K) masked ones
    (ascending) and ``ids_restore`` (B, N): patch n sits at row ``ids_restore[b, n]`` of
    ``cat([visible, masked], 1)``, so gathering that concatenation with it restores patch order."""
    counts = mask.sum(1)
    if (counts != counts[0]).any():
        raise ValueError(f"every row must mask the same number of patches, got {counts.tolist()}")
    # stable sort: visible (False) first, each group in ascending patch order
    order = mask.to(torch.int8).argsort(dim=1, stable=True)  # (B, N)
    k = mask.shape[1] - int(counts[0])
    ids_restore = order.argsort(dim=1)
    return order[:, :k], order[:, k:], ids_restore


def patch_regions(region_map: Tensor, patch: int, num_regions: int | None = None) -> Tensor:
    """Which regions each patch touches: region ids (H, W) or (B, H, W) int ≥ 0 →
    (B, R, gh·gw) bool with R = ``num_regions`` (default max id + 1). A patch touches region r if any
    of its pixels has id r (max-pooling the one-hot map at patch size, as FSFM does)."""
    if region_map.dim() == 2:
        region_map = region_map.unsqueeze(0)
    B, H, W = region_map.shape
    gh, gw = H // patch, W // patch
    ids = region_map[:, : gh * patch, : gw * patch].long()
    R = int(ids.max()) + 1 if num_regions is None else num_regions
    if int(ids.min()) < 0 or int(ids.max()) >= R:
        raise ValueError(f"region ids must be in [0, {R}), got [{int(ids.min())}, {int(ids.max())}]")
    onehot = F.one_hot(ids, R).permute(0, 3, 1, 2).float()  # (B, R, H, W)
    touched = F.max_pool2d(onehot, patch, patch) > 0
    return touched.flatten(2)


def dominant_region(region_map: Tensor, patch: int, num_regions: int) -> Tensor:
    """Each patch's most frequent region id: (B, H, W) → (B, gh·gw) long (ties → the lower id)."""
    if region_map.dim() == 2:
        region_map = region_map.unsqueeze(0)
    B, H, W = region_map.shape
    gh, gw = H // patch, W // patch
    ids = region_map[:, : gh * patch, : gw * patch].long()
    frac = F.avg_pool2d(F.one_hot(ids, num_regions).permute(0, 3, 1, 2).float(), patch, patch)
    return frac.flatten(2).argmax(1)


def _take(pool: Tensor, k: int, g: torch.Generator | None) -> Tensor:
    """``k`` random entries of the index list ``pool`` (k ≤ len(pool))."""
    return pool[torch.randperm(len(pool), generator=g)[:k]]


def crfr_p_mask_one(touches: Tensor, dominant: Tensor, ratio: float, *, chosen: int | None = None,
                    candidates: Tensor | None = None, generator: torch.Generator | None = None
                    ) -> tuple[Tensor, Tensor, int]:
    """CRFR-P for one image.

    ``touches`` (R, N) bool: patch n touches region r; ``dominant`` (N,) long: each patch's main region.
    ``chosen``: the region to cover (default: uniform among ``candidates``, default the regions present
    other than 0, or 0 if it is the only one). Returns (mask (N,) bool with exactly
    ``num_masked(N, ratio)`` True, region (N,) bool = patches touching the chosen region, chosen id).
    """
    R, N = touches.shape
    k = num_masked(N, ratio)
    g = generator
    if chosen is None:
        present = touches.any(1)
        if candidates is None:
            candidates = present.nonzero().flatten()
            if len(candidates) > 1:
                candidates = candidates[candidates != 0]
        else:
            candidates = candidates[present[candidates]]
            if len(candidates) == 0:
                candidates = present.nonzero().flatten()
        chosen = int(candidates[torch.randint(len(candidates), (1,), generator=g)])
    region = touches[chosen].clone()
    mask = torch.zeros(N, dtype=torch.bool)
    in_region = region.nonzero().flatten()
    if len(in_region) >= k:  # the region alone exceeds the budget: mask only part of it
        mask[_take(in_region, k, g)] = True
        return mask, region, chosen
    mask[in_region] = True
    rest = k - len(in_region)
    outside = ~region
    share = rest / max(int(outside.sum()), 1)  # the same fraction of every other region
    for r in dominant[outside].unique().tolist():
        pool = (outside & (dominant == r)).nonzero().flatten()
        mask[_take(pool, int(share * len(pool)), g)] = True
    free = (~mask).nonzero().flatten()
    free = free[~region[free]]
    mask[_take(free, k - int(mask.sum()), g)] = True  # floor() left a few: fill at random outside
    return mask, region, chosen


def crfr_p_mask(region_map: Tensor, patch: int, ratio: float = 0.75, *, num_regions: int | None = None,
                candidates: Tensor | None = None, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """CRFR-P over a batch: region ids (B, H, W) → (mask (B, N) bool, chosen-region patches (B, N) bool).

    Every row masks exactly ``num_masked(N, ratio)`` patches, and all patches touching the chosen
    region when they fit in that budget.
    """
    if region_map.dim() == 2:
        region_map = region_map.unsqueeze(0)
    R = int(region_map.max()) + 1 if num_regions is None else num_regions
    touches = patch_regions(region_map, patch, R).cpu()
    dom = dominant_region(region_map, patch, R).cpu()
    masks, regions = [], []
    for b in range(region_map.shape[0]):
        m, r, _ = crfr_p_mask_one(touches[b], dom[b], ratio, candidates=candidates, generator=generator)
        masks.append(m)
        regions.append(r)
    dev = region_map.device
    return torch.stack(masks).to(dev), torch.stack(regions).to(dev)
