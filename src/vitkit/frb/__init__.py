"""Font Recognition Benchmark (FRB): which of 15 fonts is a text set in?

FRB (COLM 2025) renders text in 15 fonts in three groups (serif, sans-serif, script/decorative)
and asks a model to name the font. Two evaluation splits:

* **easy** -- 10 sentences x 15 fonts = 150 images;
* **hard** -- the 15 font *names* rendered in each of the 15 fonts = 225 images. Except on the
  diagonal, the text names a different font than the one it is set in (a Stroop-style conflict
  between what the text says and what it looks like).

Two layouts, chosen by name (``layout=``):

* ``"paper"`` (the default) -- the paper's public generator, see :mod:`vitkit.frb.layout`:
  the paper's 10 sentences at size 32 wrapped to 500 px, the names at size 40 on one line, canvases
  cut to the text, black on white, every image a JPEG (quality 75). :attr:`FRBSample.data` keeps
  the JPEG file, so a split written to disk decodes to exactly the in-memory pixels.
* ``"canvas440"`` -- vitkit's first reading (figures in RESULTS.md up to 2026-12 were measured on
  it): ten public-domain pangrams and the names on a 440x240 canvas, size 40, 20 px padding, PNG.

The package, by what each module does:

* :mod:`~vitkit.frb.fontset` -- the 15 fonts shipped in ``vitkit/frb/fonts`` (manifest, licences, lookup);
* :mod:`~vitkit.frb.render` -- drawing text in a font, :class:`FRBSample`;
* :mod:`~vitkit.frb.splits` -- the evaluation splits, the protocol validation split, writing them to disk;
* :mod:`~vitkit.frb.training` -- augmented training samples from an embedded word list;
* :mod:`~vitkit.frb.layout`, :mod:`~vitkit.frb.robust` -- the paper's page layout; rescaled, inverted
  and recompressed variants of a split;
* :mod:`~vitkit.frb.pages` -- samples → grey page tensors; the high-resolution pages of token reduction;
* :mod:`~vitkit.frb.ink` -- page normalisation, text height and scale, ink crops for training;
* :mod:`~vitkit.frb.classifier` -- :class:`~vitkit.frb.classifier.PagePolicy` and the tiled page classifier;
* :mod:`~vitkit.frb.protocols` (with :mod:`~vitkit.frb.results`, :mod:`~vitkit.frb.batching`) -- the
  evaluation protocols: classifier, multiple choice, zero-shot, few-shot retrieval;
* :mod:`~vitkit.frb.recipe` -- the demo's model and crop training; :mod:`~vitkit.frb.clip` -- the FRB CLIP.

This ``__init__`` exposes the data API (``from vitkit import frb; frb.easy_split()``) and imports
nothing that needs torch, so :mod:`vitkit.weights.load` can import :mod:`vitkit.frb.classifier`
without pulling the training code (which imports the engine, which imports ``vitkit.weights``).
"""

from .fontset import (
    FONT_NAMES,
    FONT_SIZE,
    FONTS,
    FONTS_DIR,
    GROUPS,
    KNOWN_FONTS,
    LAYOUT_ENGINE,
    UNKNOWN_FONTS,
    FontSpec,
    font_index,
    font_path,
    load_font,
)
from .render import CANVAS, MIN_FONT_SIZE, PADDING, FRBSample, render_text, wrap_text
from .splits import (
    EASY_FONT_SIZE,
    EASY_SENTENCES,
    LAYOUTS,
    LETTER_FONT_SIZE,
    PANGRAMS,
    easy_split,
    generate,
    hard_split,
    letter_split,
    protocol_val_split,
    read_split,
    write_split,
)
from .training import (
    MIN_CONTRAST,
    TRAINING_WORDS,
    contrast_ratio,
    paper_train_sample,
    random_colours,
    random_text,
    train_sample,
    train_split,
    val_split,
)

__all__ = [
    "CANVAS",
    "EASY_FONT_SIZE",
    "EASY_SENTENCES",
    "FONTS",
    "FONTS_DIR",
    "FONT_NAMES",
    "FONT_SIZE",
    "GROUPS",
    "KNOWN_FONTS",
    "LAYOUTS",
    "LAYOUT_ENGINE",
    "LETTER_FONT_SIZE",
    "MIN_CONTRAST",
    "MIN_FONT_SIZE",
    "PADDING",
    "PANGRAMS",
    "TRAINING_WORDS",
    "UNKNOWN_FONTS",
    "FRBSample",
    "FontSpec",
    "contrast_ratio",
    "easy_split",
    "font_index",
    "font_path",
    "generate",
    "hard_split",
    "letter_split",
    "load_font",
    "protocol_val_split",
    "random_colours",
    "paper_train_sample",
    "random_text",
    "read_split",
    "render_text",
    "train_sample",
    "train_split",
    "val_split",
    "wrap_text",
    "write_split",
]
