"""Class activation maps (CAM) of a ViT and their pseudo-labels: the baseline MoRe and VPL improve on.

The classifier is the one of the ToCo/MoRe code: a bias-free 1×1 classifier ``W`` (C, D) over the
last block's patch tokens, global max pooling (``gmp``, their default) or average pooling (``gap``)
before it, plus an auxiliary classifier of the same kind on an intermediate block (their
``aux_layer = -3``). CAM_c(p) = ReLU(W_c · f_p), min-max normalised per image and class.

Pseudo-labels (``cam_to_label`` of that code): among the image's classes, the best class where its
normalised score ≥ ``high``, background where the best score ≤ ``low``, and ``IGNORE`` (no loss)
in the band between; :func:`maps_to_label` is the plain variant with one background threshold.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .metrics import IGNORE

POOLINGS = ("gmp", "gap")


def normalize_maps(maps: Tensor, labels: Tensor | None = None, eps: float = 1e-5) -> Tensor:
    """ReLU then min-max per (image, class): (B, C, h, w) → [0, 1]; classes not in ``labels`` (B, C) → 0."""
    m = F.relu(maps)
    flat = m.flatten(2)
    lo = flat.min(-1).values[..., None, None]
    hi = flat.max(-1).values[..., None, None]
    m = (m - lo) / (hi - lo + eps)
    if labels is not None:
        m = m * labels[:, :, None, None].to(m.dtype)
    return m


def maps_to_label(maps: Tensor, labels: Tensor, bg_threshold: float) -> Tensor:
    """Normalised maps (B, C, h, w) and image labels (B, C) → (B, h, w) long: 0 = background, k = class k−1."""
    score, cls = (maps * labels[:, :, None, None]).max(1)
    return torch.where(score > bg_threshold, cls + 1, torch.zeros_like(cls))


def pseudo_label(maps: Tensor, labels: Tensor, high: float, low: float, ignore: int = IGNORE) -> Tensor:
    """(B, h, w) long: class k+1 where the best present class scores ≥ ``high``, 0 where ≤ ``low``,
    ``ignore`` in between (the uncertain band no loss sees)."""
    if not 0.0 <= low <= high <= 1.0:
        raise ValueError(f"pseudo-label thresholds need 0 ≤ low ≤ high ≤ 1, got low={low}, high={high}")
    score, cls = (maps * labels[:, :, None, None]).max(1)
    out = torch.full_like(cls, ignore)
    out[score >= high] = cls[score >= high] + 1
    out[score <= low] = 0
    return out


def tokens_to_maps(tokens: Tensor, grid: tuple[int, int]) -> Tensor:
    """(B, gh·gw, K) per-patch scores → (B, K, gh, gw)."""
    return tokens.transpose(1, 2).reshape(tokens.shape[0], -1, *grid)


def multi_scale_maps(map_fn: Callable[[Tensor], Tensor], images: Tensor, scales: Sequence[float] = (1.0,),
                     flip: bool = True, patch: int = 16, size: tuple[int, int] | None = None) -> Tensor:
    """Test-time augmentation of any map function, as MoRe's LAM: per scale the max of the image's and
    its mirror's maps, summed over scales, at ``size`` (default: the scale-1 patch grid); raw (not normalised).

    ``map_fn``: images (B, 3, H, W) → maps (B, C, h, w). Each scaled input is rounded to whole patches.
    """
    H, W = images.shape[-2:]
    size = size or (H // patch, W // patch)
    total = None
    for s in scales:
        h, w = max(patch, round(H * s / patch) * patch), max(patch, round(W * s / patch) * patch)
        x = images if (h, w) == (H, W) else F.interpolate(images, size=(h, w), mode="bilinear", align_corners=False)
        m = map_fn(x)
        if flip:
            m = torch.maximum(m, map_fn(x.flip(-1)).flip(-1))
        m = F.interpolate(m, size=size, mode="bilinear", align_corners=False)
        total = m if total is None else total + m
    assert total is not None, "scales must not be empty"
    return total


class PatchClassifier(nn.Module):
    """A backbone with the CAM classifier: logits from pooled last-layer patch tokens, an auxiliary
    classifier on block ``aux_layer``; :meth:`forward_parts` exposes everything the methods need."""

    def __init__(self, backbone: nn.Module, *, num_classes: int, aux_layer: int = -3, pooling: str = "gmp") -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        depth = len(backbone.blocks)
        if aux_layer >= depth:
            raise ValueError(f"aux_layer {aux_layer} is outside the backbone's {depth} blocks")
        self.backbone = backbone
        self.num_classes = num_classes
        # a negative index counts from the end; a backbone shallower than that uses its first block
        self.aux_layer = max(0, depth + aux_layer) if aux_layer < 0 else aux_layer
        self.pooling = pooling
        dim = backbone.embed_dim
        self.classifier = nn.Linear(dim, num_classes, bias=False)
        self.aux_classifier = nn.Linear(dim, num_classes, bias=False)

    def forward_parts(self, images: Tensor) -> dict[str, Tensor]:
        """images (B, 3, H, W) → dict: ``prefix`` (B, P, D) prefix tokens, ``patches`` (B, N, D) and
        ``aux_patches`` (B, N, D) (both normalised), ``logits`` / ``aux_logits`` (B, C), ``cam`` /
        ``aux_cam`` (B, C, gh, gw) raw; ``grid`` (gh, gw) as a tuple."""
        final, inter, state = self.backbone.forward_intermediates(images, [self.aux_layer], norm=True,
                                                                  return_state=True)
        npre = state.num_prefix
        patches, aux = final[:, npre:], inter[0][:, npre:]
        pool = (lambda t: t.max(1).values) if self.pooling == "gmp" else (lambda t: t.mean(1))
        return {
            "prefix": final[:, :npre],
            "patches": patches,
            "aux_patches": aux,
            "logits": self.classifier(pool(patches)),
            "aux_logits": self.aux_classifier(pool(aux)),
            "cam": tokens_to_maps(self.classifier(patches), state.grid),
            "aux_cam": tokens_to_maps(self.aux_classifier(aux), state.grid),
            "grid": state.grid,
        }

    def forward(self, images: Tensor) -> Tensor:
        return self.forward_parts(images)["logits"]

    def cam(self, images: Tensor) -> Tensor:
        """Raw CAM (B, C, gh, gw) = W · patch tokens."""
        return self.forward_parts(images)["cam"]

    def classification_loss(self, parts: dict[str, Tensor], labels: Tensor) -> Tensor:
        """Multi-label soft-margin loss of the main and auxiliary classifiers (weights 1 and 1)."""
        return F.multilabel_soft_margin_loss(parts["logits"], labels) + F.multilabel_soft_margin_loss(
            parts["aux_logits"], labels)

    def loss(self, images: Tensor, labels: Tensor, progress: float) -> tuple[Tensor, dict[str, float]]:
        """The CAM baseline's training loss (classification only); ``progress`` is unused."""
        loss = self.classification_loss(self.forward_parts(images), labels)
        return loss, {"cls": loss.item()}

    @torch.no_grad()
    def maps(self, images: Tensor, labels: Tensor, scales: Sequence[float] = (1.0,), flip: bool = True) -> Tensor:
        """Normalised CAM (B, C, gh, gw) of the image's classes, with the same test-time scales and
        flip as MoRe's LAM (so the baseline gets the same inference help)."""
        raw = multi_scale_maps(self.cam, images, scales, flip, patch=self.backbone.patch_size)
        return normalize_maps(raw, labels)
