"""Attention rollout (Abnar & Zuidema, ACL 2020) on vitkit ViTs, token-reduced ones included.

Per block the heads' attention is fused (mean by default), the identity is added for the residual
path and rows are renormalised: Â = rownorm(fuse_h(A) + I). Rollout is the product over blocks,
R = Â_L ⋯ Â_1, and the map is the prediction's query row (class token; see
:func:`~vitkit.explain.capture.query_rows`) of R over the patch tokens. Where a block drops or
merges tokens, the row transition T of :mod:`vitkit.explain.tokens` follows it: R ← T Â R, so R
always relates the current rows to the original tokens and the map lands on the full grid.

Cost: one forward with the full attention maps read out (O(N²) memory per block), no backward.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .capture import Explanation, Trace, pick_target, query_rows
from .tokens import find_vision_tower

HEAD_FUSIONS = ("mean", "max", "min")


def fuse_heads(attn: Tensor, how: str = "mean") -> Tensor:
    """(B, H, N, N) → (B, N, N)."""
    if how == "mean":
        return attn.mean(1)
    if how == "max":
        return attn.amax(1)
    if how == "min":
        return attn.amin(1)
    raise ValueError(f"head_fusion must be one of {HEAD_FUSIONS}, got {how!r}")


def rollout_step(attn: Tensor, *, head_fusion: str = "mean", add_identity: bool = True) -> Tensor:
    """One block's rollout matrix Â (B, N, N) from its attention (B, H, N, N)."""
    a = fuse_heads(attn.float(), head_fusion)
    if add_identity:
        a = a + torch.eye(a.shape[-1], device=a.device)
    return a / a.sum(-1, keepdim=True)


def accumulate(mixes: Sequence[Tensor | None], transitions: Sequence[Tensor | None] | None = None) -> Tensor:
    """R = T_L M_L ⋯ T_1 M_1 (B, N_L, N₀) from per-block mixing matrices M_l (B, N_l, N_l) (None =
    identity, a block left out) and row transitions T_l (B, N_{l+1}, N_l) or None (rows unchanged)."""
    first = next((m for m in mixes if m is not None), None)
    if first is None:
        raise ValueError("no blocks to accumulate over")
    B = first.shape[0]
    if transitions is not None:  # rows are N₀ until the first block that changes them
        t0 = next((t for t in transitions if t is not None), None)
        n0 = t0.shape[-1] if t0 is not None and mixes[0] is None else first.shape[-1]
    else:
        n0 = first.shape[-1]
    R = torch.eye(n0, device=first.device).expand(B, -1, -1)
    for i, m in enumerate(mixes):
        if m is not None:
            R = m.float() @ R
        t = transitions[i] if transitions is not None else None
        if t is not None:
            R = t.to(R.device) @ R
    return R


def rollout(attns: Sequence[Tensor | None], *, transitions: Sequence[Tensor | None] | None = None,
            head_fusion: str = "mean", add_identity: bool = True) -> Tensor:
    """Rollout matrix (B, N_L, N₀) of an attention stack [(B, H, N_l, N_l) or None] (first block first;
    None leaves a block out but still applies its transition)."""
    return accumulate([None if a is None else rollout_step(a, head_fusion=head_fusion, add_identity=add_identity)
                       for a in attns], transitions)


def explain_rollout(model: nn.Module, x: Tensor, target=None, *, head_fusion: str = "mean",
                    start_layer: int = 0) -> Explanation:
    """Attention rollout of ``model`` (a vitkit ViT, CLIP, or a module wrapping one) on images x (B, 3, H, W).

    ``start_layer``: first block included (later blocks only sharpen the map on deep models).
    The map does not depend on the class: ``target`` only names what is reported (default top class).
    Returns an :class:`Explanation` with maps (B, gh, gw).
    """
    vis = find_vision_tower(model)
    start = start_layer % vis.depth
    layers = list(range(start, vis.depth))
    with torch.no_grad(), vis.attention_readout(layers, kind="full") as maps, Trace(vis) as tr:
        logits = model(x)
    attns = [maps[i] if i >= start else None for i in range(vis.depth)]
    trans = [tr.transition(i) for i in range(vis.depth)]
    R = rollout(attns, transitions=trans, head_fusion=head_fusion)  # (B, N_L, N₀)
    src = tr.sources(vis.depth - 1, "out")
    q = query_rows(vis, src, R.shape[1]).to(R.device)
    r = (q.unsqueeze(1) @ R).squeeze(1)  # (B, N₀)
    maps_ = r[:, tr.num_prefix :].reshape(-1, *tr.grid)
    return Explanation("rollout", maps_, logits.detach(), pick_target(logits, target))
