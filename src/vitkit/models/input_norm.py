"""Fold an input normalisation into the patch embedding, so a pretrained ViT takes another input convention.

A pretrained backbone expects ``(pixel - mean) / std`` per channel (ImageNet statistics for
DINOv2); vitkit's FRB crops arrive as ``2·grey − 1`` in [−1, 1]. Both are per-channel affine maps
of the pixel, and the patch embedding is a linear convolution, so the conversion folds exactly into
its weight and bias: no wrapper module, and every method that works on a VisionTransformer
(LoRA, quantization, token reduction, OOD features) works on the result unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .vit import VisionTransformer


def fold_affine(weight: Tensor, bias: Tensor | None, scale: Tensor, shift: Tensor) -> tuple[Tensor, Tensor]:
    """Conv(W, b) applied to ``scale·x + shift`` (per input channel) as one conv on ``x``.

    weight (C_out, C_in, P, P), bias (C_out,) or None, scale and shift (C_in,) → (W', b') with
    W' = W·scale and b' = b + Σ W·shift (the shift is constant over each patch).
    """
    w = weight * scale.view(1, -1, 1, 1)
    b = (bias if bias is not None else weight.new_zeros(weight.shape[0])) + (weight * shift.view(1, -1, 1, 1)).sum((1, 2, 3))
    return w, b


def input_affine(mean: Sequence[float], std: Sequence[float], input_range: tuple[float, float] = (-1.0, 1.0)
                 ) -> tuple[Tensor, Tensor]:
    """(scale, shift) taking an input in ``input_range`` (pixel 0 → lo, 1 → hi) to ``(pixel − mean) / std``."""
    lo, hi = input_range
    if hi <= lo:
        raise ValueError(f"input_range must be (lo, hi) with hi > lo, got {input_range}")
    mean_t, std_t = torch.tensor(mean, dtype=torch.float64), torch.tensor(std, dtype=torch.float64)
    # pixel = (x − lo) / (hi − lo); normalised = (pixel − mean) / std
    scale = 1 / ((hi - lo) * std_t)
    shift = (-lo / (hi - lo) - mean_t) / std_t
    return scale, shift


@torch.no_grad()
def fold_input_normalization(model: VisionTransformer, mean: Sequence[float], std: Sequence[float],
                             input_range: tuple[float, float] = (-1.0, 1.0)) -> VisionTransformer:
    """Make ``model`` take inputs in ``input_range`` instead of ``(pixel − mean) / std``; in place, returns it.

    The patch embedding gains a bias if it had none. Undo by folding the inverse map (or reload).
    """
    proj = model.patch_embed.proj
    scale, shift = input_affine(mean, std, input_range)
    w, b = fold_affine(proj.weight.double(), None if proj.bias is None else proj.bias.double(), scale, shift)
    proj.weight.copy_(w.to(proj.weight.dtype))
    if proj.bias is None:
        proj.bias = torch.nn.Parameter(b.to(proj.weight.dtype))
    else:
        proj.bias.copy_(b.to(proj.bias.dtype))
    return model
