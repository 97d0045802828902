"""Model wiring shared by the token-reduction methods: find the vision tower, install and undo hooks,
and carry :class:`~vitkit.models.vit.TokenState` through a gather of token rows.

Every method installs ``block.token_hook`` closures and attention read-out knobs; its config goes into
the vision tower's applied-methods record (key = the method name) with what it changed as the
record's undo data, so :func:`restore` puts every attribute back.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ..models.applied import forget, record, record_of
from ..models.vit import TokenState, VisionTransformer

log = logging.getLogger(__name__)


@dataclass
class Installed:
    """Undo data of a token-reduction method: per touched block, its (token_hook, readout, keep) before."""

    method: str
    saved: dict[int, tuple[Any, str | None, set[str]]]


def vision_tower(model: nn.Module) -> VisionTransformer:
    """The :class:`VisionTransformer` inside ``model`` (itself, or ``model.visual`` for CLIP)."""
    vis = getattr(model, "visual", model)
    if not isinstance(vis, VisionTransformer):
        # say why: an attention-free backbone (VisionGRU) has a feature API that looks the same
        raise ValueError(
            f"token reduction (HiRED, ToMe, EViT) reads attention and needs a vitkit VisionTransformer or CLIP "
            f"(with .visual); {type(model).__name__} has no attention blocks"
        )
    return vis


def check_layers(layers: Sequence[int], depth: int, name: str) -> list[int]:
    """Block indices (negative allowed) → sorted non-negative indices; ValueError past the depth."""
    out = []
    for i in layers:
        if isinstance(i, bool) or not isinstance(i, int):
            raise ValueError(f"{name} must hold ints, got {i!r}")
        if not -depth <= i < depth:
            raise ValueError(f"{name} contains {i}: a layer index must be in [-{depth}, {depth - 1}] for depth {depth}")
        out.append(i % depth)
    if len(set(out)) != len(out):
        raise ValueError(f"{name} lists a layer twice: {list(layers)}")
    return sorted(out)


def check_rate(value: float, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 < float(value) <= 1.0:
        raise ValueError(f"{name}={value!r} is outside (0, 1]: give a fraction of tokens to keep, e.g. 0.5")
    return float(value)


def installed(vis: VisionTransformer) -> Installed | None:
    """The token-reduction method installed on ``vis`` (its undo data), or None."""
    for undo in record_of(vis).undo.values():
        if isinstance(undo, Installed):
            return undo
    return None


def install(
    vis: VisionTransformer,
    method: str,
    cfg: Any,
    hooks: dict[int, Callable[[Tensor, TokenState], Tensor]],
    readout: Sequence[int] = (),
    keys: Sequence[int] = (),
) -> list[str]:
    """Set token hooks, CLS read-outs and kept keys on the chosen blocks and file ``cfg`` in the
    record; returns the touched names."""
    have = installed(vis)
    if have is not None:
        raise ValueError(f"{have.method} is already applied to this model; call its remove(model) first")
    for i in hooks:
        if vis.blocks[i].token_hook is not None:
            raise ValueError(f"blocks.{i}.token_hook is already set by another method; remove that one first")
    layers = sorted(set(hooks) | set(readout) | set(keys))
    if not layers:
        raise ValueError(f"{method}: the configuration touches no block (nothing to apply)")
    saved = {i: (vis.blocks[i].token_hook, vis.blocks[i].attn.readout, set(vis.blocks[i].attn.keep)) for i in layers}
    for i, hook in hooks.items():
        vis.blocks[i].token_hook = hook
    for i in readout:
        if vis.blocks[i].attn.readout != "full":  # a full map also yields the CLS row
            vis.blocks[i].attn.readout = "cls"
    for i in keys:
        vis.blocks[i].attn.keep.add("keys")
    record(vis, method, cfg, undo=Installed(method, saved))
    touched = [f"blocks.{i}" for i in layers]
    log.info("%s applied to %s", method, ", ".join(touched))
    return touched


def restore(vis: VisionTransformer, method: str) -> list[str]:
    """Undo :func:`install`; ValueError if ``method`` is not what is applied."""
    rec = installed(vis)
    if rec is None or rec.method != method:
        have = rec.method if rec else "nothing"
        raise ValueError(f"{method} is not applied to this model ({have} is)")
    for i, (hook, readout, keep) in rec.saved.items():
        blk = vis.blocks[i]
        blk.token_hook = hook
        blk.attn.readout = readout
        blk.attn.keep = keep
        blk.attn.last = {}
    forget(vis, method)
    return [f"blocks.{i}" for i in rec.saved]


def applied(model: nn.Module) -> str | None:
    """Name of the token-reduction method applied to ``model``, or None."""
    rec = installed(vision_tower(model))
    return rec.method if rec else None


def config(model: nn.Module, method: str) -> Any:
    """The config ``method`` was applied with (from the vision tower's record); ValueError if it is not."""
    cfg = record_of(vision_tower(model)).get(method)
    if cfg is None:
        raise ValueError(f"{method} is not applied to this model: call vitkit.reduce.{method}.apply(model, cfg) first")
    return cfg


def cls_scores(attn: nn.Module, n: int) -> Tensor:
    """Head-summed CLS-row attention (B, N) of the block's latest forward (read-out must be on)."""
    a = attn.last.get("cls_attn")
    if a is None:
        if "attn" in attn.last:
            return attn.last["attn"][:, :, 0].sum(1)
        raise RuntimeError("no CLS attention was read out of this block; is the method applied?")
    assert a.shape[-1] == n, (a.shape, n)
    return a.sum(1)


def gather_state(state: TokenState, rows: Tensor, n_old: int) -> None:
    """Keep token rows ``rows`` (B, M) of the current N: index, size and attention bias follow."""
    B = rows.shape[0]
    if state.index is None:
        state.index = torch.arange(n_old, device=rows.device).expand(B, -1)
    state.index = state.index.gather(1, rows)
    if state.size is not None:
        state.size = state.size.gather(1, rows.unsqueeze(-1))
    bias = state.attn_bias
    if bias is not None:
        while bias.dim() < 4:
            bias = bias.unsqueeze(0)
        bias = bias.expand(B, *bias.shape[1:])
        Hb, Nq, M = bias.shape[1], bias.shape[2], rows.shape[1]
        bias = bias.gather(3, rows.view(B, 1, 1, M).expand(B, Hb, Nq, M))
        if Nq == n_old and Nq > 1:
            bias = bias.gather(2, rows.view(B, 1, M, 1).expand(B, Hb, M, M))
        state.attn_bias = bias


def gather_rows(x: Tensor, rows: Tensor) -> Tensor:
    """x (B, N, C), rows (B, M) → (B, M, C)."""
    return x.gather(1, rows.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
