import pytest
import torch
from torch import nn

from vitkit import quant
from vitkit.models import attention as attention_mod
from vitkit.quant.ptq import QuantConfig, QuantLinear, calibrate, quant_disabled, reconstruct_blocks


def rel_err(a, b):
    return ((a - b).norm() / b.norm()).item()


@pytest.mark.parametrize("granularity", ["token", "tensor"])
@pytest.mark.parametrize("method", ["minmax", "mse"])
@pytest.mark.parametrize("attn_bits", [0, 16])
def test_16_bit_reproduces_float(vit, images, granularity, method, attn_bits):
    ref = vit(images)
    quant.apply(vit, QuantConfig(w_bits=16, a_bits=16, attn_bits=attn_bits, act_granularity=granularity,
                                 calib_method=method))
    calibrate(vit, images)
    assert torch.allclose(vit(images), ref, atol=1e-3 * ref.abs().max().item(), rtol=0)  # W8A8: ~5e-2


def test_error_grows_as_bits_shrink(vit, images):
    ref = vit(images)
    errs = []
    for bits in (8, 6, 4, 3):
        quant.apply(vit, QuantConfig(w_bits=bits, a_bits=bits))
        calibrate(vit, images)
        errs.append(rel_err(vit(images), ref))
        quant.remove(vit)
    assert errs == sorted(errs) and errs[0] < 0.05 and errs[-1] > 0.1, errs


def test_apply_reports_and_remove_restores(vit, images):
    ref = vit(images)
    originals = {n: m for n, m in vit.named_modules() if isinstance(m, nn.Linear)}
    names = quant.apply(vit, QuantConfig(w_bits=4, a_bits=4))
    linears = [f"blocks.{i}.{s}" for i in range(2) for s in ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2")]
    assert sorted(names) == sorted(linears + ["blocks.0.attn.attn_map_fn", "blocks.1.attn.attn_map_fn"])
    assert all(isinstance(vit.get_submodule(n), QuantLinear) for n in linears)
    assert vit.get_submodule("blocks.0.attn.qkv").base_layer is originals["blocks.0.attn.qkv"]
    calibrate(vit, images)
    assert rel_err(vit(images), ref) > 1e-3
    restored = quant.remove(vit)
    assert sorted(restored) == sorted(names)
    assert all(vit.get_submodule(n) is m for n, m in originals.items())
    assert all(b.attn.attn_map_fn is None for b in vit.blocks)
    assert torch.equal(vit(images), ref)
    assert "quant" not in vit.applied and not hasattr(vit, "quant_config")


def test_apply_errors(vit):
    with pytest.raises(ValueError, match="targets"):
        quant.apply(vit, QuantConfig(targets=r"^nothing$"))
    with pytest.raises(ValueError, match="patch_embed.proj.*Conv2d"):
        quant.apply(vit, QuantConfig(targets=r"patch_embed\.proj$"))
    quant.apply(vit, QuantConfig())
    with pytest.raises(ValueError, match="already quantized"):
        quant.apply(vit, QuantConfig())
    quant.remove(vit)
    with pytest.raises(ValueError, match="no quantized modules"):
        quant.remove(vit)


def test_config_errors():
    with pytest.raises(ValueError, match="w_bits"):
        QuantConfig(w_bits=9)
    with pytest.raises(ValueError, match="a_bits"):
        QuantConfig(a_bits=1)
    with pytest.raises(ValueError, match="attn_bits"):
        QuantConfig(attn_bits=20)
    with pytest.raises(ValueError, match="calib_method"):
        QuantConfig(calib_method="kl")
    with pytest.raises(ValueError, match="unknown QuantConfig keys"):
        QuantConfig.from_dict({"wbits": 4})


class FakeLoRA(nn.Module):
    """A peft-style wrapper: base_layer + a low-rank update."""

    def __init__(self, base: nn.Linear, r: int = 2) -> None:
        super().__init__()
        self.base_layer = base
        self.lora_A = nn.Linear(base.in_features, r, bias=False)
        self.lora_B = nn.Linear(r, base.out_features, bias=False)
        nn.init.normal_(self.lora_B.weight)

    def forward(self, x):
        return self.base_layer(x) + self.lora_B(self.lora_A(x))


def test_lora_wrapper_gets_its_base_quantized(vit, images):
    lora = FakeLoRA(vit.blocks[0].attn.qkv)
    vit.blocks[0].attn.qkv = lora
    ref = vit(images)
    names = quant.apply(vit, QuantConfig(w_bits=4, a_bits=4, attn_bits=0))
    assert "blocks.0.attn.qkv.base_layer" in names
    assert vit.blocks[0].attn.qkv is lora and isinstance(lora.base_layer, QuantLinear)
    assert isinstance(lora.lora_A, nn.Linear)  # adapter weights stay float
    calibrate(vit, images)
    assert rel_err(vit(images), ref) > 1e-3
    quant.remove(vit)
    assert isinstance(lora.base_layer, nn.Linear) and torch.equal(vit(images), ref)


def test_quant_disabled_gives_float(vit, images):
    ref = vit(images)
    quant.apply(vit, QuantConfig(w_bits=3, a_bits=3))
    calibrate(vit, images)
    with quant_disabled(vit):
        assert torch.allclose(vit(images), ref, atol=1e-5)
    assert rel_err(vit(images), ref) > 1e-2


def test_block_reconstruction_lowers_block_error(vit, images):
    quant.apply(vit, QuantConfig(w_bits=4, a_bits=4))
    calibrate(vit, images)
    scales = vit.blocks[0].attn.qkv.weight_quantizer.scale.clone()
    out = reconstruct_blocks(vit, images, steps=30, lr=1e-3, batch_size=8)
    assert len(out) == 2
    assert all(r["mse_after"] <= r["mse_before"] for r in out)
    assert out[0]["mse_after"] < out[0]["mse_before"]
    assert not torch.equal(scales, vit.blocks[0].attn.qkv.weight_quantizer.scale)
    assert not any(p.requires_grad for p in vit.blocks[0].attn.qkv.weight_quantizer.parameters())


def test_per_tensor_needs_calibration(vit, images):
    quant.apply(vit, QuantConfig(act_granularity="tensor"))
    with pytest.raises(RuntimeError, match="calibrat"):
        vit(images)


def test_attention_hook_default_path_unchanged(vit, images, monkeypatch):
    ref = vit(images)

    def boom(*a, **k):
        raise AssertionError("the default path must not build the full map")

    monkeypatch.setattr(attention_mod, "full_attention", boom)
    assert torch.equal(vit(images), ref)  # fused SDPA, no explicit map
    monkeypatch.undo()
    for b in vit.blocks:
        b.attn.attn_map_fn = lambda p: p  # identity hook: explicit softmax, same result
    assert torch.allclose(vit(images), ref, atol=1e-5)
    with vit.attention_readout(kind="cls") as maps:
        vit(images)
    assert maps[0].shape == (16, 3, 17)
    seen = []
    vit.blocks[1].attn.attn_map_fn = lambda p: seen.append(p.shape) or p * 0
    vit.blocks[0].attn.attn_map_fn = None
    vit(images)
    assert seen == [(16, 3, 17, 17)]


def test_stacks_with_vitkit_lora_both_orders(vit, images):
    lora = pytest.importorskip("vitkit.adapt.lora")
    ref = vit(images)
    # LoRA first, then quantization: the adapter's base Linear is quantized
    lora.apply(vit, lora.LoraConfig(rank=2, targets=("qkv",)))
    names = quant.apply(vit, QuantConfig(w_bits=4, a_bits=4, attn_bits=0))
    assert "blocks.0.attn.qkv.base_layer" in names and "blocks.0.attn.qkv" not in names
    calibrate(vit, images)
    assert isinstance(vit.blocks[0].attn.qkv.base_layer, QuantLinear)
    assert rel_err(vit(images), ref) > 1e-3
    quant.remove(vit)
    assert isinstance(vit.blocks[0].attn.qkv.base_layer, nn.Linear)
    assert torch.allclose(vit(images), ref, atol=1e-5)  # fresh LoRA (B = 0) on the float base


def test_lora_on_a_quantized_base(vit, images):
    lora = pytest.importorskip("vitkit.adapt.lora")
    quant.apply(vit, QuantConfig(w_bits=8, a_bits=8))
    calibrate(vit, images)
    q = vit(images)
    lora.apply(vit, lora.LoraConfig(rank=2, targets=("qkv",)))
    assert isinstance(vit.blocks[0].attn.qkv.base_layer, QuantLinear)
    assert torch.allclose(vit(images), q, atol=1e-5)  # B = 0: same output as the quantized model
    quant.remove(vit)
    assert isinstance(vit.blocks[0].attn.qkv.base_layer, nn.Linear)


def test_attention_hook_keeps_causal_mask_and_bias(one_thread):
    attn = attention_mod.Attention(32, 4).eval()
    x = torch.randn(2, 7, 32)
    bias = torch.randn(2, 4, 7, 7)
    for kw in ({"is_causal": True}, {"attn_bias": bias}):
        ref = attn(x, **kw)
        attn.attn_map_fn = lambda p: p
        assert torch.allclose(attn(x, **kw), ref, atol=1e-5), kw
        attn.attn_map_fn = None


def test_frozen_restores_grads_and_mode_even_after_an_error():
    from vitkit.quant.ptq import frozen

    m = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Dropout(0.1))
    m[0].bias.requires_grad_(False)
    m.train()
    with pytest.raises(RuntimeError, match="inside"), frozen(m, eval_mode=True):
        assert not m.training and not any(p.requires_grad for p in m.parameters())
        raise RuntimeError("inside")
    assert m.training and m[0].weight.requires_grad and not m[0].bias.requires_grad
    with frozen(m):  # without eval_mode the mode is left alone
        assert m.training and not m[0].weight.requires_grad
