"""Manipulation data on FRB pages: word boxes, page crops, the font splice, and the detector's ``source``."""

import hashlib
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vitkit import frb
from vitkit.frb.ink import normalize_pages, pil_to_tensor, text_height
from vitkit.pretrain.detect import DetectorConfig, cross_manipulation_auc, detector_from
from vitkit.pretrain.manip import (
    MANIPULATIONS,
    PAGE_MANIPULATIONS,
    ManipulationDataset,
    manipulate,
    page_pair,
)
from vitkit.pretrain.page_manip import (
    TEXT_HEIGHT_FRAC,
    close_gaps,
    fit_width,
    font_donor,
    ink_alpha,
    page_crop,
    text_page,
    word_boxes,
)
from vitkit.pretrain.regions import ink_mask
from vitkit.pretrain.run import PretrainConfig
from vitkit.segment.prompting import connected_components

ROOT = Path(__file__).resolve().parents[2]


def test_close_gaps_and_components():
    m = np.array([[1, 0, 0, 1, 0, 0, 0, 1]], bool)
    assert close_gaps(m, 2).astype(int).tolist() == [[1, 1, 1, 1, 0, 0, 0, 1]]
    assert close_gaps(m.T, 2, axis=0).T.astype(int).tolist() == [[1, 1, 1, 1, 0, 0, 0, 1]]
    grid = np.zeros((5, 6), bool)
    grid[0, 0] = grid[1, 1] = True  # diagonal neighbours: one component
    grid[3:5, 4:6] = True
    labels, n = connected_components(grid)
    assert n == 2 and labels[0, 0] == labels[1, 1] != labels[4, 5] and labels[2, 2] == 0


def test_word_boxes_split_words_and_touching_lines():
    img = np.full((70, 80, 3), 240, np.uint8)
    ink = (20, 20, 20)
    for x in (10, 18, 26):  # word A: three letters 2 px apart (< 0.4 core heights of 10 px)
        img[10:30, x:x + 6] = ink
    img[17:30, 42:61] = ink  # word B, 12 px to the right, with an i-dot 3 px above it
    img[10:14, 50:53] = ink
    img[34:55, 10:41] = ink  # word C on the next line
    img[30:34, 12] = ink  # a descender of A touching C: one component two lines tall
    img[64:66, 70:72] = ink  # a speck
    boxes = word_boxes(img, 10.0)
    assert len(boxes) == 3
    a, b, c = boxes  # top to bottom, then left to right
    assert (a[0], a[1], a[2]) == (10, 10, 32) and a[3] <= 35
    assert b == (42, 10, 61, 30)  # the dot belongs to its word
    assert (c[0], c[2], c[3]) == (10, 41, 55) and c[1] >= 29


def test_text_page_brings_text_to_the_asked_core_height():
    s = frb.train_sample(2, 0)
    page = text_page(s, 10.0)
    h = text_height(normalize_pages(pil_to_tensor(Image.fromarray(page.image))[None])[0])
    assert abs(h - 10.0) <= 1.5
    assert page.font == s.font and page.boxes


def test_page_crops_are_deterministic_and_hold_words():
    a, b = page_crop(0, 3, 48), page_crop(0, 3, 48)
    assert a.image.shape == (48, 48, 3) and a.image.dtype == np.uint8 and a.words.shape == (48, 48)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.words, b.words)
    assert a.core_height == 48 * TEXT_HEIGHT_FRAC and a.font == frb.train_sample(3, 0).font
    assert not np.array_equal(a.image, page_crop(0, 4, 48).image)
    assert not np.array_equal(a.image, page_crop(1, 3, 48).image)
    assert page_crop(0, 3, 32).image.shape == (32, 32, 3)
    for j in range(4):
        c = page_crop(0, j, 48)
        ink = ink_mask(c.image)
        assert c.words.max() >= 1 and (c.words == 0).any()
        assert (c.words[ink] > 0).mean() > 0.9  # the word map covers the text


@pytest.mark.parametrize("index", [0, 1, 5])
def test_font_fake_differs_only_in_its_mask_which_covers_a_word(index):
    p = page_pair(0, index, "font", size=48, rng=np.random.default_rng([0, 2 * index + 1, 7]))
    real, fake, changed = p.real.image, p.fake, p.changed
    assert fake.shape == real.shape and fake.dtype == np.uint8 and changed.any()
    assert np.array_equal(fake[~changed], real[~changed])
    assert (fake != real).any(-1).sum() > 0.5 * changed.sum()  # the region was redrawn, not just marked
    covered = [k for k in np.unique(p.real.words) if k > 0 and changed[p.real.words == k].all()]
    assert covered


def test_font_donor_is_another_font():
    for j in range(6):
        p = page_pair(2, j, "font", size=48, rng=np.random.default_rng(j))
        assert p.real.font == frb.train_sample(j, 2).font
        assert p.donor_font is not None and p.donor_font != p.real.font
        assert font_donor(2, j, p.real.font, p.real.core_height).font == p.donor_font


def test_font_splice_draws_in_the_page_colours():
    """Dark-on-light and light-on-dark pages: the new word is drawn in the page's text colour on its background."""
    seen = set()
    for j in range(12):
        p = page_pair(0, j, "font", size=48, rng=np.random.default_rng(j))
        img, fake = p.real.image.astype(float), p.fake.astype(float)
        a = ink_alpha(p.real.image)
        fg, bg = np.median(img[a > 0.8], 0), np.median(img[a == 0], 0)
        region = fake[p.changed]
        assert np.abs(np.median(region, 0) - bg).max() < 30  # mostly background
        near_fg = np.abs(region - fg).max(-1) < 40
        assert near_fg.sum() >= 4  # and some ink in the text colour
        seen.add(bool(fg.mean() < bg.mean()))
    assert seen == {True, False}  # both polarities were checked


def test_generic_kinds_work_on_page_crops():
    for k, kind in enumerate(("copy", "move", "inpaint", "splice")):
        p = page_pair(0, k, kind, size=48, rng=np.random.default_rng(k))
        assert p.changed.any() and np.array_equal(p.fake[~p.changed], p.real.image[~p.changed])
        assert (p.fake != p.real.image).any()


def test_fit_width_cuts_at_a_letter_gap():
    patch = np.zeros((4, 30), np.float32)
    for x0 in (0, 8, 16, 24):
        patch[:, x0:x0 + 6] = 1.0  # letters at 0-5, 8-13, 16-21, 24-29
    assert fit_width(patch, 40).shape == (4, 30)
    assert fit_width(patch, 15).shape == (4, 15)  # the empty column nearest to 15 is 15 itself
    assert fit_width(patch, 13).shape == (4, 14)  # 14 is empty, 13 is not
    assert fit_width(patch, 10).shape == (4, 7)  # 7 is the only gap in [0.6, 1.15] × 10
    assert fit_width(np.ones((4, 30), np.float32), 12).shape == (4, 12)  # no gap: cut at the width


def test_frb_dataset_items():
    ds = ManipulationDataset(8, kinds=["font", "copy"], seed=0, size=32, source="frb")
    assert [int(ds[i][1]) for i in range(8)] == [0, 1] * 4
    assert [ds.kind(i) for i in range(4)] == [None, "font", None, "copy"]
    x, _ = ds[2]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32
    assert torch.equal(x, torch.from_numpy(page_crop(0, 1, 32).image.transpose(2, 0, 1).copy()).float() / 255)
    again = ManipulationDataset(8, kinds=["font", "copy"], seed=0, size=32, source="frb", cache=False)
    assert torch.equal(ds[1][0], again[1][0])
    changed = (ds[0][0] != ds[1][0]).any(0)
    assert changed.any() and not changed.all()


def _old_scene_item(seed: int, i: int, kinds, size: int) -> torch.Tensor:
    """The scene item as built before FRB pages were a source (kept here to pin it)."""
    from vitkit.data.scenes import render_scene

    s = render_scene(seed, i // 2, size=size)
    img = s.image
    if i % 2:
        kind = kinds[(i // 2) % len(kinds)]
        rng = np.random.default_rng([seed, i, 7])
        donor = render_scene(seed + 1_000_003, i // 2, size=size).image if kind == "splice" else None
        img, _ = manipulate(kind, img, s.parts, rng, donor)
    return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))).float().div_(255.0)


def test_scene_items_are_unchanged():
    d = hashlib.sha256()
    for kinds in (MANIPULATIONS, ["splice"]):
        ds = ManipulationDataset(10, kinds=kinds, seed=3, size=32)
        for i in range(10):
            x, y = ds[i]
            assert torch.equal(x, _old_scene_item(3, i, kinds, 32)) and int(y) == i % 2
            d.update(x.numpy().tobytes())
            d.update(bytes([int(y)]))
    # the same items' hash under the code before page crops existed (same numpy and Pillow versions)
    assert d.hexdigest() == "1791f22669820001c1f0eec46e43d57899608dabb5fc5d6664a8256ca2ef795c"


def _one_line_error(fn, match):
    with pytest.raises(ValueError, match=match) as e:
        fn()
    assert "\n" not in str(e.value)


def test_bad_source_or_kind_fails_with_one_line():
    _one_line_error(lambda: ManipulationDataset(2, kinds=["font"]), "for source 'scenes'")
    _one_line_error(lambda: ManipulationDataset(2, kinds=["recolour"], source="frb"), "for source 'frb'")
    _one_line_error(lambda: ManipulationDataset(2, kinds=["copy"], source="video"), "source must be one of")
    _one_line_error(lambda: ManipulationDataset(2, kinds=[], source="frb"), "non-empty")
    _one_line_error(lambda: DetectorConfig(train_kind="font"), "train_kind")
    _one_line_error(lambda: DetectorConfig(source="pages"), "source must be one of")
    _one_line_error(lambda: cross_manipulation_auc(None, source="pages"), "source must be one of")
    _one_line_error(lambda: cross_manipulation_auc(None, ["font"]), "for source 'scenes'")
    img = np.zeros((16, 16, 3), np.uint8)
    _one_line_error(lambda: manipulate("font", img, np.zeros((16, 16), int), np.random.default_rng(0), img),
                    "TextPage")
    assert DetectorConfig(source="frb", train_kind="font").source == "frb"


def test_cross_manipulation_auc_on_pages():
    torch.manual_seed(0)
    cfg = PretrainConfig(size=32, patch=8, embed_dim=16, depth=1, num_heads=2).encoder_config()
    aucs = cross_manipulation_auc(detector_from(None, cfg), n_test=4, seed=0, source="frb")
    assert list(aucs) == list(PAGE_MANIPULATIONS) and all(0.0 <= v <= 1.0 for v in aucs.values())


def test_benchmark_refuses_a_kind_of_the_other_source(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("pretrain_bench", ROOT / "benchmarks" / "pretrain.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.main(["--detect-source", "frb", "--train-kind", "recolour", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "recolour" in err and "\n" not in err
    assert bench.parse(["--detect-source", "frb", "--train-kind", "font"]).detect_source == "frb"
    assert bench.parse([]).detect_source == "scenes"
    a = bench.parse(["--pretrain-data", "frb-crops", "--out", str(tmp_path)])  # other pretraining data, other folders
    assert bench.pretrain_cfg(a, "fsfm", 1).data == "frb-crops"
    assert bench.run_dir(a, "fsfm", 1) == tmp_path / "fsfm_s1_frb-crops"
    assert bench.run_dir(bench.parse(["--out", str(tmp_path)]), "fsfm", 1) == tmp_path / "fsfm_s1"
