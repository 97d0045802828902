"""Robustness variants of FRB pages: the same benchmark images, rescaled, inverted or recompressed.

Each variant is a pure function of one PIL image; :func:`variant_split` applies one to a split and
keeps labels and texts. The page classifier is expected to read them as it reads the originals:
pages drawn at half or twice the size, light text on a dark background, a low-quality JPEG.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

from PIL import Image, ImageOps

from .layout import jpeg_round_trip
from .render import FRBSample


def rescaled(factor: float) -> Callable[[Image.Image], Image.Image]:
    """Resample by ``factor`` (Lanczos, as an image editor or a scanner's resolution would)."""
    def apply(image: Image.Image) -> Image.Image:
        size = (max(1, round(image.width * factor)), max(1, round(image.height * factor)))
        return image.resize(size, Image.Resampling.LANCZOS)
    return apply


def inverted(image: Image.Image) -> Image.Image:
    """White text on a black background."""
    return ImageOps.invert(image.convert("RGB"))


def jpeg(quality: int) -> Callable[[Image.Image], Image.Image]:
    """Recompressed as JPEG at ``quality``."""
    return lambda image: jpeg_round_trip(image, quality)[0]


#: The variants the demo and benchmarks/frb_robustness.py report, by name.
VARIANTS: dict[str, Callable[[Image.Image], Image.Image]] = {
    "scale 0.5": rescaled(0.5),
    "scale 2": rescaled(2.0),
    "inverted": inverted,
    "JPEG q30": jpeg(30),
}


def variant_split(samples: Sequence[FRBSample], variant: str) -> list[FRBSample]:
    """``samples`` with variant ``variant`` (a key of :data:`VARIANTS`) applied to every image."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown robustness variant {variant!r}; choose from {', '.join(VARIANTS)}")
    fn = VARIANTS[variant]
    return [replace(s, image=fn(s.image), data=None, split=f"{s.split} ({variant})") for s in samples]
