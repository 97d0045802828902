"""Grad-CAM (Selvaraju et al., ICCV 2017) on the patch tokens a ViT block reads, as pytorch-grad-cam
does for ViTs (``target_layers=[model.blocks[-1].norm1]`` with a reshape transform), but every prefix
token (class, distillation, registers, prompt tokens) is dropped, not only the first. (The last
block's *output* patch tokens are useless for a class-token model: nothing after them reads them,
so their gradient is 0; hence the block's normalised input.)

For the tokens laid on the patch grid, activations A (B, C, gh, gw) and the gradient G of
the target logit with respect to them: weights w_c = mean over the grid of G_c, map =
ReLU(Σ_c w_c A_c). Token-reduced blocks are scattered back to the grid first (a merged row's value
goes to each of its patches, its gradient split between them; dropped patches are 0).

A backbone without a ViT tower (VisionGRU, the hybrid) is explained through its feature API instead:
``forward_intermediates(x, [-1], output_fmt="NCHW")`` gives the last stage's grid and its final
tokens (B, h·w, C), ``forward_head`` of those tokens the logits, and A is those tokens laid on the
(h, w) grid. They are the final-normed tokens, the tensor the head reads, for the same reason the ViT
path takes norm1's output: for a mean-pool + linear head the map is then exactly CAM (Zhou et al.,
2016), and its spatial mean before the ReLU is (logit − bias) / (h·w).

Cost: one forward and one backward.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .capture import Explanation, Trace, class_score, pick_target
from .tokens import scatter_to_grid, vision_tower


def grad_cam(acts: Tensor, grads: Tensor, *, relu: bool = True) -> Tensor:
    """Grad-CAM map (B, h, w) from activations and gradients (B, C, h, w)."""
    if acts.shape != grads.shape:
        raise ValueError(f"activations {tuple(acts.shape)} and gradients {tuple(grads.shape)} differ in shape")
    w = grads.float().mean(dim=(2, 3), keepdim=True)  # (B, C, 1, 1)
    cam = (w * acts.float()).sum(1)
    return cam.clamp_min(0) if relu else cam


def explain_gradcam(model: nn.Module, x: Tensor, target=None, *, layer: int = -1, relu: bool = True) -> Explanation:
    """Grad-CAM of ``model`` for class ``target`` (default: top class) on the normalised input tokens
    (``norm1`` output) of block ``layer`` (default the last); for a model without a ViT tower, on its
    final feature map (:func:`feature_map_gradcam`).

    x (B, 3, H, W) → :class:`Explanation` with maps (B, gh, gw).
    """
    vis = vision_tower(model)
    if vis is None:
        return feature_map_gradcam(model, x, target, layer=layer, relu=relu)
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


def feature_map_gradcam(model: nn.Module, x: Tensor, target=None, *, layer: int = -1,
                        relu: bool = True) -> Explanation:
    """Grad-CAM on the final feature map of a backbone with the feature API (``forward_intermediates``
    with NCHW output and a final-token output, ``forward_head``), e.g. VisionGRU, whose forward is
    ``forward_head(forward_features(x))``.

    x (B, 3, H, W) → :class:`Explanation` with maps (B, h, w) on the last stage's grid. Only the last
    stage (``layer`` −1) can be explained: earlier maps are not what the head reads.
    """
    name = type(model).__name__
    if not (hasattr(model, "forward_intermediates") and hasattr(model, "forward_head")):
        raise ValueError(f"{name} has neither a vitkit VisionTransformer nor the feature API "
                         "(forward_intermediates, forward_head) that Grad-CAM reads")
    # grad mode on: VisionGRU's cheaper no-grad route would build no graph to differentiate
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)  # a graph even when every parameter is frozen
        final, maps = model.forward_intermediates(x, [layer], output_fmt="NCHW", stop_early=True)
        if final is None:
            raise ValueError(f"layer={layer}: Grad-CAM of {name} reads the final feature map, the one its head "
                             "reads; use layer=-1")
        B, C, h, w = maps[0].shape
        if final.shape != (B, h * w, C):
            raise ValueError(f"{name}'s final tokens {tuple(final.shape)} are not its last map {(B, C, h, w)} "
                             "in raster order")
        logits = model.forward_head(final)
        tgt = pick_target(logits, target)
        (grad,) = torch.autograd.grad(class_score(logits, tgt), [final])

    def on_grid(t: Tensor) -> Tensor:  # (B, h·w, C) raster → (B, C, h, w)
        return t.transpose(1, 2).reshape(B, C, h, w)

    return Explanation("gradcam", grad_cam(on_grid(final.detach()), on_grid(grad), relu=relu), logits.detach(), tgt,
                       forwards=1, backwards=1)
