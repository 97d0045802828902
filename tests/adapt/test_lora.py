"""LoRA: neutral at B = 0, equals a naive reference, q/k/v slices, merge/unmerge, adapters, files, errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vitkit import VisionTransformer
from vitkit.adapt import lora
from vitkit.adapt.lora import LoraConfig, LoraLinear

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(**kw) -> VisionTransformer:
    return VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, num_classes=5, **kw).eval()


def randomize_b(model: nn.Module, name: str = "default") -> None:
    with torch.no_grad():
        for w in lora.lora_layers(model).values():
            if name in w.adapters:
                w.lora_B[name].normal_(std=0.2)


@pytest.fixture()
def x():
    return torch.randn(3, 3, 32, 32)


@pytest.mark.parametrize("targets", [("qkv",), ("attn.proj",), ("fc1", "fc2"), ("qkv", "proj", "fc1", "fc2")])
def test_fresh_adapter_leaves_output_unchanged(x, targets):
    model = tiny()
    ref = model(x)
    touched = lora.apply(model, LoraConfig(rank=4, targets=targets))
    assert touched and all(isinstance(model.get_submodule(n), LoraLinear) for n in touched)
    torch.testing.assert_close(model(x), ref, rtol=0, atol=0)
    # the wrapper is a drop-in for the base layer: same forward, base_layer kept
    for n in touched:
        w = model.get_submodule(n)
        assert isinstance(w.base_layer, nn.Linear)
        t = torch.randn(4, w.in_features)
        torch.testing.assert_close(w(t), w.base_layer(t))


def test_attribute_names_kept_for_other_methods():
    model = tiny()
    lora.apply(model, LoraConfig(targets=("qkv", "attn.proj", "fc1", "fc2")))
    blk = model.blocks[0]
    for m in (blk.attn.qkv, blk.attn.proj, blk.mlp.fc1, blk.mlp.fc2):
        assert isinstance(m, LoraLinear) and hasattr(m, "base_layer")
    assert blk.attn.qkv.weight is blk.attn.qkv.base_layer.weight


def naive_qkv(w: LoraLinear, x: torch.Tensor, parts: str) -> torch.Tensor:
    """Reference: separate q, k, v projections, each with its own B A where adapted."""
    W, b = w.base_layer.weight, w.base_layer.bias
    d = W.shape[1]
    outs = []
    j = 0
    for i, p in enumerate("qkv"):
        Wi = W[i * d : (i + 1) * d].clone()
        if p in parts:
            Wi = Wi + w.scaling["default"] * w.lora_B["default"][j] @ w.lora_A["default"][j]
            j += 1
        outs.append(x @ Wi.t() + b[i * d : (i + 1) * d])
    return torch.cat(outs, -1)


@pytest.mark.parametrize("parts", ["q", "k", "v", "qv", "qkv"])
def test_qkv_slices_match_reference(parts):
    model = tiny()
    lora.apply(model, LoraConfig(rank=3, alpha=6, qkv_parts=parts))
    randomize_b(model)
    w = model.blocks[1].attn.qkv
    t = torch.randn(2, 7, 32)
    torch.testing.assert_close(w(t), naive_qkv(w, t, parts), rtol=1e-5, atol=1e-5)
    # untouched slices equal the base layer exactly
    base = w.base_layer(t)
    for i, p in enumerate("qkv"):
        same = torch.equal(w(t)[..., i * 32 : (i + 1) * 32], base[..., i * 32 : (i + 1) * 32])
        assert same == (p not in parts)


def test_plain_linear_matches_reference():
    model = tiny()
    lora.apply(model, LoraConfig(rank=2, alpha=4, targets=("fc1",)))
    randomize_b(model)
    w = model.blocks[0].mlp.fc1
    t = torch.randn(5, 32)
    W = w.base_layer.weight + 2.0 * w.lora_B["default"][0] @ w.lora_A["default"][0]
    torch.testing.assert_close(w(t), t @ W.t() + w.base_layer.bias, rtol=1e-5, atol=1e-5)


def test_merge_unmerge_restores_weights(x):
    model = tiny()
    orig = {k: v.clone() for k, v in model.state_dict().items()}
    lora.apply(model, LoraConfig(rank=4, targets=("qkv", "fc2"), qkv_parts="qkv"))
    randomize_b(model)
    adapted = model(x)
    lora.merge(model)
    torch.testing.assert_close(model(x), adapted, rtol=1e-4, atol=1e-5)  # merged forward = adapter forward
    assert not torch.equal(model.blocks[0].attn.qkv.weight, orig["blocks.0.attn.qkv.weight"])
    lora.unmerge(model)
    torch.testing.assert_close(model(x), adapted, rtol=1e-4, atol=1e-5)
    lora.remove(model)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, orig[k], rtol=0, atol=1e-6)
    assert type(model.blocks[0].attn.qkv) is nn.Linear


def test_remove_with_merge_keeps_function(x):
    model = tiny()
    lora.apply(model, LoraConfig(rank=4))
    randomize_b(model)
    adapted = model(x)
    lora.remove(model, merge=True)
    assert not lora.lora_layers(model)
    torch.testing.assert_close(model(x), adapted, rtol=1e-4, atol=1e-5)


def test_named_adapters_switching(x):
    model = tiny()
    plain = model(x)
    lora.apply(model, LoraConfig(rank=2), name="a")
    randomize_b(model, "a")
    lora.apply(model, LoraConfig(rank=4, targets=("qkv", "fc1")), name="b")
    randomize_b(model, "b")
    assert lora.adapter_names(model) == ["a", "b"]
    assert model.blocks[0].attn.qkv.adapters == ["a", "b"]
    lora.set_adapter(model, "a")
    ya = model(x)
    lora.set_adapter(model, "b")
    yb = model(x)
    lora.set_adapter(model, None)
    torch.testing.assert_close(model(x), plain)
    assert not torch.allclose(ya, yb)
    # only "a": the same as a model that never had "b"
    lora.remove(model, "b")
    lora.set_adapter(model, "a")
    torch.testing.assert_close(model(x), ya)
    with pytest.raises(ValueError, match="unknown adapter"):
        lora.set_adapter(model, "b")
    with pytest.raises(ValueError, match="already exists"):
        lora.apply(model, LoraConfig(rank=2), name="a")


def test_trainable_parameters_and_gradients(x):
    model = tiny()
    lora.apply(model, LoraConfig(rank=8, targets=("qkv",), modules_to_save=("head",)))
    n = lora.mark_trainable(model)
    names = [k for k, p in model.named_parameters() if p.requires_grad]
    assert all("lora_" in k or k.startswith("head.") for k in names)
    lora_n, base_n = lora.count_parameters(model)
    assert n == lora_n + sum(p.numel() for p in model.head.parameters())
    assert lora_n == 2 * 2 * (8 * 32 + 32 * 8)  # 2 blocks × (q, v) × (A + B)
    model(x).sum().backward()
    # with B = 0 only B gets a gradient at first (A's gradient goes through B)
    w = model.blocks[0].attn.qkv
    assert w.lora_B["default"].grad.abs().sum() > 0
    assert model.blocks[0].attn.qkv.base_layer.weight.grad is None


def test_save_load_roundtrip(tmp_path, x):
    model = tiny()
    lora.apply(model, LoraConfig(rank=4, targets=("qkv", "fc1"), qkv_parts="kv", modules_to_save=("head",)), name="fonts")
    randomize_b(model, "fonts")
    with torch.no_grad():
        model.head.weight.add_(1.0)
    want = model(x)
    path = lora.save_adapter(model, tmp_path / "adapter", name="fonts")
    assert path.suffix == ".safetensors"
    keys = set(lora.read_adapter(path)[2])
    assert all(".lora_" in k or k.startswith("head.") for k in keys)  # the adapter alone, no base weights

    # the same backbone weights as `model`, without the adapter
    other = tiny()
    sd = {k.replace(".base_layer", ""): v for k, v in model.state_dict().items() if "lora_" not in k}
    other.load_state_dict(sd)
    with torch.no_grad():
        other.head.weight.sub_(1.0)  # undo so only the adapter file brings the head back
    touched = lora.load_adapter(other, path)
    assert sorted(touched) == sorted(lora.lora_layers(model))
    torch.testing.assert_close(other(x), want)


def test_adapter_for_other_backbone_is_refused(tmp_path):
    model = tiny()
    lora.apply(model, LoraConfig(rank=4))
    path = lora.save_adapter(model, tmp_path / "a.safetensors")
    wide = VisionTransformer(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=2, num_classes=5)
    with pytest.raises(ValueError, match=r"another backbone.*blocks\.0\.attn\.qkv.*32→96.*64→192"):
        lora.load_adapter(wide, path)
    assert not lora.lora_layers(wide)
    shallow = VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2)
    with pytest.raises(ValueError, match=r"another backbone.*blocks\.1\.attn\.qkv"):
        lora.load_adapter(shallow, path)
    bad = tmp_path / "not_adapter.safetensors"
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(bad))
    with pytest.raises(ValueError, match="not a vitkit LoRA adapter"):
        lora.load_adapter(model, bad)
    with pytest.raises(ValueError, match="does not exist"):
        lora.load_adapter(model, tmp_path / "missing.safetensors")


def test_target_matching_nothing_raises_and_changes_nothing():
    model = tiny()
    with pytest.raises(ValueError, match=r"\['to_q'\] matched no Linear layer.*qkv"):
        lora.apply(model, LoraConfig(targets=("qkv", "to_q")))
    assert not lora.lora_layers(model)
    with pytest.raises(ValueError, match=r"in blocks \[7\]"):
        lora.apply(model, LoraConfig(layers=(7,)))
    with pytest.raises(ValueError, match="qkv_parts"):
        LoraConfig(qkv_parts="qx")
    with pytest.raises(ValueError, match="rank"):
        LoraConfig(rank=0)
    with pytest.raises(ValueError, match="modules_to_save"):
        lora.apply(model, LoraConfig(modules_to_save=("classifier",)))
    assert not lora.lora_layers(model)


def test_layers_restriction():
    model = tiny()
    touched = lora.apply(model, LoraConfig(layers=(1,), targets=("qkv", "fc2")))
    assert touched == ["blocks.1.attn.qkv", "blocks.1.mlp.fc2"]


def test_clip_text_and_vision_towers(tiny_tokenizer):
    from vitkit.models.clip import CLIP, CLIPConfig, TextConfig
    from vitkit.models.vit import ViTConfig

    cfg = CLIPConfig(ViTConfig(img_size=(32, 32), patch_size=8, embed_dim=32, depth=2, num_heads=2, proj_dim=16, pre_norm=True),
                     TextConfig(vocab_size=514, context_length=16, width=32, depth=2, num_heads=2, proj_dim=16, eos_token_id=513))
    clip = CLIP(cfg).eval()
    clip.tokenizer = tiny_tokenizer
    ids = clip.tokenize(["a cat", "a dog"])
    img = torch.randn(2, 3, 32, 32)
    ref = clip(img, ids)[0]
    touched = lora.apply(clip, LoraConfig(targets=("attn.qkv",)))
    assert len(touched) == 4 and any(t.startswith("text.") for t in touched)
    torch.testing.assert_close(clip(img, ids)[0], ref)
    randomize_b(clip)
    assert not torch.allclose(clip(img, ids)[0], ref)


def test_lora_composes_with_quantization(x):
    """The quantization helper finds LoRA's base_layer; 16-bit fake quantization keeps the adapted output."""
    ptq = pytest.importorskip("vitkit.quant.ptq")
    model = tiny()
    lora.apply(model, LoraConfig(rank=4, qkv_parts="qkv"))
    randomize_b(model)
    want = model(x)
    ptq.apply(model, ptq.QuantConfig(w_bits=16, a_bits=16))
    w = model.blocks[0].attn.qkv
    assert isinstance(w, LoraLinear) and isinstance(w.base_layer, ptq.QuantLinear)
    with torch.no_grad():
        ptq.calibrate_ranges(model, x)
    torch.testing.assert_close(model(x), want, rtol=1e-2, atol=1e-2)
    with pytest.raises(ValueError, match="cannot merge LoRA into a QuantLinear"):
        lora.merge(model)
    ptq.remove(model)
    torch.testing.assert_close(model(x), want)


def test_lora_composes_with_token_merging(x):
    """ToMe reads keys through the Attention it hooks; a fresh adapter leaves a merged forward unchanged, and a
    trained one changes it (the adapter is really used under token reduction)."""
    reduce = pytest.importorskip("vitkit.reduce")
    model = tiny()
    plain = model(x)
    reduce.tome.apply(model, reduce.ToMeConfig(r=4))
    merged = model(x)
    assert not torch.allclose(merged, plain)
    lora.apply(model, LoraConfig(rank=4, targets=("qkv", "fc1")))
    torch.testing.assert_close(model(x), merged)
    randomize_b(model)
    assert not torch.allclose(model(x), merged)
    reduce.tome.remove(model)
    lora.set_adapter(model, None)
    torch.testing.assert_close(model(x), plain)
