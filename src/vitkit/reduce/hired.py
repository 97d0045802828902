"""HiRED: attention-guided token dropping for high-resolution inputs (Arif et al., AAAI 2025).

The image is encoded as a thumbnail plus a grid of sub-images at the encoder's native size
(:func:`~vitkit.reduce.partitions.partition`). A budget of ``rate`` × all partitions' patch tokens
is kept:

* phase 1 (:func:`allocate`): the thumbnail gets N₀ = min(⌊α·N⌋, T); the rest is shared between the
  sub-images in proportion to the CLS attention (block ``alloc_layer``, summed over heads) of the
  thumbnail tokens whose centres lie in each sub-image's 2-D region (:func:`region_scores`);
* phase 2 (:func:`select`): each partition keeps its top-N_i patch tokens by the CLS attention of a
  late block (``select_layer``, default the second-to-last), in original order.

Budgets are split with the largest-remainder rule (capped at T per partition, the surplus passed on)
instead of the paper's plain floor, so the whole budget is used and rate 1.0 keeps every token.
``early=True`` (HiRED-early) makes the phase-2 choice inside the encoder at ``select_layer`` and drops
the other tokens for the remaining blocks: the kept tokens of all partitions of an image are packed
into one sequence with a block-diagonal attention bias (each partition still attends only to itself).
Attention is read only through the CLS-row read-out (O(N)), never as an N×N map.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..models.vit import TokenState
from .partitions import TokenSet, partition, token_set_from_rows
from .reducers import Reducer, register_reducer
from .wiring import check_layers, check_rate, cls_scores, install, restore, vision_tower
from .wiring import config as applied_config

METHOD = "hired"


@dataclass
class HiREDConfig:
    """``grid`` (rows, cols) of sub-images; ``rate`` of all patch tokens kept, in (0, 1]; ``alpha``
    the thumbnail's share; ``alloc_layer`` / ``select_layer`` the blocks whose CLS attention drives
    phase 1 / phase 2 (None = second-to-last); ``early`` drops inside the encoder at select_layer."""

    grid: tuple[int, int] = (2, 2)
    rate: float = 0.2
    alpha: float = 0.5
    alloc_layer: int = 0
    select_layer: int | None = None
    early: bool = False

    def __post_init__(self) -> None:
        self.grid = tuple(self.grid)
        if len(self.grid) != 2 or any(isinstance(g, bool) or not isinstance(g, int) or g < 1 for g in self.grid):
            raise ValueError(f"grid must be two positive ints (rows, cols), got {self.grid!r}")
        self.rate = check_rate(self.rate, "rate")
        if isinstance(self.alpha, bool) or not 0.0 <= float(self.alpha) <= 1.0:
            raise ValueError(f"alpha={self.alpha!r} is outside [0, 1]: the thumbnail's share of the budget")

    def layers(self, depth: int) -> tuple[int, int]:
        """(alloc_layer, select_layer) as block indices for a model of ``depth`` blocks."""
        sel = max(depth - 2, 0) if self.select_layer is None else self.select_layer
        a = check_layers([self.alloc_layer], depth, "alloc_layer")[0]
        s = check_layers([sel], depth, "select_layer")[0]
        if self.early and s < a:
            raise ValueError(f"HiRED-early needs select_layer ≥ alloc_layer (the budget comes first), got "
                             f"select_layer={s}, alloc_layer={a}")
        return a, s


# --------------------------------------------------------------------------------------------------
# pure functions
# --------------------------------------------------------------------------------------------------


def region_index(thumb_grid: tuple[int, int], grid: tuple[int, int]) -> Tensor:
    """For each thumbnail patch token (row-major), the sub-image whose 2-D region holds its centre: (T,)."""
    gh, gw = thumb_grid
    R, C = grid
    rows = ((torch.arange(gh) + 0.5) * R / gh).floor().long().clamp_max(R - 1)
    cols = ((torch.arange(gw) + 0.5) * C / gw).floor().long().clamp_max(C - 1)
    return (rows.view(-1, 1) * C + cols.view(1, -1)).flatten()


def region_scores(thumb_scores: Tensor, thumb_grid: tuple[int, int], grid: tuple[int, int]) -> Tensor:
    """Thumbnail patch-token scores (B, gh·gw) → per sub-image sums (B, rows·cols)."""
    reg = region_index(thumb_grid, grid).to(thumb_scores.device)
    out = thumb_scores.new_zeros(thumb_scores.shape[0], grid[0] * grid[1])
    return out.index_add_(1, reg, thumb_scores)


def split_budget(total: int, weights: Tensor, cap: int) -> Tensor:
    """Integers ≥ 0, each ≤ ``cap``, summing to min(total, n·cap), proportional to ``weights`` (n,).

    Shares above the cap are capped and their surplus shared among the rest; fractions are
    rounded by the largest-remainder rule.
    """
    n = weights.numel()
    total = min(int(total), n * cap)
    w = weights.double().clamp_min(0)
    if float(w.sum()) <= 0:
        w = torch.ones_like(w)
    share = torch.zeros_like(w)
    free = torch.ones(n, dtype=torch.bool)
    remaining = float(total)
    while True:
        wf = torch.where(free, w, torch.zeros_like(w))
        if float(wf.sum()) <= 0:
            wf = free.double()
        s = remaining * wf / wf.sum()
        over = free & (s >= cap)
        if not over.any():
            share = torch.where(free, s, share)
            break
        share[over] = cap
        free &= ~over
        remaining -= cap * int(over.sum())
    out = share.floor().long().clamp_max(cap)
    left = total - int(out.sum())
    if left > 0:
        frac = share - out.double()
        frac[out >= cap] = -1.0
        out[frac.argsort(descending=True)[:left]] += 1
    return out


def allocate(region_s: Tensor, rate: float, alpha: float, tokens_per_partition: int) -> Tensor:
    """Phase 1. region_s (B, S) sub-image scores → budgets (B, 1 + S) (thumbnail first).

    N = ⌊rate · (1+S) · T⌋, N₀ = min(⌊α·N⌋, T), sub-images share N − N₀ in proportion to region_s
    (each ≤ T; what cannot be placed goes back to the thumbnail).
    """
    rate = check_rate(rate, "rate")
    B, S = region_s.shape
    T = tokens_per_partition
    N = math.floor(rate * (1 + S) * T + 1e-9)
    if N < 1:
        raise ValueError(f"rate={rate} keeps no token of {(1 + S) * T}; the rate must be ≥ {1 / ((1 + S) * T):.2g}")
    n0 = min(math.floor(alpha * N), T)
    out = torch.empty(B, 1 + S, dtype=torch.long)
    for b in range(B):
        subs = split_budget(N - n0, region_s[b].detach().cpu(), T)
        out[b, 1:] = subs
        out[b, 0] = N - int(subs.sum())  # ≤ T: N ≤ (1+S)·T
    return out.to(region_s.device)


def select(scores: Tensor, budgets: Tensor) -> Tensor:
    """Phase 2. scores (B, P, T), budgets (B, P) → kept flat indices p·T + t (B, K), ascending.

    Every row of ``budgets`` must have the same sum K.
    """
    B, P, T = scores.shape
    K = int(budgets[0].sum())
    if not bool((budgets.sum(1) == K).all()):
        raise ValueError("every image needs the same total budget")
    if bool((budgets > T).any()) or bool((budgets < 0).any()):
        raise ValueError(f"budgets must lie in [0, {T}] per partition")
    rank = scores.argsort(dim=-1, descending=True).argsort(dim=-1)  # rank of each token in its partition
    keep = rank < budgets.unsqueeze(-1)  # (B, P, T)
    flat = keep.flatten(1).nonzero()[:, 1].view(B, K)  # row-major: ascending
    return flat


# --------------------------------------------------------------------------------------------------
# model wiring
# --------------------------------------------------------------------------------------------------


def _patch_scores(attn: nn.Module, n: int, num_prefix: int) -> Tensor:
    return cls_scores(attn, n)[:, num_prefix:]


def _plan(vis: nn.Module, cfg: HiREDConfig, B: int, P: int, N: int, npre: int, grid) -> tuple[Tensor, Tensor]:
    """Budgets (B, P) and kept flat indices (B, K) from the read-outs of the latest forward."""
    a, s = cfg.layers(vis.depth)
    T = grid[0] * grid[1]
    thumb = _patch_scores(vis.blocks[a].attn, N, npre).view(B, P, T)[:, 0]
    budgets = allocate(region_scores(thumb, grid, cfg.grid), cfg.rate, cfg.alpha, T)
    late = _patch_scores(vis.blocks[s].attn, N, npre).view(B, P, T)
    return budgets, select(late, budgets)


def _early_hook(vis: nn.Module, cfg: HiREDConfig):
    P = 1 + cfg.grid[0] * cfg.grid[1]

    def token_hook(x: Tensor, state: TokenState) -> Tensor:
        BP, N, C = x.shape
        if state.index is not None or state.attn_bias is not None:
            raise RuntimeError("HiRED-early expects the full token set at its layer (combine it with no other reduction)")
        B, npre = BP // P, state.num_prefix
        T = N - npre
        budgets, flat = _plan(vis, cfg, B, P, N, npre, state.grid)
        state.extras["hired_budgets"] = budgets
        if bool((budgets == T).all()):
            return x  # rate 1.0: nothing dropped, the dense computation continues unchanged
        # pack each image's partitions into one sequence: all prefix tokens first, then kept patches
        part_kept = flat // T
        rows_patch = part_kept * N + npre + flat % T  # rows of x viewed as (B, P·N, C)
        rows_pre = (torch.arange(P, device=x.device).view(P, 1) * N + torch.arange(npre, device=x.device)).flatten()
        rows = torch.cat([rows_pre.expand(B, -1), rows_patch], 1)  # (B, M)
        part = torch.cat([torch.arange(P, device=x.device).repeat_interleave(npre).expand(B, -1), part_kept], 1)
        packed = x.reshape(B, P * N, C).gather(1, rows.unsqueeze(-1).expand(-1, -1, C))
        same = part.unsqueeze(-1) == part.unsqueeze(-2)  # (B, M, M)
        bias = torch.zeros(same.shape, dtype=x.dtype, device=x.device).masked_fill_(~same, float("-inf"))
        state.attn_bias = bias.unsqueeze(1)
        state.index = rows
        state.num_prefix = P * npre
        state.extras["hired_packed"] = (P, npre, flat)
        return packed

    return token_hook


def apply(model: nn.Module, cfg: HiREDConfig) -> list[str]:
    """Prepare ``model`` (ViT or CLIP) for :func:`encode` with HiRED; returns the touched blocks."""
    vis = vision_tower(model)
    if vis.cls_token is None:
        raise ValueError("HiRED ranks tokens by CLS attention: the model has no class token")
    a, s = cfg.layers(vis.depth)
    hooks = {s: _early_hook(vis, cfg)} if cfg.early else {}
    return install(vis, METHOD, cfg, hooks, readout=sorted({a, s}))


def remove(model: nn.Module) -> list[str]:
    """Undo :func:`apply`."""
    return restore(vision_tower(model), METHOD)


def config(model: nn.Module) -> HiREDConfig:
    """The HiREDConfig applied to ``model``; ValueError if HiRED is not applied."""
    return applied_config(model, METHOD)


def encode(model: nn.Module, images: Tensor) -> TokenSet:
    """High-resolution images (B, C, H, W) → the kept tokens of all partitions (final encoder output).

    The tokens come in original order (partition by partition, row-major inside each), with their
    partition id and patch position.
    """
    cfg = config(model)
    vis = vision_tower(model)
    parts = partition(images, cfg.grid, vis.cfg.img_size, vis.patch_size)
    B, P = parts.shape[:2]
    x, st = vis.forward_features(parts.flatten(0, 1), return_state=True)
    grid = st.grid
    T = grid[0] * grid[1]
    packed = st.extras.get("hired_packed")
    if packed is not None:  # HiRED-early: (B, P·npre + K, C), prefix tokens first
        _, npre, flat = packed
        ts = token_set_from_rows(x[:, P * npre :], flat, grid, P)
        ts.state = st
        return ts
    npre = st.num_prefix
    if cfg.early:  # rate 1.0 with early: nothing was dropped
        flat = torch.arange(P * T, device=x.device).expand(B, -1)
    else:
        _, flat = _plan(vis, cfg, B, P, x.shape[1], npre, grid)
    toks = x[:, npre:].reshape(B, P * T, -1)
    ts = token_set_from_rows(toks.gather(1, flat.unsqueeze(-1).expand(-1, -1, toks.shape[-1])), flat, grid, P)
    ts.state = st
    return ts


@register_reducer(METHOD)
class HiRED(Reducer):
    """HiRED in the reducer registry."""

    config = HiREDConfig
    apply = staticmethod(apply)
    remove = staticmethod(remove)

    @staticmethod
    def encode(model: nn.Module, images: Tensor, grid: tuple[int, int]) -> TokenSet:
        return encode(model, images)  # HiRED's own partitions (its config's grid)
