"""Appearance of :mod:`vitkit.data.scenes`: textures, domain styles and weather from depth.

Everything here turns exact label maps into pixels; nothing here changes a label. Per-pixel
arithmetic is elementwise (+ − × ÷, comparisons, rounding) on float32 arrays and PIL's bilinear
resize, with transcendental functions only in small lookup tables whose entries are rounded, so
the same numpy/Pillow versions give the same bytes on every machine (no BLAS, no reductions).

Styles (the domains of cross-domain adaptation):

* ``textured`` -- value-noise shading, stripes/checks/dots on some parts, textured ground (grass,
  sand, water ripples, road, tiles), sky gradient, sensor noise;
* ``flat`` -- one flat colour per part, per distractor and per background band;
* ``outline`` -- a line drawing: dark lines on the boundaries of every part, distractor and the
  horizon, on paper.

Weather, computed from the depth map (metres): ``fog`` I = J·t + A·(1 − t), t = exp(−β·depth)
(Koschmieder); ``night`` dim blue-shifted exposure with sensor noise, lamp lights emissive;
``rain`` thin fog (β/3), darkening and streaks.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw

STYLES = ("textured", "flat", "outline")
WEATHERS = ("clear", "fog", "night", "rain")
GROUNDS = ("grass", "sand", "water", "road", "tiles")

_GROUND_RGB = {
    "grass": ((70, 130, 50), (100, 150, 60), (60, 110, 60)),
    "sand": ((200, 180, 130), (180, 160, 110), (210, 195, 160)),
    "water": ((40, 90, 150), (50, 120, 160), (30, 70, 120)),
    "road": ((90, 90, 95), (110, 105, 100), (70, 70, 75)),
    "tiles": ((170, 150, 130), (140, 140, 150), (190, 170, 150)),
}
_SKY_RGB = (((110, 160, 220), (190, 215, 240)), ((150, 160, 175), (210, 210, 215)),
            ((230, 150, 110), (250, 210, 160)), ((200, 190, 170), (225, 215, 195)))  # blue, overcast, dusk, wall


def value_noise(rng: np.random.Generator, height: int, width: int, cells: int) -> np.ndarray:
    """Smooth noise in [−1, 1], (H, W) float32: a (cells+1)² random grid, bilinearly upsampled."""
    grid = rng.random((cells + 1, cells + 1), dtype=np.float32) * 2.0 - 1.0
    return np.asarray(Image.fromarray(grid, mode="F").resize((width, height), Image.BILINEAR), dtype=np.float32)


def pattern(kind: str, ys: np.ndarray, xs: np.ndarray, period: float, cs: tuple[float, float]) -> np.ndarray:
    """A periodic pattern in {−1, +1} over the coordinates ``ys`` (h, 1) and ``xs`` (1, w).

    ``stripes`` along the direction ``cs = (cos, sin)``, ``checks``, ``dots``; any other kind → zeros.
    """
    if kind == "stripes":
        a = (xs * cs[0] + ys * cs[1]) / period
        return np.where(a - np.floor(a) < 0.5, 1.0, -1.0).astype(np.float32)
    if kind == "checks":
        a = np.floor(xs / period) + np.floor(ys / period)
        return np.where(a - 2.0 * np.floor(a / 2.0) < 0.5, 1.0, -1.0).astype(np.float32)
    if kind == "dots":
        dx = xs / period - np.floor(xs / period) - 0.5
        dy = ys / period - np.floor(ys / period) - 0.5
        return np.where(dx * dx + dy * dy < 0.09, 1.0, -1.0).astype(np.float32)
    return np.zeros((ys.shape[0], xs.shape[1]), np.float32)


def jitter(rng: np.random.Generator, rgb, amount: float = 25.0) -> np.ndarray:
    """A colour near ``rgb``: each channel moved by Uniform(±amount), clipped to [0, 255]."""
    return np.clip(np.asarray(rgb, np.float32) + rng.uniform(-amount, amount, 3).astype(np.float32), 0, 255)


def background(rng: np.random.Generator, size: int, horizon: int, ground: str, sky: int, style: str,
               noise: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """The empty scene, (H, W, 3) float32: sky/wall above ``horizon``, ``ground`` below."""
    img = np.empty((size, size, 3), np.float32)
    top, bottom = jitter(rng, _SKY_RGB[sky][0], 15), jitter(rng, _SKY_RGB[sky][1], 15)
    gcol = jitter(rng, _GROUND_RGB[ground][rng.integers(3)], 15)
    if style != "textured":
        img[:horizon] = top if style == "flat" else 0
        img[horizon:] = gcol if style == "flat" else 0
        return img
    coarse, fine = noise
    ramp = (np.arange(horizon, dtype=np.float32) / max(horizon, 1))[:, None, None]
    img[:horizon] = (top * (1 - ramp) + bottom * ramp) * (1 + 0.08 * coarse[:horizon, :, None])
    ys = np.arange(horizon, size, dtype=np.float32)[:, None]
    xs = np.arange(size, dtype=np.float32)[None, :]
    g = coarse[horizon:] * 0.12
    if ground in ("grass", "sand"):
        g = g + fine[horizon:] * (0.22 if ground == "grass" else 0.1)
    elif ground == "water":  # ripples: horizontal bands bent by the coarse noise
        a = ys / (0.025 * size) + 2.0 * coarse[horizon:]
        g = g + np.where(a - np.floor(a) < 0.3, 0.15, 0.0)
    elif ground == "road":
        g = g + fine[horizon:] * 0.08
        mid = horizon + (size - horizon) // 2
        dash = (np.floor(xs / (0.08 * size)) % 2 == 0) & (np.abs(ys - mid) < max(1.0, 0.012 * size))
        g = np.where(dash, 1.2, g)
    else:  # tiles
        g = g + 0.12 * pattern("checks", ys, xs, 0.09 * size, (1.0, 0.0)) + fine[horizon:] * 0.05
    img[horizon:] = gcol * (1 + g[:, :, None])
    return img


def shade(rng: np.random.Generator, base: np.ndarray, ys: np.ndarray, xs: np.ndarray,
          noise: tuple[np.ndarray, np.ndarray], style: str, size: int) -> np.ndarray:
    """A part's colour over a crop, (h, w, 3): ``base`` shaded by the crop's noise and a pattern.

    ``noise`` are the (h, w) crops of the coarse and fine noise fields.
    """
    if style != "textured":
        return np.broadcast_to(base, (ys.shape[0], xs.shape[1], 3))
    coarse, fine = noise
    kind = ("none", "none", "stripes", "checks", "dots")[rng.integers(5)]
    t = float(rng.uniform(-0.6, 0.6))
    cs = ((1 - t * t) / (1 + t * t), 2 * t / (1 + t * t))
    s = 1 + 0.15 * coarse + float(rng.uniform(0.03, 0.15)) * fine
    s = s + 0.12 * pattern(kind, ys, xs, float(rng.uniform(0.03, 0.07)) * size, cs)
    return base * s[:, :, None]


def outlines(maps: list[np.ndarray], width: int) -> np.ndarray:
    """(H, W) bool: pixels where any of the integer label ``maps`` changes, thickened to ``width``."""
    edge = np.zeros(maps[0].shape, bool)
    for m in maps:
        edge[:, 1:] |= m[:, 1:] != m[:, :-1]
        edge[1:, :] |= m[1:, :] != m[:-1, :]
    for _ in range(width - 1):
        grown = edge.copy()
        grown[:, 1:] |= edge[:, :-1]
        grown[1:, :] |= edge[:-1, :]
        edge = grown
    return edge


@lru_cache(maxsize=16)
def _transmission_table(beta: float) -> np.ndarray:
    """exp(−β·d) for d = 0, 1/16, …, 128 m, rounded to 1e-7 (one libm call per entry, once)."""
    return np.array([round(math.exp(-beta * k / 16.0), 7) for k in range(128 * 16 + 1)], np.float32)


def transmission(depth: np.ndarray, beta: float) -> np.ndarray:
    """t = exp(−β·depth), (H, W) float32, from a table at 1/16 m steps (depth clipped to 128 m)."""
    k = np.rint(np.clip(depth, 0.0, 128.0) * 16.0).astype(np.int64)
    return _transmission_table(float(beta))[k]


def weather(rng: np.random.Generator, img: np.ndarray, depth: np.ndarray, kind: str, beta: float,
            lights: np.ndarray | None = None) -> np.ndarray:
    """Apply ``kind`` (see :data:`WEATHERS`) to ``img`` (H, W, 3) float32 in [0, 255] using ``depth`` (H, W) m.

    ``lights`` (H, W) bool marks emissive pixels (lamp lights) that stay bright at night.
    """
    if kind == "clear":
        return img
    size = img.shape[0]
    if kind in ("fog", "rain"):
        t = transmission(depth, beta if kind == "fog" else beta / 3.0)[:, :, None]
        air = np.float32(rng.uniform(200, 235))
        img = img * t + air * (1 - t)
    if kind == "night":
        tint = np.array([0.22, 0.26, 0.38], np.float32) * np.float32(rng.uniform(0.8, 1.2))
        lit = img * tint
        if lights is not None:
            lit = np.where(lights[:, :, None], img * 0.95, lit)
        grain = rng.integers(-6, 7, size=(size, size, 1)).astype(np.float32)
        return lit + grain
    if kind == "rain":
        img = img * 0.82
        streaks = Image.new("L", (size, size), 0)
        draw = ImageDraw.Draw(streaks)
        n = int(rng.integers(60, 140) * (size / 224) ** 2) + 1
        ln = rng.uniform(0.03, 0.08, n) * size
        x0 = rng.uniform(0, size, n)
        y0 = rng.uniform(-0.1 * size, size, n)
        slope = float(rng.uniform(-0.3, 0.3))
        for x, y, length in zip(x0.tolist(), y0.tolist(), ln.tolist(), strict=True):
            draw.line([(x, y), (x + slope * length, y + length)], fill=255, width=1)
        a = np.asarray(streaks, np.float32)[:, :, None] * (0.45 / 255.0)
        img = img * (1 - a) + 225.0 * a
    return img


def to_uint8(img: np.ndarray) -> np.ndarray:
    """(H, W, 3) float → uint8, rounded half to even and clipped."""
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)
