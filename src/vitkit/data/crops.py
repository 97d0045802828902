"""Text pages → normalised grey pages → ink crops (training) and ink tiles (inference).

A font is a local property of the glyphs, so the demo's ViT sees crops of a page at full
resolution rather than the whole page shrunk: training samples random crops centred on ink, and
inference averages the predictions of ink-centred tiles (:class:`vitkit.models.tiled.TiledClassifier`).

Normalisation (per page): grey = luminance; if the background (median) is darker than the text,
invert; then map the text level (0.1st percentile) to 0 and the background to 1. Coloured, inverted
and low-contrast pages then look alike, and the ink (grey < 0.5) is where the text is.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

INK = 0.5  # normalised grey below this is ink


def normalize_pages(rgb: Tensor) -> Tensor:
    """(B, 3, H, W) RGB in [0, 1] → (B, 1, H, W) grey, text ≈ 0, background ≈ 1."""
    w = torch.tensor([0.299, 0.587, 0.114], device=rgb.device, dtype=rgb.dtype).view(1, 3, 1, 1)
    grey = (rgb * w).sum(1, keepdim=True)
    flat = grey.flatten(1)
    bg = flat.median(dim=1).values.view(-1, 1, 1, 1)
    # the text may cover well under 1% of a page (a single short word): take near-extreme quantiles
    lo = torch.quantile(flat.float(), 0.001, dim=1).to(grey.dtype).view(-1, 1, 1, 1)
    hi = torch.quantile(flat.float(), 0.999, dim=1).to(grey.dtype).view(-1, 1, 1, 1)
    inverted = (hi - bg) > (bg - lo)  # text lighter than the background
    grey = torch.where(inverted, 1 - grey, grey)
    text = torch.where(inverted, 1 - hi, lo)
    back = torch.where(inverted, 1 - bg, bg)
    span = back - text
    out = ((grey - text) / span.clamp_min(1e-3)).clamp(0, 1)
    return torch.where(span > 0.02, out, torch.ones_like(out))  # no contrast (blank page): all background


def pil_to_tensor(img: Image.Image) -> Tensor:
    """PIL RGB → (3, H, W) float in [0, 1]."""
    arr = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


def to_model_input(grey: Tensor) -> Tensor:
    """Normalised grey crops (B, 1, S, S) in [0, 1] → (B, 3, S, S) centred at 0 for the ViT."""
    return (grey * 2 - 1).expand(-1, 3, -1, -1)


class InkCropDataset(Dataset):
    """Random ink-centred crops of pre-rendered pages, ``crops_per_page`` per page.

    Item i is (crop (3, S, S), label); it depends only on (seed, i), so training runs are exactly
    reproducible and resumable. Pages: (P, 1, H, W) normalised grey (see :func:`normalize_pages`).
    """

    def __init__(self, pages: Tensor, labels: Tensor, *, size: int = 64, crops_per_page: int = 8, seed: int = 0):
        if pages.dim() != 4 or pages.shape[1] != 1:
            raise ValueError(f"pages must be (P, 1, H, W) normalised grey, got {tuple(pages.shape)}")
        if len(pages) != len(labels):
            raise ValueError(f"{len(pages)} pages but {len(labels)} labels")
        self.pages, self.labels = pages, labels
        self.size, self.k, self.seed = size, crops_per_page, seed
        H, W = pages.shape[-2:]
        if H < size or W < size:
            raise ValueError(f"pages {H}×{W} are smaller than the crop size {size}")
        # ink coordinates per page, for crop centres
        self.ink = [torch.nonzero(p[0] < INK) for p in pages]

    def __len__(self) -> int:
        return len(self.pages) * self.k

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        p = i // self.k
        rng = np.random.default_rng((self.seed, i))
        H, W = self.pages.shape[-2:]
        s = self.size
        ink = self.ink[p]
        if len(ink):
            cy, cx = ink[rng.integers(len(ink))].tolist()
            cy += int(rng.integers(-s // 4, s // 4 + 1))
            cx += int(rng.integers(-s // 4, s // 4 + 1))
        else:
            cy, cx = int(rng.integers(H)), int(rng.integers(W))
        y = min(max(cy - s // 2, 0), H - s)
        x = min(max(cx - s // 2, 0), W - s)
        crop = self.pages[p, :, y : y + s, x : x + s]
        if rng.random() < 0.5:  # mild contrast jitter (ink not always pure black), staying within [0, 1]
            a = float(rng.uniform(0.85, 1.0))
            crop = crop * a + float(rng.uniform(0.0, 1.0 - a))
        return to_model_input(crop.unsqueeze(0))[0], self.labels[p]
