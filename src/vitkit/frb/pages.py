"""FRB samples as page tensors, and the high-resolution pages of token reduction.

:func:`frb_pages` turns any FRB samples into normalised grey pages ``(P, 1, H, W)`` (optionally
restricted to some fonts, brought to one text scale and cut to one canvas): what crop training,
the page classifier's evaluations and the open-set experiments take.

High-resolution pages (token reduction): several lines in one font on a large, mostly blank page. A page (default 288×288 px) holds one text block of a few lines (random training words, one FRB
font, one size) placed at a random spot inside wide margins; most of the page stays empty, so
*where* a token-reduction method keeps its tokens decides whether the font can still be read.
Fonts, words and colours come from :mod:`vitkit.frb.training`. Page ``i`` of ``(split, seed)`` is a
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

from .fontset import FONTS, load_font
from .ink import fit_page, normalize_pages, pil_to_tensor, scale_text
from .render import FRBSample, wrap_text
from .training import check_index_and_seed, random_colours, random_text

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


def frb_pages(
    samples: Sequence[FRBSample], fonts: Sequence[str] | None = None, *,
    text_height: tuple[float, float] | None = None, canvas: tuple[int, int] | None = None,
    scale_jitter: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Grey pages ``(P, 1, H, W)`` in [0, 1] and labels ``(P,)`` for FRB samples.

    With ``fonts`` (e.g. :data:`vitkit.frb.KNOWN_FONTS`), only samples in those fonts are kept and labels
    become indices into ``fonts``; otherwise labels are indices into :data:`vitkit.frb.FONT_NAMES`. With
    ``text_height`` (a band of core heights, see :func:`vitkit.frb.ink.scale_text`), pages are brought
    to that text scale as a :class:`~vitkit.frb.classifier.PagePolicy` reads them. Pages of different sizes
    are cut or padded to ``canvas`` ``(H, W)`` around their ink (default: the largest page).
    ``scale_jitter`` = j moves page i's band by a factor in [1 − j, 1 + j] (spread evenly over the pages
    by i): training pages read slightly off the reference scale teach the classifier to forgive the
    estimate of a page's text height, which is a few percent off on short or small text.
    """
    if not 0.0 <= scale_jitter < 1.0:
        raise ValueError(f"scale_jitter must be in [0, 1), got {scale_jitter!r}")
    if fonts is not None:
        pos = {name: i for i, name in enumerate(fonts)}
        samples = [s for s in samples if s.font in pos]
        labels = [pos[s.font] for s in samples]
    else:
        labels = [s.label for s in samples]
    if not samples:
        raise ValueError(f"no FRB samples in fonts {list(fonts or [])}")
    by_size: dict[tuple[int, int], list[int]] = {}
    for i, s in enumerate(samples):
        by_size.setdefault(s.image.size, []).append(i)
    grey: list[torch.Tensor] = [torch.empty(0)] * len(samples)
    for idx in by_size.values():  # normalise pages of one size in batches
        for j in range(0, len(idx), 64):
            part = idx[j : j + 64]
            x = normalize_pages(torch.stack([pil_to_tensor(samples[i].image) for i in part]))
            for i, g in zip(part, x, strict=True):
                grey[i] = scale_text(g, _jittered(text_height, i, scale_jitter))[0]
    if canvas is None and len({tuple(g.shape) for g in grey}) == 1:
        return torch.stack(grey), torch.tensor(labels)
    if canvas is None:
        canvas = (max(g.shape[-2] for g in grey), max(g.shape[-1] for g in grey))
    return torch.stack([fit_page(g, canvas) for g in grey]), torch.tensor(labels)


def _jittered(band: tuple[float, float] | None, i: int, jitter: float) -> tuple[float, float] | None:
    """``band`` times 1 + jitter · v, v in [−1, 1) by the plastic-number sequence of ``i`` (not the golden-ratio one
    that :func:`vitkit.frb.recipe.training_pages` uses to pick page kinds, so the two do not line up)."""
    if band is None or not jitter:
        return band
    f = 1.0 + jitter * (2.0 * ((i * 0.7548776662) % 1.0) - 1.0)
    return (band[0] * f, band[1] * f)


def _label(i: int, seed: int, stream: int) -> int:
    block, pos = divmod(i, len(FONTS))
    return int(np.random.default_rng([_TAG, 2, stream, seed, block]).permutation(len(FONTS))[pos])


def page_sample(i: int, seed: int = 0, *, split: str = "train", cfg: PageConfig | None = None) -> FRBSample:
    """Page ``i`` of ``seed`` for ``split`` ("train", "val" or "test"): an :class:`~vitkit.frb.render.FRBSample`."""
    if split not in _STREAMS:
        raise ValueError(f"split must be one of {sorted(_STREAMS)}, got {split!r}")
    check_index_and_seed(i, seed, "page index")
    cfg = cfg or PageConfig()
    stream = _STREAMS[split]
    label = _label(int(i), int(seed), stream)
    rng = np.random.default_rng([_TAG, 1, stream, int(seed), int(i)])
    H, W = cfg.size
    size = int(rng.integers(cfg.font_size[0], cfg.font_size[1] + 1))
    font = load_font(label, size)
    n_lines = int(rng.integers(cfg.lines[0], cfg.lines[1] + 1))
    block_w = int(W * rng.uniform(*cfg.block_width))
    text = " ".join(random_text(rng) for _ in range(3 * n_lines))
    lines = wrap_text(text, font, block_w)[:n_lines]
    ascent, descent = font.getmetrics()
    step = ascent + descent
    block_h = step * len(lines)
    used_w = int(max(font.getlength(line) for line in lines))
    x0 = int(rng.integers(cfg.margin, max(cfg.margin + 1, W - cfg.margin - used_w)))
    y0 = int(rng.integers(cfg.margin, max(cfg.margin + 1, H - cfg.margin - block_h)))
    fg, bg = random_colours(rng)
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
    return FRBSample(image, label, FONTS[label].name, "\n".join(lines), f"pages-{split}")


def page_split(n: int, seed: int = 0, *, split: str = "train", cfg: PageConfig | None = None) -> list[FRBSample]:
    """Pages ``0 .. n-1`` of ``(split, seed)``."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    return [page_sample(i, seed, split=split, cfg=cfg) for i in range(n)]


def page_tensors(samples: Sequence[FRBSample]) -> tuple[Tensor, Tensor]:
    """Normalised grey pages ``(P, 1, H, W)`` in [0, 1] (ink ≈ 0) and labels ``(P,)``."""
    if not samples:
        raise ValueError("page_tensors needs at least one sample")
    x = torch.stack([pil_to_tensor(s.image) for s in samples])
    grey = torch.cat([normalize_pages(x[i : i + 64]) for i in range(0, len(x), 64)])
    return grey, torch.tensor([s.label for s in samples])
