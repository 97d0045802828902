"""Page normalisation and ink-centred training crops (vitkit.frb.ink), on small CPU tensors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vitkit import frb
from vitkit.frb import ink
from vitkit.frb.ink import INK, InkCropDataset, normalize_pages, pil_to_tensor, to_model_input

SENTENCE = "The quick brown fox jumps over the lazy dog."
DARK_BLUE, LIGHT_YELLOW = (0, 0, 128), (255, 255, 200)


pytestmark = pytest.mark.usefixtures("one_thread")


def _page(text: str, font: int = 0, fg=(0, 0, 0), bg=(255, 255, 255)) -> torch.Tensor:
    return pil_to_tensor(frb.render_text(text, font, fg=fg, bg=bg))


# ------------------------------------------------------------------------------ helpers


def test_pil_to_tensor_shape_range_and_channels():
    img = frb.render_text("ab", 0, fg=(255, 0, 0), bg=(0, 0, 255))
    t = pil_to_tensor(img)
    assert t.shape == (3, img.height, img.width) and t.dtype == torch.float32
    assert t.min() >= 0 and t.max() <= 1
    arr = np.array(img)
    assert torch.allclose(t.permute(1, 2, 0), torch.from_numpy(arr).float() / 255)
    # background is pure blue: channel 2 is 1, channels 0/1 are 0 at the corner
    assert t[:, 0, 0].tolist() == [0.0, 0.0, 1.0]


def test_to_model_input_maps_to_three_centred_channels():
    g = torch.tensor([0.0, 0.25, 1.0]).view(1, 1, 1, 3)
    x = to_model_input(g)
    assert x.shape == (1, 3, 1, 3)
    for c in range(3):
        assert x[0, c, 0].tolist() == [-1.0, -0.5, 1.0]


# ------------------------------------------------------------------------------ normalize_pages


def test_normalize_pages_colour_and_inversion_invariant():
    ref = _page(SENTENCE)
    pages = torch.stack(
        [ref, _page(SENTENCE, fg=DARK_BLUE, bg=LIGHT_YELLOW), _page(SENTENCE, fg=(255, 255, 255), bg=(0, 0, 0))]
    )
    out = normalize_pages(pages)
    assert out.shape == (3, 1, *ref.shape[-2:])
    assert out.min() >= 0 and out.max() <= 1

    base = out[0, 0]
    text = base < INK
    assert 0.005 < text.float().mean() < 0.3  # sanity: a real text page
    # black on white is already normalised: grey == luminance
    lum = (ref * torch.tensor([0.299, 0.587, 0.114]).view(3, 1, 1)).sum(0)
    assert torch.allclose(base, lum, atol=1e-5)
    for k in (1, 2):
        o = out[k, 0]
        assert (o - base).abs().max() < 0.03, k  # whole page, antialiasing included
        assert (o[text] - base[text]).abs().max() < 0.03, k
        assert o[text].median() < 0.02, k  # text ≈ 0
        assert o[~text].median() > 0.98, k  # background ≈ 1
        assert torch.equal(o < INK, text) or ((o < INK) != text).float().mean() < 1e-3, k


def test_normalize_pages_low_contrast_page_stretched():
    ref = _page(SENTENCE)
    grey_on_grey = _page(SENTENCE, fg=(100, 100, 100), bg=(160, 160, 160))
    out = normalize_pages(torch.stack([ref, grey_on_grey]))
    text = out[0, 0] < INK
    assert out[1, 0][text].median() < 0.02
    assert out[1, 0][~text].median() > 0.98
    assert (out[1, 0] - out[0, 0]).abs().max() < 0.05


@pytest.mark.parametrize("colours", [((0, 0, 0), (255, 255, 255)), (DARK_BLUE, LIGHT_YELLOW),
                                     ((255, 255, 255), (0, 0, 0))])
def test_normalize_pages_sparse_text_still_reaches_zero(colours):
    """One short word covers well under 1% of the page: the text level must still map to 0."""
    fg, bg = colours
    ref = _page("ok", 0)
    page = _page("ok", 0, fg=fg, bg=bg)
    ink_ref = (pil_to_tensor(frb.render_text("ok", 0)).mean(0) < 0.5)
    assert 0 < ink_ref.float().mean() < 0.01  # the scenario of the old bug
    out = normalize_pages(page.unsqueeze(0))[0, 0]
    base = normalize_pages(ref.unsqueeze(0))[0, 0]
    assert out.min() < 0.01
    assert out[ink_ref].median() < 0.02
    assert out[~ink_ref].median() > 0.98
    assert (out - base).abs().max() < 0.03
    # the fully inked pixels of the reference are ≈ 0
    solid = ref.mean(0) == 0
    assert solid.any() and out[solid].max() < 0.02


def test_normalize_pages_is_per_page():
    a, b = _page(SENTENCE), _page("ok", 3, fg=(255, 255, 255), bg=(20, 40, 60))
    both = normalize_pages(torch.stack([a, b]))
    assert torch.allclose(both[0], normalize_pages(a.unsqueeze(0))[0])
    assert torch.allclose(both[1], normalize_pages(b.unsqueeze(0))[0])


def test_normalize_pages_blank_page_is_background():
    """A page without text has no text level: it must come out as background (1), not as ink."""
    for level in (1.0, 0.7, 0.0):
        out = normalize_pages(torch.full((1, 3, 40, 50), level))
        assert out.shape == (1, 1, 40, 50)
        assert (out >= INK).all(), level


# ------------------------------------------------------------------------------ InkCropDataset


@pytest.fixture(scope="module")
def text_pages() -> tuple[torch.Tensor, torch.Tensor]:
    rgb = torch.stack([_page(SENTENCE, 0), _page("Sphinx of black quartz, judge my vow.", 5, fg=DARK_BLUE,
                                                 bg=LIGHT_YELLOW), _page("ok", 12)])
    return normalize_pages(rgb), torch.tensor([0, 5, 12])


def test_dataset_length_and_labels(text_pages):
    pages, labels = text_pages
    ds = InkCropDataset(pages, labels, size=48, crops_per_page=5, seed=1)
    assert len(ds) == 15
    for i in range(len(ds)):
        x, y = ds[i]
        assert x.shape == (3, 48, 48)
        assert int(y) == int(labels[i // 5])
        # grey in [0, 1], then the contrast jitter g·a + b (a ∈ [0.85, 1], b ∈ [0, 1 - a]): still in [0, 1]
        assert x.min() >= -1 and x.max() <= 1 + 1e-6
        assert torch.equal(x[0], x[1]) and torch.equal(x[0], x[2])


def test_dataset_deterministic_and_order_independent(text_pages):
    pages, labels = text_pages
    a = InkCropDataset(pages, labels, size=48, crops_per_page=6, seed=3)
    b = InkCropDataset(pages, labels, size=48, crops_per_page=6, seed=3)
    fwd = [a[i][0] for i in range(len(a))]
    rev = {i: b[i][0] for i in reversed(range(len(b)))}
    again = [a[i][0] for i in (7, 2, 7, 0)]
    for i, x in enumerate(fwd):
        assert torch.equal(x, rev[i]), i
    for i, x in zip((7, 2, 7, 0), again, strict=True):
        assert torch.equal(x, fwd[i])
    # the crops vary (different positions) and another seed gives other crops
    assert not all(torch.equal(fwd[0], x) for x in fwd[1:6])
    c = InkCropDataset(pages, labels, size=48, crops_per_page=6, seed=4)
    assert any(not torch.equal(c[i][0], fwd[i]) for i in range(len(c)))


def test_dataset_batch_equals_items_one_by_one(text_pages):
    """The DataLoader's batch path (__getitems__, one stack and one jitter for the batch) gives every item exactly
    as it comes alone, in the asked order, also when pages, jitter and no jitter mix in one batch."""
    pages, labels = text_pages
    ds = InkCropDataset(pages, labels, size=48, crops_per_page=7, seed=2)
    order = [20, 0, 13, 7, 7, 1, 14, 6]
    batch = ds.__getitems__(order)
    for i, (x, y) in zip(order, batch, strict=True):
        alone, y_alone = ds[i]
        assert torch.equal(x, alone) and torch.equal(y, y_alone), i
    loaded = next(iter(torch.utils.data.DataLoader(ds, batch_size=len(ds))))
    assert torch.equal(loaded[0], torch.stack([ds[i][0] for i in range(len(ds))]))


def test_dataset_crops_contain_ink(text_pages):
    pages, labels = text_pages
    ds = InkCropDataset(pages, labels, size=48, crops_per_page=16, seed=0)
    counts = torch.tensor([int((ds[i][0][0] < 0).sum()) for i in range(len(ds))])  # ink: grey < 0.5
    assert (counts >= 1).all()  # the centre ± size/4 always keeps the drawn ink pixel in the crop
    assert (counts >= 20).float().mean() >= 0.9
    # far more ink than a random crop of these mostly white pages would hold on average
    assert counts.float().mean() > 2 * (pages < INK).float().mean() * 48 * 48


def test_dataset_crop_is_a_window_of_its_page():
    """A crop is an exact window of its own page, up to the affine contrast jitter."""
    g = torch.Generator().manual_seed(0)
    pages = torch.rand(3, 1, 40, 48, generator=g)  # random texture: every window is distinct
    ds = InkCropDataset(pages, torch.arange(3), size=16, crops_per_page=4, seed=0)
    wins = pages[:, 0].unfold(1, 16, 1).unfold(2, 16, 1)  # (P, 25, 33, 16, 16)
    wc = wins - wins.mean((-1, -2), keepdim=True)
    jittered = 0
    for i in range(len(ds)):
        crop = (ds[i][0][0] + 1) / 2
        cc = crop - crop.mean()
        corr = (wc * cc).sum((-1, -2)) / (wc.pow(2).sum((-1, -2)).sqrt() * cc.pow(2).sum().sqrt())
        best = int(corr.flatten().argmax())
        assert best // (25 * 33) == i // 4, i  # the window comes from page i // crops_per_page
        assert corr.max() > 0.9999, i
        y, x = divmod(best % (25 * 33), 33)
        w = wins[i // 4, y, x]
        if not torch.allclose(crop, w):
            a = cc.std() / (w - w.mean()).std()
            b = crop.mean() - a * w.mean()
            assert 0.85 - 1e-4 <= a <= 1 + 1e-4 and -1e-4 <= b <= 1 - a + 1e-4, (i, a, b)
            jittered += 1
    assert 0 < jittered < len(ds)  # the jitter applies to some crops, not all


def test_dataset_blank_page_falls_back_to_random_crop():
    pages = torch.ones(2, 1, 40, 40)
    ds = InkCropDataset(pages, torch.tensor([1, 2]), size=16, crops_per_page=3)
    x, y = ds[4]
    assert x.shape == (3, 16, 16) and int(y) == 2
    assert (x >= 0).all()  # no ink anywhere


def test_dataset_bad_shapes_raise():
    labels = torch.tensor([0, 1])
    with pytest.raises(ValueError):
        InkCropDataset(torch.ones(2, 3, 64, 64), labels, size=32)  # RGB, not grey
    with pytest.raises(ValueError):
        InkCropDataset(torch.ones(2, 64, 64), labels, size=32)  # missing channel dim
    with pytest.raises(ValueError):
        InkCropDataset(torch.ones(3, 1, 64, 64), labels, size=32)  # 3 pages, 2 labels
    with pytest.raises(ValueError):
        InkCropDataset(torch.ones(2, 1, 64, 30), labels, size=32)  # narrower than the crop
    with pytest.raises(ValueError):
        InkCropDataset(torch.ones(2, 1, 20, 64), labels, size=32)  # lower than the crop
    InkCropDataset(torch.ones(2, 1, 32, 32), labels, size=32)  # exactly the crop size is fine


# ----------------------------------------------------------------------------- text scale


def _grey(image) -> torch.Tensor:
    return normalize_pages(pil_to_tensor(image).unsqueeze(0))[0]


@pytest.mark.parametrize("q", [0.0, 0.001, 0.2, 0.5, 0.999, 1.0])
def test_tail_quantile_equals_torch_quantile(q):
    torch.manual_seed(0)
    for n in (1, 2, 7, 5000):
        x = torch.rand(3, n)
        assert torch.allclose(ink.tail_quantile(x, q), torch.quantile(x, q, dim=1), atol=1e-7)


def test_text_height_is_scale_equivariant_and_text_independent():
    from PIL import Image

    page = frb.render_text("Quick brown fox jumps over the lazy dog", "Vera", canvas=(600, 200), size=40)
    h = ink.text_height(_grey(page))
    assert 10 < h < 20  # about the x-height of a 40-px sans face
    for factor in (0.5, 2.0, 3.0):
        scaled = page.resize((round(600 * factor), round(200 * factor)), Image.Resampling.LANCZOS)
        assert ink.text_height(_grey(scaled)) == pytest.approx(h * factor, rel=0.1)
    # another text in the same font and size, on a tight canvas, gives about the same height
    word = frb.render_text("Helvetica", "Vera", canvas=(260, 90), size=40)
    assert ink.text_height(_grey(word)) == pytest.approx(h, rel=0.2)
    # lines set so close that they touch are still measured one by one
    tight = frb.render_text("gypsy quay jog\nHelp bold kilt", "Vera", canvas=(400, 120), size=40)
    assert ink.text_height(_grey(tight)) == pytest.approx(h, rel=0.25)
    assert ink.text_height(torch.ones(1, 50, 50)) is None


def test_prepare_page_reads_any_page():
    # one short word on a 70-px canvas, white on black
    word = frb.render_text("Vera", "Arial", canvas=(120, 70), size=40, fg=(255, 255, 255), bg=(0, 0, 0))
    grey, f = ink.prepare_page(pil_to_tensor(word), text_height_px=(15.0, 15.0), min_size=96)
    assert grey.shape[-2] >= 96 and grey.shape[-1] >= 96 and (grey[0] < ink.INK).any()
    assert grey[0, 0, 0] == 1.0  # padded with background; the inversion was undone
    assert ink.text_height(grey) == pytest.approx(15.0, rel=0.1)
    # a 3,000-px scan with small text: shrunk or grown to the reference scale, never refused
    scan = torch.ones(3, 3000, 2200)
    scan[:, 100:3000:40, 200:2000] = 0.0
    grey, f = ink.prepare_page(scan, text_height_px=(15.0, 15.0), min_size=96)
    assert 0 < f and grey.shape[-1] == round(2200 * f)
    # None keeps the page's own scale
    grey, f = ink.prepare_page(pil_to_tensor(word), text_height_px=None, min_size=8)
    assert f == 1.0 and grey.shape[-2:] == (70, 120)


def test_fit_page_centres_the_ink():
    page = torch.ones(1, 50, 300)
    page[:, 20:30, 250:270] = 0
    out = ink.fit_page(page, (40, 40))
    assert out.shape == (1, 40, 40) and int((out < ink.INK).sum()) == 200  # the ink is kept whole
    big = ink.fit_page(page, (100, 400))
    assert big.shape == (1, 100, 400) and int((big < ink.INK).sum()) == 200 and big[0, 0, 0] == 1.0


def test_scale_text_leaves_pages_inside_the_band_untouched():
    page = _grey(frb.render_text("Quick brown fox jumps", "Vera", canvas=(500, 120), size=40))
    h = ink.text_height(page)
    same, f = ink.scale_text(page, (h - 2, h + 2))
    assert f == 1.0 and torch.equal(same, page)  # pixel for pixel
    up, f = ink.scale_text(page, (2 * h, 3 * h))
    assert f == pytest.approx(2.0) and ink.text_height(up) == pytest.approx(2 * h, rel=0.1)
    down, f = ink.scale_text(page, (h / 3, h / 2))
    assert f == pytest.approx(0.5) and ink.text_height(down) == pytest.approx(h / 2, rel=0.1)
    assert ink.scale_text(page, None) == (page, 1.0)
