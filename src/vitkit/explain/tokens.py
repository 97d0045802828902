"""Where each original token went: tracing a (possibly token-reduced) ViT forward back to the grid.

A token-reduced forward (EViT dropping, ToMe merging) changes the rows of the token sequence from
block to block; :class:`~vitkit.models.vit.TokenState` records which original token each row is.
Here that record becomes a *source map* S (B, N₀): for every original token j (prefix tokens
first, then the patch grid row-major) the row it lives in now, or -1 if it was dropped. From two
source maps one gets the row transition between them, and from one source map a row-wise map can
be scattered back onto the full patch grid.

What can be traced: dropped tokens (EViT with or without its single fused token: the fused row is
the source of every original token no longer present) and merged tokens (ToMe with
``trace_source=True``, which keeps ``extras["tome_source"]``). What cannot, and is refused with a
message: HiRED's packed partitions (several sub-images in one sequence), ToMe without source
tracing, and two fused rows alive at once (EViT keeping an earlier fused token).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..models.vit import TokenState, VisionTransformer

FUSED = -1  # TokenState.index of a fused token (EViT)


def vision_tower(model: nn.Module) -> VisionTransformer | None:
    """The first :class:`VisionTransformer` inside ``model`` (itself, CLIP's ``.visual``, a wrapper), or None."""
    return next((m for m in model.modules() if isinstance(m, VisionTransformer)), None)


def find_vision_tower(model: nn.Module) -> VisionTransformer:
    """:func:`vision_tower`, refusing (``ValueError``, one line naming the model and what it can use
    instead) a model without one."""
    vis = vision_tower(model)
    if vis is not None:
        return vis
    if hasattr(model, "evidence"):
        hint = " (this model explains itself: use method 'evidence', or 'gradcam')"
    elif hasattr(model, "forward_intermediates"):
        hint = " (use method 'gradcam', which reads its final feature map)"
    else:
        hint = ""
    raise ValueError(f"{type(model).__name__} contains no vitkit VisionTransformer: attention and token methods "
                     f"need one{hint}")


@dataclass
class StateSnapshot:
    """The parts of a TokenState that say which rows exist, captured at one point of the forward."""

    index: Tensor | None  # (B, N) original token of each row, FUSED for a fused row; None = identity
    size: Tensor | None  # (B, N, 1) originals per row; None = all 1
    tome_source: Tensor | None  # (B, N₀) row of each original token (ToMe with source tracing)
    packed: bool  # HiRED packed partitions


def snapshot(state: TokenState) -> StateSnapshot:
    """Capture ``state`` now (its tensors are replaced, not mutated, by the reduction hooks)."""
    return StateSnapshot(state.index, state.size, state.extras.get("tome_source"), "hired_packed" in state.extras)


def source_map(snap: StateSnapshot, n_rows: int, n0: int, batch: int) -> Tensor:
    """Row of every original token (B, N₀) (-1 = dropped) for a sequence of ``n_rows`` rows.

    ``n0`` is the number of original tokens (prefix + patches). Raises ValueError for reductions
    whose rows cannot be traced back to the grid.
    """
    if snap.packed:
        raise ValueError("HiRED packs several sub-images into one sequence: its tokens cannot be laid on one "
                         "grid; explain the model without HiRED (hired.remove(model)) or per partition")
    if snap.tome_source is not None:
        src = snap.tome_source
        if src.shape[1] != n0:
            raise ValueError(f"ToMe source map covers {src.shape[1]} tokens, expected {n0}")
        return src.long()
    if snap.index is None:
        if n_rows != n0:
            raise ValueError(f"{n_rows} token rows but {n0} original tokens and no TokenState.index to trace them")
        return torch.arange(n0).expand(batch, -1)
    if snap.size is not None and not bool((snap.index == FUSED).any()):
        # merged rows (size > 1) without a source map: the index holds only one representative
        if bool((snap.size > 1).any()):
            raise ValueError("tokens were merged (ToMe) without source tracing: apply ToMe with "
                             "trace_source=True so explanations can follow merged tokens")
    idx = snap.index.long()
    B, N = idx.shape
    fused = idx == FUSED
    n_fused = fused.sum(1)
    if bool((n_fused > 1).any()):
        raise ValueError("two fused tokens are alive at once (EViT kept an earlier fused token): their sources "
                         "cannot be told apart; apply EViT with fuse=False or at one layer")
    src = torch.full((B, n0), -1, dtype=torch.long)
    rows = torch.arange(N).expand(B, -1)
    valid = ~fused
    src[valid.nonzero(as_tuple=True)[0], idx[valid]] = rows[valid]
    has = n_fused > 0
    if bool(has.any()):
        fused_row = fused.long().argmax(1)  # (B,)
        gone = (src < 0) & has.unsqueeze(1)
        src = torch.where(gone, fused_row.unsqueeze(1).expand(-1, n0), src)
    return src


def transition(src_before: Tensor, src_after: Tensor, n_before: int, n_after: int) -> Tensor:
    """Row transition T (B, N_after, N_before): new row a = Σ_b T[a, b] · old row b.

    T[a, b] counts the original tokens that went from row b to row a, rows normalised to sum 1, so a
    merged row is the size-weighted mean of its parts and a dropped row contributes nothing.
    """
    B, n0 = src_before.shape
    T = torch.zeros(B, n_after, n_before)
    ok = (src_before >= 0) & (src_after >= 0)
    b_idx = torch.arange(B).unsqueeze(1).expand(-1, n0)
    T.index_put_((b_idx[ok], src_after[ok], src_before[ok]), torch.ones(int(ok.sum())), accumulate=True)
    return T / T.sum(-1, keepdim=True).clamp_min(1)


def scatter_to_grid(values: Tensor, src: Tensor, num_prefix: int, grid: tuple[int, int], *,
                    split: bool = False) -> Tensor:
    """Row values (B, N, C) → patch grid (B, C, gh, gw) through the source map ``src`` (B, N₀).

    Each original patch takes its row's value (0 where the patch was dropped). With ``split`` a row
    shared by k originals gives each 1/k of it (for gradients: a merged row is a mean of its parts).
    """
    B, N, C = values.shape
    patches = src[:, num_prefix:].to(values.device)  # (B, gh·gw)
    safe = patches.clamp_min(0)
    out = values.gather(1, safe.unsqueeze(-1).expand(-1, -1, C))  # (B, gh·gw, C)
    out = out * (patches >= 0).unsqueeze(-1).to(values.dtype)
    if split:
        counts = torch.zeros(B, N, device=values.device).scatter_add_(1, src.to(values.device).clamp_min(0),
                                                                        (src >= 0).float().to(values.device))
        out = out / counts.gather(1, safe).clamp_min(1).unsqueeze(-1).to(values.dtype)
    return out.transpose(1, 2).reshape(B, C, *grid)
