"""TiledClassifier: ink-centred tiles, per-page averaged log-softmax, pooled embeddings (CPU, seconds)."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from vitkit import frb
from vitkit.frb.classifier import PagePolicy, TiledClassifier
from vitkit.frb.ink import INK, normalize_pages, pil_to_tensor
from vitkit.models import VisionTransformer

S, STRIDE = 32, 16
SQ = 10  # side of the ink square


pytestmark = pytest.mark.usefixtures("one_thread")


class FakeBackbone(nn.Module):
    """Logits and features that are simple statistics of a tile, so results can be checked by hand."""

    num_classes, dim = 3, 4

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[int] = []

    def forward_features(self, x: Tensor) -> Tensor:
        self.calls.append(len(x))
        ink = (x[:, 0] < 0).float().mean((1, 2))
        return torch.stack([x.mean((1, 2, 3)), x.amin((1, 2, 3)), x.amax((1, 2, 3)), ink], 1)

    def forward_head(self, f: Tensor, pre_logits: bool = False) -> Tensor:
        if pre_logits:
            return f
        m, ink = f[:, 0], f[:, 3]
        return torch.stack([4 * m, -4 * m, 10 * ink], 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))


def square_page(y: int, x: int, H: int = 96, W: int = 128, side: int = SQ) -> Tensor:
    """(3, H, W) white page with one black side×side square at (y, x)."""
    page = torch.ones(3, H, W)
    page[:, y : y + side, x : x + side] = 0
    return page


def text_pages() -> Tensor:
    """Three small coloured / inverted text pages, different enough that their outputs differ."""
    canvas = (160, 96)
    return torch.stack(
        [
            pil_to_tensor(frb.render_text("Quick fox", 0, canvas=canvas, size=28)),
            pil_to_tensor(frb.render_text("jumps over", 9, canvas=canvas, size=28, fg=(0, 0, 128),
                                          bg=(255, 255, 200))),
            pil_to_tensor(frb.render_text("lazy", 12, canvas=canvas, size=36, fg=(255, 255, 255), bg=(0, 0, 0))),
        ]
    )


@pytest.fixture()
def model() -> TiledClassifier:
    return TiledClassifier(FakeBackbone(), size=S, stride=STRIDE, min_ink_pixels=20).eval()


def test_output_shape_and_is_average_of_tile_log_softmax(model):
    pages = text_pages()
    out = model(pages)
    assert out.shape == (3, FakeBackbone.num_classes)
    tiles, owner = model.tiles(pages)
    assert tiles.shape[1:] == (3, S, S) and owner.shape == (len(tiles),)
    assert set(owner.tolist()) == {0, 1, 2}
    assert (owner[1:] >= owner[:-1]).all()  # tiles grouped by page
    logp = model.backbone(tiles).log_softmax(-1)
    for b in range(3):
        assert torch.allclose(out[b], logp[owner == b].mean(0), atol=1e-6)
    # a mean of log-probabilities: each row's logsumexp ≤ 0, and every entry < 0
    assert (out.logsumexp(-1) <= 1e-6).all() and (out < 0).all()
    assert not torch.allclose(out[0], out[1])


def test_pages_pooled_independently(model):
    pages = text_pages()
    out = model(pages)
    perm = torch.tensor([2, 0, 1])
    assert torch.allclose(model(pages[perm]), out[perm], atol=1e-6)
    for b in range(3):
        alone = model(pages[b : b + 1])
        assert alone.shape == (1, FakeBackbone.num_classes)
        assert torch.allclose(alone[0], out[b], atol=1e-6)
    emb = model.embed(pages)
    for b in range(3):
        assert torch.allclose(model.embed(pages[b : b + 1])[0], emb[b], atol=1e-6)


def test_max_batch_chunking_does_not_change_results(model):
    pages = text_pages()
    out, emb = model(pages), model.embed(pages)
    n_tiles = len(model.tiles(pages)[0])
    small = TiledClassifier(FakeBackbone(), size=S, stride=STRIDE, min_ink_pixels=20, max_batch=3)
    assert torch.allclose(small(pages), out, atol=1e-6)
    small.backbone.calls.clear()
    assert torch.allclose(small.embed(pages), emb, atol=1e-6)
    assert max(small.backbone.calls) <= 3 and sum(small.backbone.calls) == n_tiles


# y, x of the square: inside a cell, on a cell edge, on a cell corner, at the page's borders
SQUARE_POSITIONS = [(40, 50), (43, 60), (27, 59), (0, 0), (86, 118), (0, 118), (86, 3), (50, 0)]


@pytest.mark.parametrize("y, x", SQUARE_POSITIONS)
def test_tiles_are_centred_on_the_ink(model, y, x):
    tiles, owner = model.tiles(square_page(y, x).unsqueeze(0))
    assert len(tiles) >= 1 and (owner == 0).all()
    for t in tiles:
        assert torch.equal(t[0], t[1]) and torch.equal(t[0], t[2])
        ink = t[0] < 0
        assert int(ink.sum()) == SQ * SQ  # the whole square is in every tile
        ys, xs = torch.nonzero(ink, as_tuple=True)
        assert int(ys.max() - ys.min()) == SQ - 1 and int(xs.max() - xs.min()) == SQ - 1
    # away from the borders the tile is centred on the square's centroid (± a pixel of rounding)
    if y >= S // 2 and x >= S // 2 and y + SQ <= 96 - S // 2 and x + SQ <= 128 - S // 2:
        for t in tiles:
            ys, xs = torch.nonzero(t[0] < 0, as_tuple=True)
            assert abs(ys.float().mean() - (S - 1) / 2) <= 5 and abs(xs.float().mean() - (S - 1) / 2) <= 5


def test_one_tile_per_inked_cell(model):
    # a square well inside one cell gives exactly one tile, one straddling a corner (25 px in each of
    # 4 cells) gives four
    assert len(model.tiles(square_page(36, 52).unsqueeze(0))[0]) == 1
    assert len(model.tiles(square_page(43, 59).unsqueeze(0))[0]) == 4
    # cells with fewer than min_ink_pixels ink pixels give no tile
    few = TiledClassifier(FakeBackbone(), size=S, stride=STRIDE, min_ink_pixels=SQ * SQ + 1)
    page = square_page(36, 52)
    page[:, 10:25, 10:25] = 0  # 225 px, one tile
    assert len(few.tiles(page.unsqueeze(0))[0]) == 1


def test_tile_count_tracks_text_amount(model):
    pages = text_pages()
    _, owner = model.tiles(pages)
    counts = torch.bincount(owner, minlength=3)
    assert (counts >= 2).all()
    short = model.tiles(pil_to_tensor(frb.render_text("i", 0, canvas=(160, 96), size=28)).unsqueeze(0))[0]
    assert 1 <= len(short) < counts.min()


def test_blank_page_gives_one_centre_tile(model):
    blank = torch.ones(1, 3, 96, 160)  # the size of text_pages()
    tiles, owner = model.tiles(blank)
    assert len(tiles) == 1 and owner.tolist() == [0]
    assert (tiles[0] > 0).all()  # the page's centre tile, all background
    out = model(torch.cat([blank, text_pages()[:1]]))
    assert out.shape == (2, FakeBackbone.num_classes) and torch.isfinite(out).all()
    assert model.embed(blank).shape == (1, FakeBackbone.dim)


def test_blank_page_of_any_colour_gives_one_tile(model):
    for rgb in ((1.0, 1.0, 0.8), (0.0, 0.0, 0.0), (0.3, 0.3, 0.3)):
        page = torch.tensor(rgb).view(1, 3, 1, 1).expand(1, 3, 64, 64).clone()
        assert len(model.tiles(page)[0]) == 1, rgb


def test_embed_shape_and_pooling(model):
    pages = text_pages()
    emb = model.embed(pages)
    assert emb.shape == (3, FakeBackbone.dim)
    tiles, owner = model.tiles(pages)
    feats = model.backbone.forward_features(tiles)
    for b in range(3):
        assert torch.allclose(emb[b], feats[owner == b].mean(0), atol=1e-6)


def test_page_smaller_than_tile_is_padded_with_background(model):
    small = square_page(5, 5, H=S - 9, W=S - 4)
    tiles, _ = model.tiles(small.unsqueeze(0))
    assert tiles.shape[1:] == (3, S, S) and len(tiles) >= 1
    for t in tiles:
        assert int((t[0] < 0).sum()) == SQ * SQ  # the whole square, on background
    assert model(small.unsqueeze(0)).shape == (1, 3) and model.embed([small, square_page(0, 0)]).shape == (2, 4)


def test_pages_of_different_sizes_in_one_call(model):
    a, b = square_page(40, 50), square_page(10, 10, H=50, W=300)
    out = model([a, b])
    assert torch.allclose(out[0], model(a.unsqueeze(0))[0], atol=1e-6)
    assert torch.allclose(out[1], model(b.unsqueeze(0))[0], atol=1e-6)
    logp, emb = model.logits_and_embeddings([a, b])
    assert torch.allclose(logp, out, atol=1e-6) and torch.allclose(emb, model.embed([a, b]), atol=1e-6)


def test_policy_rescales_pages_to_one_text_scale():
    """A page drawn at half or twice the size is read from (nearly) the same tiles."""
    from PIL import Image

    policy = PagePolicy(tile=48, stride=24, min_ink_pixels=10, text_height=(10.0, 10.0))
    clf = TiledClassifier(FakeBackbone(), policy=policy)
    page = frb.render_text("Quick brown fox", "Vera", canvas=(300, 80), size=28)
    base = clf.page_tiles(pil_to_tensor(page))
    for factor in (0.5, 2.0):
        other = page.resize((round(300 * factor), round(80 * factor)), Image.Resampling.LANCZOS)
        tiles = clf.page_tiles(pil_to_tensor(other))
        assert abs(len(tiles) - len(base)) <= 0.25 * len(base) + 1
        # the ink per tile is about the same: the glyphs were brought back to one size
        assert abs(float((tiles < INK).float().mean()) - float((base < INK).float().mean())) < 0.05
    assert len(clf.page_tiles(torch.ones(3, 40, 40))) == 1  # a blank page: one background tile
    with pytest.raises(ValueError, match="kind"):
        PagePolicy(kind="sliding")
    assert PagePolicy.from_dict(policy.to_dict()) == policy
    with pytest.raises(ValueError, match="unknown page pipeline keys"):
        PagePolicy.from_dict({"tile": 4, "tiles": 3})


def test_reading_at_several_scales_averages_the_single_scale_readings():
    """scales=(0.9, 1.0): each page's log-probabilities and features are the mean of its two one-scale readings."""
    from dataclasses import replace

    base = PagePolicy(tile=48, stride=24, min_ink_pixels=10, text_height=(10.0, 10.0))
    pages = [pil_to_tensor(frb.render_text(t, "Vera", canvas=(300, 80), size=s))
             for t, s in (("Quick brown fox", 28), ("lazy", 40))]
    both = TiledClassifier(FakeBackbone(), policy=replace(base, scales=(0.9, 1.0)))
    one = [TiledClassifier(FakeBackbone(), policy=replace(base, text_height=(h, h))) for h in (9.0, 10.0)]
    assert torch.allclose(both(pages), (one[0](pages) + one[1](pages)) / 2, atol=1e-6)
    assert torch.allclose(both.embed(pages), (one[0].embed(pages) + one[1].embed(pages)) / 2, atol=1e-6)
    logp, feats = both.logits_and_embeddings(pages)
    assert torch.allclose(logp, both(pages), atol=1e-6) and torch.allclose(feats, both.embed(pages), atol=1e-6)
    # the smaller reading has fewer tiles, so a plain mean over all tiles would weigh the readings unequally
    assert len(one[0].tiles(pages)[0]) != len(one[1].tiles(pages)[0])
    tiles, owner = both.tiles(pages)
    assert len(tiles) == len(one[0].tiles(pages)[0]) + len(one[1].tiles(pages)[0])
    assert set(owner.tolist()) == {0, 1}  # page indices, not readings
    # (1.0,) is the one reading: identical to a policy that never heard of scales
    assert torch.equal(TiledClassifier(FakeBackbone(), policy=replace(base, scales=(1.0,)))(pages), one[1](pages))
    assert PagePolicy.from_dict(both.policy.to_dict()) == both.policy
    assert both.policy.readings_note() == ", read at 0.9 and 1 × that scale and averaged" and not base.readings_note()
    for bad in ((), (0.9, 0.0)):
        with pytest.raises(ValueError, match="scales"):
            replace(base, scales=bad)
    with pytest.raises(ValueError, match="text_height"):
        PagePolicy(text_height=None, scales=(0.9, 1.0))


def test_max_tiles_caps_a_huge_page():
    clf = TiledClassifier(FakeBackbone(), policy=PagePolicy(tile=S, stride=STRIDE, text_height=None, max_tiles=5))
    page = torch.ones(3, 400, 400)
    page[:, ::4, :] = 0  # ink everywhere
    assert len(clf.page_tiles(page)) == 5


def test_tiles_use_normalised_pages(model):
    """Colour and inversion do not change the tiles: they are cut from the normalised grey page."""
    black = square_page(40, 50)
    inverted = 1 - black
    coloured = black.clone()
    coloured[:, :, :] = torch.where(black > 0.5, torch.tensor([1.0, 1.0, 0.8]).view(3, 1, 1),
                                    torch.tensor([0.0, 0.0, 0.5]).view(3, 1, 1))
    ref = model.tiles(black.unsqueeze(0))[0]
    for page in (inverted, coloured):
        t = model.tiles(page.unsqueeze(0))[0]
        assert t.shape == ref.shape and torch.allclose(t, ref, atol=1e-5)
    assert torch.allclose(normalize_pages(coloured.unsqueeze(0)), normalize_pages(black.unsqueeze(0)), atol=1e-5)


def test_real_tiny_vit_on_frb_easy_pages():
    vit = VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=4, num_classes=15).eval()
    samples = frb.easy_split()[:2]
    pages = [pil_to_tensor(s.image) for s in samples]  # the paper's canvases differ in size
    model = TiledClassifier(vit, size=32, stride=32).eval()
    with torch.no_grad():
        out = model(pages)
        emb = model.embed(pages)
        alone = model(pages[1:])
    assert out.shape == (2, 15) and torch.isfinite(out).all()
    assert (out.logsumexp(-1) <= 1e-5).all() and (out < 0).all()
    assert emb.shape == (2, 32) and torch.isfinite(emb).all()
    assert torch.allclose(alone[0], out[1], atol=1e-5)
