"""Tests for the Font Recognition Benchmark data (``vitkit.frb``) and its shipped fonts."""

from __future__ import annotations

import io
import itertools
import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

import vitkit
from vitkit import frb
from vitkit.frb import fontset
from vitkit.frb import layout as frb_layout

W, H = frb.CANVAS

PAPER_GROUPS = {
    "serif": ["Baskerville SC", "Georgia", "Merriweather", "Times New Roman", "Roboto Slab"],
    "sans": ["Arial", "Calibri", "Consolas", "Helvetica", "Monoton", "Vera"],
    "script": ["Great Vibes", "Lobster", "Pacifico", "Satisfy"],
}
LICENCE_MARKERS = {
    "OFL-1.1": "SIL Open Font License, Version 1.1",
    "OFL-1.0": "SIL Open Font License, Version 1.0",
    "Apache-2.0": "Apache License",
    "GFL": "GUST Font License",
    "Bitstream-Vera": "Bitstream Vera",
}


def _tokens(texts) -> set[str]:
    return {w.casefold() for t in texts for w in re.findall(r"[A-Za-z]+", t)}


def _ink(image: Image.Image) -> np.ndarray:
    """Ink in [0, 1] of a dark-on-light rendering."""
    return 1.0 - np.asarray(image.convert("L"), dtype=np.float32) / 255.0


def _distance(a: np.ndarray, b: np.ndarray) -> float:
    """0 for identical ink, 1 for ink that never overlaps."""
    return float(np.abs(a - b).sum() / (a.sum() + b.sum()))


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def easy() -> list[frb.FRBSample]:
    return frb.easy_split()


@pytest.fixture(scope="module")
def hard() -> list[frb.FRBSample]:
    return frb.hard_split()


@pytest.fixture(scope="module")
def train45() -> list[frb.FRBSample]:
    return list(frb.train_split(45, seed=7))


# ------------------------------------------------------------------------------------ fonts


def test_fifteen_fonts_in_three_paper_groups():
    assert len(frb.FONTS) == 15
    assert frb.FONT_NAMES == [name for g in frb.GROUPS for name in PAPER_GROUPS[g]]
    for group, names in PAPER_GROUPS.items():
        assert [f.name for f in frb.FONTS if f.group == group] == names
    assert [len(PAPER_GROUPS[g]) for g in frb.GROUPS] == [5, 6, 4]


def test_font_files_ship_inside_the_package_with_licences():
    package_dir = Path(vitkit.__file__).resolve().parent
    assert frb.FONTS_DIR.is_relative_to(package_dir)
    total = 0
    for spec in frb.FONTS:
        assert spec.path.is_file(), spec.file
        assert spec.path.suffix in {".ttf", ".otf"}
        size = spec.path.stat().st_size
        assert size < 1_000_000, f"{spec.file} is {size} bytes"
        total += size
        assert spec.licence in LICENCE_MARKERS, spec.licence
        licence_text = spec.licence_path.read_text(encoding="utf-8")
        assert LICENCE_MARKERS[spec.licence] in licence_text, spec.licence_file
        assert spec.substitute == (spec.name.casefold() not in spec.family.casefold()) or spec.name in {
            "Baskerville SC",  # Google Fonts spells it "Baskervville SC"
        }
    assert total < 5_000_000
    # nothing unlisted in the folder
    shipped = {p.name for p in frb.FONTS_DIR.iterdir() if p.suffix in {".ttf", ".otf"}}
    assert shipped == {f.file for f in frb.FONTS}
    licences = {f"LICENSES/{p.name}" for p in (frb.FONTS_DIR / "LICENSES").iterdir()}
    assert licences == {f.licence_file for f in frb.FONTS}


def test_manifest_matches_font_files():
    data = json.loads((frb.FONTS_DIR / "fonts.json").read_text(encoding="utf-8"))
    required = {"name", "group", "file", "family", "substitute", "licence", "licence_file"}
    for entry in data["fonts"]:
        assert required <= entry.keys()
    for spec in frb.FONTS:
        font = frb.load_font(spec.name, 40)
        assert font.getname()[0] == spec.family
        assert Path(font.path).resolve() == spec.path


def test_font_lookup():
    assert frb.font_index("Times New Roman") == 3
    assert frb.font_index("times new roman") == 3
    assert frb.font_index("Liberation Serif") == 3  # family name works too
    assert frb.font_index(3) == 3
    assert frb.font_index(frb.FONTS[3]) == 3
    assert frb.font_path("Vera") == frb.FONTS_DIR / "Vera.ttf"
    assert frb.load_font("Lobster", 30) is frb.load_font(12, 30)  # cached
    with pytest.raises(KeyError, match="Comic Sans"):
        frb.font_index("Comic Sans")
    with pytest.raises(IndexError):
        frb.font_index(15)
    with pytest.raises(ValueError):
        frb.load_font("Vera", 0)


def test_every_character_has_a_glyph():
    """No tofu: every character of every text we render differs from the font's .notdef box."""
    chars = sorted(
        set("".join(frb.EASY_SENTENCES + frb.PANGRAMS + frb.FONT_NAMES + list(frb.TRAINING_WORDS)).upper())
        | set("".join(frb.EASY_SENTENCES + frb.PANGRAMS + frb.FONT_NAMES + list(frb.TRAINING_WORDS)))
        | set(".,!?;")
    )
    chars = [c for c in chars if not c.isspace()]
    assert len(chars) >= 26 * 2 + 5
    for spec in frb.FONTS:
        font = frb.load_font(spec.name, 32)
        notdef = font.getmask("\ue000")
        notdef_bytes = (notdef.size, bytes(notdef))
        for c in chars:
            mask = font.getmask(c)
            assert mask.getbbox() is not None, f"{spec.name}: {c!r} renders nothing"
            assert (mask.size, bytes(mask)) != notdef_bytes, f"{spec.name}: {c!r} renders as .notdef"


def test_fonts_render_visibly_different_images():
    text = frb.EASY_SENTENCES[0]
    inks = [_ink(frb.render_text(text, spec.name)) for spec in frb.FONTS]
    for (i, a), (j, b) in itertools.combinations(enumerate(inks), 2):
        assert _distance(a, b) > 0.3, (frb.FONT_NAMES[i], frb.FONT_NAMES[j])

    # glyph shapes differ too, not just positions: compare ink cropped and scaled to one box
    def aligned(i: int) -> np.ndarray:
        ink = ImageOps.invert(frb.render_text("Rag Gt quick", i).convert("L"))
        return np.asarray(ink.crop(ink.getbbox()).resize((300, 60)), dtype=np.float32) / 255.0

    shapes = [aligned(i) for i in range(len(frb.FONTS))]
    for (i, a), (j, b) in itertools.combinations(enumerate(shapes), 2):
        # the closest pair, Arial vs Helvetica (Liberation Sans vs TeX Gyre Heros), is ~0.19
        assert _distance(a, b) > 0.12, (frb.FONT_NAMES[i], frb.FONT_NAMES[j])


# -------------------------------------------------------------------------------- rendering


def test_render_text_paper_settings():
    image = frb.render_text("Georgia", "Georgia")
    assert image.size == (440, 240) and image.mode == "RGB"
    left, top, right, bottom = ImageOps.invert(image.convert("L")).getbbox()
    assert 18 <= left <= 24 and 20 <= top <= 40  # drawn from the top-left padding corner
    assert right < 440 - 20 and bottom < 240 // 2
    assert image.getpixel((0, 0)) == (255, 255, 255)
    colour = frb.render_text("x", "Vera", fg=(200, 0, 0), bg=(0, 0, 50))
    assert colour.getpixel((0, 0)) == (0, 0, 50)
    assert (200, 0, 0) in {c for _, c in colour.getcolors(10_000)}


def test_wrap_and_shrink_to_fit():
    font = frb.load_font("Vera", 40)
    lines = frb.wrap_text("alpha beta gamma delta epsilon zeta eta theta", font, 400)
    assert len(lines) > 1 and all(font.getlength(line) <= 400 for line in lines)
    assert " ".join(lines) == "alpha beta gamma delta epsilon zeta eta theta"
    assert frb.wrap_text("a\nb", font, 400) == ["a", "b"]
    broken = frb.wrap_text("x" * 60, font, 400)
    assert "".join(broken) == "x" * 60 and all(font.getlength(line) <= 400 for line in broken)
    # far too much text for 40 px: it is shrunk until it fits inside the padding
    long_text = " ".join(frb.EASY_SENTENCES[:4])
    ink = _ink(frb.render_text(long_text, "Monoton"))
    rows, cols = np.nonzero(ink > 0.5)
    assert rows.max() < H - 10 and cols.max() < W - 10


# --------------------------------------------------------------------------- eval splits


def test_easy_split(easy):
    assert len(frb.EASY_SENTENCES) == 10
    for sentence in frb.EASY_SENTENCES + frb.PANGRAMS:  # pangram-like: most of the alphabet
        assert len({c for c in sentence.lower() if c.isalpha()}) >= 20
    assert frb.EASY_SENTENCES[0].startswith("Yesterday, Max drove quite far")  # the paper's sentences
    assert len(easy) == 150
    assert Counter((s.font, s.text) for s in easy) == Counter(
        {(f, t): 1 for f in frb.FONT_NAMES for t in frb.EASY_SENTENCES}
    )
    for s in easy:
        assert s.split == "easy" and s.image.mode == "RGB" and s.data[:2] == b"\xff\xd8"  # a JPEG file
        assert frb.FONT_NAMES[s.label] == s.font
        assert s.image.width <= 500 and s.image.height > 3 * frb.EASY_FONT_SIZE  # a wrapped paragraph
    assert Counter(s.label for s in easy) == {i: 10 for i in range(15)}
    legacy = frb.easy_split("canvas440")
    assert [s.text for s in legacy[:10]] == frb.PANGRAMS and {s.image.size for s in legacy} == {(W, H)}
    assert all(s.data is None for s in legacy)
    with pytest.raises(ValueError, match="canvas440"):
        frb.easy_split("a4")


def test_hard_split_has_every_name_font_pair(hard):
    assert len(hard) == 225
    pairs = {(s.text, s.font) for s in hard}
    assert pairs == set(itertools.product(frb.FONT_NAMES, frb.FONT_NAMES))
    for s in hard:
        assert s.split == "hard" and s.data is not None
        assert 50 <= s.image.height <= 110  # one line at size 40 on a tight canvas
        assert frb.FONT_NAMES[s.label] == s.font
    assert sum(s.text == s.font for s in hard) == 15  # only the diagonal is congruent
    assert {s.image.size for s in frb.hard_split("canvas440")} == {(W, H)}


def _decoded_equals_render(sample, render):
    """The sample is the JPEG (quality 75) of exactly ``render``: same size, re-encoding gives its bytes."""
    buf = io.BytesIO()
    render.save(buf, format="JPEG", quality=75)
    return sample.image.size == render.size and buf.getvalue() == sample.data


def test_paper_paragraph_geometry():
    """Wrapping by character count and the canvas from text metrics, computed independently."""
    import textwrap

    font = frb.load_font("Vera", 32)
    per_line = int((500 - 40) / (font.getlength("xxxxxxxxxx") / 10))
    text = frb.EASY_SENTENCES[4]
    lines = textwrap.fill(text, width=per_line).split("\n")
    assert frb_layout.paragraph_lines(text, font) == lines and len(lines) >= 3
    boxes = [font.getbbox(line) for line in lines]
    width = int(max(b[2] - b[0] for b in boxes) + 40)
    height = int(sum(b[3] - b[1] for b in boxes) + (len(lines) - 1) * 16 + 40)
    (w, h), origins = frb_layout.paragraph_geometry(lines, font)
    assert (w, h) == (width, height)
    assert origins[0] == (20 - boxes[0][0], 20.0)
    assert origins[1][1] == 20 + (boxes[0][3] - boxes[0][1]) + 16
    image = frb_layout.render_paragraph(text, font)
    assert image.size == (width, height)
    ink = _ink(image) > 0.5
    rows, cols = np.nonzero(ink)
    assert abs(int(cols.min()) - 20) <= 1  # lines start at the margin
    sample = frb.easy_split()[frb.font_index("Vera") * 10 + 4]
    assert sample.text == text and _decoded_equals_render(sample, image)


def test_paper_line_geometry():
    font = frb.load_font("Lobster", 40)
    left, top, right, bottom = font.getbbox("Helvetica")
    image = frb_layout.render_line("Helvetica", font)
    assert image.size == (right - left + 40, bottom - top + 40)
    ink = _ink(image) > 0.5
    rows, cols = np.nonzero(ink)
    assert 18 <= rows.min() <= 22 and 18 <= cols.min() <= 22  # the text box starts 20 px in
    assert image.width - 1 - cols.max() in range(17, 23) and image.height - 1 - rows.max() in range(17, 23)
    hard = frb.hard_split()
    sample = next(s for s in hard if s.font == "Lobster" and s.text == "Helvetica")
    assert _decoded_equals_render(sample, image)
    letters = frb.letter_split("aQ")
    assert [s.text for s in letters[:2]] == ["a", "Q"] and len(letters) == 30
    assert _decoded_equals_render(letters[1], frb_layout.render_line("Q", frb.load_font(0, 80)))


def test_eval_images_have_ink_inside_the_canvas(easy, hard):
    for s in easy + hard + frb.easy_split("canvas440"):
        ink = _ink(s.image) > 0.25
        assert ink.mean() > 0.003, (s.font, s.text)
        rows, cols = np.nonzero(ink)
        assert rows.min() > 0 and cols.min() > 0, (s.font, s.text)
        assert rows.max() < s.image.height - 1 and cols.max() < s.image.width - 1, (s.font, s.text)


def test_eval_splits_are_deterministic(easy, hard):
    fontset._truetype.cache_clear()  # reload the fonts, too
    again = frb.easy_split() + frb.hard_split()
    assert len(again) == len(easy) + len(hard)
    for a, b in zip(easy + hard, again, strict=True):
        assert (a.label, a.font, a.text) == (b.label, b.font, b.text)
        assert a.image.tobytes() == b.image.tobytes() and a.data == b.data
    assert _png(easy[0].image) == _png(again[0].image)


def test_written_jpegs_decode_to_the_in_memory_pixels(tmp_path, hard):
    frb.write_split(hard[:20], tmp_path, progress=False)
    back = frb.read_split(tmp_path, "hard")
    assert sorted(p.suffix for p in (tmp_path / "hard").iterdir()) == [".jpg"] * 20
    for a, b in zip(hard[:20], back, strict=True):
        assert a.image.tobytes() == b.image.tobytes() and a.data == b.data


# ------------------------------------------------------------------------------ training


def test_train_sample_depends_only_on_seed_and_index(train45):
    short = list(frb.train_split(5, seed=7))
    for a, b in zip(short, train45[:5], strict=True):
        assert (a.label, a.text, a.split) == (b.label, b.text, b.split)
        assert _png(a.image) == _png(b.image)
    single = frb.train_sample(44, seed=7)
    assert single.text == train45[44].text and single.image.tobytes() == train45[44].image.tobytes()
    other_seed = list(frb.train_split(5, seed=8))
    assert [s.text for s in other_seed] != [s.text for s in short]
    val = list(frb.val_split(5, seed=7))
    assert all(s.split == "val" for s in val)
    assert [s.text for s in val] != [s.text for s in short]


def test_train_samples(train45):
    for s in train45:
        assert s.split == "train" and s.image.size == (440, 240) and s.image.mode == "RGB"
        assert frb.FONT_NAMES[s.label] == s.font
        arr = np.asarray(s.image.convert("L"), dtype=np.float32)
        assert arr.std() > 5  # text is visible against the background
    assert len({s.text for s in train45}) == 45
    assert len({s.image.tobytes() for s in train45}) == 45


def test_paper_train_samples_are_drawn_like_the_benchmark():
    """Training text in the paper's layout: a title on one line as hard draws a name, a sentence as a paragraph
    as easy draws one (the same canvas geometry), JPEG bytes that decode to the pixels, labels as train_sample's."""
    samples = [frb.paper_train_sample(i, seed=3, size_range=(32, 40)) for i in range(30)]
    kinds = Counter(len(s.text.split()) <= frb.training.PAPER_TITLE_WORDS for s in samples)
    assert kinds[True] > 0 and kinds[False] > 0
    for i, s in enumerate(samples):
        assert s.label == frb.train_sample(i, seed=3).label and s.font == frb.FONT_NAMES[s.label]
        assert not set(re.findall(r"[a-z]+", s.text.lower())) - set(frb.TRAINING_WORDS)
        assert Image.open(io.BytesIO(s.data)).convert("RGB").tobytes() == s.image.tobytes()
        sizes = {frb_layout.line_geometry(s.text, frb.load_font(s.label, z))[0] if len(s.text.split()) <= 3
                 else frb_layout.paragraph_geometry(frb_layout.paragraph_lines(s.text, frb.load_font(s.label, z)),
                                                    frb.load_font(s.label, z))[0] for z in range(32, 41)}
        assert s.image.size in sizes  # the canvas is cut to the text at one of the asked sizes
        grey = np.asarray(s.image.convert("L"))
        assert grey[0, :].min() > 200 and np.median(grey) > 240  # black on white, margins blank
    again = frb.paper_train_sample(7, seed=3, size_range=(32, 40))
    assert again.data == samples[7].data and frb.paper_train_sample(7, seed=4).text != again.text
    with pytest.raises(ValueError, match="jpeg_quality"):
        frb.paper_train_sample(0, jpeg_quality=(0, 50))
    with pytest.raises(ValueError, match="seed"):
        frb.paper_train_sample(0, seed=-1)


def test_paper_train_samples_title_share_and_resampling():
    """title_share decides titles against sentences; resample_prob shrinks the decoded page by a factor in the asked
    range, with the same text and label, and leaves the other pages as they were (draws come after the page's)."""
    titles = [frb.paper_train_sample(i, title_share=1.0) for i in range(12)]
    sentences = [frb.paper_train_sample(i, title_share=0.0) for i in range(12)]
    assert all(len(s.text.split()) <= 3 and (s.text.istitle() or s.text.isupper()) for s in titles)
    assert all(len(s.text.split()) >= 3 and not s.text.istitle() for s in sentences)
    for i in range(12):
        plain, shrunk = frb.paper_train_sample(i), frb.paper_train_sample(i, resample_prob=1.0, resample_range=(0.5, 0.6))
        assert plain.data == frb.paper_train_sample(i, resample_prob=0.0, resample_range=(0.5, 0.6)).data
        assert (shrunk.text, shrunk.label, shrunk.data) == (plain.text, plain.label, None)
        for new, old in zip(shrunk.image.size, plain.image.size, strict=True):
            assert 0.5 * old - 1 <= new <= 0.6 * old + 1
    with pytest.raises(ValueError, match="resample_range"):
        frb.paper_train_sample(0, resample_range=(0.0, 0.5))
    with pytest.raises(ValueError, match="title_share"):
        frb.paper_train_sample(0, title_share=1.5)


def test_demo_training_pages_mix_the_two_kinds_in_the_asked_shares():
    from vitkit.frb.recipe import DemoConfig, training_pages

    pages = training_pages(DemoConfig(paper_share=0.5, wide_share=0.3), 60, "train")
    paper = [p for p in pages if p.data is not None and p.image.size != (440, 240)]
    assert 27 <= len(paper) <= 33 and Counter(p.label for p in pages) == {i: 4 for i in range(15)}
    assert all(p.image.size == (440, 240) for p in training_pages(DemoConfig(paper_share=0.0), 30, "train"))
    mixed = training_pages(DemoConfig(paper_share=0.8, wide_share=0.3), 60, "train")
    assert 45 <= sum(p.image.size != (440, 240) for p in mixed) <= 51  # a tenth are paper pages at wide sizes
    with pytest.raises(ValueError, match="paper_share"):
        training_pages(DemoConfig(paper_share=1.5), 5, "train")


def test_train_labels_are_balanced(train45):
    assert Counter(s.label for s in train45) == {i: 3 for i in range(15)}
    counts = Counter(s.label for s in frb.train_split(20, seed=1))
    assert len(counts) == 15 and max(counts.values()) - min(counts.values()) <= 1


def test_train_text_is_disjoint_from_eval_text(train45):
    eval_texts = set(frb.EASY_SENTENCES) | set(frb.PANGRAMS) | set(frb.FONT_NAMES)
    eval_words = _tokens(eval_texts)
    words = set(frb.TRAINING_WORDS)
    assert len(words) == len(frb.TRAINING_WORDS) >= 500
    assert words.isdisjoint(eval_words)
    assert set("abcdefghijklmnopqrstuvwxyz") <= set("".join(words))
    texts = [s.text for s in train45]
    texts += [frb.random_text(np.random.default_rng([9, k])) for k in range(2000)]
    for text in texts:
        assert text not in eval_texts
        assert _tokens([text]) <= words, text


def test_training_colours_have_contrast():
    for k in range(500):
        fg, bg = frb.random_colours(np.random.default_rng([5, k]))
        assert frb.contrast_ratio(fg, bg) >= frb.MIN_CONTRAST
    assert frb.contrast_ratio((0, 0, 0), (255, 255, 255)) == pytest.approx(21.0)


def test_rotation_is_applied_to_a_share_of_pages_only():
    # the evaluation splits are axis-aligned and sharp: training must contain such pages too
    def rotated(i: int, prob: float) -> bool:
        a = frb.train_sample(i, seed=3, rotation=20.0, rotation_prob=prob)
        b = frb.train_sample(i, seed=3, rotation=0.0, rotation_prob=prob)
        return a.image.tobytes() != b.image.tobytes()

    assert not any(rotated(i, 0.0) for i in range(4))
    assert all(rotated(i, 1.0) for i in range(4))
    share = sum(rotated(i, 0.5) for i in range(30)) / 30
    assert 0.2 <= share <= 0.8


def test_protocol_val_split_mirrors_the_benchmark_without_its_text():
    val = frb.protocol_val_split(seed=0, n_sentences=2, n_titles=3)
    assert len(val) == 15 * 5 and [s.label for s in val[:5]] == [0] * 5
    assert Counter(s.split for s in val) == {"val-sentence": 30, "val-title": 45}
    eval_texts = set(frb.EASY_SENTENCES) | set(frb.FONT_NAMES)
    assert not {s.text for s in val} & eval_texts
    assert _tokens(s.text for s in val) <= set(frb.TRAINING_WORDS)
    titles = [s.text for s in val if s.split == "val-title"]
    assert all(w[0].isupper() and len(t.split()) <= 3 for t in titles for w in t.split())
    # rendered like the evaluation splits: same canvas and renderer, byte for byte
    s = val[-1]
    assert _decoded_equals_render(s, frb_layout.render_line(s.text, frb.load_font(s.label, frb.FONT_SIZE)))
    s = frb.protocol_val_split(seed=0, n_sentences=2, n_titles=3, layout="canvas440")[-1]
    assert s.image.tobytes() == frb.render_text(s.text, s.label).tobytes()
    again = frb.protocol_val_split(seed=0, n_sentences=2, n_titles=3)
    assert [s.text for s in again] == [s.text for s in val]
    assert [s.text for s in frb.protocol_val_split(seed=1, n_sentences=2, n_titles=3)] != [s.text for s in val]


def test_train_sample_validates_arguments():
    with pytest.raises(ValueError):
        frb.train_sample(0, seed=-1)
    with pytest.raises(ValueError):
        frb.train_sample(0, split="test")
    with pytest.raises(ValueError):
        frb.train_sample(0, size_range=(40, 30))
    with pytest.raises(ValueError, match="rotation_prob"):
        frb.train_sample(0, rotation_prob=1.5)


# ------------------------------------------------------------------------------- writing


def test_write_split_round_trips(tmp_path, train45, hard):
    manifest = frb.write_split(train45[:20], tmp_path, progress=False)
    assert manifest == tmp_path / "train.jsonl"
    records = [json.loads(line) for line in manifest.read_text(encoding="utf-8").splitlines()]
    assert len(records) == 20
    for i, (r, s) in enumerate(zip(records, train45, strict=False)):
        assert r == {
            "path": f"train/{s.label}_{i}.png",
            "label": s.label,
            "font": s.font,
            "text": s.text,
            "split": "train",
        }
        assert (tmp_path / r["path"]).is_file()
    back = frb.read_split(tmp_path, "train")
    for a, b in zip(back, train45[:20], strict=False):
        assert (a.label, a.font, a.text, a.split) == (b.label, b.font, b.text, b.split)
        assert np.array_equal(np.asarray(a.image), np.asarray(b.image))  # PNG is lossless
    # the file bytes are reproducible
    frb.write_split(hard[:3], tmp_path / "one", progress=False)
    frb.write_split(hard[:3], tmp_path / "two", progress=False)
    for name in ("hard/0_0.jpg", "hard/0_2.jpg", "hard.jsonl"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()


def test_write_split_rejects_bad_input(tmp_path, train45, hard):
    with pytest.raises(ValueError, match="no samples"):
        frb.write_split([], tmp_path, progress=False)
    with pytest.raises(ValueError, match="splits"):
        frb.write_split([train45[0], hard[0]], tmp_path, progress=False)
    bad = frb.FRBSample(hard[0].image, 0, "Baskerville SC", "x", "../escape")
    with pytest.raises(ValueError, match="split name"):
        frb.write_split([bad], tmp_path, progress=False)


def test_generate_writes_all_splits(tmp_path):
    manifests = frb.generate(tmp_path, n_train=15, n_val=15, seed=0, progress=False)
    assert set(manifests) == {"easy", "hard", "train", "val"}
    sizes = {k: len(p.read_text(encoding="utf-8").splitlines()) for k, p in manifests.items()}
    assert sizes == {"easy": 150, "hard": 225, "train": 15, "val": 15}
    assert len(list((tmp_path / "hard").glob("*.jpg"))) == 225
    first = json.loads(manifests["val"].read_text(encoding="utf-8").splitlines()[0])
    assert first["split"] == "val" and (tmp_path / first["path"]).is_file()


def test_open_set_split_partitions_the_fonts():
    assert len(frb.KNOWN_FONTS) == 10 and len(frb.UNKNOWN_FONTS) == 5
    assert set(frb.KNOWN_FONTS) | set(frb.UNKNOWN_FONTS) == set(frb.FONT_NAMES)
    assert not set(frb.KNOWN_FONTS) & set(frb.UNKNOWN_FONTS)


def test_frb_pages_scale_jitter_spreads_text_heights_around_the_band():
    """scale_jitter = 0 reads every page at the band; j > 0 spreads the measured heights over about ±j of it."""
    from vitkit.frb.ink import text_height
    from vitkit.frb.pages import frb_pages

    samples = [frb.paper_train_sample(i, title_share=0.0) for i in range(12)]
    exact, _ = frb_pages(samples, text_height=(24.0, 24.0), canvas=(240, 440))
    spread, _ = frb_pages(samples, text_height=(24.0, 24.0), canvas=(240, 440), scale_jitter=0.15)
    h_exact = np.array([text_height(p) for p in exact])
    h_spread = np.array([text_height(p) for p in spread])
    assert np.all(np.abs(h_exact / 24.0 - 1) < 0.12)  # re-measured after resampling: the estimate's own error
    want = np.array([1 + 0.15 * (2 * ((i * 0.7548776662) % 1) - 1) for i in range(12)])
    ratio = h_spread / h_exact
    # the estimate of a resampled page is itself a few percent off (more on small text): most pages, not all
    assert np.ptp(want) > 0.2 and np.median(np.abs(ratio / want - 1)) < 0.03 and np.ptp(ratio) > 0.15
    with pytest.raises(ValueError, match="scale_jitter"):
        frb_pages(samples, text_height=(24.0, 24.0), scale_jitter=1.0)
