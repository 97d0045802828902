"""Region maps for region-guided masking, from the data vitkit has and from a user's folder.

A region map is an (H, W) integer array: 0 = no region (background), 1..K = regions. Sources:

* scenes: the exact part map (``Scene.parts``, one id per named part, "house/roof" …);
* FRB pages: word or line boxes found from the rendered ink (:func:`ink_boxes`). The FRB renderer
  does not return layout boxes, so they are measured on the page: ink = pixels far from the
  background colour (the median of the border); lines = runs of inked rows; words = runs of inked
  columns inside a line separated by gaps wider than a fraction of the line height. Own numpy
  code: a projection profile is all a rendered, nearly axis-aligned page needs (no OCR library).
* any folder: PNG id maps (``maps/NAME.png`` next to ``images/NAME.*``), read with :func:`read_id_map`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 (exclusive)


def background_colour(image: np.ndarray) -> np.ndarray:
    """(H, W, C) image → (C,) float: the median colour of its one-pixel border (a page's paper)."""
    img = np.asarray(image)
    return np.median(np.concatenate([img[0], img[-1], img[:, 0], img[:, -1]]).astype(np.float32), axis=0)


def ink_mask(image: np.ndarray, threshold: float = 60.0) -> np.ndarray:
    """(H, W, 3) uint8 page → (H, W) bool: pixels whose colour is ≥ ``threshold`` (L1 over RGB) from the
    background (:func:`background_colour`)."""
    return np.abs(image.astype(np.float32) - background_colour(image)).sum(-1) >= threshold


def _runs(profile: np.ndarray, max_gap: int) -> list[tuple[int, int]]:
    """Runs [a, b) of True in a 1-D bool profile, merging runs separated by ≤ ``max_gap`` False."""
    idx = np.flatnonzero(profile)
    if len(idx) == 0:
        return []
    runs, start, prev = [], idx[0], idx[0]
    for i in idx[1:]:
        if i - prev - 1 > max_gap:
            runs.append((int(start), int(prev) + 1))
            start = i
        prev = i
    runs.append((int(start), int(prev) + 1))
    return runs


def ink_boxes(image: np.ndarray, *, threshold: float = 60.0, word_gap: float = 0.3,
              min_ink: int = 3) -> tuple[list[Box], list[Box]]:
    """(word boxes, line boxes) of a rendered text page (H, W, 3) uint8.

    ``word_gap``: a column gap wider than this × the line height separates words. Runs with fewer than
    ``min_ink`` inked pixels are noise and dropped.
    """
    ink = ink_mask(image, threshold)
    words: list[Box] = []
    lines: list[Box] = []
    for y0, y1 in _runs(ink.sum(1) > 0, max_gap=1):
        band = ink[y0:y1]
        if band.sum() < min_ink:
            continue
        cols = band.sum(0) > 0
        gap = max(1, int(round(word_gap * (y1 - y0))))
        segs = [(a, b) for a, b in _runs(cols, max_gap=gap) if band[:, a:b].sum() >= min_ink]
        if not segs:
            continue
        for a, b in segs:
            rows = np.flatnonzero(band[:, a:b].any(1))
            words.append((a, y0 + int(rows[0]), b, y0 + int(rows[-1]) + 1))
        lines.append((segs[0][0], y0, segs[-1][1], y1))
    return words, lines


def boxes_to_map(boxes: list[Box], height: int, width: int) -> np.ndarray:
    """Boxes → (H, W) uint8/int32 id map, box k (0-based) → id k + 1; later boxes win overlaps."""
    out = np.zeros((height, width), np.int32)
    for k, (x0, y0, x1, y1) in enumerate(boxes, start=1):
        out[max(y0, 0):y1, max(x0, 0):x1] = k
    return out


def page_regions(image: np.ndarray, level: str = "word", **kw) -> np.ndarray:
    """Word- or line-box region map (H, W) int32 of a rendered page."""
    if level not in ("word", "line"):
        raise ValueError(f"level must be 'word' or 'line', got {level!r}")
    words, lines = ink_boxes(image, **kw)
    return boxes_to_map(words if level == "word" else lines, image.shape[0], image.shape[1])


def read_id_map(path: str | Path) -> np.ndarray:
    """A PNG region-id map → (H, W) int64; 8/16-bit grey or palette PNGs (ids = pixel values)."""
    path = Path(path)
    try:
        im = Image.open(path)
        im.load()
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: cannot read the region map ({e}); give a PNG of integer ids") from e
    if im.mode in ("RGB", "RGBA"):
        raise ValueError(f"{path}: region maps must be single-channel id PNGs (mode L, I;16, I or P), got {im.mode}")
    return np.asarray(im).astype(np.int64)


def resize_map(ids: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of an id map to (height, width) (ids are labels: never interpolated)."""
    h, w = size
    if ids.shape == (h, w):
        return ids
    ys = (np.arange(h) * ids.shape[0] / h).astype(np.int64)
    xs = (np.arange(w) * ids.shape[1] / w).astype(np.int64)
    return ids[ys][:, xs]


def relabel(ids: np.ndarray) -> np.ndarray:
    """Compact ids to 0..K keeping 0 as 0 (so the number of regions stays small per image)."""
    u, inv = np.unique(ids, return_inverse=True)
    if u[0] != 0:
        inv = inv + 1
    return inv.reshape(ids.shape).astype(np.int64)
