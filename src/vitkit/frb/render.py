"""Drawing text in an FRB font: measured word wrap, shrink-to-fit, one sample type for every split."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageFont

from .fontset import FONT_SIZE, FontRef, load_font

__all__ = ["CANVAS", "MIN_FONT_SIZE", "PADDING", "RGB", "FRBSample", "render_in_box", "render_text", "wrap_text"]

logger = logging.getLogger(__name__)

#: The "canvas440" layout's canvas (width, height) and padding.
CANVAS: tuple[int, int] = (440, 240)
PADDING = 20
#: Smallest size the shrink-to-fit loop of :func:`render_text` goes down to.
MIN_FONT_SIZE = 8

RGB = tuple[int, int, int]


@dataclass
class FRBSample:
    """One rendered image and its label (the index of its font in :data:`vitkit.frb.FONTS`)."""

    image: Image.Image
    label: int
    font: str
    text: str
    split: str
    data: bytes | None = None  #: the encoded file (JPEG in the paper layout) that ``image`` decodes


def wrap_text(text: str, font: ImageFont.FreeTypeFont, max_width: float) -> list[str]:
    """Greedy word wrap by measured width (``font.getlength``).

    Newlines in ``text`` start new lines; runs of spaces collapse. A single word wider than
    ``max_width`` is broken between characters.
    """
    lines: list[str] = []
    for paragraph in text.split("\n"):
        line = ""
        for word in paragraph.split():
            candidate = f"{line} {word}" if line else word
            if font.getlength(candidate) <= max_width:
                line = candidate
                continue
            if line:
                lines.append(line)
            while len(word) > 1 and font.getlength(word) > max_width:
                k = len(word) - 1
                while k > 1 and font.getlength(word[:k]) > max_width:
                    k -= 1
                lines.append(word[:k])
                word = word[k:]
            line = word
        lines.append(line)
    return lines


def _line_height(font: ImageFont.FreeTypeFont) -> int:
    ascent, descent = font.getmetrics()
    return ascent + descent


def _fit(
    text: str, font: FontRef, size: int, max_width: int, max_height: int, min_size: int
) -> tuple[ImageFont.FreeTypeFont, list[str]]:
    """Largest size <= ``size`` at which the wrapped ``text`` fits ``max_width x max_height``."""
    if max_width <= 0 or max_height <= 0:
        raise ValueError(f"no room for text: {max_width}x{max_height} px inside the padding")
    size = int(size)
    words = text.split()
    while True:
        ft = load_font(font, size)
        lines = wrap_text(text, ft, max_width)
        fits = len(lines) * _line_height(ft) <= max_height
        if fits and all(ft.getlength(w) <= max_width for w in words):
            return ft, lines
        if size <= min_size:
            if not fits:
                logger.warning("text %r does not fit even at size %d; it is clipped", text[:40], size)
            return ft, lines
        size -= 1


def render_in_box(
    text: str,
    font: FontRef,
    *,
    size: int,
    canvas: tuple[int, int],
    box: tuple[int, int, int, int],
    fg: RGB,
    bg: RGB,
    min_size: int = MIN_FONT_SIZE,
) -> Image.Image:
    """Render into ``box = (left, top, right, bottom)`` margins of a fresh ``canvas``."""
    width, height = canvas
    left, top, right, bottom = box
    ft, lines = _fit(text, font, size, width - left - right, height - top - bottom, min_size)
    image = Image.new("RGB", (width, height), tuple(bg))
    draw = ImageDraw.Draw(image)
    step = _line_height(ft)
    for k, line in enumerate(lines):
        draw.text((left, top + k * step), line, font=ft, fill=tuple(fg))
    return image


def render_text(
    text: str,
    font: FontRef,
    *,
    size: int = FONT_SIZE,
    canvas: tuple[int, int] = CANVAS,
    padding: int = PADDING,
    fg: RGB = (0, 0, 0),
    bg: RGB = (255, 255, 255),
    min_size: int = MIN_FONT_SIZE,
) -> Image.Image:
    """Render ``text`` in FRB font ``font`` the way the paper does.

    The text is word-wrapped (by measured width) to the canvas width minus ``padding`` on both
    sides and drawn line by line from the top-left padding corner, one line every
    ``ascent + descent`` pixels of the font. If the wrapped block is taller than the canvas
    height minus both paddings, or if a single word is wider than a line, the font size is
    reduced one pixel at a time until it fits (at most down to ``min_size``; words still too
    wide are then broken between characters, and text that still overflows is clipped, with a
    warning). In the easy and hard splits 7 of the 375 images are shrunk (to 32-39 px): three
    long sentences in Monoton, two in Pacifico, one each in Merriweather and Roboto Slab.
    """
    return render_in_box(
        text,
        font,
        size=size,
        canvas=canvas,
        box=(padding, padding, padding, padding),
        fg=fg,
        bg=bg,
        min_size=min_size,
    )
