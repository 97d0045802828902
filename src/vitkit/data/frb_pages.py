"""High-resolution FRB pages for token reduction: several lines in one font on a large, mostly blank page.

A page (default 288×288 px) holds one text block of a few lines (random training words, one FRB
font, one size) placed at a random spot inside wide margins; most of the page stays empty, so
*where* a token-reduction method keeps its tokens decides whether the font can still be read.
Fonts, words and colours come from :mod:`vitkit.data.frb`. Page ``i`` of ``(split, seed)`` is a
pure function of those three values; labels are balanced over the 15 fonts in every block of 15.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter
from torch import Tensor

from . import frb
from .crops import normalize_pages, pil_to_tensor

log = logging.getLogger(__name__)

_STREAMS = {"train": 10, "val": 11, "test": 12}
_TAG = 41


@dataclass
class PageConfig:
    """Geometry of a high-resolution page. Sizes in pixels; ranges are inclusive (low, high)."""

    size: tuple[int, int] = (288, 288)  # (height, width)
    font_size: tuple[int, int] = (18, 26)
    lines: tuple[int, int] = (2, 4)
    block_width: tuple[float, float] = (0.35, 0.6)  # text block width as a fraction of the page width
    margin: int = 16
    noise: float = 4.0  # Gaussian pixel noise sigma (0-255 scale), up to
    blur_prob: float = 0.3

    def __post_init__(self) -> None:
        self.size = (int(self.size[0]), int(self.size[1]))
        if min(self.size) < 64:
            raise ValueError(f"PageConfig.size must be at least 64×64 px, got {self.size}")
        lo, hi = self.font_size
        if not 6 <= lo <= hi:
            raise ValueError(f"PageConfig.font_size must satisfy 6 <= low <= high, got {self.font_size}")
        if not 1 <= self.lines[0] <= self.lines[1]:
            raise ValueError(f"PageConfig.lines must satisfy 1 <= low <= high, got {self.lines}")
        if not 0.1 <= self.block_width[0] <= self.block_width[1] <= 1.0:
            raise ValueError(f"PageConfig.block_width must lie in [0.1, 1] with low <= high, got {self.block_width}")
        if not 0 <= self.margin < min(self.size) // 4:
            raise ValueError(f"PageConfig.margin must be in [0, {min(self.size) // 4}), got {self.margin}")


def _label(i: int, seed: int, stream: int) -> int:
    block, pos = divmod(i, len(frb.FONTS))
    return int(np.random.default_rng([_TAG, 2, stream, seed, block]).permutation(len(frb.FONTS))[pos])


def page_sample(i: int, seed: int = 0, *, split: str = "train", cfg: PageConfig | None = None) -> frb.FRBSample:
    """Page ``i`` of ``seed`` for ``split`` ("train", "val" or "test"): an :class:`frb.FRBSample`."""
    if split not in _STREAMS:
        raise ValueError(f"split must be one of {sorted(_STREAMS)}, got {split!r}")
    if isinstance(i, bool) or not isinstance(i, int | np.integer) or i < 0:
        raise ValueError(f"page index must be a non-negative int, got {i!r}")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    cfg = cfg or PageConfig()
    stream = _STREAMS[split]
    label = _label(int(i), int(seed), stream)
    rng = np.random.default_rng([_TAG, 1, stream, int(seed), int(i)])
    H, W = cfg.size
    size = int(rng.integers(cfg.font_size[0], cfg.font_size[1] + 1))
    font = frb.load_font(label, size)
    n_lines = int(rng.integers(cfg.lines[0], cfg.lines[1] + 1))
    block_w = int(W * rng.uniform(*cfg.block_width))
    text = " ".join(frb.random_text(rng) for _ in range(3 * n_lines))
    lines = frb.wrap_text(text, font, block_w)[:n_lines]
    ascent, descent = font.getmetrics()
    step = ascent + descent
    block_h = step * len(lines)
    used_w = int(max(font.getlength(line) for line in lines))
    x0 = int(rng.integers(cfg.margin, max(cfg.margin + 1, W - cfg.margin - used_w)))
    y0 = int(rng.integers(cfg.margin, max(cfg.margin + 1, H - cfg.margin - block_h)))
    fg, bg = frb.random_colours(rng)
    image = Image.new("RGB", (W, H), bg)
    draw = ImageDraw.Draw(image)
    for k, line in enumerate(lines):
        draw.text((x0, y0 + k * step), line, font=font, fill=fg)
    if rng.random() < cfg.blur_prob:
        image = image.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.2, 0.8))))
    sigma = float(rng.uniform(0.0, cfg.noise))
    if sigma > 0:
        px = np.asarray(image, dtype=np.float32) + rng.normal(0.0, sigma, (H, W, 3)).astype(np.float32)
        image = Image.fromarray(np.clip(np.rint(px), 0, 255).astype(np.uint8), "RGB")
    return frb.FRBSample(image, label, frb.FONTS[label].name, "\n".join(lines), f"pages-{split}")


def page_split(n: int, seed: int = 0, *, split: str = "train", cfg: PageConfig | None = None) -> list[frb.FRBSample]:
    """Pages ``0 .. n-1`` of ``(split, seed)``."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    return [page_sample(i, seed, split=split, cfg=cfg) for i in range(n)]


def page_tensors(samples: Sequence[frb.FRBSample]) -> tuple[Tensor, Tensor]:
    """Normalised grey pages ``(P, 1, H, W)`` in [0, 1] (ink ≈ 0) and labels ``(P,)``."""
    if not samples:
        raise ValueError("page_tensors needs at least one sample")
    x = torch.stack([pil_to_tensor(s.image) for s in samples])
    grey = torch.cat([normalize_pages(x[i : i + 64]) for i in range(0, len(x), 64)])
    return grey, torch.tensor([s.label for s in samples])
