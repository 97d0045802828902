from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from reduce_models import encode, encode_with_state, image_for, make

from vitkit.reduce import tome

pytestmark = pytest.mark.usefixtures("one_thread")


def naive_merge(x, size, metric, r):
    """Reference: loop over A tokens, pick the r best-matched, size-weighted means into B partners."""
    B = x.shape[0]
    outs, sizes = [], []
    for b in range(B):
        m = F.normalize(metric[b], dim=-1)
        A, Bs = list(range(0, len(m), 2)), list(range(1, len(m), 2))
        best = {a: max(Bs, key=lambda j: float(m[a] @ m[j])) for a in A}
        score = {a: float(m[a] @ m[best[a]]) for a in A}
        merged = sorted(A, key=lambda a: -score[a])[:r]
        acc = {j: (x[b, j] * size[b, j], size[b, j].clone()) for j in Bs}
        for a in merged:
            s, w = acc[best[a]]
            acc[best[a]] = (s + x[b, a] * size[b, a], w + size[b, a])
        rows = [x[b, a] for a in A if a not in merged] + [acc[j][0] / acc[j][1] for j in Bs]
        ws = [size[b, a] for a in A if a not in merged] + [acc[j][1] for j in Bs]
        outs.append(torch.stack(rows))
        sizes.append(torch.stack(ws))
    return torch.stack(outs), torch.stack(sizes)


def test_merge_matches_naive():
    x, metric = torch.randn(2, 11, 5), torch.randn(2, 11, 3)
    size = torch.randint(1, 4, (2, 11, 1)).float()
    unm, src, dst = tome.bipartite_soft_matching(metric, 3)
    out, new_size = tome.merge(x, size, unm, src, dst)
    ref, ref_size = naive_merge(x, size, metric, 3)
    assert out.shape == (2, 8, 5)
    assert torch.allclose(out, ref, atol=1e-6) and torch.equal(new_size, ref_size)
    assert torch.equal(new_size.sum(1), size.sum(1))  # nothing lost
    rows = tome.new_rows(11, unm, src, dst)
    for b in range(2):  # each old row's value contributed to the row it is said to have gone to
        for j in range(11):
            r = rows[b, j]
            if new_size[b, r] == size[b, j]:
                assert torch.allclose(out[b, r], x[b, j], atol=1e-6)


def test_r_zero_equals_dense(backbone):
    x = image_for(backbone)
    dense = encode(backbone, x)
    tome.apply(backbone, tome.ToMeConfig(r=0))
    assert torch.equal(encode(backbone, x), dense)
    tome.remove(backbone)


def test_merging_sizes_bias_and_source(backbone):
    vis = getattr(backbone, "visual", backbone)
    x = image_for(backbone)
    dense = encode(backbone, x)
    n = vis.grid_size[0] * vis.grid_size[1]
    p = vis.num_prefix_tokens
    touched = tome.apply(backbone, tome.ToMeConfig(r=[3, 2] + [0] * (vis.depth - 2)))
    assert touched == [f"blocks.{i}" for i in range(vis.depth)]
    out, st = encode_with_state(backbone, x)
    assert out.shape[1] == p + n - 5
    assert torch.equal(st.size.sum(1).squeeze(-1), torch.full((2,), float(p + n)))
    assert torch.allclose(st.attn_bias.squeeze(), st.size.squeeze(-1).log())
    src = st.extras["tome_source"]  # (B, N0): row of each original token
    assert src.shape == (2, p + n)
    counts = torch.stack([torch.bincount(s, minlength=out.shape[1]) for s in src])
    assert torch.equal(counts.float(), st.size.squeeze(-1))
    for b in range(2):  # a row's representative index is one of its sources
        for row, orig in enumerate(st.index[b].tolist()):
            assert src[b, orig] == row
    # the hook consumes the keys: none outlives its block (a stored k keeps the block's whole qkv output alive)
    assert all("keys" not in blk.attn.last for blk in vis.blocks)
    tome.remove(backbone)
    assert torch.equal(encode(backbone, x), dense)


def test_schedules():
    assert tome.schedule(tome.ToMeConfig(r=4), 3) == [4, 4, 4]
    assert tome.schedule(tome.ToMeConfig(r=4, schedule="decreasing"), 3) == [8, 4, 0]
    assert tome.schedule(tome.ToMeConfig(r=[1, 2, 3]), 3) == [1, 2, 3]
    assert tome.check_schedule([8, 4], 20) == [12, 8]


def test_errors():
    m = make("vit")  # 64 patch tokens, depth 3
    with pytest.raises(ValueError, match=r"r=40 at block 0.*\[0, 32\]"):
        tome.apply(m, tome.ToMeConfig(r=40))
    with pytest.raises(ValueError, match=r"r=25 at block 1.*\[0, 19\]"):  # 64 → 39 left
        tome.apply(m, tome.ToMeConfig(r=25))
    with pytest.raises(ValueError, match="3 entries"):
        tome.apply(m, tome.ToMeConfig(r=[1, 2]))
    with pytest.raises(ValueError, match="non-negative"):
        tome.ToMeConfig(r=-1)
    with pytest.raises(ValueError, match="schedule"):
        tome.ToMeConfig(schedule="cosine")
    tome.apply(m, tome.ToMeConfig(r=10))  # fits 32×32 (64 → 54 → 44 → 34) but not a 16×16 input
    with pytest.raises(ValueError, match=r"r=10 at block 0.*\[0, 8\]"):
        m(torch.randn(1, 3, 16, 16))
