"""VPT (shallow, deep) against a naive reference; CoOp prompts against hand-written text prompts."""

from __future__ import annotations

import pytest
import torch

from vitkit import VisionTransformer
from vitkit.adapt.prompts import (
    CoOp,
    CoOpConfig,
    VPTConfig,
    apply_vpt,
    mark_prompts_trainable,
    remove_vpt,
    train_prompts,
)
from vitkit.models.clip import CLIP, CLIPConfig, TextConfig
from vitkit.models.vit import ViTConfig

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(**kw) -> VisionTransformer:
    return VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=3, num_heads=2, num_classes=4, **kw).eval()


def reference(model: VisionTransformer, x: torch.Tensor, tokens: torch.Tensor, deep: bool) -> torch.Tensor:
    """Naive VPT forward: build the token sequence by hand, block by block."""
    hook = model.embed_hook
    model.embed_hook = None
    n0 = model.num_prefix_tokens - tokens.shape[1]
    try:
        h, _ = model.embed(x)
    finally:
        model.embed_hook = hook
    B = x.shape[0]
    # embed() applied norm_pre after the (absent) hook: the test models have no pre-norm
    h = torch.cat([h[:, :n0], tokens[0].expand(B, -1, -1), h[:, n0:]], 1)
    for i, blk in enumerate(model.blocks):
        if deep and i > 0:
            h = torch.cat([h[:, :n0], tokens[i].expand(B, -1, -1), h[:, n0 + tokens.shape[1] :]], 1)
        pre = blk.pre_hook
        blk.pre_hook = None
        h = blk(h)
        blk.pre_hook = pre
    h = model.norm(h)
    if model.cfg.global_pool == "avg":
        return model.head(model.fc_norm(h[:, n0 + tokens.shape[1] :].mean(1)))
    return model.head(h[:, 0])


@pytest.mark.parametrize("deep", [False, True])
@pytest.mark.parametrize("kw", [{}, {"global_pool": "avg", "class_token": False}, {"num_reg_tokens": 2}])
def test_vpt_matches_reference_and_removes_cleanly(deep, kw):
    model = tiny(**kw)
    x = torch.randn(2, 3, 32, 32)
    plain = model(x)
    n_prefix = model.num_prefix_tokens
    touched = apply_vpt(model, VPTConfig(num_tokens=3, deep=deep))
    assert len(touched) == (3 if deep else 1)
    assert model.num_prefix_tokens == n_prefix + 3
    tokens = model.vpt.tokens
    assert tokens.shape == ((3 if deep else 1), 3, 32)
    out = model(x)
    torch.testing.assert_close(out, reference(model, x, tokens.detach(), deep), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(out, plain)
    assert model.forward_features(x, return_state=True)[1].num_prefix == n_prefix + 3
    remove_vpt(model)
    assert model.num_prefix_tokens == n_prefix and model.embed_hook is None
    assert all(b.pre_hook is None for b in model.blocks)
    torch.testing.assert_close(model(x), plain, rtol=0, atol=0)


def test_vpt_trains_prompts_only():
    model = tiny()
    apply_vpt(model, VPTConfig(num_tokens=2, deep=True))
    n = mark_prompts_trainable(model, extra=("head",))
    assert n == 3 * 2 * 32 + 32 * 4 + 4
    model.train()
    loss = model(torch.randn(2, 3, 32, 32)).logsumexp(-1).sum()
    loss.backward()
    g = model.vpt.tokens.grad
    assert g is not None and (g.abs().sum((1, 2)) > 0).all()  # every layer's prompts get a gradient
    assert model.blocks[0].attn.qkv.weight.grad is None


def test_vpt_errors():
    model = tiny()
    apply_vpt(model, VPTConfig(num_tokens=1))
    with pytest.raises(ValueError, match="already has visual prompts"):
        apply_vpt(model)
    remove_vpt(model)
    with pytest.raises(ValueError, match="no visual prompts"):
        remove_vpt(model)
    with pytest.raises(ValueError, match="num_tokens"):
        VPTConfig(num_tokens=0)
    model.embed_hook = lambda x, s: x
    with pytest.raises(ValueError, match="embed_hook"):
        apply_vpt(model)


# ------------------------------------------------------------------------------------------- CoOp
@pytest.fixture()
def clip(tiny_tokenizer):
    cfg = CLIPConfig(
        ViTConfig(img_size=(32, 32), patch_size=8, embed_dim=32, depth=2, num_heads=2, proj_dim=16, pre_norm=True),
        TextConfig(vocab_size=514, context_length=24, width=32, depth=2, num_heads=2, proj_dim=16, eos_token_id=513),
    )
    m = CLIP(cfg).eval()
    m.tokenizer = tiny_tokenizer
    return m


def encode(clip, texts):
    return torch.nn.functional.normalize(clip.encode_text(clip.tokenize(texts)), dim=-1)


@pytest.mark.parametrize(
    ("position", "init", "texts"),
    [
        ("end", "a photo of a", ["a photo of a cat.", "a photo of a dog."]),
        ("front", "a photo of a", ["cat a photo of a.", "dog a photo of a."]),
        ("middle", "ab cd", ["ab cat cd.", "ab dog cd."]),
    ],
)
def test_coop_from_words_equals_handwritten_prompt(clip, position, init, texts):
    coop = CoOp(clip, ["cat", "dog"], CoOpConfig(ctx_init=init, position=position))
    torch.testing.assert_close(coop.text_features(), encode(clip, texts), rtol=1e-5, atol=1e-5)


def test_coop_class_specific_context(clip):
    coop = CoOp(clip, ["cat", "dog", "owl"], CoOpConfig(n_ctx=4, class_specific=True))
    assert coop.ctx.shape == (3, 4, 32)
    before = coop.text_features().detach()
    with torch.no_grad():
        coop.ctx[1].add_(0.5)
    after = coop.text_features().detach()
    torch.testing.assert_close(after[[0, 2]], before[[0, 2]])
    assert not torch.allclose(after[1], before[1])


def test_coop_trains_context_only(clip):
    torch.manual_seed(0)
    coop = CoOp(clip, ["cat", "dog", "owl"], CoOpConfig(n_ctx=4))
    assert [n for n, p in coop.named_parameters() if p.requires_grad] == ["ctx"]
    images = torch.randn(24, 3, 32, 32)
    labels = torch.arange(24) % 3
    with torch.no_grad():
        feats = clip.encode_image(images)
    before = torch.nn.functional.cross_entropy(coop.logits(feats), labels).item()
    losses = train_prompts(lambda f, y: coop.logits(f), coop.parameters(), feats, labels, steps=60, lr=0.05)
    after = torch.nn.functional.cross_entropy(coop.logits(feats), labels).item()
    assert after < before - 0.05 and losses[-1] < losses[0]
    # forward on images = logits on their features
    torch.testing.assert_close(coop(images[:4]), coop.logits(feats[:4]))


def test_coop_errors(clip):
    with pytest.raises(ValueError, match="position"):
        CoOpConfig(position="left")
    with pytest.raises(ValueError, match="longer than the text context length 24"):
        CoOp(clip, ["a very long class name indeed"], CoOpConfig(n_ctx=8))
    with pytest.raises(ValueError, match="at least one class"):
        CoOp(clip, [])
