"""Grad-CAM (Selvaraju et al., ICCV 2017) on the patch tokens a ViT block reads, as pytorch-grad-cam
does for ViTs (``target_layers=[model.blocks[-1].norm1]`` with a reshape transform), but every prefix
token (class, distillation, registers, prompt tokens) is dropped, not only the first. (The last
block's *output* patch tokens are useless for a class-token model: nothing after them reads them,
so their gradient is 0; hence the block's normalised input.)

For the tokens laid on the patch grid, activations A (B, C, gh, gw) and the gradient G of
the target logit with respect to them: weights w_c = mean over the grid of G_c, map =
ReLU(Σ_c w_c A_c). Token-reduced blocks are scattered back to the grid first (a merged row's value
goes to each of its patches, its gradient split between them; dropped patches are 0).

Cost: one forward and one backward.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .capture import Explanation, Trace, class_score, pick_target
from .tokens import find_vision_tower, scatter_to_grid


def grad_cam(acts: Tensor, grads: Tensor, *, relu: bool = True) -> Tensor:
    """Grad-CAM map (B, h, w) from activations and gradients (B, C, h, w)."""
    if acts.shape != grads.shape:
        raise ValueError(f"activations {tuple(acts.shape)} and gradients {tuple(grads.shape)} differ in shape")
    w = grads.float().mean(dim=(2, 3), keepdim=True)  # (B, C, 1, 1)
    cam = (w * acts.float()).sum(1)
    return cam.clamp_min(0) if relu else cam


def explain_gradcam(model: nn.Module, x: Tensor, target=None, *, layer: int = -1, relu: bool = True) -> Explanation:
    """Grad-CAM of ``model`` for class ``target`` (default: top class) on the normalised input tokens
    (``norm1`` output) of block ``layer`` (default the last).

    x (B, 3, H, W) → :class:`Explanation` with maps (B, gh, gw).
    """
    vis = find_vision_tower(model)
    if not -vis.depth <= layer < vis.depth:
        raise ValueError(f"layer={layer} is outside [-{vis.depth}, {vis.depth - 1}] for this {vis.depth}-block model")
    i = layer % vis.depth
    with torch.enable_grad(), Trace(vis, keep=[i]) as tr:
        x = x.detach().requires_grad_(True)
        logits = model(x)
        tgt = pick_target(logits, target)
        tokens = tr.inputs[i]
        (grad,) = torch.autograd.grad(class_score(logits, tgt), [tokens])
    src = tr.sources(i, "in")
    acts = scatter_to_grid(tokens.detach(), src, tr.num_prefix, tr.grid)
    grads = scatter_to_grid(grad, src, tr.num_prefix, tr.grid, split=True)
    return Explanation("gradcam", grad_cam(acts, grads, relu=relu), logits.detach(), tgt, forwards=1, backwards=1,
                       extras={"layer": i})
