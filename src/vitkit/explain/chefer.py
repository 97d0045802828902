"""Gradient-weighted attention rollout (Chefer, Gur & Wolf, "Generic Attention-model Explainability",
ICCV 2021), on vitkit ViTs, token-reduced ones included.

Per block: Ā = mean over heads of clamp(∇A ⊙ A, 0), where ∇A is the gradient of the target class
logit with respect to the block's attention probabilities A (B, H, N, N). Relevance starts at the
identity and accumulates R ← R + Ā R = (I + Ā) R, first block first; token dropping / merging is
followed by the row transitions of :mod:`vitkit.explain.tokens`. The map is the prediction's query
row of R over the patch tokens.

Cost: one forward (full attention maps kept with their graph) and one backward.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .capture import Explanation, Trace, class_score, pick_target, query_rows
from .rollout import accumulate
from .tokens import find_vision_tower


def relevance_step(attn: Tensor, grad: Tensor) -> Tensor:
    """One block's relevance update I + mean_h clamp(grad ⊙ attn, 0): (B, H, N, N) ×2 → (B, N, N)."""
    a = (grad.float() * attn.float()).clamp_min(0).mean(1)
    return a + torch.eye(a.shape[-1], device=a.device)


def relevance(attns: Sequence[Tensor], grads: Sequence[Tensor], *,
              transitions: Sequence[Tensor | None] | None = None) -> Tensor:
    """Relevance matrix (B, N_L, N₀) from per-block attentions and their gradients (first block first)."""
    if len(attns) != len(grads):
        raise ValueError(f"{len(attns)} attention maps but {len(grads)} gradients")
    return accumulate([relevance_step(a, g) for a, g in zip(attns, grads, strict=True)], transitions)


def explain_chefer(model: nn.Module, x: Tensor, target=None) -> Explanation:
    """Gradient-weighted attention rollout of ``model`` for class ``target`` (default: top class)
    on images x (B, 3, H, W). Returns an :class:`Explanation` with maps (B, gh, gw).

    Parameters keep their ``requires_grad``; only the gradient with respect to the attention maps
    is taken (``torch.autograd.grad``), so no ``.grad`` of the model is touched.
    """
    vis = find_vision_tower(model)
    layers = list(range(vis.depth))
    with torch.enable_grad(), vis.attention_readout(layers, kind="full", keep_grad=True) as maps, Trace(vis) as tr:
        x = x.detach().requires_grad_(True)  # a graph to the maps even with frozen parameters
        logits = model(x)
        tgt = pick_target(logits, target)
        attns = [maps[i] for i in layers]
        grads = torch.autograd.grad(class_score(logits, tgt), attns)
    trans = [tr.transition(i) for i in layers]
    R = relevance([a.detach() for a in attns], grads, transitions=trans)
    src = tr.sources(vis.depth - 1, "out")
    q = query_rows(vis, src, R.shape[1]).to(R.device)
    r = (q.unsqueeze(1) @ R).squeeze(1)
    maps_ = r[:, tr.num_prefix :].reshape(-1, *tr.grid)
    return Explanation("chefer", maps_, logits.detach(), tgt, forwards=1, backwards=1)
