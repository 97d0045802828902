"""Font Recognition Benchmark (FRB): which of 15 fonts is a text set in?

FRB (COLM 2025) renders text in 15 fonts in three groups (serif, sans-serif, script/decorative)
and asks a model to name the font. Two evaluation splits:

* **easy** -- 10 sentences x 15 fonts = 150 images;
* **hard** -- the 15 font *names* rendered in each of the 15 fonts = 225 images. Except on the
  diagonal, the text names a different font than the one it is set in (a Stroop-style conflict
  between what the text says and what it looks like).

Two layouts, chosen by name (``layout=``):

* ``"paper"`` (the default) -- the paper's public generator, see :mod:`vitkit.data.frb_layout`:
  the paper's 10 sentences at size 32 wrapped to 500 px, the names at size 40 on one line, canvases
  cut to the text, black on white, every image a JPEG (quality 75). :attr:`FRBSample.data` keeps
  the JPEG file, so a split written to disk decodes to exactly the in-memory pixels.
* ``"canvas440"`` -- vitkit's first reading (figures in RESULTS.md up to 2026-12 were measured on
  it): ten public-domain pangrams and the names on a 440x240 canvas, size 40, 20 px padding, PNG.

The fonts ship with vitkit (``vitkit/data/fonts``, see its ``fonts.json`` and ``README.md``): free
copies of the paper's fonts where they exist, metric- or design-compatible free substitutes
otherwise. Fonts are always loaded from the package folder, never looked up on the system, so
every machine renders the same pixels.

For training a font classifier, :func:`train_split` and :func:`val_split` generate any number of
augmented samples whose text is drawn from an embedded word list that shares no word with either
layout's sentences or the font names. Sample ``i`` of seed ``s`` depends only on ``(split, s, i)``,
never on how many samples are asked for.

:func:`write_split` saves samples (PNG, or the JPEG file a sample carries) plus a JSON-lines
manifest; :func:`generate` writes all four splits (the ``vitkit data frb`` command calls it).
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont, features

from ..progress import progress_bar
from . import frb_layout

__all__ = [
    "CANVAS",
    "EASY_SENTENCES",
    "FONTS",
    "LAYOUTS",
    "PANGRAMS",
    "TRAINING_WORDS",
    "FONTS_DIR",
    "FONT_NAMES",
    "FONT_SIZE",
    "GROUPS",
    "PADDING",
    "FRBSample",
    "FontSpec",
    "KNOWN_FONTS",
    "UNKNOWN_FONTS",
    "easy_split",
    "font_index",
    "font_path",
    "generate",
    "hard_split",
    "letter_split",
    "load_font",
    "protocol_val_split",
    "read_split",
    "render_text",
    "train_sample",
    "train_split",
    "val_split",
    "contrast_ratio",
    "random_colours",
    "random_text",
    "wrap_text",
    "write_split",
]

logger = logging.getLogger(__name__)

#: Folder holding the font files, their licences and the ``fonts.json`` manifest.
FONTS_DIR = Path(__file__).resolve().parent / "fonts"
#: The "canvas440" layout's canvas (width, height) and padding; the hard split's font size (both layouts).
CANVAS: tuple[int, int] = (440, 240)
FONT_SIZE = 40
PADDING = 20
#: The paper layout's font sizes: easy sentences and few-shot letters (the hard split uses FONT_SIZE).
EASY_FONT_SIZE = 32
LETTER_FONT_SIZE = 80
#: Layout names accepted by the split functions; the first is the default.
LAYOUTS: tuple[str, ...] = ("paper", "canvas440")
#: Smallest size the shrink-to-fit loop of :func:`render_text` goes down to.
MIN_FONT_SIZE = 8
#: Font groups, in label order.
GROUPS = ("serif", "sans", "script")
#: Minimum WCAG contrast ratio between text and background colour in training samples.
MIN_CONTRAST = 4.5
#: Text shaping engine. Raqm (HarfBuzz) applies the fonts' ligatures and contextual alternates,
#: which script faces such as Lobster rely on; plain FreeType layout is the fallback.
LAYOUT_ENGINE = ImageFont.Layout.RAQM if features.check("raqm") else ImageFont.Layout.BASIC

_SPLIT_STREAMS = {"train": 0, "val": 1}
_SAMPLE_TAG = 1
_LABEL_TAG = 2
_SPLIT_NAME = re.compile(r"^[A-Za-z0-9_-]+$")

RGB = tuple[int, int, int]


# --------------------------------------------------------------------------------------------
# Fonts
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------


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


def _draw(
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
    return _draw(
        text,
        font,
        size=size,
        canvas=canvas,
        box=(padding, padding, padding, padding),
        fg=fg,
        bg=bg,
        min_size=min_size,
    )


# --------------------------------------------------------------------------------------------
# Evaluation splits
# --------------------------------------------------------------------------------------------

#: The easy split's texts: the paper's 10 sentences (each uses most of the alphabet).
EASY_SENTENCES: list[str] = [
    'Yesterday, Max drove quite far to grab a zesty pizza slice, fresh juice, a weird box of quirky vitamins, and then headed home.',
    'Sylvia quickly typed her new quiz on a fancy laptop, while Jack fixed a broken gaming mouse and drank zebra-striped coffee.',
    'My neighbor Jade swiftly zipped across town in a quirky taxi to deliver fresh donuts, baked pizza, and some extra juice.',
    'Quincy faxed a wacky memo to his boss, just highlighting zero budget for extra zebra-themed pencils this week.',
    'Lucas quickly arranged a picnic with Zoe, bringing fresh fruits, jazz music, extra napkins, and a warm velvet blanket to enjoy.',
    'Priscilla drove to the zoo with Victor, examining quirky zebras, foxes, and a jovial monkey who loved peanuts.',
    'Gabriel watched an exciting quiz show, then drank fizzy soda while munching on a quick pizza slice for supper, after a movie.',
    'Felix quickly discovered a hidden note behind the wardrobe, just suggesting bizarre facts about quantum physics.',
    'Brianna typed her final exam in a cozy library nook, quietly watching a zebra crossing video and just sipping fizzy lemonade.',
    "Charlie quickly baked twenty extra muffins for Zoe's yard sale, hoping to amaze hungry folks with very jazzy toppings.",
]
#: The "canvas440" layout's easy texts: well-known public-domain pangrams (each uses all 26 letters).
PANGRAMS: list[str] = [
    "The quick brown fox jumps over the lazy dog.",
    "Pack my box with five dozen liquor jugs.",
    "Sphinx of black quartz, judge my vow.",
    "How vexingly quick daft zebras jump!",
    "The five boxing wizards jump quickly.",
    "Jackdaws love my big sphinx of quartz.",
    "Amazingly few discotheques provide jukeboxes.",
    "Waltz, bad nymph, for quick jigs vex.",
    "Bright vixens jump; dozy fowl quack.",
    "Crazy Fredrick bought many very exquisite opal jewels.",
]


@dataclass
class FRBSample:
    """One rendered image and its label (the index of its font in :data:`FONTS`)."""

    image: Image.Image
    label: int
    font: str
    text: str
    split: str
    data: bytes | None = None  #: the encoded file (JPEG in the paper layout) that ``image`` decodes


def _check_layout(layout: str) -> str:
    if layout not in LAYOUTS:
        raise ValueError(f"unknown FRB layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    return layout


def _paper_sample(image: Image.Image, label: int, text: str, split: str) -> FRBSample:
    decoded, data = frb_layout.jpeg_round_trip(image)
    return FRBSample(decoded, label, FONTS[label].name, text, split, data)


def _iter_easy(layout: str = "paper") -> Iterator[FRBSample]:
    if _check_layout(layout) == "canvas440":
        yield from _iter_lines(PANGRAMS, "easy", FONT_SIZE, layout)
        return
    for label in range(len(FONTS)):
        font = load_font(label, EASY_FONT_SIZE)
        for sentence in EASY_SENTENCES:
            yield _paper_sample(frb_layout.render_paragraph(sentence, font), label, sentence, "easy")


def _iter_lines(texts: Sequence[str], split: str, size: int, layout: str) -> Iterator[FRBSample]:
    paper = _check_layout(layout) == "paper"
    for label, spec in enumerate(FONTS):
        font = load_font(label, size)
        for text in texts:
            if paper:
                yield _paper_sample(frb_layout.render_line(text, font), label, text, split)
            else:
                yield FRBSample(render_text(text, label, size=size), label, spec.name, text, split)


def easy_split(layout: str = "paper") -> list[FRBSample]:
    """The 150 easy images, font-major: every sentence in every font.

    ``layout="paper"``: :data:`EASY_SENTENCES` at size 32, wrapped paragraphs on tight canvases,
    JPEG; ``"canvas440"``: :data:`PANGRAMS` on the 440x240 canvas (see the module docstring).
    """
    return list(_iter_easy(layout))


def hard_split(layout: str = "paper") -> list[FRBSample]:
    """The 225 hard images, font-major: every font name of :data:`FONT_NAMES` in every font, size 40.

    ``layout="paper"``: one line on a tight canvas (text box + 20 px), JPEG; ``"canvas440"``: the
    440x240 canvas.
    """
    return list(_iter_lines(FONT_NAMES, "hard", FONT_SIZE, layout))


def letter_split(letters: Sequence[str], layout: str = "paper") -> list[FRBSample]:
    """The few-shot exemplars: each of ``letters`` alone in every font (font-major, then letter order).

    ``layout="paper"``: size 80 on a tight canvas, JPEG; ``"canvas440"``: size 40 on the 440x240
    canvas. ``split`` = ``"letters"``.
    """
    size = LETTER_FONT_SIZE if _check_layout(layout) == "paper" else FONT_SIZE
    return list(_iter_lines(list(letters), "letters", size, layout))


# --------------------------------------------------------------------------------------------
# Training data
# --------------------------------------------------------------------------------------------

# Common English words for training text. None of them occurs in EASY_SENTENCES or in a font
# name (checked by the tests), and together they use every letter a-z.
TRAINING_WORDS: tuple[str, ...] = tuple(
    """
    able acid aged also area army away axis baby back ball band bank base bath bear beat been beer bell
    belt bench best bill bird blow blue boat body bone book boot born both bowl bread breeze bring brush
    build burn busy cake call calm came camp card care cart case cash cast cell chair chalk chart chief
    child chip city clay clean clear climb clock cloud coach coal coast coat code coin cold comb cook
    cool copy corn cost cotton could count cover crew crop cross crowd cup cure curl cycle damp dance
    dark data date dawn deal dear debt deep deer desk dial diet dirt dish dive door down draft drain
    draw dream dress drift drink drive drop drum dust duty each early earth east easy edge eight else
    empty engine enter equal even event ever exact exit face fact fail fair fall farm fast fear feed
    feel fell felt field file fill film find fine fire firm fish flag flat flight floor flour flow flute
    foam fold folk food foot form fort frost frozen fruit fuel full fund gain game garden gate gear gift
    girl give glad glass glove goal goat gold golf gone good grain grass green grey grid grip ground
    group grow gull hair half hall hand hang harbour hard harm hate have head heal heap hear heat held
    help herb here hero hide high hill hint hire hold hole hook hope horn horse host hour house huge
    hunt idea inch index iron island item jacket jar jelly jet joke journey joy jungle kettle kind king
    kite knee knit knot land lane last late lawn lead leaf lean left lemon lend lens less letter lift
    light line lion liquid list live load loan local lock long look loop lord lose loud luck lunch made
    mail main make mango maple mark market meal mean meat meet melon menu mild milk mill mind mine mint
    miss mist mixer mode moon more most moth motor much name near neat neck need nest news next nice
    night noble noise north novel ocean offer olive once open orange orbit other oven owner oxygen page
    paint pair palm paper park part pass past path peach pear pen pencil people pepper piano pick piece
    pilot pine pipe place plan plant plate play plot poem point pole pond pool poor port post pour power
    print prize pull pump pure push puzzle queen quiet quota rain ranch rare rate read real reed rent
    rest rice rich ride ring rise risk river road rock role roof room root rope rose round route rule
    rush safe sail salt same sand save scale scene school score sea seat seed seen self sell send shade
    shape share sheet shell shine ship shirt shoe shop shore short shot side sign silk silver simple
    since sing sink site size skill skin slide slow small smile smoke snow soap sock soft soil solid
    song soon sort soul sound soup south space spare speak speed spell spend spin spot spring square
    staff stage stair stamp stand star start state station steam steel stem step still stone store storm
    story straw street string strong study sugar suit summer sun sure swim table tail take tale talk
    tall tank tape task taste team tear tell tent term test than that thin thing third those thread tide
    tile till tin tiny tone tool top torch total touch tour track trade trail train tree trend trial
    trip truck true trust truth tube tune turn twin uncle under unit upon used valley value violin visit
    voice wage wait walk wall wash watch water wave wax wealth wear weight well west wheat wheel when
    white whole wide wife wild will wind window wine wing winter wire wise wish wood wool word work
    world worth year yellow young zone
    """.split()
)


def random_text(rng: np.random.Generator) -> str:
    """Random words from :data:`TRAINING_WORDS`: a sentence, or (like the hard split) a short title."""
    if rng.random() < 0.3:
        words = [TRAINING_WORDS[j].capitalize() for j in rng.integers(0, len(TRAINING_WORDS), int(rng.integers(1, 4)))]
        text = " ".join(words)
    else:
        words = [TRAINING_WORDS[j] for j in rng.integers(0, len(TRAINING_WORDS), int(rng.integers(3, 13)))]
        words[0] = words[0].capitalize()
        for k in range(len(words) - 1):
            if rng.random() < 0.08:
                words[k] += ","
        text = " ".join(words) + (".", ".", ".", "!", "?", "")[int(rng.integers(0, 6))]
    if rng.random() < 0.1:
        text = text.upper()
    return text


def _luminance(rgb: Sequence[int]) -> float:
    c = np.asarray(rgb, dtype=np.float64) / 255.0
    c = np.where(c <= 0.03928, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    return float(0.2126 * c[0] + 0.7152 * c[1] + 0.0722 * c[2])


def contrast_ratio(a: Sequence[int], b: Sequence[int]) -> float:
    """WCAG contrast ratio of two RGB colours (1 = none, 21 = black on white)."""
    la, lb = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)


def random_colours(rng: np.random.Generator) -> tuple[RGB, RGB]:
    """(text, background) colours with a contrast ratio of at least :data:`MIN_CONTRAST`."""
    for _ in range(64):
        if rng.random() < 0.75:  # dark text on a light background, like the evaluation splits
            fg, bg = rng.integers(0, 120, 3), rng.integers(140, 256, 3)
        else:
            fg, bg = rng.integers(140, 256, 3), rng.integers(0, 120, 3)
        fg_t = (int(fg[0]), int(fg[1]), int(fg[2]))
        bg_t = (int(bg[0]), int(bg[1]), int(bg[2]))
        if contrast_ratio(fg_t, bg_t) >= MIN_CONTRAST:
            return fg_t, bg_t
    return (0, 0, 0), (255, 255, 255)


def _label_for(i: int, seed: int, stream: int, n_fonts: int) -> int:
    """Balanced labels: each block of ``n_fonts`` consecutive samples is a permutation of all fonts."""
    block, pos = divmod(i, n_fonts)
    perm = np.random.default_rng([_LABEL_TAG, stream, seed, block]).permutation(n_fonts)
    return int(perm[pos])


def train_sample(
    i: int,
    seed: int = 0,
    *,
    split: str = "train",
    size_range: tuple[int, int] = (28, 52),
    canvas: tuple[int, int] = CANVAS,
    rotation: float = 3.0,
    rotation_prob: float = 0.5,
    blur: float = 1.0,
    noise: float = 6.0,
    jpeg_quality: tuple[int, int] = (40, 95),
    jpeg_prob: float = 0.5,
) -> FRBSample:
    """Training sample ``i`` of ``seed`` for ``split`` ("train" or "val"); a pure function.

    Random words (never an evaluation text), random font size in ``size_range`` (inclusive,
    shrunk if the text would not fit), random margins, text and background colours with WCAG
    contrast >= :data:`MIN_CONTRAST`, with probability ``rotation_prob`` a rotation in
    +-``rotation`` degrees (the rest stay axis-aligned and sharp, as the evaluation splits are:
    rotating every page softened every training glyph, and crisp renders of Vera and Calibri
    were then taken for Arial), Gaussian blur with probability 1/2 and radius up to ``blur``,
    Gaussian pixel noise with sigma up to ``noise`` (0-255 scale), and with probability ``jpeg_prob`` a JPEG round trip at a quality in
    ``jpeg_quality``. Labels are balanced over the fonts in every block of 15 samples.
    """
    if split not in _SPLIT_STREAMS:
        raise ValueError(f"split must be one of {sorted(_SPLIT_STREAMS)}, got {split!r}")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    if isinstance(i, bool) or not isinstance(i, int | np.integer) or i < 0:
        raise ValueError(f"sample index must be a non-negative int, got {i!r}")
    if not 0.0 <= rotation_prob <= 1.0:
        raise ValueError(f"rotation_prob must be in [0, 1], got {rotation_prob!r}")
    lo, hi = size_range
    if not 0 < lo <= hi:
        raise ValueError(f"size_range must satisfy 0 < low <= high, got {size_range!r}")
    stream = _SPLIT_STREAMS[split]
    label = _label_for(int(i), int(seed), stream, len(FONTS))
    rng = np.random.default_rng([_SAMPLE_TAG, stream, int(seed), int(i)])

    text = random_text(rng)
    size = int(rng.integers(lo, hi + 1))
    fg, bg = random_colours(rng)
    left, right = (int(v) for v in rng.integers(4, 41, 2))
    top, bottom = int(rng.integers(4, 61)), int(rng.integers(4, 31))
    image = _draw(text, label, size=size, canvas=canvas, box=(left, top, right, bottom), fg=fg, bg=bg)

    angle = float(rng.uniform(-rotation, rotation))
    if rng.random() < rotation_prob:
        image = image.rotate(angle, resample=Image.Resampling.BICUBIC, fillcolor=bg)
    radius = float(rng.uniform(0.0, blur))
    if rng.random() < 0.5 and radius > 0:
        image = image.filter(ImageFilter.GaussianBlur(radius))
    sigma = float(rng.uniform(0.0, noise))
    pixels = np.asarray(image, dtype=np.float32)
    pixels = pixels + rng.normal(0.0, sigma, pixels.shape).astype(np.float32)
    image = Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8), "RGB")
    if rng.random() < jpeg_prob:
        quality = int(rng.integers(jpeg_quality[0], jpeg_quality[1] + 1))
        buf = io.BytesIO()
        image.save(buf, format="JPEG", quality=quality)
        buf.seek(0)
        with Image.open(buf) as decoded:
            image = decoded.convert("RGB")
    return FRBSample(image, label, FONTS[label].name, text, split)


def train_split(
    n: int, seed: int = 0, *, size_range: tuple[int, int] = (28, 52), **kwargs
) -> Iterator[FRBSample]:
    """Lazily generate training samples ``0 .. n-1`` of ``seed`` (see :func:`train_sample`)."""
    for i in range(n):
        yield train_sample(i, seed, split="train", size_range=size_range, **kwargs)


def val_split(
    n: int, seed: int = 0, *, size_range: tuple[int, int] = (28, 52), **kwargs
) -> Iterator[FRBSample]:
    """Like :func:`train_split` but from an independent random stream (never equals train)."""
    for i in range(n):
        yield train_sample(i, seed, split="val", size_range=size_range, **kwargs)


def protocol_val_split(seed: int = 0, n_sentences: int = 10, n_titles: int = 15,
                       layout: str = "paper") -> list[FRBSample]:
    """Model selection without touching the benchmark: training-vocabulary text rendered exactly like
    the easy and hard splits of ``layout`` (clean, black on white; the paper layout's JPEG included).

    Per font, ``n_sentences`` random sentences of 6-9 words (rendered like easy) and ``n_titles``
    random title-case phrases of 1-3 words (like hard's font names), every text from :data:`TRAINING_WORDS`,
    never an evaluation text. Font-major, like the evaluation splits; ``split`` is "val-sentence" or
    "val-title". The same texts for every font, deterministic by ``seed``.
    """
    _check_layout(layout)
    rng = np.random.default_rng([_SAMPLE_TAG, 7, int(seed)])
    texts: list[tuple[str, str]] = []
    for _ in range(n_sentences):
        words = [TRAINING_WORDS[j] for j in rng.integers(0, len(TRAINING_WORDS), int(rng.integers(6, 10)))]
        texts.append((words[0].capitalize() + " " + " ".join(words[1:]) + ".", "val-sentence"))
    for _ in range(n_titles):
        words = [TRAINING_WORDS[j].capitalize() for j in rng.integers(0, len(TRAINING_WORDS), int(rng.integers(1, 4)))]
        texts.append((" ".join(words), "val-title"))
    if layout == "canvas440":
        return [FRBSample(render_text(t, label), label, spec.name, t, split)
                for label, spec in enumerate(FONTS) for t, split in texts]
    out = []
    for label in range(len(FONTS)):
        easy_font, hard_font = load_font(label, EASY_FONT_SIZE), load_font(label, FONT_SIZE)
        for t, split in texts:
            image = (frb_layout.render_paragraph(t, easy_font) if split == "val-sentence"
                     else frb_layout.render_line(t, hard_font))
            out.append(_paper_sample(image, label, t, split))
    return out


# --------------------------------------------------------------------------------------------
# Writing to disk
# --------------------------------------------------------------------------------------------


def write_split(
    samples: Iterable[FRBSample],
    out_dir: str | os.PathLike[str],
    *,
    total: int | None = None,
    progress: bool = True,
) -> Path:
    """Write ``samples`` (all of one split) as ``out_dir/<split>/<label>_<i>.png``.

    A sample that carries its encoded file (:attr:`FRBSample.data`, the paper layout's JPEGs) is
    written as that file, ``<label>_<i>.jpg``, byte for byte.

    Also writes the manifest ``out_dir/<split>.jsonl`` (one JSON object per image: ``path``
    relative to ``out_dir``, ``label``, ``font``, ``text``, ``split``), replacing any earlier
    manifest of that split atomically once every image is written. Returns the manifest path.
    ``total`` (default ``len(samples)`` where defined) sizes the progress bar.
    """
    out = Path(out_dir)
    if total is None and hasattr(samples, "__len__"):
        total = len(samples)  # type: ignore[arg-type]
    split: str | None = None
    records: list[dict] = []
    with progress_bar(progress) as bar:
        task = bar.add_task("writing", total=total)
        for i, sample in enumerate(samples):
            if split is None:
                split = sample.split
                if not _SPLIT_NAME.match(split):
                    raise ValueError(f"split name {split!r} must match {_SPLIT_NAME.pattern}")
                (out / split).mkdir(parents=True, exist_ok=True)
                bar.update(task, description=f"writing {split}")
            elif sample.split != split:
                raise ValueError(f"write_split got samples of splits {split!r} and {sample.split!r}")
            if sample.data is not None:
                rel = f"{split}/{sample.label}_{i}.jpg"
                (out / rel).write_bytes(sample.data)
            else:
                rel = f"{split}/{sample.label}_{i}.png"
                sample.image.save(out / rel, format="PNG")
            records.append(
                {"path": rel, "label": sample.label, "font": sample.font, "text": sample.text, "split": split}
            )
            bar.advance(task)
    if split is None:
        raise ValueError("write_split got no samples")
    manifest = out / f"{split}.jsonl"
    tmp = manifest.with_name(manifest.name + ".tmp")
    with tmp.open("w", encoding="utf-8", newline="\n") as fh:
        for record in records:
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
    os.replace(tmp, manifest)
    logger.info("wrote %d %s images and %s", len(records), split, manifest)
    return manifest


def read_split(out_dir: str | os.PathLike[str], split: str) -> list[FRBSample]:
    """Load a split written by :func:`write_split` (images fully decoded, RGB)."""
    from vitkit.data.images import load_image

    out = Path(out_dir)
    samples = []
    with (out / f"{split}.jsonl").open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                r = json.loads(line)
                path = out / r["path"]
                data = path.read_bytes() if path.suffix == ".jpg" else None
                samples.append(FRBSample(load_image(path), r["label"], r["font"], r["text"], r["split"], data))
    return samples


def generate(
    out_dir: str | os.PathLike[str],
    n_train: int = 6000,
    n_val: int = 750,
    seed: int = 0,
    *,
    layout: str = "paper",
    progress: bool = True,
) -> dict[str, Path]:
    """Write the easy, hard (in ``layout``), train and val splits under ``out_dir``; returns split -> manifest."""
    _check_layout(layout)  # before anything is written
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    logger.info(
        "generating FRB (%s layout) into %s: easy 150, hard 225, train %d, val %d (seed %d)",
        layout, out, n_train, n_val, seed,
    )
    jobs: list[tuple[str, Iterable[FRBSample], int]] = [
        ("easy", _iter_easy(layout), len(FONTS) * len(EASY_SENTENCES)),
        ("hard", _iter_lines(FONT_NAMES, "hard", FONT_SIZE, layout), len(FONTS) ** 2),
        ("train", train_split(n_train, seed), n_train),
        ("val", val_split(n_val, seed), n_val),
    ]
    manifests = {}
    for name, samples, total in jobs:
        if total == 0:
            logger.info("skipping empty %s split", name)
            continue
        manifests[name] = write_split(samples, out, total=total, progress=progress)
    return manifests
