"""VisionTransformer, Attention and their read-out / hook / config contracts, on tiny models (CPU, seconds)."""

from __future__ import annotations

import json
import re

import pytest
import torch
import torch.nn.functional as F

from vitkit.models import Attention, TokenState, VisionTransformer, ViTConfig
from vitkit.models.vit import DropPath, resample_pos_embed

P = 8
DIM = 32
HEADS = 4
DEPTH = 2
BASE = dict(img_size=32, patch_size=P, embed_dim=DIM, depth=DEPTH, num_heads=HEADS)

# family -> (config overrides, number of prefix tokens, output width)
FAMILIES = {
    "vit": (dict(num_classes=5), 1, 5),
    "deit": (dict(dist_token=True, dist_head=True, num_classes=5, family="deit"), 2, 5),
    "dinov2": (dict(layer_scale=True, layer_scale_init=0.1, num_reg_tokens=2, pos_antialias=True), 3, DIM),
    "clip": (dict(pre_norm=True, act="quick_gelu", proj_dim=16, patch_bias=False, norm_eps=1e-5), 1, 16),
    "avg": (dict(global_pool="avg", fc_norm=True, num_classes=5), 1, 5),
    "token_avg": (dict(global_pool="token_avg", num_classes=5), 1, 5),
}
SIZES = [(32, 32), (32, 48), (40, 24)]


def make(family: str = "vit", seed: int = 0, **kw) -> VisionTransformer:
    torch.manual_seed(seed)
    overrides, _, _ = FAMILIES[family]
    model = VisionTransformer(ViTConfig(**{**BASE, **overrides, **kw}))
    # perturb everything (LayerNorm is (1, 0), tokens ~0 at init) so that equalities mean something
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model.eval()


def images(b: int = 2, h: int = 32, w: int = 32, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, 3, h, w, generator=g)


def grid(h: int, w: int) -> tuple[int, int]:
    return h // P, w // P


# ---------------------------------------------------------------------------------------------- forward / backward


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("family", list(FAMILIES))
def test_forward_backward_shapes_and_grads(family: str, size: tuple[int, int]) -> None:
    _, n_prefix, out_dim = FAMILIES[family]
    model = make(family).train()
    x = images(2, *size).requires_grad_(True)
    gh, gw = grid(*size)

    assert model.num_prefix_tokens == n_prefix
    assert model.patch_grid(*size) == (gh, gw)
    feats, state = model.forward_features(x, return_state=True)
    assert feats.shape == (2, n_prefix + gh * gw, DIM)
    assert state.grid == (gh, gw)
    out = model.forward_head(feats)
    assert out.shape == (2, out_dim)
    assert torch.isfinite(out).all()
    with torch.no_grad():
        assert torch.allclose(model(x), out, atol=1e-6)

    (out * torch.randn_like(out)).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    for name, p in model.named_parameters():
        assert p.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{name} has a non-finite gradient"
        assert p.grad.abs().sum() > 0, f"{name} has an all-zero gradient"


def test_deit_head_averages_cls_and_dist_heads() -> None:
    model = make("deit")
    x = images()
    with torch.no_grad():
        feats = model.forward_features(x)
        expected = (model.head(feats[:, 0]) + model.head_dist(feats[:, 1])) / 2
        assert torch.allclose(model(x), expected, atol=1e-6)
        assert model.forward_head(feats, pre_logits=True).shape == (2, DIM)


def test_pooling_modes_match_manual() -> None:
    x = images(2, 32, 48)
    with torch.no_grad():
        m = make("avg")
        f = m.forward_features(x)
        assert torch.allclose(m.forward_head(f, pre_logits=True), m.fc_norm(f[:, 1:].mean(1)), atol=1e-6)
        m = make("token_avg")
        f = m.forward_features(x)
        pooled = m.forward_head(f, pre_logits=True)
        assert pooled.shape == (2, 2 * DIM)
        assert torch.allclose(pooled, torch.cat([f[:, 0], f[:, 1:].mean(1)], -1), atol=1e-6)
        m = make("dinov2", global_pool="avg")  # average over patches only: not CLS, not registers
        f = m.forward_features(x)
        assert torch.allclose(m(x), f[:, 3:].mean(1), atol=1e-6)
        m = make("dinov2")  # token pool with registers: CLS only
        f = m.forward_features(x)
        assert torch.equal(m(x), f[:, 0])
        m = make("clip")
        f = m.forward_features(x)
        assert torch.allclose(m(x), m.proj(f[:, 0]), atol=1e-6)


def test_activations_and_layer_scale() -> None:
    t = torch.linspace(-4, 4, 101)
    clip = make("clip")
    assert torch.allclose(clip.blocks[0].mlp.act(t), t * torch.sigmoid(1.702 * t), atol=1e-6)
    assert torch.allclose(make("vit").blocks[0].mlp.act(t), F.gelu(t), atol=1e-6)
    tanh = make("vit", act="gelu_tanh").blocks[0].mlp.act(t)
    assert torch.allclose(tanh, F.gelu(t, approximate="tanh"), atol=1e-6)
    assert not torch.allclose(tanh, F.gelu(t), atol=1e-5)

    torch.manual_seed(0)
    dino = VisionTransformer(ViTConfig(**{**BASE, **FAMILIES["dinov2"][0]}))
    params = dict(dino.named_parameters())
    for i in range(DEPTH):
        for ls in ("ls1", "ls2"):
            assert torch.equal(params[f"blocks.{i}.{ls}.gamma"], torch.full((DIM,), 0.1))
    assert "blocks.0.ls1.gamma" not in dict(make("vit").named_parameters())
    blk = dino.blocks[0]
    h = torch.randn(2, 5, DIM)
    with torch.no_grad():
        ref = blk(h)
        manual = h + 0.1 * blk.attn(blk.norm1(h))
        manual = manual + 0.1 * blk.mlp(blk.norm2(manual))
        assert torch.allclose(ref, manual, atol=1e-6)
        blk.ls2.gamma.zero_()
        after_attn = h + 0.1 * blk.attn(blk.norm1(h))
        assert torch.allclose(blk(h), after_attn, atol=1e-6)


# ---------------------------------------------------------------------------------------------- position embedding


def test_resample_is_identity_at_native_grid() -> None:
    pos = torch.randn(1, 16, DIM)
    for antialias in (False, True):
        assert torch.equal(resample_pos_embed(pos, (4, 4), (4, 4), antialias), pos)


@pytest.mark.parametrize("family", ["vit", "deit", "dinov2"])
def test_embed_at_native_size_uses_pos_embed_unchanged(family: str) -> None:
    model = make(family)
    x = images()
    with torch.no_grad():
        tokens, state = model.embed(x)
        patches = model.patch_embed.proj(x).flatten(2).transpose(1, 2)
        pos = model.pos_embed
        npp = model.num_pos_prefix
        assert torch.equal(tokens[:, model.num_prefix_tokens :], patches + pos[:, npp:])
        assert torch.equal(tokens[:, 0], (model.cls_token + pos[:, :1]).expand(2, -1, -1)[:, 0])
        if family == "deit":
            assert torch.equal(tokens[:, 1], (model.dist_token + pos[:, 1:2]).expand(2, -1, -1)[:, 0])
        if family == "dinov2":  # registers get no position embedding
            assert torch.equal(tokens[:, 1:3], model.reg_token.expand(2, -1, -1))
    assert state.grid == (4, 4) and state.num_prefix == model.num_prefix_tokens


@pytest.mark.parametrize("size", [(40, 24), (16, 24), (56, 16), (8, 8)], ids=str)
@pytest.mark.parametrize("family", ["vit", "dinov2"])
def test_embed_at_other_size_resamples(family: str, size: tuple[int, int]) -> None:
    model = make(family)
    gh, gw = grid(*size)
    assert model.patch_grid(*size) == (gh, gw)
    x = images(2, *size)
    with torch.no_grad():
        tokens, state = model.embed(x)
        assert tokens.shape == (2, model.num_prefix_tokens + gh * gw, DIM)
        assert state.grid == (gh, gw)
        patches = model.patch_embed.proj(x).flatten(2).transpose(1, 2)
        old = model.pos_embed[:, model.num_pos_prefix :].reshape(1, 4, 4, DIM).permute(0, 3, 1, 2)
        antialias = family == "dinov2"
        manual = F.interpolate(old, size=(gh, gw), mode="bicubic", align_corners=False, antialias=antialias)
        manual = manual.permute(0, 2, 3, 1).reshape(1, gh * gw, DIM)
        assert torch.allclose(tokens[:, model.num_prefix_tokens :], patches + manual, atol=1e-6)
        assert torch.isfinite(model(x)).all()


def test_pos_antialias_matters_when_downsampling() -> None:
    pos = torch.randn(1, 16, DIM)
    a = resample_pos_embed(pos, (4, 4), (2, 3), antialias=True)
    b = resample_pos_embed(pos, (4, 4), (2, 3), antialias=False)
    assert a.shape == b.shape == (1, 6, DIM)
    assert not torch.allclose(a, b, atol=1e-4)


@pytest.mark.parametrize("new", [(5, 3), (2, 7), (1, 1), (9, 9)], ids=str)
@pytest.mark.parametrize("antialias", [False, True])
def test_resample_of_constant_stays_constant(new: tuple[int, int], antialias: bool) -> None:
    pos = torch.full((1, 16, DIM), 0.7)
    out = resample_pos_embed(pos, (4, 4), new, antialias)
    assert out.shape == (1, new[0] * new[1], DIM)
    assert torch.allclose(out, torch.full_like(out, 0.7), atol=1e-5)


def test_resample_preserves_layout_row_major() -> None:
    # a pos embedding that varies only along rows must still vary only along rows after resampling
    rows = torch.arange(4.0).view(4, 1, 1).expand(4, 4, DIM).reshape(1, 16, DIM)
    out = resample_pos_embed(rows, (4, 4), (6, 3)).reshape(6, 3, DIM)
    assert torch.allclose(out, out[:, :1].expand(6, 3, DIM), atol=1e-5)
    assert (out[1:, 0, 0] > out[:-1, 0, 0]).all()


# ---------------------------------------------------------------------------------------------- attention read-out


def _restored(model: VisionTransformer) -> bool:
    return all(b.attn.readout is None and b.attn.keep_grad is False for b in model.blocks)


@pytest.mark.parametrize("family", ["vit", "dinov2"])
def test_readout_does_not_change_outputs_and_maps_are_consistent(family: str) -> None:
    model = make(family)
    x = images(2, 32, 48)
    n = model.num_prefix_tokens + 4 * 6
    with torch.no_grad():
        ref = model(x)
        with model.attention_readout(kind="cls") as cls_maps:
            out_cls = model(x)
        assert _restored(model)
        with model.attention_readout(kind="full") as full_maps:
            out_full = model(x)
        assert _restored(model)
        # read after the `with`, and after a later forward outside it: the maps are kept
        model(images(2, 32, 48, seed=7))
    assert torch.equal(out_cls, ref)
    assert torch.allclose(out_full, ref, atol=1e-5)
    assert sorted(cls_maps) == sorted(full_maps) == list(range(DEPTH))
    assert len(cls_maps) == DEPTH
    for i in range(DEPTH):
        c, f = cls_maps[i], full_maps[i]
        assert c.shape == (2, HEADS, n)
        assert f.shape == (2, HEADS, n, n)
        assert torch.allclose(c, f[:, :, 0], atol=1e-5)
        assert torch.allclose(c.sum(-1), torch.ones(2, HEADS), atol=1e-5)
        assert torch.allclose(f.sum(-1), torch.ones(2, HEADS, n), atol=1e-5)
        assert (c >= 0).all() and (f >= 0).all()


def test_readout_selected_layers_and_previous_settings_restored() -> None:
    model = make("vit")
    model.blocks[0].attn.set_readout("full")
    with torch.no_grad(), model.attention_readout(layers=-1, kind="cls") as maps:
        with pytest.raises(KeyError, match="forward"):
            maps[1]
        model(images())
        assert list(maps) == [1]
        assert model.blocks[1].attn.readout == "cls"
    assert model.blocks[0].attn.readout == "full"
    assert model.blocks[1].attn.readout is None
    assert maps[1].shape == (2, HEADS, 17)
    with pytest.raises(KeyError):
        maps[0]


def test_readout_restored_after_exception() -> None:
    model = make("vit")
    with pytest.raises(RuntimeError, match="boom"), model.attention_readout(kind="full", keep_grad=True):
        raise RuntimeError("boom")
    assert _restored(model)


@pytest.mark.parametrize("layers", [[DEPTH], [-DEPTH - 1], DEPTH, [0, 5]], ids=str)
def test_readout_layer_out_of_range(layers) -> None:
    model = make("vit")
    with pytest.raises(ValueError) as err, model.attention_readout(layers=layers):
        pass
    msg = str(err.value)
    assert "layers" in msg
    assert f"[-{DEPTH}, {DEPTH - 1}]" in msg
    assert _restored(model)


def test_readout_bad_kind() -> None:
    model = make("vit")
    with pytest.raises(ValueError, match="kind"), model.attention_readout(kind="rows"):
        pass
    assert _restored(model)


@pytest.mark.parametrize("kind", ["cls", "full"])
def test_readout_keep_grad_flows_to_image(kind: str) -> None:
    model = make("vit")
    x = images().requires_grad_(True)
    with model.attention_readout(layers=[0], kind=kind) as maps:
        model(x)
    assert not maps[0].requires_grad
    with model.attention_readout(layers=[0], kind=kind, keep_grad=True) as maps:
        model(x)
    assert _restored(model)
    m = maps[0] if kind == "cls" else maps[0][:, :, 0]
    assert m.requires_grad
    m[..., 1].sum().backward()  # attention of CLS to the first patch (a row sum would be constant)
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_readout_includes_attention_bias() -> None:
    model = make("vit")
    x = images()
    n = 17
    bias = torch.randn(1, 1, n, n, generator=torch.Generator().manual_seed(3)) * 3

    def set_bias(t: torch.Tensor, state: TokenState) -> torch.Tensor:
        state.attn_bias = bias
        return t

    seen = {}
    model.blocks[0].pre_hook = lambda t, s: seen.setdefault("x", t) if "x" not in seen else t
    model.embed_hook = set_bias
    with torch.no_grad():
        with model.attention_readout(layers=[0], kind="cls") as cls_maps:
            model(x)
        with model.attention_readout(layers=[0], kind="full") as full_maps:
            model(x)
        blk = model.blocks[0]
        qkv = blk.attn.qkv(blk.norm1(seen["x"])).reshape(2, n, 3, HEADS, DIM // HEADS).permute(2, 0, 3, 1, 4)
        q, k = qkv[0], qkv[1]
        logits = (q[:, :, :1] @ k.transpose(-2, -1)).squeeze(-2) * (DIM // HEADS) ** -0.5
        manual = (logits + bias[:, :, 0]).softmax(-1)
        unbiased = logits.softmax(-1)
    assert torch.allclose(cls_maps[0], manual, atol=1e-5)
    assert torch.allclose(full_maps[0][:, :, 0], manual, atol=1e-5)
    assert not torch.allclose(cls_maps[0], unbiased, atol=1e-3)


# ---------------------------------------------------------------------------------------------- Attention alone


def _attn(seed: int = 0) -> Attention:
    torch.manual_seed(seed)
    a = Attention(DIM, HEADS)
    with torch.no_grad():
        a.qkv.bias.normal_(0, 0.1)
    return a.eval()


def test_attention_full_path_equals_sdpa() -> None:
    a = _attn()
    x = torch.randn(2, 7, DIM)
    bias = torch.randn(2, HEADS, 7, 7)
    with torch.no_grad():
        ref, ref_b = a(x), a(x, attn_bias=bias)
        a.set_readout("full")
        out, out_b = a(x), a(x, attn_bias=bias)
    assert a.last["attn"].shape == (2, HEADS, 7, 7)
    assert torch.allclose(out, ref, atol=1e-5)
    assert torch.allclose(out_b, ref_b, atol=1e-5)
    assert not torch.allclose(ref, ref_b, atol=1e-3)


def test_attention_bad_readout_and_dims() -> None:
    with pytest.raises(ValueError, match="readout"):
        _attn().set_readout("rows")
    with pytest.raises(ValueError, match="divisible"):
        Attention(30, 4)


@pytest.mark.parametrize("readout", [None, "full", "cls"])
def test_attention_bias_minus_inf_removes_key(readout: str | None) -> None:
    a = _attn()
    a.set_readout(readout)
    n, j = 6, 3
    x = torch.randn(2, n, DIM)
    x2 = x.clone()
    x2[:, j] += torch.randn(2, DIM)  # changes key and value of token j (and its own query)
    bias = torch.zeros(1, 1, 1, n)
    bias[..., j] = float("-inf")
    others = [i for i in range(n) if i != j]
    with torch.no_grad():
        out, out2 = a(x, attn_bias=bias), a(x2, attn_bias=bias)
        free, free2 = a(x), a(x2)
    assert torch.allclose(out[:, others], out2[:, others], atol=1e-6)
    assert not torch.allclose(free[:, others], free2[:, others], atol=1e-4)  # without the mask j matters
    if readout == "full":
        a(x, attn_bias=bias)
        assert (a.last["attn"][..., j] == 0).all()
    if readout == "cls":
        a(x, attn_bias=bias)
        assert (a.last["cls_attn"][..., j] == 0).all()


@pytest.mark.parametrize("readout", [None, "full"])
def test_attention_is_causal(readout: str | None) -> None:
    a = _attn()
    n = 6
    x = torch.randn(2, n, DIM)
    x2 = x.clone()
    x2[:, -1] += torch.randn(2, DIM)
    with torch.no_grad():
        ref = a(x, is_causal=True)
        a.set_readout(readout)
        out, out2 = a(x, is_causal=True), a(x2, is_causal=True)
        free = a(x)
        masked = a(x, attn_bias=torch.full((n, n), float("-inf")).triu(1))
        both = a(x, attn_bias=torch.zeros(n, n), is_causal=True)
    assert torch.allclose(out, ref, atol=1e-5)  # same in both paths
    assert torch.allclose(out, masked, atol=1e-5)
    assert torch.allclose(out, both, atol=1e-5)
    assert torch.allclose(out[:, :-1], out2[:, :-1], atol=1e-6)  # the future does not leak back
    assert not torch.allclose(out[:, -1], out2[:, -1], atol=1e-4)
    assert not torch.allclose(out, free, atol=1e-4)
    if readout == "full":
        a(x, is_causal=True)
        m = a.last["attn"]
        assert torch.equal(m.triu(1), torch.zeros_like(m))
        assert torch.allclose(m.sum(-1), torch.ones(2, HEADS, n), atol=1e-5)


def test_attention_cls_readout_respects_is_causal() -> None:
    """The CLS row read out under ``is_causal`` must be the row the output used: one-hot on itself."""
    a = _attn()
    x = torch.randn(2, 5, DIM)
    with torch.no_grad():
        a.set_readout("full")
        a(x, is_causal=True)
        full_row = a.last["attn"][:, :, 0]
        a.set_readout("cls")
        a(x, is_causal=True)
    assert torch.allclose(a.last["cls_attn"], full_row, atol=1e-5)


def test_attention_keeps_keys() -> None:
    a = _attn()
    a.keep = {"keys"}
    x = torch.randn(2, 5, DIM)
    with torch.no_grad():
        a(x)
        k = a.qkv(x).reshape(2, 5, 3, HEADS, DIM // HEADS)[:, :, 1].transpose(1, 2)
    assert torch.allclose(a.last["keys"], k, atol=1e-6)


# ---------------------------------------------------------------------------------------------- forward_intermediates


def _count_blocks(model: VisionTransformer) -> list[int]:
    calls = [0] * model.depth
    for i, blk in enumerate(model.blocks):

        def hook(t, s, i=i):
            calls[i] += 1
            return t

        blk.pre_hook = hook
    return calls


def test_forward_intermediates_indices() -> None:
    model = make("deit", depth=3)
    x = images(2, 32, 48)
    n = 2 + 4 * 6
    with torch.no_grad():
        ref = model.forward_features(x)
        final, all_out = model.forward_intermediates(x)
        assert len(all_out) == 3 and all(o.shape == (2, n, DIM) for o in all_out)
        assert torch.equal(final, ref)
        _, last2 = model.forward_intermediates(x, 2)
        assert len(last2) == 2
        assert torch.equal(last2[0], all_out[1]) and torch.equal(last2[1], all_out[2])
        _, neg = model.forward_intermediates(x, [-1, -3])
        assert len(neg) == 2
        assert torch.equal(neg[0], all_out[0]) and torch.equal(neg[1], all_out[2])  # block order
        _, one = model.forward_intermediates(x, [1])
        assert torch.equal(one[0], all_out[1])
        # the intermediates really are the block outputs
        h, _ = model.embed(x)
        for i, blk in enumerate(model.blocks):
            h = blk(h, TokenState(grid=(4, 6), num_prefix=2))
            assert torch.allclose(all_out[i], h, atol=1e-6)
        assert not torch.allclose(all_out[0], all_out[1], atol=1e-3)


def test_forward_intermediates_formats_and_norm() -> None:
    model = make("dinov2", depth=3)
    x = images(2, 40, 24)
    gh, gw = 5, 3
    with torch.no_grad():
        ref = model.forward_features(x)
        _, raw = model.forward_intermediates(x)
        final, normed = model.forward_intermediates(x, norm=True)
        for r, o in zip(raw, normed, strict=True):
            assert torch.allclose(o, model.norm(r), atol=1e-6)
            assert not torch.allclose(o, r, atol=1e-3)
        assert torch.allclose(normed[-1], ref, atol=1e-6)
        assert torch.allclose(final, ref, atol=1e-6)

        _, grids = model.forward_intermediates(x, [0, -1], output_fmt="NCHW")
        assert [g.shape for g in grids] == [(2, DIM, gh, gw)] * 2
        tokens = raw[0][:, 3:]  # three prefix tokens
        for r in range(gh):
            for c in range(gw):
                assert torch.equal(grids[0][:, :, r, c], tokens[:, r * gw + c])
        _, patches = model.forward_intermediates(x, [0], prefix_tokens=False)
        assert patches[0].shape == (2, gh * gw, DIM)
        assert torch.equal(patches[0], tokens)
        _, normed_grid = model.forward_intermediates(x, [-1], output_fmt="NCHW", norm=True)
        assert torch.allclose(normed_grid[0], ref[:, 3:].transpose(1, 2).reshape(2, DIM, gh, gw), atol=1e-6)


def test_forward_intermediates_stop_early() -> None:
    model = make("vit", depth=3)
    calls = _count_blocks(model)
    x = images()
    with torch.no_grad():
        final, out = model.forward_intermediates(x, [0], stop_early=True)
        assert final is None and len(out) == 1
        assert calls == [1, 0, 0]
        final, out = model.forward_intermediates(x, [0])
        assert final is not None and calls == [2, 1, 1]
        final, out2 = model.forward_intermediates(x, [-2], stop_early=True)
        assert final is None and calls == [3, 2, 1]
        final, _ = model.forward_intermediates(x, [-1], stop_early=True)  # last block: nothing to skip
        assert final is not None and calls == [4, 3, 2]


@pytest.mark.parametrize("indices", [0, 4, [3], [-4]], ids=str)
def test_forward_intermediates_bad_indices(indices) -> None:
    model = make("vit", depth=3)
    with pytest.raises(ValueError, match="indices"):
        model.forward_intermediates(images(), indices)


def test_forward_intermediates_bad_format() -> None:
    with pytest.raises(ValueError, match="output_fmt"):
        make("vit").forward_intermediates(images(), output_fmt="NHWC")


# ---------------------------------------------------------------------------------------------- hooks


def _drop_half(t: torch.Tensor, state: TokenState) -> torch.Tensor:
    p = state.num_prefix
    n_patch = t.shape[1] - p
    keep = torch.cat([torch.arange(p), p + torch.arange(0, n_patch, 2)])
    state.index = keep.unsqueeze(0).expand(t.shape[0], -1)
    return t[:, keep]


@pytest.mark.parametrize("family", ["vit", "avg", "dinov2"])
def test_token_hook_drops_tokens(family: str) -> None:
    model = make(family)
    x = images(2, 32, 48)
    pre = model.num_prefix_tokens
    n_full = pre + 24
    n_half = pre + 12
    with torch.no_grad():
        ref = model(x)
        ref_feats = model.forward_features(x)
        seen: list[int] = []
        model.blocks[1].pre_hook = lambda t, s: (seen.append(t.shape[1]), t)[1]
        model.blocks[0].token_hook = _drop_half
        with model.attention_readout(kind="full") as maps:
            out = model(x)
        feats, state = model.forward_features(x, return_state=True)
        assert seen == [n_half, n_half]
        assert maps[0].shape[-1] == n_full and maps[1].shape[-1] == n_half
        assert feats.shape == (2, n_half, DIM)
        assert out.shape == ref.shape and torch.isfinite(out).all()
        assert not torch.allclose(out, ref, atol=1e-5)
        assert state.index.shape == (2, n_half)
        assert state.grid == (4, 6)
        with pytest.raises(ValueError, match="reduced"):
            model.forward_intermediates(x, output_fmt="NCHW")
        model.blocks[0].token_hook = None
        model.blocks[1].pre_hook = None
        assert torch.equal(model(x), ref)
        feats, state = model.forward_features(x, return_state=True)
        assert torch.equal(feats, ref_feats)
        assert state.index is None


def test_embed_hook_adds_prompt_tokens() -> None:
    model = make("vit")
    x = images(2, 32, 48)
    prompts = torch.randn(1, 3, DIM)
    n = 1 + 24
    seen: list[int] = []

    def add_prompts(t: torch.Tensor, state: TokenState) -> torch.Tensor:
        assert isinstance(state, TokenState) and state.grid == (4, 6)
        p = state.num_prefix
        return torch.cat([t[:, :p], prompts.expand(t.shape[0], -1, -1), t[:, p:]], dim=1)

    with torch.no_grad():
        ref = model(x)
        model.embed_hook = add_prompts
        for blk in model.blocks:
            blk.pre_hook = lambda t, s: (seen.append(t.shape[1]), t)[1]
        feats = model.forward_features(x)
        out = model(x)
        assert feats.shape == (2, n + 3, DIM)
        assert seen == [n + 3] * (2 * DEPTH)
        assert out.shape == ref.shape and not torch.allclose(out, ref, atol=1e-5)
        model.embed_hook = None
        for blk in model.blocks:
            blk.pre_hook = None
        assert torch.equal(model(x), ref)


def test_pre_hook_called_once_per_block_and_can_edit() -> None:
    model = make("vit", depth=3)
    calls = _count_blocks(model)
    x = images()
    with torch.no_grad():
        model(x)
        assert calls == [1, 1, 1]
        model(x)
        assert calls == [2, 2, 2]
        ref = model(x)
        model.blocks[2].pre_hook = lambda t, s: t * 2
        assert not torch.allclose(model(x), ref, atol=1e-5)


def test_returned_state() -> None:
    """The forward returns its TokenState (nothing is kept on the model); model(x) stays logits alone."""
    model = make("deit")
    x = images(1, 40, 24)
    with torch.no_grad():
        feats, st = model.forward_features(x, return_state=True)
        logits = model(x)
        final, inter, st2 = model.forward_intermediates(x, [0], return_state=True)
    assert not hasattr(model, "last_state")
    assert isinstance(st, TokenState)
    assert st.grid == (5, 3) and st.num_prefix == 2
    assert st.index is None and st.size is None and st.attn_bias is None
    assert torch.equal(logits, model.forward_head(feats)) and torch.equal(final, feats)
    assert st2.grid == st.grid and st2.num_prefix == st.num_prefix and len(inter) == 1


# ---------------------------------------------------------------------------------------------- config


def test_config_round_trip() -> None:
    cfg = ViTConfig(**BASE, **FAMILIES["dinov2"][0], labels=["a", "b"], drop_path_rate=0.1)
    d = cfg.to_dict()
    assert d["img_size"] == [32, 32]
    assert ViTConfig.from_dict(d) == cfg
    back = ViTConfig.from_dict(json.loads(json.dumps(d)))
    assert back == cfg and back.img_size == (32, 32)
    assert ViTConfig(img_size=(32, 48)).img_size == (32, 48)
    assert ViTConfig(embed_dim=40, num_heads=4).mlp_hidden_dim == 160


def test_config_unknown_key() -> None:
    with pytest.raises(ValueError, match="bogus_key"):
        ViTConfig.from_dict({**ViTConfig(**BASE).to_dict(), "bogus_key": 1})


@pytest.mark.parametrize(
    ("kw", "word"),
    [
        (dict(global_pool="max"), "global_pool"),
        (dict(act="relu"), "act"),
        (dict(embed_dim=30, num_heads=4), "divisible"),
        (dict(class_token=False), "class_token"),
    ],
    ids=["pool", "act", "heads", "no_cls"],
)
def test_config_invalid(kw: dict, word: str) -> None:
    with pytest.raises(ValueError, match=word):
        ViTConfig(**{**BASE, **kw})


def test_model_kwargs_override_config() -> None:
    model = VisionTransformer(ViTConfig(**BASE), depth=3, num_classes=7)
    assert model.depth == 3 and model.cfg.num_classes == 7
    assert model(images(1)).shape == (1, 7)
    no_cls = VisionTransformer(**{**BASE, "class_token": False, "global_pool": "avg"})
    assert no_cls.num_prefix_tokens == 0
    assert no_cls.forward_features(images(1)).shape == (1, 16, DIM)


@pytest.mark.parametrize("size", [(4, 40), (40, 7)], ids=str)
def test_input_smaller_than_patch(size: tuple[int, int]) -> None:
    model = make("vit")
    with pytest.raises(ValueError) as err:
        model(images(1, *size))
    msg = str(err.value)
    assert re.search(rf"{size[0]}\s*[×x]\s*{size[1]}", msg), msg
    assert str(P) in msg


# ---------------------------------------------------------------------------------------------- DropPath


def test_drop_path_identity_in_eval_and_at_zero() -> None:
    x = torch.randn(64, 5, 8)
    dp = DropPath(0.5).eval()
    assert torch.equal(dp(x), x)
    dp0 = DropPath(0.0).train()
    assert torch.equal(dp0(x), x)


def test_drop_path_in_train_drops_whole_samples() -> None:
    torch.manual_seed(0)
    x = torch.ones(256, 5, 8)
    y = DropPath(0.5).train()(x)
    per_sample = y.flatten(1)
    zero = (per_sample == 0).all(1)
    kept = (per_sample == 2.0).all(1)  # survivors are rescaled by 1 / (1 - p)
    assert (zero | kept).all()
    assert 0 < zero.sum() < 256
    assert 0.3 < zero.float().mean() < 0.7


def test_model_drop_path_schedule_and_eval_determinism() -> None:
    model = make("vit", depth=3, drop_path_rate=0.4)
    assert [b.drop_path1.p for b in model.blocks] == pytest.approx([0.0, 0.2, 0.4])
    x = images()
    with torch.no_grad():
        ref = model(x)
        plain = make("vit", depth=3)  # same seed, same weights, no drop path
        assert torch.equal(plain(x), ref)
        model.train()
        torch.manual_seed(0)
        outs = [model(x) for _ in range(4)]
    assert any(not torch.allclose(o, ref, atol=1e-6) for o in outs)
