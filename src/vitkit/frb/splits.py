"""The FRB evaluation splits (easy, hard, few-shot letters), the protocol validation split, and their files.

Two layouts, chosen by name (``layout=``): ``"paper"`` (the paper's generator, :mod:`vitkit.frb.layout`,
JPEG) and ``"canvas440"`` (440x240 canvas, PNG); see :mod:`vitkit.frb`. :func:`write_split` saves
samples (PNG, or the JPEG file a sample carries) plus a JSON-lines manifest; :func:`generate` writes
all four splits (the ``vitkit data frb`` command calls it).
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from PIL import Image

from ..progress import progress_bar
from . import layout as frb_layout
from .fontset import FONT_NAMES, FONT_SIZE, FONTS, load_font
from .render import FRBSample, render_text
from .training import protocol_val_texts, train_split, val_split

__all__ = [
    "EASY_FONT_SIZE",
    "EASY_SENTENCES",
    "LAYOUTS",
    "LETTER_FONT_SIZE",
    "PANGRAMS",
    "easy_split",
    "generate",
    "hard_split",
    "letter_split",
    "protocol_val_split",
    "read_split",
    "write_split",
]

logger = logging.getLogger(__name__)

#: The paper layout's font sizes: easy sentences and few-shot letters (the hard split uses FONT_SIZE).
EASY_FONT_SIZE = 32
LETTER_FONT_SIZE = 80
#: Layout names accepted by the split functions; the first is the default.
LAYOUTS: tuple[str, ...] = ("paper", "canvas440")
_SPLIT_NAME = re.compile(r"^[A-Za-z0-9_-]+$")


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
    texts = protocol_val_texts(seed, n_sentences, n_titles)
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
