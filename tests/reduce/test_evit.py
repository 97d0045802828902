from __future__ import annotations

import pytest
import torch
from reduce_models import encode, encode_with_state, image_for, make

from vitkit.models.vit import VisionTransformer
from vitkit.reduce import evit

pytestmark = pytest.mark.usefixtures("one_thread")


def naive_select(x, scores, keep, p, fuse):
    out = []
    for b in range(x.shape[0]):
        s = scores[b, p:].tolist()
        order = sorted(range(len(s)), key=lambda j: -s[j])[:keep]
        kept = sorted(order)
        rows = [x[b, j] for j in range(p)] + [x[b, p + j] for j in kept]
        if fuse:
            dropped = [j for j in range(len(s)) if j not in kept]
            w = torch.tensor([s[j] for j in dropped])
            w = w / w.sum()
            rows.append(sum(w[k] * x[b, p + j] for k, j in enumerate(dropped)))
        out.append(torch.stack(rows))
    return torch.stack(out)


@pytest.mark.parametrize("fuse", [True, False])
def test_select_matches_naive(fuse):
    x = torch.randn(3, 2 + 10, 6)
    scores = torch.rand(3, 12)
    out, rows, _ = evit.evit_select(x, scores, 4, 2, fuse)
    assert out.shape == (3, 2 + 4 + int(fuse), 6)
    assert torch.allclose(out, naive_select(x, scores, 4, 2, fuse), atol=1e-6)
    assert (rows[:, :2] == torch.arange(2)).all()
    assert (rows.diff(dim=1) > 0).all()  # original order


def test_keep_one_equals_dense(backbone):
    x = image_for(backbone)
    dense = encode(backbone, x)
    touched = evit.apply(backbone, evit.EViTConfig(layers=(0, 1), keep_rate=1.0))
    assert touched == ["blocks.0", "blocks.1"]
    assert torch.equal(encode(backbone, x), dense)
    evit.remove(backbone)


def test_drops_by_cls_attention_and_removes(backbone):
    vis = getattr(backbone, "visual", backbone)
    x = image_for(backbone)
    dense = encode(backbone, x)
    with vis.attention_readout([0], "full") as maps:  # reference: the full map of the dense model
        vis.forward_features(x)
    ref = maps[0][:, :, 0].sum(1)  # (B, N): CLS row summed over heads
    p, n = vis.num_prefix_tokens, vis.grid_size[0] * vis.grid_size[1]
    evit.apply(backbone, evit.EViTConfig(layers=(0,), keep_rate=0.5, fuse=True))
    out, state = encode_with_state(backbone, x)
    keep = evit.kept_count(n, 0.5)
    assert out.shape[1] == p + keep + 1
    idx = state.index
    want = ref[:, p:].topk(keep, dim=1).indices.sort(dim=1).values + p
    assert torch.equal(idx[:, p:-1], want)
    assert (idx[:, -1] == evit.FUSED).all()
    evit.remove(backbone)
    assert all(b.token_hook is None and b.attn.readout is None for b in vis.blocks)
    assert torch.equal(encode(backbone, x), dense)


def test_two_layers_compound():
    m = make("vit")
    evit.apply(m, evit.EViTConfig(layers=(0, 2), keep_rate=0.5, fuse=False))
    out = m.forward_features(torch.randn(2, 3, 32, 32))
    assert out.shape[1] == 1 + 16  # 64 patches → 32 after block 0 → 16 after block 2


def test_errors():
    m = make("vit")
    for rate in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError, match=r"keep_rate.*\(0, 1\]"):
            evit.EViTConfig(keep_rate=rate)
    with pytest.raises(ValueError, match=r"layers contains 3.*\[-3, 2\]"):
        evit.apply(m, evit.EViTConfig(layers=(3,)))
    evit.apply(m, evit.EViTConfig())
    with pytest.raises(ValueError, match="already applied"):
        evit.apply(m, evit.EViTConfig())
    evit.remove(m)
    with pytest.raises(ValueError, match="not applied"):
        evit.remove(m)
    no_cls = VisionTransformer(img_size=16, patch_size=4, embed_dim=16, depth=2, num_heads=2, class_token=False,
                               global_pool="avg")
    with pytest.raises(ValueError, match="class token"):
        evit.apply(no_cls, evit.EViTConfig())


def test_gather_state_carries_index_size_and_bias():
    from vitkit.models.vit import TokenState
    from vitkit.reduce.wiring import gather_state

    rows = torch.tensor([[0, 2, 3], [0, 1, 3]])
    full = torch.randn(2, 1, 4, 4)
    st = TokenState(grid=(1, 3), num_prefix=1, size=torch.rand(2, 4, 1), attn_bias=full)
    size = st.size.clone()
    gather_state(st, rows, 4)
    assert torch.equal(st.index, rows)
    for b in range(2):
        assert torch.equal(st.size[b], size[b, rows[b]])
        assert torch.equal(st.attn_bias[b, 0], full[b, 0][rows[b]][:, rows[b]])
    keys_only = torch.randn(2, 1, 1, 4)
    st = TokenState(grid=(1, 3), num_prefix=1, attn_bias=keys_only)
    gather_state(st, rows, 4)
    assert st.attn_bias.shape == (2, 1, 1, 3)
    assert torch.equal(st.attn_bias[1, 0, 0], keys_only[1, 0, 0, rows[1]])
