"""EViT-style token dropping inside the encoder: at chosen blocks keep the top-k patch tokens by CLS
attention, optionally fusing the dropped ones into one token (EViT, Liang et al., ICLR 2022).

Pure function: :func:`evit_select`. Wiring: :func:`apply` / :func:`remove` install a
``token_hook`` on the chosen blocks that reads the block's own CLS-row attention
(``Attention.readout = "cls"``, O(N)) — never an N×N map. Prefix tokens (CLS, distillation,
registers) are always kept. keep_rate 1.0 leaves the model exactly as it was.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..models.vit import TokenState
from .reducers import Reducer, register_reducer
from .wiring import (
    check_layers,
    check_rate,
    cls_scores,
    gather_rows,
    gather_state,
    install,
    restore,
    vision_tower,
)

METHOD = "evit"
FUSED = -1  # index of a fused token in TokenState.index


@dataclass
class EViTConfig:
    """``layers``: blocks after whose attention tokens are dropped; ``keep_rate`` of the patch tokens
    present at each of them is kept; ``fuse`` adds one attention-weighted token of the dropped ones."""

    layers: Sequence[int] = (1,)
    keep_rate: float = 0.7
    fuse: bool = True

    def __post_init__(self) -> None:
        self.keep_rate = check_rate(self.keep_rate, "keep_rate")
        self.layers = tuple(self.layers)
        if not self.layers:
            raise ValueError("layers must name at least one block")


def evit_select(
    x: Tensor, scores: Tensor, keep: int, num_prefix: int, fuse: bool = True
) -> tuple[Tensor, Tensor, Tensor | None]:
    """Keep the ``keep`` highest-scoring patch tokens (original order) after the prefix.

    x (B, N, C); scores (B, N) CLS attention (prefix entries ignored). Returns (x', rows, weights):
    x' (B, num_prefix + keep [+1], C), ``rows`` (B, num_prefix + keep) the kept rows of x, and the
    fused token's weights over x's rows (B, N) (None without fusion or when nothing was dropped).
    """
    B, N, C = x.shape
    n = N - num_prefix
    if not 1 <= keep <= n:
        raise ValueError(f"keep={keep} is outside [1, {n}] (the patch tokens left)")
    if keep == n:
        rows = torch.arange(N, device=x.device).expand(B, -1)
        return x, rows, None
    s = scores[:, num_prefix:]
    top = s.topk(keep, dim=1).indices.sort(dim=1).values + num_prefix  # (B, keep)
    prefix = torch.arange(num_prefix, device=x.device).expand(B, -1)
    rows = torch.cat([prefix, top], dim=1)
    out = gather_rows(x, rows)
    if not fuse:
        return out, rows, None
    w = scores.clone().float()
    w[:, :num_prefix] = 0
    w.scatter_(1, top, 0.0)
    w = w / w.sum(1, keepdim=True).clamp_min(1e-12)
    fused = (w.to(x.dtype).unsqueeze(-1) * x).sum(1, keepdim=True)  # (B, 1, C)
    return torch.cat([out, fused], dim=1), rows, w


def kept_count(n_patch: int, keep_rate: float) -> int:
    """Patch tokens kept out of ``n_patch`` (EViT: ⌈rate · n⌉)."""
    return max(1, math.ceil(keep_rate * n_patch - 1e-9))


def _hook(attn: nn.Module, cfg: EViTConfig):
    def token_hook(x: Tensor, state: TokenState) -> Tensor:
        N = x.shape[1]
        n = N - state.num_prefix
        keep = kept_count(n, cfg.keep_rate)
        if keep >= n:
            return x
        scores = cls_scores(attn, N)
        out, rows, w = evit_select(x, scores, keep, state.num_prefix, cfg.fuse)
        old_size = state.size
        gather_state(state, rows, N)
        if w is not None:
            B = x.shape[0]
            state.index = torch.cat([state.index, torch.full((B, 1), FUSED, device=x.device, dtype=state.index.dtype)], 1)
            if old_size is not None:
                dropped = torch.ones_like(w, dtype=torch.bool).scatter_(1, rows, False)
                state.size = torch.cat([state.size, (old_size.squeeze(-1) * dropped).sum(1).view(B, 1, 1)], 1)
            if state.attn_bias is not None:  # the fused token gets no bias (a neutral 0)
                pad = state.attn_bias.new_zeros(*state.attn_bias.shape[:-1], 1)
                state.attn_bias = torch.cat([state.attn_bias, pad], -1)
                if state.attn_bias.shape[-2] > 1:
                    row = state.attn_bias.new_zeros(*state.attn_bias.shape[:-2], 1, state.attn_bias.shape[-1])
                    state.attn_bias = torch.cat([state.attn_bias, row], -2)
        return out

    return token_hook


def apply(model: nn.Module, cfg: EViTConfig) -> list[str]:
    """Install EViT dropping on ``model`` (ViT or CLIP); returns the touched blocks."""
    vis = vision_tower(model)
    if vis.cls_token is None:
        raise ValueError("EViT ranks tokens by CLS attention: the model has no class token")
    layers = check_layers(cfg.layers, vis.depth, "layers")
    hooks = {i: _hook(vis.blocks[i].attn, cfg) for i in layers}
    return install(vis, METHOD, cfg, hooks, readout=layers)


def remove(model: nn.Module) -> list[str]:
    """Undo :func:`apply`."""
    return restore(vision_tower(model), METHOD)


@register_reducer(METHOD)
class EViT(Reducer):
    """EViT in the reducer registry."""

    config = EViTConfig
    apply = staticmethod(apply)
    remove = staticmethod(remove)
