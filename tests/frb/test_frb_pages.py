from __future__ import annotations

import numpy as np
import pytest

from vitkit import frb
from vitkit.frb.pages import PageConfig, page_sample, page_split, page_tensors


def test_pages_are_pure_balanced_and_mostly_blank():
    cfg = PageConfig(size=(128, 160))
    a = page_split(15, 3, split="train", cfg=cfg)
    b = page_sample(7, 3, split="train", cfg=cfg)
    assert np.array_equal(np.asarray(a[7].image), np.asarray(b.image)) and a[7].text == b.text
    assert sorted(s.label for s in a) == list(range(15))
    assert all(s.font == frb.FONTS[s.label].name for s in a)
    assert a[0].image.size == (160, 128)
    grey, labels = page_tensors(a)
    assert grey.shape == (15, 1, 128, 160) and labels.tolist() == [s.label for s in a]
    ink = (grey < 0.5).float().mean((1, 2, 3))
    assert (ink > 0.002).all() and (ink < 0.25).all()  # text present, most of the page blank
    other = page_sample(7, 3, split="test", cfg=cfg)
    assert not np.array_equal(np.asarray(other.image), np.asarray(b.image))


def test_bad_arguments():
    with pytest.raises(ValueError, match="split"):
        page_sample(0, split="easy")
    with pytest.raises(ValueError, match="size"):
        PageConfig(size=(32, 32))
    with pytest.raises(ValueError, match="font_size"):
        PageConfig(font_size=(20, 10))
    with pytest.raises(ValueError, match="index"):
        page_sample(-1)
