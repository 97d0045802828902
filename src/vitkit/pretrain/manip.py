"""Manipulation-detection data: real images and the same images with one local manipulation of a known type.

Two sources (:data:`KINDS_BY_SOURCE` gives each one's types): ``"scenes"``, rendered scenes with their part
maps, and ``"frb"``, crops of FRB training pages with their word maps (:mod:`.page_manip`). Types, each a
pure function of (image, region map, rng[, donor]) that changes the pixels of one region and returns the
changed-pixel mask:

* ``copy``: a part's pixels pasted at another place in the same image (copy-move);
* ``move``: the same, and the part's original place inpainted (the object part "moved");
* ``recolour``: a part's colours rotated in RGB space (hue change keeping luminance structure);
* ``inpaint``: a part erased by diffusion from its border (object removal);
* ``splice``: a square patch from another scene (page crop) pasted in;
* ``font`` (pages only): a word replaced by a word of a page in another font (:func:`~.page_manip.manip_font`).

On page crops the regions are words, so ``copy``, ``move`` and ``inpaint`` duplicate, move or erase a word;
``recolour`` is left out there: it would rotate the colours of a word's whole box, background included, a
coloured rectangle rather than a recoloured word.

Held-out evaluation: train a detector on one type, measure AUC on the others
(:class:`ManipulationDataset` with a list of ``kinds``). Items come in pairs: item 2j is scene (page crop)
j as rendered, item 2j + 1 the same image manipulated, so content is balanced between the classes and a
score can only separate them through the manipulation (with different scenes per class, a detector that
ranks scene content by chance reaches the same spurious AUC on every type). Item i depends only
on (seed, i, kinds, size, source).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from ..data.scenes import render_scene
from .page_manip import PageCrop, TextPage, font_donor, manip_font, page_crop

MANIPULATIONS = ("copy", "move", "recolour", "inpaint", "splice")  # the scene types
PAGE_MANIPULATIONS = ("copy", "move", "inpaint", "splice", "font")  # the FRB page-crop types
KINDS_BY_SOURCE: dict[str, tuple[str, ...]] = {"scenes": MANIPULATIONS, "frb": PAGE_MANIPULATIONS}
ALL_KINDS = tuple(dict.fromkeys(MANIPULATIONS + PAGE_MANIPULATIONS))
SPLICE_SEED = 1_000_003  # splice donors: the same index under seed + SPLICE_SEED
MIN_PART = 0.03  # smallest part manipulated, as a fraction of the image (smaller ones are a pixel or two at 48 px)


def _pick_part(parts: np.ndarray, rng: np.random.Generator, min_frac: float = MIN_PART) -> np.ndarray:
    """Mask of a random part covering ≥ ``min_frac`` of the image (else the largest part, else a disc)."""
    min_px = max(4, int(min_frac * parts.size))
    ids, counts = np.unique(parts[parts > 0], return_counts=True)
    ok = ids[counts >= min_px]
    if len(ok):
        return parts == int(rng.choice(ok))
    if len(ids):
        return parts == int(ids[counts.argmax()])
    H, W = parts.shape
    cy, cx = rng.integers(H // 4, 3 * H // 4), rng.integers(W // 4, 3 * W // 4)
    yy, xx = np.mgrid[:H, :W]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= (min(H, W) // 8) ** 2


def _shift(mask: np.ndarray, rng: np.random.Generator) -> tuple[int, int]:
    """A random offset (dy, dx) that keeps the mask's bounding box inside the image and moves it ≥ 1/6 of the side."""
    H, W = mask.shape
    ys, xs = np.nonzero(mask)
    for _ in range(20):
        dy = int(rng.integers(-ys.min(), H - ys.max()))
        dx = int(rng.integers(-xs.min(), W - xs.max()))
        if abs(dy) + abs(dx) >= min(H, W) // 6:
            return dy, dx
    return dy, dx


def _paste(img: np.ndarray, mask: np.ndarray, dy: int, dx: int) -> tuple[np.ndarray, np.ndarray]:
    out = img.copy()
    ys, xs = np.nonzero(mask)
    out[ys + dy, xs + dx] = img[ys, xs]
    changed = np.zeros_like(mask)
    changed[ys + dy, xs + dx] = True
    return out, changed


def diffuse_fill(img: np.ndarray, mask: np.ndarray, iters: int = 60) -> np.ndarray:
    """Fill ``mask`` by repeated 4-neighbour averaging from the unmasked pixels (harmonic inpainting)."""
    out = img.astype(np.float32).copy()
    known = ~mask
    out[mask] = out[known].mean(0) if known.any() else 127.0
    for _ in range(iters):
        p = np.pad(out, ((1, 1), (1, 1), (0, 0)), mode="edge")
        avg = (p[:-2, 1:-1] + p[2:, 1:-1] + p[1:-1, :-2] + p[1:-1, 2:]) / 4
        out[mask] = avg[mask]
    return np.clip(out, 0, 255).astype(np.uint8)


def manip_copy(img, parts, rng, **_):
    m = _pick_part(parts, rng)
    return _paste(img, m, *_shift(m, rng))


def manip_move(img, parts, rng, **_):
    m = _pick_part(parts, rng)
    filled = diffuse_fill(img, m)
    out, changed = _paste(filled, m, *_shift(m, rng))
    out[changed] = img[m]  # _paste moved the filled pixels: put the original part at its new place
    return out, changed | m


def manip_recolour(img, parts, rng, **_):
    m = _pick_part(parts, rng)
    out = img.copy()
    perm = [(1, 2, 0), (2, 0, 1)][int(rng.integers(2))]
    out[m] = img[m][:, perm]
    return out, m


def manip_inpaint(img, parts, rng, **_):
    m = _pick_part(parts, rng)
    return diffuse_fill(img, m), m


def manip_splice(img, parts, rng, *, donor: np.ndarray, **_):
    H, W = parts.shape
    s = max(4, int(rng.integers(H // 4, H // 2 + 1)))
    y, x = int(rng.integers(0, H - s + 1)), int(rng.integers(0, W - s + 1))
    sy, sx = int(rng.integers(0, H - s + 1)), int(rng.integers(0, W - s + 1))
    out = img.copy()
    out[y:y + s, x:x + s] = donor[sy:sy + s, sx:sx + s]
    m = np.zeros((H, W), bool)
    m[y:y + s, x:x + s] = True
    return out, m


FUNCS: dict[str, Callable] = {"copy": manip_copy, "move": manip_move, "recolour": manip_recolour,
                              "inpaint": manip_inpaint, "splice": manip_splice, "font": manip_font}


def manipulate(kind: str, image: np.ndarray, parts: np.ndarray, rng: np.random.Generator,
               donor: np.ndarray | TextPage | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Apply manipulation ``kind`` to ``image`` (H, W, 3) uint8 with region map ``parts`` (H, W) →
    (manipulated image (H, W, 3) uint8, changed (H, W) bool). ``donor``: an image of the same size for
    ``splice``; for ``font``, the donor page (:class:`~.page_manip.TextPage`) at the image's text height."""
    if kind not in FUNCS:
        raise ValueError(f"unknown manipulation {kind!r}; choose from {ALL_KINDS}")
    if kind == "splice" and donor is None:
        raise ValueError("splice needs a donor image")
    if kind == "font" and not isinstance(donor, TextPage):
        raise ValueError("font needs a donor TextPage (a page in another font at the crop's text height)")
    return FUNCS[kind](image, parts, rng, donor=donor)


def check_source_kinds(source: str, kinds: Sequence[str]) -> tuple[str, ...]:
    """``kinds`` as a tuple if they are a non-empty subset of ``source``'s types; else a one-line ValueError."""
    if source not in KINDS_BY_SOURCE:
        raise ValueError(f"source must be one of {tuple(KINDS_BY_SOURCE)}, got {source!r}")
    valid = KINDS_BY_SOURCE[source]
    if isinstance(kinds, str) or not kinds or any(k not in valid for k in kinds):
        raise ValueError(f"kinds must be a non-empty subset of {valid} for source {source!r}, got {list(kinds)}")
    return tuple(kinds)


@dataclass
class PagePair:
    """A page crop and the same crop manipulated."""

    real: PageCrop
    fake: np.ndarray  # (S, S, 3) uint8
    changed: np.ndarray  # (S, S) bool, the pixels the manipulation replaced
    kind: str
    donor_font: str | None  # the font of the word spliced in (kind "font"), else None


def page_pair(seed: int, index: int, kind: str, *, size: int, rng: np.random.Generator) -> PagePair:
    """Page crop ``index`` of ``seed`` at ``size`` px and the same crop with manipulation ``kind`` (a page type).

    Splice donors are crop ``index`` of ``seed + SPLICE_SEED``; font donors the page of :func:`~.page_manip.font_donor`
    at the crop's core height."""
    check_source_kinds("frb", [kind])
    real = page_crop(seed, index, size)
    donor: np.ndarray | TextPage | None = None
    donor_font = None
    if kind == "splice":
        donor = page_crop(seed + SPLICE_SEED, index, size).image
    elif kind == "font":
        donor = font_donor(seed, index, real.font, real.core_height)
        donor_font = donor.font
    fake, changed = manipulate(kind, real.image, real.words, rng, donor)
    return PagePair(real, fake, changed, kind, donor_font)


class ManipulationDataset(Dataset):
    """Item i → (image (3, S, S) float32 in [0, 1], label (long): 0 real, 1 manipulated).

    Item 2j: image j as rendered; item 2j + 1: image j with manipulation ``kinds[j % len(kinds)]``.
    ``source``: ``"scenes"`` (scene j) or ``"frb"`` (page crop j, :func:`~.page_manip.page_crop`); ``kinds``
    must be types of that source (:data:`KINDS_BY_SOURCE`). ``seed`` picks the images (use different seeds
    for train and test); splice and font donors come from separate streams of the same seed.
    """

    def __init__(self, n: int, *, kinds: Sequence[str], seed: int = 0, size: int = 64, cache: bool = True,
                 source: str = "scenes") -> None:
        self.kinds = check_source_kinds(source, kinds)
        self.n, self.seed, self.size, self.source = n, seed, size, source
        self._cache: dict[int, tuple[Tensor, Tensor]] | None = {} if cache else None

    def __len__(self) -> int:
        return self.n

    def kind(self, i: int) -> str | None:
        return None if i % 2 == 0 else self.kinds[(i // 2) % len(self.kinds)]

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        if self._cache is not None and i in self._cache:
            return self._cache[i]
        kind = self.kind(i)
        label = int(kind is not None)
        rng = np.random.default_rng([self.seed, i, 7])
        if self.source == "frb":
            img = page_pair(self.seed, i // 2, kind, size=self.size, rng=rng).fake if kind is not None \
                else page_crop(self.seed, i // 2, self.size).image
        else:
            s = render_scene(self.seed, i // 2, size=self.size)
            img = s.image
            if kind is not None:
                donor = render_scene(self.seed + SPLICE_SEED, i // 2, size=self.size).image if kind == "splice" else None
                img, _ = manipulate(kind, img, s.parts, rng, donor)
        x = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))).float().div_(255.0)
        item = (x, torch.tensor(label))
        if self._cache is not None:
            self._cache[i] = item
        return item
