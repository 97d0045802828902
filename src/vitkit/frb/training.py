"""FRB training data: random text from an embedded word list, augmented renders, balanced labels.

:func:`train_split` and :func:`val_split` generate any number of augmented samples whose text is
drawn from :data:`TRAINING_WORDS`, which shares no word with either layout's sentences or the font
names. Sample ``i`` of seed ``s`` depends only on ``(split, s, i)``, never on how many samples are
asked for.
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence

import numpy as np
from PIL import Image, ImageFilter

from . import layout
from .fontset import FONTS, load_font
from .render import CANVAS, RGB, FRBSample, render_in_box

__all__ = [
    "MIN_CONTRAST",
    "PAPER_TITLE_WORDS",
    "TRAINING_WORDS",
    "check_index_and_seed",
    "contrast_ratio",
    "protocol_val_texts",
    "random_colours",
    "paper_train_sample",
    "random_text",
    "train_sample",
    "train_split",
    "val_split",
]

#: Minimum WCAG contrast ratio between text and background colour in training samples.
MIN_CONTRAST = 4.5

_SPLIT_STREAMS = {"train": 0, "val": 1}
_SAMPLE_TAG = 1
_LABEL_TAG = 2
_PAPER_TAG = 3
_RESAMPLERS = (Image.Resampling.BILINEAR, Image.Resampling.BICUBIC, Image.Resampling.LANCZOS)

#: A training text of at most this many words is drawn as the hard split draws a font name (one line on a
#: canvas cut to it); a longer one as the easy split draws a sentence (a paragraph wrapped to 500 px).
PAPER_TITLE_WORDS = 3

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


def random_text(rng: np.random.Generator, title_share: float = 0.3) -> str:
    """Random words from :data:`TRAINING_WORDS`: a sentence, or with probability ``title_share`` (like the
    hard split's font names) a short title of 1-3 capitalised words."""
    if rng.random() < title_share:
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


def check_index_and_seed(i: int, seed: int, what: str) -> None:
    """A generated item's index and seed must be non-negative ints (numpy ints too, never bools);
    the ``ValueError`` names ``what`` the index is."""
    for value, name in ((seed, "seed"), (i, what)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
            raise ValueError(f"{name} must be a non-negative int, got {value!r}")


def _check_sample(i: int, seed: int, split: str, size_range: tuple[int, int]) -> tuple[int, int]:
    """The arguments every training-sample function shares, checked; returns the size range (low, high)."""
    if split not in _SPLIT_STREAMS:
        raise ValueError(f"split must be one of {sorted(_SPLIT_STREAMS)}, got {split!r}")
    check_index_and_seed(i, seed, "sample index")
    lo, hi = size_range
    if not 0 < lo <= hi:
        raise ValueError(f"size_range must satisfy 0 < low <= high, got {size_range!r}")
    return lo, hi


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
    lo, hi = _check_sample(i, seed, split, size_range)
    if not 0.0 <= rotation_prob <= 1.0:
        raise ValueError(f"rotation_prob must be in [0, 1], got {rotation_prob!r}")
    stream = _SPLIT_STREAMS[split]
    label = _label_for(int(i), int(seed), stream, len(FONTS))
    rng = np.random.default_rng([_SAMPLE_TAG, stream, int(seed), int(i)])

    text = random_text(rng)
    size = int(rng.integers(lo, hi + 1))
    fg, bg = random_colours(rng)
    left, right = (int(v) for v in rng.integers(4, 41, 2))
    top, bottom = int(rng.integers(4, 61)), int(rng.integers(4, 31))
    image = render_in_box(text, label, size=size, canvas=canvas, box=(left, top, right, bottom), fg=fg, bg=bg)

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


def paper_train_sample(
    i: int,
    seed: int = 0,
    *,
    split: str = "train",
    size_range: tuple[int, int] = (30, 44),
    jpeg_quality: tuple[int, int] = (40, 95),
    title_share: float = 0.3,
    resample_prob: float = 0.0,
    resample_range: tuple[float, float] = (0.4, 0.9),
) -> FRBSample:
    """Training sample ``i`` drawn as the paper's generator draws the benchmark; a pure function.

    The text is :func:`random_text` (training words only, never an evaluation text); up to
    :data:`PAPER_TITLE_WORDS` words go on one line like the hard split's names (:func:`vitkit.frb.layout.render_line`),
    longer texts become a paragraph like the easy split's sentences (:func:`vitkit.frb.layout.render_paragraph`),
    at a font size in ``size_range``, black on white on a canvas cut to the text, then one JPEG round
    trip at a quality in ``jpeg_quality`` (``data`` keeps the file). ``title_share`` of the texts are
    titles. With probability ``resample_prob`` the decoded page is then resampled by a factor in
    ``resample_range`` (bilinear, bicubic or Lanczos at random), as a saved page is when an editor or a
    viewer shrinks it: the JPEG's blur and ringing end up on fewer pixels per stroke. The label of index
    ``i`` is the one :func:`train_sample` gives it, so a list that mixes the two kinds index by index
    stays balanced.

    The varied pages of :func:`train_sample` (colours, margins, rotation, blur, noise) teach invariance;
    these teach the benchmark's own look: crisp glyphs on tight canvases, the JPEG ringing of quality ~75.
    """
    lo, hi = _check_sample(i, seed, split, size_range)
    qlo, qhi = jpeg_quality
    if not 1 <= qlo <= qhi <= 100:
        raise ValueError(f"jpeg_quality must satisfy 1 <= low <= high <= 100, got {jpeg_quality!r}")
    stream = _SPLIT_STREAMS[split]
    label = _label_for(int(i), int(seed), stream, len(FONTS))
    if not 0.0 <= title_share <= 1.0 or not 0.0 <= resample_prob <= 1.0:
        raise ValueError(f"title_share and resample_prob must be in [0, 1], got {title_share!r}, {resample_prob!r}")
    flo, fhi = resample_range
    if not 0 < flo <= fhi:
        raise ValueError(f"resample_range must satisfy 0 < low <= high, got {resample_range!r}")
    rng = np.random.default_rng([_PAPER_TAG, stream, int(seed), int(i)])
    text = random_text(rng, title_share)
    font = load_font(label, int(rng.integers(lo, hi + 1)))
    image = (layout.render_line(text, font) if len(text.split()) <= PAPER_TITLE_WORDS
             else layout.render_paragraph(text, font))
    decoded, data = layout.jpeg_round_trip(image, int(rng.integers(qlo, qhi + 1)))
    # drawn after everything above, so the pages of resample_prob = 0 are those of earlier versions
    factor, kind, resample = float(rng.uniform(flo, fhi)), int(rng.integers(3)), rng.random() < resample_prob
    if resample:
        size = (max(1, round(decoded.width * factor)), max(1, round(decoded.height * factor)))
        decoded, data = decoded.resize(size, _RESAMPLERS[kind]), None
    return FRBSample(decoded, label, FONTS[label].name, text, split, data)


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


def protocol_val_texts(seed: int = 0, n_sentences: int = 10, n_titles: int = 15) -> list[tuple[str, str]]:
    """The texts of :func:`vitkit.frb.splits.protocol_val_split`: ``(text, split)`` pairs, deterministic by ``seed``.

    ``n_sentences`` random sentences of 6-9 words (``split`` "val-sentence") then ``n_titles`` random
    title-case phrases of 1-3 words ("val-title"), every word from :data:`TRAINING_WORDS`.
    """
    rng = np.random.default_rng([_SAMPLE_TAG, 7, int(seed)])
    texts: list[tuple[str, str]] = []
    for _ in range(n_sentences):
        words = [TRAINING_WORDS[j] for j in rng.integers(0, len(TRAINING_WORDS), int(rng.integers(6, 10)))]
        texts.append((words[0].capitalize() + " " + " ".join(words[1:]) + ".", "val-sentence"))
    for _ in range(n_titles):
        words = [TRAINING_WORDS[j].capitalize() for j in rng.integers(0, len(TRAINING_WORDS), int(rng.integers(1, 4)))]
        texts.append((" ".join(words), "val-title"))
    return texts
