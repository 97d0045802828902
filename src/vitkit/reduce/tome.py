"""ToMe: token merging by bipartite soft matching (Bolya et al., ICLR 2023), with the undo ToMe lacks.

In every block with r > 0, after attention, the patch tokens are split alternately into sets A and
B; each A token is matched to its most similar B token (cosine similarity of the block's keys,
averaged over heads, read through ``Attention.keep = {"keys"}``); the r best-matched A tokens are
merged into their B partners by a size-weighted mean. Sizes are tracked in ``TokenState.size`` and
turned into proportional attention (``attn_bias = log size`` on the keys) for the following blocks.
``state.extras["tome_source"]`` (B, N₀) gives, for each original token, the row it ended up in
(source tracking for visualisation, O(N₀) memory). Prefix tokens are never merged. r = 0 equals the
dense model exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..models.vit import TokenState
from .reducers import Reducer, register_reducer
from .wiring import install, restore, vision_tower

METHOD = "tome"
SCHEDULES = ("constant", "decreasing")


@dataclass
class ToMeConfig:
    """``r``: tokens merged per block — an int (spread by ``schedule``) or one int per block.

    ``schedule`` "constant": r in every block; "decreasing": linearly from 2r in the first block to
    0 in the last (about the same total, more merging early). ``proportional``: size-weighted attention.
    """

    r: int | Sequence[int] = 4
    schedule: str = "constant"
    proportional: bool = True
    trace_source: bool = True

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        rs = [self.r] if isinstance(self.r, int) else list(self.r)
        for v in rs:
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"r must be a non-negative int or a list of them, got {self.r!r}")


def schedule(cfg: ToMeConfig, depth: int) -> list[int]:
    """Per-block r for a model of ``depth`` blocks."""
    if not isinstance(cfg.r, int):
        rs = list(cfg.r)
        if len(rs) != depth:
            raise ValueError(f"r as a per-layer list needs {depth} entries (one per block), got {len(rs)}")
        return rs
    if cfg.schedule == "constant":
        return [cfg.r] * depth
    if depth == 1:
        return [cfg.r]
    return [round(2 * cfg.r * (1 - i / (depth - 1))) for i in range(depth)]


def check_schedule(rs: Sequence[int], n_patch: int) -> list[int]:
    """Tokens left after each block; ValueError if some r exceeds half the patch tokens left."""
    left, out = n_patch, []
    for i, r in enumerate(rs):
        if r > left // 2:
            raise ValueError(
                f"r={r} at block {i} is larger than the tokens left allow: {left} patch tokens → r must be "
                f"in [0, {left // 2}]; lower r"
            )
        left -= r
        out.append(left)
    return out


def bipartite_soft_matching(metric: Tensor, r: int) -> tuple[Tensor, Tensor, Tensor]:
    """Match A = even rows to B = odd rows of ``metric`` (B, n, d) by cosine similarity.

    Returns (unm, src, dst): A rows kept (B, |A| − r), A rows merged (B, r) and, for each merged A
    row, its B partner as an index into B (B, r).
    """
    m = F.normalize(metric.float(), dim=-1)
    a, b = m[:, ::2], m[:, 1::2]
    scores = a @ b.transpose(-1, -2)  # (B, |A|, |B|)
    best, partner = scores.max(dim=-1)
    order = best.argsort(dim=-1, descending=True)
    src = order[:, :r]
    unm = order[:, r:].sort(dim=-1).values
    dst = partner.gather(1, src)
    return unm, src, dst


def merge(x: Tensor, size: Tensor, unm: Tensor, src: Tensor, dst: Tensor) -> tuple[Tensor, Tensor]:
    """Size-weighted merge of patch tokens x (B, n, C) with sizes (B, n, 1).

    Output rows: [kept A rows, B rows (with the merged A rows averaged in)]; returns (x', size').
    """
    C = x.shape[-1]
    xs = x * size
    a, b = xs[:, ::2], xs[:, 1::2]
    sa, sb = size[:, ::2], size[:, 1::2]
    b = b.scatter_add(1, dst.unsqueeze(-1).expand(-1, -1, C), a.gather(1, src.unsqueeze(-1).expand(-1, -1, C)))
    sb = sb.scatter_add(1, dst.unsqueeze(-1), sa.gather(1, src.unsqueeze(-1)))
    keep_a = a.gather(1, unm.unsqueeze(-1).expand(-1, -1, C))
    keep_sa = sa.gather(1, unm.unsqueeze(-1))
    new_size = torch.cat([keep_sa, sb], dim=1)
    return torch.cat([keep_a, b], dim=1) / new_size, new_size


def new_rows(n: int, unm: Tensor, src: Tensor, dst: Tensor) -> Tensor:
    """Where each old patch row went after :func:`merge`: (B, n) indices into the merged rows."""
    B = unm.shape[0]
    n_a, n_unm = (n + 1) // 2, unm.shape[1]
    rows_a = torch.empty(B, n_a, dtype=torch.long, device=unm.device)
    rows_a.scatter_(1, unm, torch.arange(n_unm, device=unm.device).expand(B, -1))
    rows_a.scatter_(1, src, n_unm + dst)
    rows_b = n_unm + torch.arange(n // 2, device=unm.device).expand(B, -1)
    out = torch.empty(B, n, dtype=torch.long, device=unm.device)
    out[:, ::2] = rows_a
    out[:, 1::2] = rows_b
    return out


def _hook(attn: nn.Module, r: int, layer: int, cfg: ToMeConfig):
    def token_hook(x: Tensor, state: TokenState) -> Tensor:
        if r == 0:
            return x
        B, N, C = x.shape
        p = state.num_prefix
        n = N - p
        if r > n // 2:
            raise ValueError(f"r={r} at block {layer} is larger than the tokens left allow: {n} patch tokens → "
                             f"r must be in [0, {n // 2}]; lower r")
        # popped: a stored k is a view that keeps the block's whole qkv output alive until the next forward
        metric = attn.last.pop("keys").mean(1)[:, p:]  # (B, n, d)
        unm, src, dst = bipartite_soft_matching(metric, r)
        size = state.size if state.size is not None else x.new_ones(B, N, 1)
        merged, new_size = merge(x[:, p:], size[:, p:], unm, src, dst)
        moved = new_rows(n, unm, src, dst)  # (B, n) old patch row → new patch row
        index = state.index if state.index is not None else torch.arange(N, device=x.device).expand(B, -1)
        # each new row keeps the original index of its representative (the B row, or the unmerged A row)
        rep = torch.cat([unm * 2, torch.arange(n // 2, device=x.device).expand(B, -1) * 2 + 1], 1)
        state.index = torch.cat([index[:, :p], index[:, p:].gather(1, rep)], 1)
        state.size = torch.cat([size[:, :p], new_size], 1)
        if cfg.proportional:
            state.attn_bias = state.size.log().to(x.dtype).view(B, 1, 1, -1)
        if cfg.trace_source:
            full = torch.cat([torch.arange(p, device=x.device).expand(B, -1), moved + p], 1)  # (B, N)
            src_rows = state.extras.get("tome_source")
            if src_rows is None:
                src_rows = torch.arange(N, device=x.device).expand(B, -1)
            state.extras["tome_source"] = full.gather(1, src_rows)
        return torch.cat([x[:, :p], merged.to(x.dtype)], 1)

    return token_hook


def apply(model: nn.Module, cfg: ToMeConfig) -> list[str]:
    """Install token merging on ``model`` (ViT or CLIP); returns the touched blocks.

    The schedule is checked against the model's native patch grid; at other input sizes the hook
    raises the same error if r outgrows the tokens left.
    """
    vis = vision_tower(model)
    rs = schedule(cfg, vis.depth)
    check_schedule(rs, vis.grid_size[0] * vis.grid_size[1])
    hooks = {i: _hook(vis.blocks[i].attn, r, i, cfg) for i, r in enumerate(rs)}  # r = 0: a no-op hook
    return install(vis, METHOD, cfg, hooks, keys=[i for i, r in enumerate(rs) if r > 0])


def remove(model: nn.Module) -> list[str]:
    """Undo :func:`apply`."""
    return restore(vision_tower(model), METHOD)


@register_reducer(METHOD)
class ToMe(Reducer):
    """ToMe in the reducer registry."""

    config = ToMeConfig
    apply = staticmethod(apply)
    remove = staticmethod(remove)
