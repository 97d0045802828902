"""Module surgery: swap one submodule of a model for another, by its dotted name.

Every method that wraps or replaces layers (LoRA, quantization, int8 execution, quantized
checkpoints) goes through :func:`replace_module`, so "put the original back" is the same call with
the module it returned.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def replace_module(model: nn.Module, name: str, new: nn.Module) -> nn.Module:
    """Put ``new`` where the submodule ``name`` (e.g. ``"blocks.3.attn.qkv"``) is; returns the old one.

    Raises ``ValueError`` naming the path when ``name`` is empty or is not a submodule of ``model``.
    """
    if not name:
        raise ValueError("replace_module needs a submodule name, not '' (the model itself)")
    parent_name, _, child = name.rpartition(".")
    try:
        parent = model.get_submodule(parent_name) if parent_name else model
    except AttributeError as e:
        raise ValueError(f"{type(model).__name__} has no submodule {parent_name!r} (while replacing {name!r})") from e
    old = getattr(parent, child, None)
    if not isinstance(old, nn.Module):
        raise ValueError(f"{type(model).__name__} has no submodule {name!r} to replace")
    setattr(parent, child, new)
    return old


def linear_head(in_features: int, num_classes: int, like: torch.Tensor | None = None) -> nn.Module:
    """A fresh classifier (in_features → num_classes; trunc-normal std 0.02, zero bias), or
    ``nn.Identity`` for ``num_classes == 0``; on ``like``'s device and dtype when given."""
    if num_classes < 0:
        raise ValueError(f"num_classes must be ≥ 0, got {num_classes}")
    if not num_classes:
        return nn.Identity()
    head = nn.Linear(in_features, num_classes)
    nn.init.trunc_normal_(head.weight, std=0.02)
    nn.init.zeros_(head.bias)
    if like is not None:
        head = head.to(device=like.device, dtype=like.dtype if like.is_floating_point() else None)
    return head


def reset_head(model: nn.Module, num_classes: int, labels: Sequence[str] | None = None) -> None:
    """Give ``model`` (with ``head``, ``num_features`` and a config with ``num_classes`` / ``labels``)
    a fresh ``num_classes``-way head on its device; the config follows. The models'
    ``reset_classifier`` methods call this."""
    if labels is not None and len(labels) != num_classes:
        raise ValueError(f"{len(labels)} labels for a {num_classes}-way head: give one name per class")
    model.head = linear_head(model.num_features, num_classes, like=next(model.parameters()))
    model.cfg.num_classes = num_classes
    model.cfg.labels = list(labels) if labels is not None else None
