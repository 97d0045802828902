"""The 15 FRB fonts: the manifest of the files vitkit ships, lookup by name, loading at a size.

The fonts ship with vitkit (``vitkit/frb/fonts``, see its ``fonts.json`` and ``README.md``): free
copies of the paper's fonts where they exist, metric- or design-compatible free substitutes
otherwise. Fonts are always loaded from the package folder, never looked up on the system, so
every machine renders the same pixels.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import ImageFont, features

__all__ = [
    "FONTS",
    "FONTS_DIR",
    "FONT_NAMES",
    "FONT_SIZE",
    "GROUPS",
    "KNOWN_FONTS",
    "LAYOUT_ENGINE",
    "UNKNOWN_FONTS",
    "FontRef",
    "FontSpec",
    "font_index",
    "font_path",
    "load_font",
]

#: Folder holding the font files, their licences and the ``fonts.json`` manifest.
FONTS_DIR = Path(__file__).resolve().parent / "fonts"
#: The hard split's font size (both layouts) and the default size of :func:`load_font`.
FONT_SIZE = 40
#: Font groups, in label order.
GROUPS = ("serif", "sans", "script")
#: Text shaping engine. Raqm (HarfBuzz) applies the fonts' ligatures and contextual alternates,
#: which script faces such as Lobster rely on; plain FreeType layout is the fallback.
LAYOUT_ENGINE = ImageFont.Layout.RAQM if features.check("raqm") else ImageFont.Layout.BASIC


@dataclass(frozen=True)
class FontSpec:
    """One FRB font: the paper's name and the file that vitkit ships for it."""

    name: str  #: the font's name in the paper (the class name)
    group: str  #: "serif", "sans" or "script"
    file: str  #: file name inside :data:`FONTS_DIR`
    family: str  #: family name of the shipped file
    substitute: bool  #: True where a free look-alike replaces a proprietary font
    licence: str  #: SPDX-style licence id
    licence_file: str  #: licence text, relative to :data:`FONTS_DIR`
    source: str = ""  #: where the file came from
    note: str = ""

    @property
    def path(self) -> Path:
        return FONTS_DIR / self.file

    @property
    def licence_path(self) -> Path:
        return FONTS_DIR / self.licence_file


def _load_manifest() -> list[FontSpec]:
    data = json.loads((FONTS_DIR / "fonts.json").read_text(encoding="utf-8"))
    specs = [FontSpec(**entry) for entry in data["fonts"]]
    for spec in specs:
        if spec.group not in GROUPS:
            raise ValueError(f"fonts.json: font {spec.name!r} has unknown group {spec.group!r}")
    return specs


#: The 15 FRB fonts in label order (label = index in this list).
FONTS: list[FontSpec] = _load_manifest()
#: The fonts' display names (the paper's names), in label order; also the hard split's texts.
FONT_NAMES: list[str] = [f.name for f in FONTS]

#: The open-set split (OOD, open-set recognition, LoRA adaptation): 10 known fonts a model is
#: trained on and 5 unknown ones it never sees. Every unknown font has a close known neighbour
#: (Georgia~Times, Roboto Slab~Merriweather, Vera~Arial/Helvetica, Consolas~Calibri,
#: Pacifico~Lobster), so detecting them is not trivial.
UNKNOWN_FONTS: tuple[str, ...] = ("Georgia", "Roboto Slab", "Vera", "Consolas", "Pacifico")
KNOWN_FONTS: tuple[str, ...] = tuple(n for n in FONT_NAMES if n not in UNKNOWN_FONTS)
_BY_NAME = {f.name.casefold(): i for i, f in enumerate(FONTS)} | {
    f.family.casefold(): i for i, f in enumerate(FONTS)
}

FontRef = str | int | FontSpec


def font_index(font: FontRef) -> int:
    """Label of ``font``, given as paper name, family name (case-insensitive), index or spec."""
    if isinstance(font, FontSpec):
        return FONTS.index(font)
    if isinstance(font, bool):
        raise TypeError("font must be a name, an index or a FontSpec, not a bool")
    if isinstance(font, int):
        if not 0 <= font < len(FONTS):
            raise IndexError(f"font index {font} out of range 0..{len(FONTS) - 1}")
        return font
    try:
        return _BY_NAME[str(font).casefold()]
    except KeyError:
        raise KeyError(f"unknown FRB font {font!r}; known: {', '.join(FONT_NAMES)}") from None


def font_path(name: FontRef) -> Path:
    """Path of the shipped font file for ``name`` (paper name, family name, index or spec)."""
    return FONTS[font_index(name)].path


@lru_cache(maxsize=512)
def _truetype(file: str, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(str(FONTS_DIR / file), size, layout_engine=LAYOUT_ENGINE)


def load_font(name: FontRef, size: int = FONT_SIZE) -> ImageFont.FreeTypeFont:
    """The FRB font ``name`` at ``size`` pixels, loaded from the package folder (cached)."""
    if isinstance(size, bool) or not isinstance(size, int | np.integer) or size <= 0:
        raise ValueError(f"size must be a positive int, got {size!r}")
    return _truetype(FONTS[font_index(name)].file, int(size))
