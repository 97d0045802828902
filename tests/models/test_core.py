"""The small core methods share: module surgery, the base_layer wrapper, the injectable Block,
reset_classifier, and the TokenState a forward returns."""

from __future__ import annotations

from functools import partial

import pytest
import torch
from torch import nn

from vitkit.adapt import lora
from vitkit.models import Attention, VisionTransformer, ViTConfig
from vitkit.models.hybrid import HybridCNNTransformer, HybridConfig
from vitkit.models.surgery import replace_module
from vitkit.models.visiongru import VisionGRU, VisionGRUConfig
from vitkit.models.vit import Block, Mlp, vit_block
from vitkit.models.wrapper import LayerWrapper, base_of, innermost, unwrap
from vitkit.quant import ptq


def tiny(**kw) -> VisionTransformer:
    torch.manual_seed(0)
    return VisionTransformer(ViTConfig(**{**dict(img_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=4,
                                                 num_classes=3), **kw})).eval()


# ---------------------------------------------------------------------------------------------- surgery
def test_replace_module_returns_the_old_one_and_names_bad_paths():
    model = tiny()
    old = model.blocks[0].attn.proj
    new = nn.Linear(32, 32)
    assert replace_module(model, "blocks.0.attn.proj", new) is old
    assert model.blocks[0].attn.proj is new
    with pytest.raises(ValueError, match="blocks.9"):
        replace_module(model, "blocks.9.attn.proj", new)
    with pytest.raises(ValueError, match="no submodule 'blocks.0.attn.nope'"):
        replace_module(model, "blocks.0.attn.nope", new)
    with pytest.raises(ValueError, match="needs a submodule name"):
        replace_module(model, "", new)


# ---------------------------------------------------------------------------------------------- wrapper
class Doubler(LayerWrapper):
    def forward(self, x):
        return 2 * self.base_layer(x)


def test_wrapper_delegates_weight_and_bias_and_unwrap_restores_the_object():
    model = tiny()
    original = model.blocks[1].mlp.fc1
    w = Doubler(original)
    replace_module(model, "blocks.1.mlp.fc1", w)
    assert w.weight is original.weight and w.bias is original.bias
    assert (w.in_features, w.out_features) == (32, 128)
    outer = Doubler(w)  # wrappers stack: weight reads through every level
    assert outer.weight is original.weight and innermost(outer) is original and base_of(outer) is w
    assert base_of(original) is None
    assert unwrap(model, "blocks.1.mlp.fc1") is w
    assert model.blocks[1].mlp.fc1 is original
    with pytest.raises(ValueError, match="not a wrapper"):
        unwrap(model, "blocks.1.mlp.fc1")


def test_lora_and_quant_wrappers_share_the_base_and_remove_restores_the_objects():
    model = tiny()
    x = torch.rand(2, 3, 16, 16)
    originals = {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear) and ".blocks." in f".{n}"}
    ref = model(x)
    ptq.apply(model, ptq.QuantConfig(w_bits=16, a_bits=16, attn_bits=0))
    lora.apply(model, lora.LoraConfig(rank=2, targets=("qkv", "fc2")))
    qkv = model.blocks[0].attn.qkv
    assert isinstance(qkv, lora.LoraLinear) and isinstance(qkv, LayerWrapper)
    assert isinstance(qkv.base_layer, ptq.QuantLinear) and isinstance(qkv.base_layer, LayerWrapper)
    assert qkv.weight is originals["blocks.0.attn.qkv"].weight  # through both wrappers
    assert qkv.bias is originals["blocks.0.attn.qkv"].bias
    lora.remove(model)
    ptq.remove(model)
    assert all(model.get_submodule(n) is m for n, m in originals.items())
    assert torch.equal(model(x), ref)
    assert dict(model.applied) == {}


# ---------------------------------------------------------------------------------------------- Block
class CountingAttention(Attention):
    """An Attention that counts its calls (any class or factory with Attention's signature fits)."""

    calls = 0

    def forward(self, x, attn_bias=None, is_causal=False):
        CountingAttention.calls += 1
        return super().forward(x, attn_bias, is_causal)


class GatedMlp(nn.Module):
    def __init__(self, dim, hidden, *, act="gelu", drop=0.0):
        super().__init__()
        self.gate, self.up, self.down = nn.Linear(dim, hidden), nn.Linear(dim, hidden), nn.Linear(hidden, dim)

    def forward(self, x):
        return self.down(torch.sigmoid(self.gate(x)) * self.up(x))


def test_block_takes_injected_attention_mlp_and_norm():
    torch.manual_seed(0)
    blk = Block(32, 4, attn_layer=CountingAttention, mlp_layer=GatedMlp, mlp_hidden_dim=48,
                norm_layer=partial(nn.LayerNorm, eps=1e-5), init_values=0.5)
    assert isinstance(blk.attn, CountingAttention) and isinstance(blk.mlp, GatedMlp)
    assert blk.norm1.eps == 1e-5 and blk.mlp.up.out_features == 48
    assert torch.equal(blk.ls1.gamma, torch.full((32,), 0.5))
    x = torch.randn(2, 5, 32)
    before = CountingAttention.calls
    y = blk(x)
    assert CountingAttention.calls == before + 1 and y.shape == x.shape
    # the same computation by hand
    h = x + blk.ls1(blk.attn(blk.norm1(x)))
    torch.testing.assert_close(y, h + blk.ls2(blk.mlp(blk.norm2(h))))
    with pytest.raises(TypeError):
        Block(32, 4, None)  # everything after num_heads is keyword-only


def test_default_block_is_the_vit_block():
    """Block(dim, heads) with defaults equals what a default ViTConfig builds (same keys, same maths)."""
    torch.manual_seed(0)
    a = Block(32, 4)
    torch.manual_seed(0)
    b = vit_block(ViTConfig(embed_dim=32, num_heads=4))
    assert list(a.state_dict()) == list(b.state_dict())
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 7, 32)
    assert torch.equal(a(x), b(x))
    assert isinstance(a.mlp, Mlp) and a.mlp.fc1.out_features == 128 and a.norm1.eps == 1e-6


# ---------------------------------------------------------------------------------------------- heads
@pytest.mark.parametrize("dist", [False, True])
def test_vit_reset_classifier(dist):
    model = tiny(dist_token=dist, family="deit" if dist else "vit", labels=["a", "b", "c"])
    x = torch.rand(2, 3, 16, 16)
    feats = model.forward_features(x)
    model.reset_classifier(5, ["v", "w", "x", "y", "z"])
    assert model.head.out_features == 5 and model.cfg.num_classes == 5 and model.cfg.labels == list("vwxyz")
    assert torch.equal(model.head.bias, torch.zeros(5)) and model.head.weight.std() < 0.05
    assert (model.head_dist is not None) == dist and (not dist or model.head_dist.out_features == 5)
    assert model(x).shape == (2, 5)
    assert torch.equal(model.forward_features(x), feats)  # the backbone is untouched
    model.reset_classifier(0)
    assert isinstance(model.head, nn.Identity) and model.head_dist is None and model.cfg.labels is None
    assert model(x).shape == (2, 32)
    with pytest.raises(ValueError, match="one name per class"):
        model.reset_classifier(2, ["only one"])


@pytest.mark.parametrize("kind", ["visiongru", "hybrid"])
def test_other_families_reset_classifier(kind):
    torch.manual_seed(0)
    if kind == "visiongru":
        model = VisionGRU(VisionGRUConfig(img_size=(32, 32), dims=(16, 32), depths=(1, 1), num_classes=4))
    else:
        model = HybridCNNTransformer(HybridConfig(img_size=(32, 32), trunk_widths=(8, 16), trunk_depths=(1, 1), dim=16,
                                                  depth=1, num_heads=2, window=4, num_classes=4))
    model.eval()
    x = torch.rand(2, 3, 32, 32)
    assert model(x).shape == (2, 4)
    model.reset_classifier(6, [str(i) for i in range(6)])
    assert model(x).shape == (2, 6) and model.cfg.num_classes == 6 and model.cfg.labels == list("012345")
    model.reset_classifier(0)
    assert model.cfg.num_classes == 0 and model.cfg.labels is None


# ---------------------------------------------------------------------------------------------- token state
def test_returned_state_is_the_one_the_blocks_saw():
    """What a forward returns is the very TokenState its hooks updated (what was read back as
    ``model.last_state`` before): a token hook that drops half the patches shows in the returned index."""
    model = tiny()
    seen = []

    def drop_odd(x, state):
        seen.append(state)
        keep = torch.arange(0, x.shape[1], 2)
        state.index = keep.expand(x.shape[0], -1)
        return x[:, keep]

    model.blocks[0].token_hook = drop_odd
    x = torch.rand(2, 3, 16, 16)
    feats, state = model.forward_features(x, return_state=True)
    assert state is seen[0] and feats.shape[1] == 9
    assert torch.equal(state.index, torch.arange(0, 17, 2).expand(2, -1))
    _, _, state2 = model.forward_intermediates(x, return_state=True)
    assert state2 is seen[1] and torch.equal(state2.index, state.index)
    assert torch.equal(model(x), model.forward_head(feats))


# ---------------------------------------------------------------------------------------------- registries
def test_registry_lookup_and_clashes():
    from vitkit.registry import Registry

    reg = Registry("widget")

    @reg.register("a")
    def a():
        return 1

    assert reg.lookup("a") is a and list(reg) == ["a"] and reg.names() == ("a",) and "a" in reg
    with pytest.raises(ValueError, match=r"unknown widget 'b'; choose one of \['a'\]"):
        reg.lookup("b")
    with pytest.raises(ValueError, match="registered twice"):
        reg.register("a")(lambda: 2)
    with pytest.raises(ValueError, match="non-empty name"):
        reg.register("")


def test_detector_and_calibration_source_registries():
    from vitkit import ood, quant

    assert set(ood.DETECTORS) == {"msp", "max_logit", "energy", "knn", "mahalanobis", "molar"}
    assert ood.DETECTORS["knn"].name == "knn" and ood.make_detector("energy").name == "energy"
    assert set(quant.CALIBRATION_SOURCES) >= {"real", "noise", "psaq", "spdfq"}

    @quant.register_source("test-ones")
    def ones(model, n, gen, device, **_):
        return torch.ones(n, 3, *model.cfg.img_size, device=device)

    model = tiny()
    assert torch.equal(quant.calibration_images(model, "test-ones", 2), torch.ones(2, 3, 16, 16))
