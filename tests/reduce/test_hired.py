from __future__ import annotations

import pytest
import torch
from reduce_models import make

from vitkit.reduce import hired
from vitkit.reduce.partitions import encode_partitions, partition

pytestmark = pytest.mark.usefixtures("one_thread")


def hi_res(model, grid=(2, 2), batch=2):
    vis = getattr(model, "visual", model)
    h, w = vis.cfg.img_size
    return torch.randn(batch, 3, h * grid[0], w * grid[1])


def test_partition_layout():
    x = torch.arange(2 * 1 * 8 * 12, dtype=torch.float).view(2, 1, 8, 12)
    parts = partition(x, (2, 3), (4, 4))
    assert parts.shape == (2, 7, 1, 4, 4)
    assert torch.equal(parts[:, 1], x[:, :, :4, :4]) and torch.equal(parts[:, 6], x[:, :, 4:, 8:])
    # the thumbnail is the whole image resized
    assert torch.allclose(parts[:, 0].mean((-1, -2)), x.mean((-1, -2)), atol=1e-3)


def test_region_index_is_2d():
    reg = hired.region_index((4, 6), (2, 3)).view(4, 6)
    want = torch.tensor([[0, 0, 1, 1, 2, 2]] * 2 + [[3, 3, 4, 4, 5, 5]] * 2)
    assert torch.equal(reg, want)
    s = hired.region_scores(torch.ones(1, 24), (4, 6), (2, 3))
    assert torch.equal(s, torch.full((1, 6), 4.0))


def test_allocate_follows_the_paper():
    T = 16
    s = torch.tensor([[3.0, 1.0, 0.0, 0.0]])
    b = hired.allocate(s, rate=0.25, alpha=0.5, tokens_per_partition=T)  # N = 20, N0 = 10, rest 10
    assert b.tolist() == [[10, 8, 2, 0, 0]]  # 7.5 / 2.5 → largest remainder gives the spare token to the first
    capped = hired.allocate(torch.tensor([[10.0, 1.0, 1.0, 0.0]]), rate=0.6, alpha=0.5, tokens_per_partition=T)
    assert capped[0, 0] == 16 and capped[0, 1] == 16 and int(capped.sum()) == 48  # N = 48, cap 16 → surplus passed on
    full = hired.allocate(torch.rand(3, 4), rate=1.0, alpha=0.5, tokens_per_partition=T)
    assert (full == T).all()


def test_select_topk_per_partition():
    scores = torch.rand(2, 3, 5)
    budgets = torch.tensor([[2, 0, 3], [1, 3, 1]])
    flat = hired.select(scores, budgets)
    for b in range(2):
        want = []
        for p in range(3):
            top = scores[b, p].topk(int(budgets[b, p])).indices.tolist()
            want += [p * 5 + t for t in top]
        assert flat[b].tolist() == sorted(want)


@pytest.mark.parametrize("kind", ["vit", "prefix", "clip", "wrapped"])
@pytest.mark.parametrize("early", [False, True])
def test_rate_one_is_the_dense_token_set(kind, early):
    m = make(kind)
    x = hi_res(m)
    vis = getattr(m, "visual", m)
    dense = encode_partitions(m, partition(x, (2, 2), vis.cfg.img_size))
    hired.apply(m, hired.HiREDConfig(grid=(2, 2), rate=1.0, early=early, select_layer=1))
    ts = hired.encode(m, x)
    assert torch.equal(ts.tokens, dense.tokens)
    assert torch.equal(ts.partition, dense.partition) and torch.equal(ts.pos, dense.pos)
    hired.remove(m)
    assert all(b.token_hook is None and b.attn.readout is None for b in vis.blocks)


@pytest.mark.parametrize("kind", ["vit", "prefix", "clip", "wrapped"])
def test_hired_keeps_the_budget_chosen_by_full_maps(kind):
    """Reference: the same choice computed from full attention maps of the dense model."""
    m = make(kind)
    vis = getattr(m, "visual", m)
    x = hi_res(m)
    parts = partition(x, (2, 2), vis.cfg.img_size)
    B, P = parts.shape[:2]
    npre, T = vis.num_prefix_tokens, vis.grid_size[0] * vis.grid_size[1]
    with vis.attention_readout([0, 1], "full") as maps:
        feats = vis.forward_features(parts.flatten(0, 1))
    thumb = maps[0][:, :, 0, npre:].sum(1).view(B, P, T)[:, 0]
    late = maps[1][:, :, 0, npre:].sum(1).view(B, P, T)
    budgets = hired.allocate(hired.region_scores(thumb, vis.grid_size, (2, 2)), 0.3, 0.5, T)
    flat = hired.select(late, budgets)
    hired.apply(m, hired.HiREDConfig(grid=(2, 2), rate=0.3, select_layer=1))
    ts = hired.encode(m, x)
    K = int((0.3 * P * T) // 1)
    assert ts.tokens.shape[:2] == (B, K)
    assert torch.equal(ts.flat, flat)
    dense_tokens = feats[:, npre:].reshape(B, P * T, -1)
    want = dense_tokens.gather(1, flat.unsqueeze(-1).expand(-1, -1, ts.tokens.shape[-1]))
    assert torch.allclose(ts.tokens, want, atol=1e-5)  # the full map path rounds differently
    hired.remove(m)


def test_early_drops_inside_the_encoder_and_matches_per_partition_runs():
    m = make("prefix")  # depth 3; early selection at block 1
    vis = m
    x = hi_res(m, batch=2)
    cfg = hired.HiREDConfig(grid=(2, 2), rate=0.25, select_layer=1, early=True)
    hired.apply(m, cfg)
    ts = hired.encode(m, x)
    T, npre = 64, vis.num_prefix_tokens
    assert ts.tokens.shape[1] == int(0.25 * 5 * T)
    budgets = ts.state.extras["hired_budgets"]  # the encoder forward's TokenState comes with the token set
    hired.remove(m)
    # reference: run each partition alone with the same kept tokens from block 1's MLP on
    parts = partition(x, (2, 2), vis.cfg.img_size).flatten(0, 1)
    with vis.attention_readout([1], "cls"):
        h, st = vis.embed(parts)
        h = vis.blocks[0](h, st)
        blk = vis.blocks[1]
        h = h + blk.ls1(blk.attn(blk.norm1(h)))
    for b in range(2):
        got = ts.tokens[b]
        offset = 0
        for p in range(5):
            n = int(budgets[b, p])
            keep = ts.flat[b, offset : offset + n] - p * T
            rows = torch.cat([torch.arange(npre), keep + npre])
            y = h[b * 5 + p : b * 5 + p + 1, rows]
            y = y + blk.ls2(blk.mlp(blk.norm2(y)))
            y = vis.norm(vis.blocks[2](y))
            assert torch.allclose(got[offset : offset + n], y[0, npre:], atol=1e-5)
            offset += n


def test_errors():
    m = make("vit")
    for rate in (0.0, 1.2):
        with pytest.raises(ValueError, match=r"rate.*\(0, 1\]"):
            hired.HiREDConfig(rate=rate)
    with pytest.raises(ValueError, match="grid must be two positive ints"):
        hired.HiREDConfig(grid=(0, 2))
    with pytest.raises(ValueError, match=r"select_layer contains 5.*\[-3, 2\]"):
        hired.apply(m, hired.HiREDConfig(select_layer=5))
    with pytest.raises(ValueError, match=r"alloc_layer contains -4"):
        hired.apply(m, hired.HiREDConfig(alloc_layer=-4))
    with pytest.raises(ValueError, match="select_layer ≥ alloc_layer"):
        hired.apply(m, hired.HiREDConfig(alloc_layer=2, select_layer=1, early=True))
    with pytest.raises(ValueError, match="not applied"):
        hired.encode(m, torch.randn(1, 3, 64, 64))
    hired.apply(m, hired.HiREDConfig(grid=(3, 2)))
    with pytest.raises(ValueError, match=r"grid 3×2 does not fit the image 64×64"):
        hired.encode(m, torch.randn(1, 3, 64, 64))
    with pytest.raises(ValueError, match="smaller than the patch size"):
        hired.encode(m, torch.randn(1, 3, 6, 6))
    with pytest.raises(ValueError, match=r"rate=0.001 keeps no token"):
        hired.allocate(torch.ones(1, 4), 0.001, 0.5, 16)
