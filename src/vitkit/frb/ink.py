"""Text pages → normalised grey pages → ink crops (training) and ink tiles (inference).

A font is a local property of the glyphs, so the demo's ViT sees crops of a page at full
resolution rather than the whole page shrunk: training samples random crops centred on ink, and
inference averages the predictions of ink-centred tiles (:class:`vitkit.frb.classifier.TiledClassifier`).

Normalisation (per page): grey = luminance; if the background (median) is darker than the text,
invert; then map the text level (0.1st percentile) to 0 and the background to 1. Coloured, inverted
and low-contrast pages then look alike, and the ink (grey < 0.5) is where the text is.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

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
    lo = tail_quantile(flat.float(), 0.001).to(grey.dtype).view(-1, 1, 1, 1)
    hi = tail_quantile(flat.float(), 0.999).to(grey.dtype).view(-1, 1, 1, 1)
    inverted = (hi - bg) > (bg - lo)  # text lighter than the background
    grey = torch.where(inverted, 1 - grey, grey)
    text = torch.where(inverted, 1 - hi, lo)
    back = torch.where(inverted, 1 - bg, bg)
    span = back - text
    out = ((grey - text) / span.clamp_min(1e-3)).clamp(0, 1)
    return torch.where(span > 0.02, out, torch.ones_like(out))  # no contrast (blank page): all background


def tail_quantile(flat: Tensor, q: float) -> Tensor:
    """``torch.quantile(flat, q, dim=1)`` (linear interpolation) for ``q`` near 0 or 1, in O(N).

    Only the order statistics on ``q``'s side are ranked (``topk``), not the whole row: on a
    page-sized row this is ~10× faster than the full sort ``torch.quantile`` does. ``flat``: (B, N).
    """
    n = flat.shape[1]
    pos = q * (n - 1)
    lo = math.floor(pos)
    hi, w = min(lo + 1, n - 1), pos - lo
    if q <= 0.5:
        v = flat.topk(hi + 1, dim=1, largest=False, sorted=True).values  # ascending: order stat k at k
        a, b = v[:, lo], v[:, hi]
    else:
        v = flat.topk(n - lo, dim=1, largest=True, sorted=True).values  # descending: order stat k at n-1-k
        a, b = v[:, n - 1 - lo], v[:, n - 1 - hi]
    return torch.lerp(a, b, w)


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
        self.ink = [torch.nonzero(p[0] < INK).numpy() for p in pages]

    def __len__(self) -> int:
        return len(self.pages) * self.k

    def _draw(self, i: int) -> tuple[int, int, int, float, float]:
        """Item i's page, crop corner and contrast jitter ``(p, y, x, a, b)``: the crop is ``page · a + b``."""
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
        a, b = 1.0, 0.0
        if rng.random() < 0.5:  # mild contrast jitter (ink not always pure black), staying within [0, 1]
            a = float(rng.uniform(0.85, 1.0))
            b = float(rng.uniform(0.0, 1.0 - a))
        return p, y, x, a, b

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        return self.__getitems__([i])[0]

    def __getitems__(self, indices: Sequence[int]) -> list[tuple[Tensor, Tensor]]:
        """Items ``indices`` built as one batch (the DataLoader calls this for a whole batch): the same
        crops as one by one, without the per-item tensor overhead that was ~10% of a demo training step.
        A subclass that adds to an item overrides this method (``__getitem__`` comes back through it)."""
        s = self.size
        draws = [self._draw(int(i)) for i in indices]
        crops = torch.stack([self.pages[p, :, y : y + s, x : x + s] for p, y, x, _, _ in draws])  # (B, 1, S, S)
        a = torch.tensor([d[3] for d in draws], dtype=crops.dtype).view(-1, 1, 1, 1)
        b = torch.tensor([d[4] for d in draws], dtype=crops.dtype).view(-1, 1, 1, 1)
        x = to_model_input(crops * a + b)  # (B, 3, S, S); a = 1, b = 0 leave a crop bit for bit
        return [(x[j], self.labels[d[0]]) for j, d in enumerate(draws)]


# ---------------------------------------------------------------------------------------------
# Text scale: pages of any size to the scale the crops were trained at
# ---------------------------------------------------------------------------------------------


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """``[start, stop)`` of every run of True in a 1-D bool array."""
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist(), strict=True))


def _quantile_row(cum: np.ndarray, q: float) -> float:
    """Sub-pixel row where the cumulative ink ``cum`` (rows as unit intervals of uniform ink) reaches ``q``."""
    k = int(np.searchsorted(cum, q))
    before = cum[k - 1] if k else 0.0
    return k + (q - before) / max(cum[k] - before, 1e-12)


def _core_heights(ink: np.ndarray) -> tuple[list[float], list[float]]:
    """Core height and ink count of every text band of a strip of ink ``(H, w)``.

    Bands are runs of rows with more than a tenth of the strip's densest row's ink, so lines set
    close enough for descenders to touch the next line's ascenders still come apart. A band's core
    is the distance between the rows above which 20% and 80% of its ink lies (sub-pixel). For Latin
    text that is most of the x-height band: a quantile of the ink, unlike a density threshold, is
    not pulled to the baseline by heavy serifs, and it varies little with the words (on the FRB
    splits, within a font the easy and hard texts give the same core to within 10-20%).
    """
    rows = ink.sum(1).astype(np.float64)
    heights, weights = [], []
    for a, b in _runs(rows > 0.1 * rows.max()):
        if b - a >= 2:
            band = rows[a:b]
            cum = np.cumsum(band) / band.sum()
            heights.append(_quantile_row(cum, 0.8) - _quantile_row(cum, 0.2))
            weights.append(float(band.sum()))
    return heights, weights


def _strip_heights(ink: np.ndarray, width: int) -> tuple[list[float], list[float]]:
    heights, weights = [], []
    for x0 in range(0, ink.shape[1], width):
        h, w = _core_heights(ink[:, x0 : x0 + width])
        heights += h
        weights += w
    return heights, weights


def text_height(grey: Tensor) -> float | None:
    """Estimated core height in pixels of the text on a normalised page ``(1, H, W)``.

    The page is cut into vertical strips, so lines that are slightly slanted, or of different
    sizes, are measured locally: first 96 px wide, then about eight first-estimate core heights
    wide; the answer is the ink-weighted median of the strips' band cores (see
    :func:`_core_heights`). Scale-equivariant up to rasterisation: a page drawn twice as large gives
    twice the height. ``None`` when the page holds no ink.
    """
    ink = (grey[0] < INK).cpu().numpy()
    if not ink.any():
        return None
    heights, weights = _strip_heights(ink, 96)
    if not heights:
        return None
    first = _weighted_median(heights, weights)
    heights, weights = _strip_heights(ink, max(16, int(round(8 * first))))
    return _weighted_median(heights, weights) if heights else first


def _weighted_median(values: list[float], weights: list[float]) -> float:
    order = np.argsort(values, kind="stable")
    v, w = np.asarray(values, dtype=np.float64)[order], np.asarray(weights, dtype=np.float64)[order]
    return float(v[np.searchsorted(np.cumsum(w), 0.5 * w.sum())])


def rescale_page(grey: Tensor, factor: float) -> Tensor:
    """Resample a normalised page ``(1, H, W)`` by ``factor`` (area-weighted when shrinking)."""
    if factor == 1.0:
        return grey
    H, W = grey.shape[-2:]
    size = (max(1, round(H * factor)), max(1, round(W * factor)))
    x = grey.unsqueeze(0)
    if factor < 1.0:
        out = torch.nn.functional.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
    else:
        out = torch.nn.functional.interpolate(x, size=size, mode="bilinear", align_corners=False)
    return out[0].clamp(0, 1)


def pad_page(grey: Tensor, min_size: int) -> Tensor:
    """Centre a normalised page ``(1, H, W)`` on a background canvas at least ``min_size`` on each side."""
    H, W = grey.shape[-2:]
    ph, pw = max(0, min_size - H), max(0, min_size - W)
    if not ph and not pw:
        return grey
    return torch.nn.functional.pad(grey, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2), value=1.0)


def scale_text(grey: Tensor, text_height_px: tuple[float, float] | None,
               max_factor: float = 8.0) -> tuple[Tensor, float]:
    """Rescale a normalised page ``(1, H, W)`` so its text's core height lies in ``text_height_px = (lo, hi)``.

    A page whose core height (:func:`text_height`) is already inside the band is left untouched,
    pixel for pixel (resampling would blur the glyph details that tell near-twin fonts apart); one
    below or above it is resampled to the nearest edge. ``(h, h)`` brings every page to ``h``;
    ``None`` leaves every page at its own scale. The factor is clamped to ``[1 / max_factor,
    max_factor]``. Returns the page and the factor applied.
    """
    if text_height_px is None:
        return grey, 1.0
    lo, hi = text_height_px
    h = text_height(grey)
    if h is None or lo <= h <= hi:
        return grey, 1.0
    factor = float(min(max(min(max(h, lo), hi) / h, 1.0 / max_factor), max_factor))
    return rescale_page(grey, factor), factor


def prepare_page(rgb: Tensor, *, text_height_px: tuple[float, float] | None, min_size: int,
                 max_factor: float = 8.0) -> tuple[Tensor, float]:
    """One RGB page ``(3, H, W)`` in [0, 1] → normalised grey ``(1, H', W')`` at the reference text scale.

    Normalises (:func:`normalize_pages`), brings the text's core height into the band
    ``text_height_px`` (:func:`scale_text`) and pads with background to at least ``min_size`` per
    side. Returns the page and the factor applied.
    """
    grey, factor = scale_text(normalize_pages(rgb.unsqueeze(0))[0], text_height_px, max_factor)
    return pad_page(grey, min_size), factor


def fit_page(grey: Tensor, size: tuple[int, int]) -> Tensor:
    """A normalised page ``(1, H, W)`` cut or padded (background) to ``size = (H', W')``, centred on its ink.

    For stacking pages of different sizes (e.g. after :func:`prepare_page`) into one training tensor;
    text that falls outside ``size`` is lost, so choose ``size`` for the pages at hand.
    """
    Ht, Wt = size
    H, W = grey.shape[-2:]
    ys, xs = torch.nonzero(grey[0] < INK, as_tuple=True)
    cy, cx = ((int(ys.min() + ys.max()) // 2, int(xs.min() + xs.max()) // 2) if len(ys) else (H // 2, W // 2))
    out = torch.ones(1, Ht, Wt, dtype=grey.dtype, device=grey.device)
    y0, x0 = cy - Ht // 2, cx - Wt // 2  # source window's corner (may lie outside the page)
    sy, sx = max(0, y0), max(0, x0)
    ey, ex = min(H, y0 + Ht), min(W, x0 + Wt)
    out[:, sy - y0 : ey - y0, sx - x0 : ex - x0] = grey[:, sy:ey, sx:ex]
    return out
