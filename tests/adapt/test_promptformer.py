"""FedMVP's PromptFormer: shapes, logits and loss against hand computations, a frozen tower, LoRA switch."""

from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F

from vitkit import frb
from vitkit.adapt import fedfonts as ff
from vitkit.adapt import lora
from vitkit.adapt.promptformer import (
    FedMVP,
    PromptFormer,
    PromptFormerConfig,
    consistency_loss,
    description_logits,
    fedmvp_loss,
    pool_tokens,
    train_fedmvp,
)
from vitkit.models.clip import CLIP, CLIPConfig, TextConfig
from vitkit.models.vit import ViTConfig

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_clip(tokenizer=None) -> CLIP:
    vision = ViTConfig(img_size=(32, 32), patch_size=8, embed_dim=32, depth=2, num_heads=2, proj_dim=16, pre_norm=True,
                       family="clip")
    text = TextConfig(vocab_size=514, context_length=16, width=32, depth=1, num_heads=2, proj_dim=16, eos_token_id=513)
    clip = CLIP(CLIPConfig(vision, text))
    clip.tokenizer = tokenizer
    return clip.eval()


def test_promptformer_shapes_and_pooling():
    pf = PromptFormer(dim=32, text_dim=16, cfg=PromptFormerConfig(num_prompts=4, heads=4))
    out = pf(torch.randn(3, 16, 32), torch.randn(10, 16))
    assert out.shape == (3, 4, 32)
    assert pf(torch.randn(3, 16, 32), torch.randn(3, 7, 16)).shape == (3, 4, 32)  # per-image context
    x = torch.arange(8.0).view(1, 8, 1)
    torch.testing.assert_close(pool_tokens(x, 4).flatten(), torch.tensor([0.5, 2.5, 4.5, 6.5]))


def test_fedmvp_appends_prompts_after_the_patches_and_scores_classes():
    clip = tiny_clip()
    model = FedMVP(clip)
    model.set_classes(torch.randn(5, 3, 16))  # 5 classes, 3 descriptions each
    seen = {}
    blk = clip.visual.blocks[0]
    blk.pre_hook = lambda x, state: seen.setdefault("n", x.shape[1]) and x
    logits = model(torch.randn(2, 3, 32, 32))
    assert logits.shape == (2, 5)
    assert seen["n"] == 1 + 16 + 4  # [cls] [16 patches] [4 prompts]
    # the prompts depend on the image and on the class descriptions
    a = model.encode(torch.randn(1, 3, 32, 32))
    model.set_classes(torch.randn(5, 3, 16))
    assert not torch.allclose(a, model.encode(torch.randn(1, 3, 32, 32)))


def test_description_logits_match_a_loop_and_loss_parts():
    img, txt = torch.randn(3, 8), torch.randn(4, 2, 8)
    got = description_logits(img, txt, 5.0)
    want = torch.zeros(3, 4)
    for b in range(3):
        for k in range(4):
            want[b, k] = 5.0 * sum(F.cosine_similarity(img[b], txt[k, s], dim=0) for s in range(2)) / 2
    torch.testing.assert_close(got, want)
    f = torch.randn(3, 8)
    assert consistency_loss(f, 2 * f).abs() < 1e-6  # same direction: no penalty
    torch.testing.assert_close(consistency_loss(f, -f), torch.tensor(2.0))
    labels = torch.tensor([0, 1, 3])
    total, ce, cons = fedmvp_loss(got, labels, f, -f, alpha=10.0)
    torch.testing.assert_close(ce, F.cross_entropy(got, labels))
    torch.testing.assert_close(total, ce + 10.0 * cons)


def test_training_moves_only_the_generator_and_remove_restores_the_clip():
    clip = tiny_clip()
    before = {k: v.clone() for k, v in clip.state_dict().items()}
    x = torch.randn(4, 3, 32, 32)
    plain = clip.encode_image(x).detach()
    model = FedMVP(clip)
    model.set_classes(torch.randn(3, 2, 16))
    gen0 = model.generator_state()
    images, labels = torch.randn(16, 3, 32, 32), torch.randint(0, 3, (16,))
    losses = train_fedmvp(model, images, labels, model.encode_frozen(images.flip(-1)), steps=3, lr=0.05, batch_size=8)
    assert len(losses) == 3
    for k, v in clip.state_dict().items():
        assert torch.equal(v, before[k]), f"frozen CLIP weight {k} changed"
    assert any(not torch.equal(v, gen0[k]) for k, v in model.generator_state().items())
    assert not torch.allclose(clip.encode_image(x), plain)  # prompts change the features …
    torch.testing.assert_close(model.encode_frozen(x), plain)  # … unless switched off
    model.remove()
    assert clip.visual.embed_hook is None
    torch.testing.assert_close(clip.encode_image(x), plain)
    FedMVP(clip)
    with pytest.raises(ValueError, match="already used"):
        FedMVP(clip)  # a second FedMVP on a hooked tower


def test_lora_starts_as_a_no_op_and_takes_over_after_the_switch():
    torch.manual_seed(0)
    clip = tiny_clip()
    with_lora = FedMVP(clip, cfg=PromptFormerConfig(lora_rank=8))
    assert sorted(lora.lora_layers(with_lora.generator)) == ["cross_attn.k", "cross_attn.q", "cross_attn.v"]
    patches, ctx = torch.randn(2, 16, 32), torch.randn(6, 16)
    plain = PromptFormer(dim=32, text_dim=16)
    own = {k.replace(".base_layer", ""): v for k, v in with_lora.generator.state_dict().items() if "lora_" not in k}
    plain.load_state_dict(own)
    torch.testing.assert_close(with_lora.generator(patches, ctx), plain(patches, ctx))  # B = 0
    assert not any(p.requires_grad for n, p in with_lora.generator.named_parameters() if "lora_" in n)
    assert not with_lora.maybe_switch(0.7)  # above the threshold: nothing happens
    assert with_lora.maybe_switch(0.3)
    trainable = {n for n, p in with_lora.generator.named_parameters() if p.requires_grad}
    assert {n for n in trainable if n.startswith("cross_attn.")} == {
        f"cross_attn.{p}.lora_{m}.fedmvp" for p in "qkv" for m in "AB"}
    q0 = with_lora.generator.cross_attn.q.base_layer.weight.clone()
    with_lora.set_classes(torch.randn(3, 2, 16))
    images, labels = torch.randn(8, 3, 32, 32), torch.randint(0, 3, (8,))
    train_fedmvp(with_lora, images, labels, with_lora.encode_frozen(images), steps=2, lr=0.1, batch_size=8)
    assert torch.equal(with_lora.generator.cross_attn.q.base_layer.weight, q0)
    assert with_lora.generator.cross_attn.q.lora_B["fedmvp"].abs().sum() > 0


def test_font_attributes_split_and_client_shards():
    attrs = ff.font_attributes()
    assert list(attrs) == frb.FONT_NAMES
    assert len(ff.BASE_FONTS) == 8 and len(ff.NEW_FONTS) == 7 and not set(ff.BASE_FONTS) & set(ff.NEW_FONTS)
    assert all(len(a.description) >= 3 and len(a.attributes) >= 4 for a in attrs.values())
    vocab = {w for f in ff.BASE_FONTS for w in attrs[f].attributes}
    for f in ff.NEW_FONTS:  # every new font shares attributes with the base fonts (text can generalise)
        assert len(set(attrs[f].attributes) & vocab) >= 4, f
    shards = ff.client_fonts(5)
    assert all(len(s) == 4 for s in shards) and set().union(*shards) == set(ff.BASE_FONTS)
    assert ff.client_fonts(2) == [list(ff.BASE_FONTS[:4]), list(ff.BASE_FONTS[4:])]
    a, b = random.Random(3), random.Random(3)
    assert [ff.attribute_caption("Arial", a) for _ in range(5)] == [ff.attribute_caption("Arial", b) for _ in range(5)]
    tok = ff.attribute_tokenizer()
    for f in frb.FONT_NAMES:  # every description fits the text context
        ids = tok(list(attrs[f].description))["input_ids"]
        assert (ids == tok.eos_token_id).any(-1).all()


def test_momentum_sgd_matches_torch_sgd():
    from vitkit.adapt.promptformer import MomentumSGD, cosine_lr

    w0 = torch.randn(5, 3)
    a, b = torch.nn.Parameter(w0.clone()), torch.nn.Parameter(w0.clone())
    ours, ref = MomentumSGD([a], lr=0.1, momentum=0.9), torch.optim.SGD([b], lr=0.1, momentum=0.9)
    for _ in range(4):
        x = torch.randn(3)
        for p, opt in ((a, ours), (b, ref)):
            opt.zero_grad()
            ((p @ x) ** 2).sum().backward()
            opt.step()
        torch.testing.assert_close(a, b)
    assert cosine_lr(1.0, 0, 10) == 1.0 and abs(cosine_lr(1.0, 10, 10)) < 1e-12 and cosine_lr(1.0, 5, 10) == 0.5
