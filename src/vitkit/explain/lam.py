"""MoRe's localisation attention maps (LAM) as an explanation method: for a
:class:`vitkit.segment.more.MoRe` model (a ViT with one class token per class), the map of class k is
the dot product of the last layer's patch tokens with class token k (after GCR), read from the same
forward that predicts (:meth:`MoRe.forward_parts`). With ``flip`` the map is the max over the image
and its mirror, as MoRe's inference does: one extra forward. Raw (not min-max normalised), so maps
of one image stay comparable across classes.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .capture import Explanation, pick_target


def explain_lam(model: nn.Module, x: Tensor, target=None, *, flip: bool = False) -> Explanation:
    """LAM of a MoRe model for class ``target`` (default: top class) on images x (B, 3, H, W) →
    :class:`Explanation` with maps (B, gh, gw). Cost: one forward (two with ``flip``)."""
    if not hasattr(model, "forward_parts") or not hasattr(model, "class_tokens"):
        raise ValueError(f"{type(model).__name__} is not a MoRe model: LAM needs per-class tokens "
                         "(vitkit.segment.more.MoRe); for a plain ViT use rollout, gradcam or chefer")
    with torch.no_grad():
        parts = model.forward_parts(x)
        lam = parts["lam"]
        if flip:
            lam = torch.maximum(lam, model.forward_parts(x.flip(-1))["lam"].flip(-1))
    logits = parts["logits"]
    tgt = pick_target(logits, target)
    return Explanation("lam", lam[torch.arange(lam.shape[0]), tgt], logits, tgt, forwards=2 if flip else 1)
