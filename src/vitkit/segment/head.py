"""A light segmentation head trained on pseudo-labels over a frozen backbone's patch features.

The head is LayerNorm + a 1×1 linear layer over the concatenated patch tokens of the last
``layers`` blocks (``forward_intermediates``), its (K, gh, gw) logits bilinearly upsampled to the
pixels; cross-entropy ignores the pseudo-label's uncertain band. The backbone is frozen and its
features are computed once, so training the head costs seconds: the measured mIoU then says how
good the pseudo-labels are as training data, not how well a big decoder can clean them up.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .metrics import IGNORE


@dataclass
class HeadConfig:
    """Training of the segmentation head."""

    layers: int = 2  # last blocks whose patch tokens are concatenated
    epochs: int = 5
    batch_size: int = 32
    lr: float = 3e-3
    weight_decay: float = 1e-4
    seed: int = 0


class SegHead(nn.Module):
    """(B, N, L·D) patch features → (B, K, H, W) logits at the pixel size given to forward."""

    def __init__(self, *, in_dim: int, num_classes: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(in_dim)
        self.proj = nn.Linear(in_dim, num_classes)

    def forward(self, feats: Tensor, grid: tuple[int, int], size: tuple[int, int]) -> Tensor:
        logits = self.proj(self.norm(feats)).transpose(1, 2).reshape(feats.shape[0], -1, *grid)
        return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)


@torch.no_grad()
def patch_features(backbone: nn.Module, images: Tensor, layers: int, batch: int = 64,
                   prepare: Callable[[Tensor], Tensor] | None = None) -> tuple[Tensor, tuple[int, int]]:
    """Frozen features (N, n_patches, layers·D) of uint8 images (N, H, W, 3) and the patch grid.

    ``prepare`` maps a uint8 batch to the backbone's input (normalisation, resizing).
    """
    backbone.eval()
    out, grid = [], (0, 0)
    for i in range(0, len(images), batch):
        x = prepare(images[i : i + batch]) if prepare else images[i : i + batch].permute(0, 3, 1, 2).float() / 255
        _, inter, state = backbone.forward_intermediates(x, layers, norm=True, return_state=True)
        grid = state.grid
        out.append(torch.cat([t[:, state.num_prefix :] for t in inter], -1))
    return torch.cat(out), grid


def train_head(feats: Tensor, grid: tuple[int, int], labels: Tensor, num_classes: int, cfg: HeadConfig,
               progress: Callable[[int, int], None] | None = None) -> SegHead:
    """Train a :class:`SegHead` on features (N, n, F) and pixel pseudo-labels (N, H, W) (``IGNORE`` skipped)."""
    g = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    head = SegHead(in_dim=feats.shape[-1], num_classes=num_classes)
    opt = torch.optim.AdamW(head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    n = len(feats)
    steps = cfg.epochs * max(1, n // cfg.batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    size = tuple(labels.shape[-2:])
    step = 0
    for _ in range(cfg.epochs):
        order = torch.randperm(n, generator=g)
        for i in range(0, n - cfg.batch_size + 1 if n >= cfg.batch_size else 1, cfg.batch_size):
            idx = order[i : i + cfg.batch_size]
            y = labels[idx].long()
            if not (y != IGNORE).any():
                continue
            loss = F.cross_entropy(head(feats[idx].float(), grid, size), y, ignore_index=IGNORE)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            if progress:
                progress(step, steps)
    return head.eval()


@torch.no_grad()
def predict(head: SegHead, feats: Tensor, grid: tuple[int, int], size: tuple[int, int], batch: int = 64) -> Tensor:
    """(N, H, W) long argmax predictions."""
    return torch.cat([head(feats[i : i + batch].float(), grid, size).argmax(1) for i in range(0, len(feats), batch)])
