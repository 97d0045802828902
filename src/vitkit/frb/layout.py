"""The FRB paper's page layout: canvases cut to the text, saved as JPEG.

The paper's public generator (data, not code, carried over) draws:

* **paragraphs** (the easy split): the text wrapped with :func:`textwrap.fill` to
  ``int((max_width - 2 * margin) / w)`` characters per line, ``w`` = one tenth of the advance of
  ``"xxxxxxxxxx"``; lines ``spacing * size`` apart; canvas = (widest line + 2 * margin) x (sum of
  the lines' bounding-box heights + (lines - 1) * spacing * size + 2 * margin); line ``k`` drawn at
  ``x = margin - bbox.left`` and ``y = margin + sum of the earlier lines' (height + gap)`` (the
  line's own ``bbox.top`` is *not* subtracted, so the ink sits a few pixels below ``y``, as there);
* **single lines** (the hard split, the few-shot letters): canvas = text bounding box + ``pad`` on
  every side, drawn at ``(pad - left, pad - top)``;
* black on white, every image saved as JPEG at PIL's default quality (75).

These are pure functions of a loaded font and the text; :mod:`vitkit.frb.splits` chooses fonts,
sizes and texts.
"""

from __future__ import annotations

import io
import textwrap

from PIL import Image, ImageDraw, ImageFont

RGB = tuple[int, int, int]

#: The paper's paragraph settings: maximum width, margin, gap between lines as a fraction of the size.
MAX_WIDTH = 500
MARGIN = 20
LINE_SPACING = 0.5
#: PIL's default JPEG quality, which the paper's generator uses.
JPEG_QUALITY = 75


def chars_per_line(font: ImageFont.FreeTypeFont, max_width: int = MAX_WIDTH, margin: int = MARGIN) -> int:
    """Characters per line for :func:`textwrap.fill`: the usable width over the mean advance of "x"."""
    w = font.getlength("x" * 10) / 10
    return max(1, int((max_width - 2 * margin) / w))


def paragraph_lines(text: str, font: ImageFont.FreeTypeFont, max_width: int = MAX_WIDTH,
                    margin: int = MARGIN) -> list[str]:
    """``text`` wrapped as the paper wraps it (by character count, not measured width)."""
    return textwrap.fill(text, width=chars_per_line(font, max_width, margin)).split("\n")


def paragraph_geometry(
    lines: list[str], font: ImageFont.FreeTypeFont, *, margin: int = MARGIN, spacing: float = LINE_SPACING
) -> tuple[tuple[int, int], list[tuple[float, float]]]:
    """Canvas ``(width, height)`` and each line's draw origin ``(x, y)`` for a paper paragraph."""
    boxes = [font.getbbox(line) for line in lines]  # (left, top, right, bottom) from the draw origin
    gap = spacing * font.size
    width = int(max(b[2] - b[0] for b in boxes) + 2 * margin)
    height = int(sum(b[3] - b[1] for b in boxes) + (len(lines) - 1) * gap + 2 * margin)
    origins, y = [], float(margin)
    for b in boxes:
        origins.append((margin - b[0], y))
        y += (b[3] - b[1]) + gap
    return (width, height), origins


def render_paragraph(
    text: str, font: ImageFont.FreeTypeFont, *, max_width: int = MAX_WIDTH, margin: int = MARGIN,
    spacing: float = LINE_SPACING, fg: RGB = (0, 0, 0), bg: RGB = (255, 255, 255),
) -> Image.Image:
    """The easy split's image of ``text``: wrapped paragraph on a canvas cut to it (RGB, not yet JPEG)."""
    lines = paragraph_lines(text, font, max_width, margin)
    size, origins = paragraph_geometry(lines, font, margin=margin, spacing=spacing)
    image = Image.new("RGB", size, bg)
    draw = ImageDraw.Draw(image)
    for line, xy in zip(lines, origins, strict=True):
        draw.text(xy, line, font=font, fill=fg)
    return image


def line_geometry(text: str, font: ImageFont.FreeTypeFont, pad: int = MARGIN) -> tuple[tuple[int, int], tuple[int, int]]:
    """Canvas ``(width, height)`` and draw origin of one tight line: its bounding box plus ``pad``."""
    left, top, right, bottom = font.getbbox(text)
    return (right - left + 2 * pad, bottom - top + 2 * pad), (pad - left, pad - top)


def render_line(
    text: str, font: ImageFont.FreeTypeFont, *, pad: int = MARGIN, fg: RGB = (0, 0, 0),
    bg: RGB = (255, 255, 255),
) -> Image.Image:
    """The hard split's (and the few-shot letters') image of ``text``: one line on a tight canvas."""
    size, origin = line_geometry(text, font, pad)
    image = Image.new("RGB", size, bg)
    ImageDraw.Draw(image).text(origin, text, font=font, fill=fg)
    return image


def jpeg_round_trip(image: Image.Image, quality: int = JPEG_QUALITY) -> tuple[Image.Image, bytes]:
    """``image`` saved as JPEG and decoded again: (decoded RGB image, the file's bytes).

    Keeping the bytes lets a split be written to disk as exactly the file whose decoding the
    in-memory sample holds (re-encoding the decoded image would compress it twice).
    """
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=quality)
    data = buf.getvalue()
    with Image.open(io.BytesIO(data)) as decoded:
        return decoded.convert("RGB"), data
