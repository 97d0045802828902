"""Manipulation data on FRB pages: text crops with word maps, and the font splice.

A page crop (:func:`page_crop`) is an S × S RGB window of an FRB training page
(:func:`vitkit.frb.train_sample`) whose text was first resampled to a core height of
``S · TEXT_HEIGHT_FRAC`` px (the core height of :func:`vitkit.frb.ink.text_height`, ≈ the x-height), taken
so that one word lies wholly inside it. Its word map has the scene part map's conventions: 0 = no word,
1..K = the words (boxes) visible in the crop.

Word boxes (:func:`word_boxes`) are measured on the page at its own resolution, with the core height as
the unit: ink gaps up to 0.4 core height (letter spacing) are closed, wider ones (word spaces) kept;
connected ink is a word; a component taller than ~3 core heights spans two lines whose ascenders and
descenders touch, and is cut at the sparsest row between its dense (x-height) bands. The projection
profile of :func:`~.regions.ink_boxes` merges whole lines on the rotated or tightly set FRB training
pages, which is why this module labels connected components instead.

The ``font`` manipulation (:func:`manip_font`) replaces one word of a crop by the closest-width word of a
page set in another font at the same core height: the word is cleared to the page's background (its
colour and noise), and the donor word's ink coverage is drawn in the crop's own text colour, so colours and
polarity (dark on light or light on dark) stay those of the page.

Everything is a pure function of its arguments; page crop ``index`` of ``(seed, size)`` depends on nothing else.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

from .. import frb
from ..frb.ink import normalize_pages, pil_to_tensor, text_height
from ..segment.prompting import connected_components
from .regions import Box, background_colour, boxes_to_map, ink_mask

# Text core height as a fraction of the crop side. A 4–5 letter word is ~5 core heights wide and a line
# ~2.5 high, so at S/8 an S × S crop holds ~3 lines of one or two words: a few whole words, each a large
# region (≥ 1/20 of the crop). At S = 96 the core is 12 px, the height at which the FRB crop classifier
# tells the fonts apart; at S = 48 (6 px) the letters are still readable. S/5 (the first guess) makes a
# word wider than the crop.
TEXT_HEIGHT_FRAC = 1 / 8
# Ink gaps up to LETTER_GAP × core height are inside a word. Letter and word gaps overlap across the 15 fonts
# (0.4 core heights is a letter gap in Consolas, a word gap in Lobster): at 0.4 the word count is right on
# 2/3 of FRB training pages and the rest are split about as often as merged.
LETTER_GAP = 0.4
DOT_GAP = 0.5  # vertical gaps up to this × core height join i-dots and accents to their letters
LINE_SPLIT = 3.2  # a component taller than this × core height spans two lines
MAX_DONOR_WORD = 6.0  # a font donor page needs a word box at most this × core height wide
DONOR_SEED = 2_000_029  # FRB seeds of the font donors start here (apart from the pages' own seeds)
CROP_STREAM = 22  # first word of the seed of the crop-window draws (a stream apart from the pages' own)


@dataclass
class PageCrop:
    """An S × S crop of an FRB training page at the core height ``core_height`` px."""

    image: np.ndarray  # (S, S, 3) uint8
    words: np.ndarray  # (S, S) int32 word map: 0 none, 1..K words
    font: str  # the page's font name
    label: int  # its index in vitkit.frb.FONT_NAMES
    core_height: float  # text core height in px the page was brought to


@dataclass
class TextPage:
    """A whole page at a given core height with its word boxes (a font donor)."""

    image: np.ndarray  # (H, W, 3) uint8
    boxes: list[Box]  # word boxes (x0, y0, x1, y1), exclusive ends
    font: str
    label: int


def close_gaps(mask: np.ndarray, gap: int, axis: int = 1) -> np.ndarray:
    """(H, W) bool → the same with every run of ≤ ``gap`` False between two True along ``axis`` set True."""
    m = mask if axis == 1 else mask.T
    n = m.shape[1]
    idx = np.broadcast_to(np.arange(n), m.shape)
    prev = np.maximum.accumulate(np.where(m, idx, -1), axis=1)
    nxt = np.minimum.accumulate(np.where(m, idx, n)[:, ::-1], axis=1)[:, ::-1]
    out = m | ((prev >= 0) & (nxt < n) & (nxt - prev - 1 <= gap))
    return out if axis == 1 else out.T


def _split_lines(comp: np.ndarray, ink: np.ndarray, core: float, depth: int = 0) -> list[np.ndarray]:
    """A component mask (H, W) bool → its parts, one per text line (itself when it spans one line). The rows
    are weighed by their ``ink`` (the component's own mask is filled in by the gap closing)."""
    ys = np.flatnonzero(comp.any(1))
    if depth > 3 or ys[-1] - ys[0] + 1 <= LINE_SPLIT * core:
        return [comp]
    prof = (comp & ink).sum(1).astype(np.float64)
    dense = close_gaps((prof > 0.15 * prof.max())[None], 1)[0]
    edges = np.diff(np.concatenate([[0], dense.astype(np.int8), [0]]))
    bands = [(a, b) for a, b in zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1), strict=True)
             if b - a >= 0.5 * core]
    if len(bands) < 2:
        return [comp]
    cuts = [0] + [int(a1 + np.argmin(prof[a1:b0])) if b0 > a1 else int(a1)
                  for (_, a1), (b0, _) in zip(bands[:-1], bands[1:], strict=True)] + [comp.shape[0]]
    parts = []
    for y0, y1 in zip(cuts[:-1], cuts[1:], strict=True):
        piece = np.zeros_like(comp)
        piece[y0:y1] = comp[y0:y1]
        labels, n = connected_components(piece)
        for k in range(1, n + 1):
            parts += _split_lines(labels == k, ink, core, depth + 1)
    return parts


def word_boxes(image: np.ndarray, core_height: float, *, threshold: float = 60.0) -> list[Box]:
    """Word boxes (x0, y0, x1, y1), exclusive ends, of a rendered text page (H, W, 3) uint8 whose text core
    height is ``core_height`` px; sorted top to bottom, then left to right. Specks narrower than half a core
    height and lower than one (noise, a full stop or comma set apart) are dropped."""
    ink = ink_mask(image, threshold)
    closed = close_gaps(ink, max(1, round(LETTER_GAP * core_height)), axis=1)
    closed = close_gaps(closed, max(1, round(DOT_GAP * core_height)), axis=0)
    labels, n = connected_components(closed)
    boxes = []
    for k in range(1, n + 1):
        for part in _split_lines(labels == k, ink, core_height):
            ys, xs = np.nonzero(part & ink)
            if len(ys) == 0:
                continue
            x0, y0, x1, y1 = int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1
            if x1 - x0 < 0.5 * core_height and y1 - y0 < core_height:
                continue
            boxes.append((x0, y0, x1, y1))
    return sorted(boxes, key=lambda b: (b[1], b[0]))


def text_page(sample: frb.FRBSample, core_height: float) -> TextPage:
    """An FRB sample resampled (bilinear, antialiased when shrinking) so its text core height is
    ``core_height`` px, with word boxes measured at the page's own resolution, scaled along and grown by 1 px."""
    rgb = sample.image.convert("RGB")
    h0 = text_height(normalize_pages(pil_to_tensor(rgb)[None])[0])
    page = np.asarray(rgb)
    if h0 is None:  # a blank page: nothing to scale by, no words
        return TextPage(page.copy(), [], sample.font, sample.label)
    f = min(max(core_height / h0, 1 / 8), 8.0)
    boxes = word_boxes(page, h0)
    W, H = rgb.size
    w, h = max(1, round(W * f)), max(1, round(H * f))
    scaled = np.asarray(rgb.resize((w, h), Image.Resampling.BILINEAR))
    # one more pixel each way: resampling spreads the glyphs' antialiased rim past the ink threshold, and a word
    # moved or erased without its rim leaves a ghost outline
    sb = [(max(0, math.floor(x0 * f) - 1), max(0, math.floor(y0 * f) - 1),
           min(w, math.ceil(x1 * f) + 1), min(h, math.ceil(y1 * f) + 1)) for x0, y0, x1, y1 in boxes]
    return TextPage(scaled, [b for b in sb if b[2] > b[0] and b[3] > b[1]], sample.font, sample.label)


def _pad_to(page: TextPage, size: int) -> TextPage:
    """Pad with the border's median colour so both sides are ≥ ``size`` (boxes shift with the page)."""
    H, W = page.image.shape[:2]
    ph, pw = max(0, size - H), max(0, size - W)
    if not ph and not pw:
        return page
    img = page.image
    bg = background_colour(img).astype(np.uint8)
    out = np.empty((H + ph, W + pw, 3), np.uint8)
    out[:] = bg
    top, left = ph // 2, pw // 2
    out[top:top + H, left:left + W] = img
    boxes = [(x0 + left, y0 + top, x1 + left, y1 + top) for x0, y0, x1, y1 in page.boxes]
    return TextPage(out, boxes, page.font, page.label)


def page_crop(seed: int, index: int, size: int) -> PageCrop:
    """Crop ``index`` of ``seed``: FRB training page ``index`` of ``seed`` at core height ``size · TEXT_HEIGHT_FRAC``,
    cut to ``size × size`` around a word that fits wholly inside (chosen at random, as is its place in the crop)."""
    if size < 16:
        raise ValueError(f"page crop size must be ≥ 16 px, got {size}")
    core = size * TEXT_HEIGHT_FRAC
    page = _pad_to(text_page(frb.train_sample(index, seed), core), size)
    H, W = page.image.shape[:2]
    rng = np.random.default_rng([CROP_STREAM, seed, index, size])
    fits = [b for b in page.boxes if b[2] - b[0] <= size and b[3] - b[1] <= size]
    pool = fits or page.boxes
    if pool:
        x0, y0, x1, y1 = pool[int(rng.integers(len(pool)))]
    else:
        x0, y0, x1, y1 = W // 2, H // 2, W // 2 + 1, H // 2 + 1
    # the window's corner ranges over every place that keeps the word inside the window, off its edge by a
    # pixel where it can be (so that a manipulation has a whole word to work on), and the window on the page
    m = 1 if x1 - x0 <= size - 2 and y1 - y0 <= size - 2 else 0
    lo_x, hi_x = max(0, x1 + m - size), min(W - size, x0 - m)
    lo_y, hi_y = max(0, y1 + m - size), min(H - size, y0 - m)
    cx = int(rng.integers(lo_x, hi_x + 1)) if lo_x <= hi_x else min(max(0, (x0 + x1 - size) // 2), W - size)
    cy = int(rng.integers(lo_y, hi_y + 1)) if lo_y <= hi_y else min(max(0, (y0 + y1 - size) // 2), H - size)
    crop = np.ascontiguousarray(page.image[cy:cy + size, cx:cx + size])
    visible = []
    for bx0, by0, bx1, by1 in page.boxes:
        b = (max(bx0 - cx, 0), max(by0 - cy, 0), min(bx1 - cx, size), min(by1 - cy, size))
        if b[2] > b[0] and b[3] > b[1]:
            visible.append(b)
    return PageCrop(crop, boxes_to_map(visible, size, size), page.font, page.label, core)


def font_donor(seed: int, index: int, font: str, core_height: float) -> TextPage:
    """The page whose word replaces one in crop ``index`` of ``seed``, at ``core_height``: FRB training page
    ``index`` of the first donor seed ``DONOR_SEED + seed + t`` (t = 0, 1, …) set in a font other than ``font``
    with a word box at most ``MAX_DONOR_WORD`` core heights wide (a wider box is a line whose word spaces
    were too narrow to see, as in the script fonts, and would only give a cut-off fragment)."""
    for t in range(256):
        s = frb.train_sample(index, DONOR_SEED + seed + t)
        if s.font == font:
            continue
        page = text_page(s, core_height)
        if any(b[2] - b[0] <= MAX_DONOR_WORD * core_height for b in page.boxes):
            return page
    raise AssertionError(f"no donor page in a font other than {font!r}")  # ~1/15 · small chance each: unreachable


def ink_alpha(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 text image → (H, W) float32 ink coverage in [0, 1] (1 = text colour, 0 = background),
    from the page normalisation of :func:`vitkit.frb.ink.normalize_pages` (polarity-free). The 15% at either
    end are clipped: background noise and the haze of a blurred or JPEG-compressed donor page would
    otherwise be drawn as a faint halo of text colour around the spliced word."""
    grey = normalize_pages(pil_to_tensor(Image.fromarray(image))[None])[0, 0].numpy()
    return np.clip((0.85 - grey) / 0.7, 0.0, 1.0).astype(np.float32)


def fit_width(patch: np.ndarray, width: int) -> np.ndarray:
    """A word's ink coverage (h, w) cut to at most ``width`` (+15%) columns: at the empty column (a letter
    gap) nearest to ``width`` among those from 0.6 × ``width``, else at ``width`` itself."""
    h, w = patch.shape
    if w <= 1.15 * width:
        return patch
    empty = np.flatnonzero(patch.max(0) < 0.05)
    empty = empty[(empty >= 0.6 * width) & (empty <= 1.15 * width)]
    cut = int(empty[np.argmin(np.abs(empty - width))]) if len(empty) else int(width)
    return patch[:, :max(1, cut)]


def _median_row(alpha: np.ndarray) -> float:
    rows = alpha.sum(1).astype(np.float64)
    if rows.sum() <= 0:
        return (len(rows) - 1) / 2
    return float(np.searchsorted(np.cumsum(rows), 0.5 * rows.sum()))


def manip_font(img: np.ndarray, words: np.ndarray, rng: np.random.Generator, *, donor: TextPage,
               **_) -> tuple[np.ndarray, np.ndarray]:
    """Replace one word of a page crop by a word of ``donor`` (a page in another font at the crop's core height).

    img: (H, W, 3) uint8; words: (H, W) int word map (0 none). The target is a random word that does not
    touch the crop's border and is not tiny beside the others (the most visible word if all touch the
    border). The donor word is the one closest to it in width, cut to fit (:func:`fit_width`), centred on
    it and aligned on its ink's median row (≈ the middle of the x-height band, so the baselines agree).
    The replaced region is the bounding box of the old and the new word, less other words' pixels; it is
    cleared to the crop's background (median colour and pixel noise) and the donor's ink coverage is drawn
    in the crop's text colour. Returns (manipulated (H, W, 3) uint8, changed (H, W) bool ⊇ the target word).
    """
    H, W = words.shape
    ids = [int(k) for k in np.unique(words) if k > 0]
    if not ids:
        raise ValueError("a font splice needs a crop with at least one word")
    if not donor.boxes:
        raise ValueError("a font splice needs a donor page with at least one word")
    border = set(np.unique(np.concatenate([words[0], words[-1], words[:, 0], words[:, -1]])).tolist())
    area = {k: np.count_nonzero(words == k) for k in ids}
    inner = [k for k in ids if k not in border]
    inner = [k for k in inner if area[k] >= 0.25 * max(area[q] for q in inner)]  # not a stray mark
    if inner:
        k = inner[int(rng.integers(len(inner)))]
    else:  # every word is cut by the crop's edge: the most visible one
        k = max(ids, key=lambda q: area[q])
    target = words == k
    ys, xs = np.nonzero(target)
    tx0, ty0, tx1, ty1 = int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1
    alpha = ink_alpha(img)
    widths = np.array([b[2] - b[0] for b in donor.boxes])
    dx0, dy0, dx1, dy1 = donor.boxes[int(np.argmin(np.abs(widths - (tx1 - tx0))))]
    patch = fit_width(ink_alpha(donor.image)[dy0:dy1, dx0:dx1], tx1 - tx0)
    # place: the donor's median ink row on the target's, centres aligned
    py = int(round(ty0 + _median_row(alpha[ty0:ty1, tx0:tx1]) - _median_row(patch)))
    px = int(round((tx0 + tx1) / 2 - patch.shape[1] / 2))
    placed = np.zeros((H, W), np.float32)
    sy0, sx0 = max(0, py), max(0, px)
    sy1, sx1 = min(H, py + patch.shape[0]), min(W, px + patch.shape[1])
    if sy1 > sy0 and sx1 > sx0:
        placed[sy0:sy1, sx0:sx1] = patch[sy0 - py:sy1 - py, sx0 - px:sx1 - px]
    # the replaced region: old word (with its rim) ∪ new word's box, never another word's pixels
    ry0, rx0 = max(0, min(ty0 - 1, sy0)), max(0, min(tx0 - 1, sx0))
    ry1, rx1 = min(H, max(ty1 + 1, sy1)), min(W, max(tx1 + 1, sx1))
    region = np.zeros((H, W), bool)
    region[ry0:ry1, rx0:rx1] = True
    region &= (words == 0) | target
    placed[~region] = 0.0
    # text colour: the median of the crop's fully inked pixels (the strongest ones if none is full)
    strong = alpha >= min(0.8, float(alpha.max()))
    fg = np.median(img[strong].astype(np.float32), axis=0)
    # cleared to the page's background: its median colour plus its pixel noise. FRB pages have a flat
    # background, so this matches it; inpainting from the region's border would pull in the ink of the
    # neighbouring words and leave a dark smooth patch that gives the fake away whatever its font
    bgpix = img[alpha == 0].astype(np.float32)
    if len(bgpix) < 16:
        bgpix = img[~region].astype(np.float32) if (~region).any() else img.reshape(-1, 3).astype(np.float32)
    base = img.astype(np.float32)
    noise = rng.normal(0.0, 1.0, (int(region.sum()), 3)).astype(np.float32)
    base[region] = np.median(bgpix, axis=0) + noise * bgpix.std(0)
    a = placed[..., None]
    out = np.clip(np.rint(base * (1.0 - a) + fg * a), 0, 255).astype(np.uint8)
    out[~region] = img[~region]
    return out, region
