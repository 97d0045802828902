"""How good is a map: faithfulness by perturbation, localisation against ground-truth masks, cost.

* :func:`deletion_auc` / :func:`insertion_auc` (Petsiuk et al., RISE, BMVC 2018): pixels are removed
  (replaced by a substrate) or revealed most-important first, ``step`` pixels at a time; the area under
  the class score curve over the fraction of pixels changed (trapezoid). Deletion: lower is better;
  insertion: higher is better. Substrates: ``"blur"`` (Gaussian, σ = ``blur_sigma`` · image side) and
  ``"mean"`` (each image's mean colour).
* :func:`pointing_game` (Zhang et al., 2016): the map's maximum falls inside the object's mask
  (optionally dilated by ``tolerance`` pixels).
* :func:`energy_in_mask` (Score-CAM's energy-based pointing game): the share of the map's positive
  mass inside the mask.
* :func:`measure_cost`: forward and backward passes and wall time of one explanation.

Own code rather than quantus/captum: neither is a vitkit dependency (captum's ViT support and
quantus' torchvision-based substrates do not fit a CPU-only torch without torchvision), and the
metrics are a few tensor operations that batch all perturbation steps through the model.
Maps are (B, h, w) on any grid; they are upsampled bilinearly to the image size.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

SUBSTRATES = ("blur", "mean")
SCORES = ("softmax", "sigmoid", "logit")


def upsample(maps: Tensor, size: tuple[int, int]) -> Tensor:
    """(B, h, w) → (B, H, W), bilinear."""
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps.float()
    return F.interpolate(maps.float().unsqueeze(1), size=size, mode="bilinear", align_corners=False).squeeze(1)


def gaussian_blur(x: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian blur of images (B, C, H, W) with reflect padding (σ in pixels)."""
    if sigma <= 0:
        return x
    r = max(1, int(math.ceil(3 * sigma)))
    t = torch.arange(-r, r + 1, dtype=torch.float32, device=x.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = (k / k.sum()).to(x.dtype)
    C = x.shape[1]
    pad_h, pad_w = min(r, x.shape[-2] - 1), min(r, x.shape[-1] - 1)
    y = F.pad(x, (pad_w, pad_w, 0, 0), mode="reflect") if pad_w else x
    y = F.conv2d(y, k[r - pad_w : r + pad_w + 1].view(1, 1, 1, -1).expand(C, 1, 1, -1), groups=C)
    y = F.pad(y, (0, 0, pad_h, pad_h), mode="reflect") if pad_h else y
    return F.conv2d(y, k[r - pad_h : r + pad_h + 1].view(1, 1, -1, 1).expand(C, 1, -1, 1), groups=C)


def substrate(x: Tensor, kind: str = "blur", *, blur_sigma: float = 0.05) -> Tensor:
    """What removed pixels become: x (B, C, H, W) blurred (σ = blur_sigma · max(H, W)) or mean colour."""
    if kind == "blur":
        return gaussian_blur(x, blur_sigma * max(x.shape[-2:]))
    if kind == "mean":
        return x.mean(dim=(2, 3), keepdim=True).expand_as(x)
    raise ValueError(f"substrate must be one of {SUBSTRATES}, got {kind!r}")


def class_scores(logits: Tensor, target: Tensor, score: str) -> Tensor:
    """Score (B,) of each image's target class: softmax probability, sigmoid (multi-label), or logit."""
    if score == "softmax":
        s = logits.float().softmax(-1)
    elif score == "sigmoid":
        s = logits.float().sigmoid()
    elif score == "logit":
        s = logits.float()
    else:
        raise ValueError(f"score must be one of {SCORES}, got {score!r}")
    return s.gather(1, target.view(-1, 1)).squeeze(1)


def _curve(model: nn.Module, x: Tensor, maps: Tensor, target: Tensor, *, insert: bool, substrate_kind: str,
           step: int | None, score: str, batch_size: int, blur_sigma: float) -> tuple[Tensor, Tensor]:
    B, C, H, W = x.shape
    n = H * W
    step = step or max(1, n // 32)
    if step < 1:
        raise ValueError(f"step={step}: give the number of pixels changed per step (≥ 1)")
    order = upsample(maps, (H, W)).reshape(B, n).argsort(dim=1, descending=True, stable=True)  # (B, n)
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(n, device=x.device).expand(B, -1))
    counts = list(range(0, n, step)) + [n]
    frac = torch.tensor(counts, dtype=torch.float32) / n  # (S,)
    base = substrate(x, substrate_kind, blur_sigma=blur_sigma)
    start, end = (base, x) if insert else (x, base)
    scores = torch.empty(B, len(counts))
    rank = rank.view(B, 1, H, W)
    with torch.no_grad():
        for b in range(B):
            for lo in range(0, len(counts), batch_size):
                ks = torch.tensor(counts[lo : lo + batch_size], device=x.device).view(-1, 1, 1, 1)
                changed = (rank[b : b + 1] < ks).to(x.dtype)  # (S', 1, H, W): pixels already changed
                imgs = start[b : b + 1] * (1 - changed) + end[b : b + 1] * changed
                t = target[b : b + 1].expand(imgs.shape[0])
                scores[b, lo : lo + imgs.shape[0]] = class_scores(model(imgs), t, score).cpu()
    return frac, scores


def auc(frac: Tensor, scores: Tensor) -> Tensor:
    """Trapezoid area under scores (B, S) over fractions (S,) in [0, 1] → (B,)."""
    dx = (frac[1:] - frac[:-1]).to(scores.dtype)
    return ((scores[:, 1:] + scores[:, :-1]) / 2 * dx).sum(1)


def deletion_auc(model: nn.Module, x: Tensor, maps: Tensor, target: Tensor, *, substrate: str = "blur",
                 step: int | None = None, score: str = "softmax", batch_size: int = 64,
                 blur_sigma: float = 0.05) -> Tensor:
    """Deletion AUC (B,) (lower = more faithful): x (B, C, H, W), maps (B, h, w), target (B,).

    ``step`` pixels are replaced by the substrate per step (default H·W / 32).
    """
    frac, s = _curve(model, x, maps, target, insert=False, substrate_kind=substrate, step=step, score=score,
                     batch_size=batch_size, blur_sigma=blur_sigma)
    return auc(frac, s)


def insertion_auc(model: nn.Module, x: Tensor, maps: Tensor, target: Tensor, *, substrate: str = "blur",
                  step: int | None = None, score: str = "softmax", batch_size: int = 64,
                  blur_sigma: float = 0.05) -> Tensor:
    """Insertion AUC (B,) (higher = more faithful): pixels revealed from the substrate, best first."""
    frac, s = _curve(model, x, maps, target, insert=True, substrate_kind=substrate, step=step, score=score,
                     batch_size=batch_size, blur_sigma=blur_sigma)
    return auc(frac, s)


def _dilate(masks: Tensor, tolerance: int) -> Tensor:
    if tolerance <= 0:
        return masks
    k = 2 * tolerance + 1
    return F.max_pool2d(masks.float().unsqueeze(1), k, stride=1, padding=tolerance).squeeze(1) > 0


def pointing_game(maps: Tensor, masks: Tensor, *, tolerance: int = 0) -> Tensor:
    """Hit (B,) bool: the maximum of each map (upsampled to the mask size) lies in the mask (B, H, W),
    dilated by ``tolerance`` pixels. Images whose mask is empty are misses."""
    up = upsample(maps, tuple(masks.shape[-2:]))
    B = up.shape[0]
    idx = up.reshape(B, -1).argmax(1)
    return _dilate(masks.bool(), tolerance).reshape(B, -1).gather(1, idx.view(-1, 1)).squeeze(1)


def energy_in_mask(maps: Tensor, masks: Tensor) -> Tensor:
    """Share (B,) of the positive map mass inside the mask (B, H, W). A map with no positive mass
    carries no location: it scores the mask's area fraction (what a uniform map scores)."""
    up = upsample(maps, tuple(masks.shape[-2:])).clamp_min(0)
    m = masks.float()
    total = up.sum(dim=(1, 2))
    inside = (up * m).sum(dim=(1, 2))
    area = m.mean(dim=(1, 2))
    return torch.where(total > 0, inside / total.clamp_min(1e-30), area)


@dataclass
class Cost:
    """Passes and time of one call: ``forwards`` through the model, ``backwards`` into its output."""

    forwards: int
    backwards: int
    seconds: float


def _leaves(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if not list(m.children()) and any(True for _ in m.parameters(recurse=False))]


def input_layer(model: nn.Module) -> nn.Module:
    """The first module with its own parameters (the patch embedding, the CNN stem): every full
    forward runs it once."""
    leaves = _leaves(model)
    if not leaves:
        raise ValueError(f"{type(model).__name__} has no parameterised layer to count passes on")
    return leaves[0]


def output_layer(model: nn.Module) -> nn.Module:
    """The last module with its own parameters (the classification head): every backward pass from
    the prediction starts at its output."""
    return _leaves(model)[-1]


def measure_cost(fn: Callable[[], object], model: nn.Module, *, first: nn.Module | None = None,
                 last: nn.Module | None = None) -> Cost:
    """Run ``fn()`` once; count forwards through ``first`` (default :func:`input_layer`), backward
    passes that start at the output of ``last`` (default :func:`output_layer`), and time the call."""
    count = {"f": 0, "b": 0}

    def on_grad(_):
        count["b"] += 1

    def on_first(module, args, out):
        count["f"] += 1

    def on_last(module, args, out):
        if isinstance(out, Tensor) and out.requires_grad:
            out.register_hook(on_grad)

    hooks = [(first or input_layer(model)).register_forward_hook(on_first),
             (last or output_layer(model)).register_forward_hook(on_last)]
    try:
        t0 = time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
    finally:
        for h in hooks:
            h.remove()
    return Cost(count["f"], count["b"], dt)


def explain_with_cost(model: nn.Module, x: Tensor, method: str, target=None, **kwargs):
    """``(explanation, Cost)`` of :func:`vitkit.explain.explain` on x with ``method``."""
    from . import explain

    res = []
    cost = measure_cost(lambda: res.append(explain(model, x, method, target=target, **kwargs)), model)
    return res[0], cost
