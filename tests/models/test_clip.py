"""CLIP dual encoder, text pooling, zero-shot classifier and the model registry, on ``clip_test`` (CPU, seconds)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from vitkit.models import VisionTransformer
from vitkit.models.clip import CLIP, DEFAULT_TEMPLATES, CLIPConfig, TextConfig, ZeroShotClassifier
from vitkit.models.registry import create_model, list_models, model_config
from vitkit.models.tokenizer import CLIPTokenizer, bytes_to_unicode

BOS, EOS = "<|startoftext|>", "<|endoftext|>"
BOS_ID, EOS_ID = 49406, 49407  # the OpenAI ids, which clip_test's TextConfig.eos_token_id expects
CTX = 16
D = 32


def make(seed: int = 0, **overrides) -> CLIP:
    torch.manual_seed(seed)
    model = create_model("clip_test", **overrides)
    # LayerNorms start at (1, 0) and tokens near 0: perturb so that equalities mean something
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
        model.logit_scale.fill_(2.0)
    return model.eval()


def images(b: int = 2, seed: int = 1) -> torch.Tensor:
    return torch.randn(b, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def token_ids(b: int = 2, eos_at: tuple[int, ...] = (5, 9), seed: int = 2) -> torch.Tensor:
    """Random ids below BOS, a BOS at 0, EOS at ``eos_at[row]``, EOS padding after it."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 1000, (b, CTX), generator=g)
    ids[:, 0] = BOS_ID
    for row, pos in enumerate(eos_at[:b]):
        ids[row, pos:] = EOS_ID
    return ids


def tiny_tokenizer() -> CLIPTokenizer:
    """Byte-level base vocabulary (each byte with and without ``</w>``), the two specials, no merges."""
    chars = list(bytes_to_unicode().values())
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": len(chars) + i for i, c in enumerate(chars)})
    vocab[BOS] = BOS_ID
    vocab[EOS] = EOS_ID
    return CLIPTokenizer(vocab, [], context_length=CTX)


# ---------------------------------------------------------------------------------------------- encoders


def test_encode_shapes_and_normalize() -> None:
    model = make()
    assert isinstance(model.visual, VisionTransformer)
    assert model.embed_dim == D
    with torch.no_grad():
        img = model.encode_image(images(3))
        txt = model.encode_text(token_ids(2))
        img_n = model.encode_image(images(3), normalize=True)
        txt_n = model.encode_text(token_ids(2), normalize=True)
    assert img.shape == img_n.shape == (3, D)
    assert txt.shape == txt_n.shape == (2, D)
    assert torch.allclose(img_n.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert torch.allclose(txt_n.norm(dim=-1), torch.ones(2), atol=1e-5)
    assert not torch.allclose(img.norm(dim=-1), torch.ones(3), atol=1e-2)  # unnormalised by default
    assert torch.allclose(img_n, img / img.norm(dim=-1, keepdim=True), atol=1e-6)
    assert torch.allclose(txt_n, txt / txt.norm(dim=-1, keepdim=True), atol=1e-6)


def test_forward_logits() -> None:
    model = make()
    x, ids = images(3), token_ids(2)
    with torch.no_grad():
        per_image, per_text = model(x, ids)
        img, txt = model.encode_image(x), model.encode_text(ids)
    assert per_image.shape == (3, 2) and per_text.shape == (2, 3)
    cos = F.cosine_similarity(img[:, None], txt[None], dim=-1)
    assert torch.allclose(per_image, math.exp(2.0) * cos, atol=1e-5)
    assert torch.equal(per_text, per_image.t())


def test_logit_scale_gets_gradient() -> None:
    model = make().train()
    per_image, _ = model(images(2), token_ids(2))
    F.cross_entropy(per_image, torch.arange(2)).backward()
    assert model.logit_scale.grad is not None and model.logit_scale.grad.abs() > 0
    assert model.text.token_embedding.weight.grad is not None
    assert model.visual.proj.weight.grad is not None


# ---------------------------------------------------------------------------------------------- text pooling


def test_text_pools_at_eos_id_or_argmax() -> None:
    eos = 5
    with_eos = make(text={"eos_token_id": eos})
    no_eos = make(text={"eos_token_id": None})
    no_eos.load_state_dict(with_eos.state_dict())
    assert with_eos.cfg.text.eos_token_id == eos and no_eos.cfg.text.eos_token_id is None
    ids = torch.tensor(
        [
            [1, 900, 2, eos, 7, eos, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0],  # first eos at 3, largest id at 1
            [1, 2, 3, 4, 6, 7, eos, 8, 9, 800, 0, 0, 0, 0, 0, 0],  # eos at 6, largest id at 9
        ]
    )
    eos_pos, max_pos = torch.tensor([3, 6]), torch.tensor([1, 9])
    rows = torch.arange(2)
    with torch.no_grad():
        feats = with_eos.text.forward_features(ids)
        assert feats.shape == (2, CTX, D)
        assert torch.equal(no_eos.text.forward_features(ids), feats)
        by_eos = with_eos.encode_text(ids)
        by_max = no_eos.encode_text(ids)
        assert torch.allclose(by_eos, with_eos.text.proj(feats[rows, eos_pos]), atol=1e-6)
        assert torch.allclose(by_max, with_eos.text.proj(feats[rows, max_pos]), atol=1e-6)
        assert not torch.allclose(by_eos, by_max, atol=1e-4)


def test_causal_mask_ignores_tokens_after_eos() -> None:
    model = make()
    ids = token_ids(2, eos_at=(6, 6))
    ids[:, 7:] = 0  # something other than eos after it
    after, before = ids.clone(), ids.clone()
    after[:, 10] = 123
    before[:, 3] = 123 if ids[0, 3] != 123 else 124
    with torch.no_grad():
        ref = model.encode_text(ids)
        assert torch.allclose(model.encode_text(after), ref, atol=1e-6)
        assert not torch.allclose(model.encode_text(before), ref, atol=1e-4)
        # per-position features: causality holds for every position, not only the pooled one
        f, f_after = model.text.forward_features(ids), model.text.forward_features(after)
        assert torch.allclose(f[:, :10], f_after[:, :10], atol=1e-6)
        assert not torch.allclose(f[:, 10:], f_after[:, 10:], atol=1e-4)


def test_shorter_context_allowed_longer_rejected() -> None:
    model = make()
    with torch.no_grad():
        assert model.encode_text(token_ids(2)[:, :10]).shape == (2, D)
    with pytest.raises(ValueError, match="context length"):
        model.encode_text(torch.zeros(1, CTX + 1, dtype=torch.long))


def test_learned_prompt_embeds_replace_lookup() -> None:
    model = make()
    ids = token_ids(1)
    with torch.no_grad():
        embeds = model.text.token_embedding(ids)
        assert torch.allclose(model.text(ids, embeds), model.text(ids), atol=1e-6)
        shifted = embeds + 0.5 * torch.randn_like(embeds)  # (a constant shift would be normed away)
        assert not torch.allclose(model.text(ids, shifted), model.text(ids), atol=1e-4)


# ---------------------------------------------------------------------------------------------- zero-shot


def test_tiny_tokenizer_layout() -> None:
    ids = tiny_tokenizer()(["a cat.", "a dog"])["input_ids"]
    assert ids.shape == (2, CTX)
    assert (ids[:, 0] == BOS_ID).all()
    # "a cat." -> a</w> c a t</w> .</w>: eos right after, then eos padding
    assert ids[0, 6] == EOS_ID and (ids[0, 1:6] < 512).all()
    assert ids[1, 5] == EOS_ID


def test_zero_shot_classifier() -> None:
    model = make()
    tok = tiny_tokenizer()
    model.tokenizer = tok
    classes = ["cat", "dog", "bird"]
    templates = ["a {}.", "{} pic", "the {}"]
    x = images(4)
    with torch.no_grad():
        clf = ZeroShotClassifier(model, classes, templates)
        W = clf.weights
        assert W.shape == (3, D)
        assert torch.allclose(W.norm(dim=-1), torch.ones(3), atol=1e-5)
        for k, name in enumerate(classes):
            ids = tok([t.format(name) for t in templates], context_length=CTX)["input_ids"]
            assert torch.equal(model.tokenize([t.format(name) for t in templates]), ids)
            z = F.normalize(model.encode_text(ids), dim=-1).mean(0)
            assert torch.allclose(W[k], F.normalize(z, dim=-1), atol=1e-5)
            # the normalised mean of normalised embeddings, not of raw ones
            raw = F.normalize(model.encode_text(ids).mean(0), dim=-1)
            assert not torch.allclose(W[k], raw, atol=1e-5)
        assert not torch.allclose(W[0], W[1], atol=1e-3)
        logits = clf(x)
        assert logits.shape == (4, 3)
        img = F.normalize(model.encode_image(x), dim=-1)
        assert torch.allclose(logits, math.exp(2.0) * img @ W.t(), atol=1e-5)
        assert "weights" in dict(clf.named_buffers())
        default = ZeroShotClassifier(model, ["cat"])  # "a photo of a cat." is truncated to fit, eos kept
        assert default.weights.shape == (1, D)
        assert DEFAULT_TEMPLATES and all("{}" in t for t in DEFAULT_TEMPLATES)


@pytest.mark.parametrize(
    ("classes", "templates", "word"),
    [
        (["cat"], ["a photo"], "{}"),
        (["cat"], ["a {}", "no slot"], "{}"),
        (["cat"], [], "template"),
        ([], ["a {}"], "classnames"),
    ],
    ids=["no_slot", "one_without_slot", "no_templates", "no_classes"],
)
def test_zero_shot_bad_arguments(classes: list[str], templates: list[str], word: str) -> None:
    model = make()
    model.tokenizer = tiny_tokenizer()
    with pytest.raises(ValueError) as err:
        ZeroShotClassifier(model, classes, templates)
    assert word in str(err.value)


def test_tokenize_without_tokenizer() -> None:
    model = make()
    assert model.tokenizer is None
    with pytest.raises(RuntimeError, match="tokenizer"):
        model.tokenize(["a cat"])
    with pytest.raises(RuntimeError, match="tokenizer"):
        ZeroShotClassifier(model, ["cat"], ["a {}"])


# ---------------------------------------------------------------------------------------------- config / registry


def test_clip_config_round_trip_and_errors() -> None:
    cfg = model_config("clip_test")
    assert isinstance(cfg, CLIPConfig)
    assert CLIPConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="vision"):
        CLIPConfig.from_dict({"text": {}})
    with pytest.raises(ValueError, match="bogus"):
        CLIPConfig.from_dict({**cfg.to_dict(), "text": {**cfg.to_dict()["text"], "bogus": 1}})
    bad = CLIPConfig(cfg.vision, TextConfig(**{**cfg.to_dict()["text"], "proj_dim": 16}))
    with pytest.raises(ValueError, match="proj_dim"):
        CLIP(bad)


def test_create_model_registry() -> None:
    names = list_models()
    assert "vit_test" in names and "clip_test" in names
    assert names == sorted(n for n in names if not n.startswith("clip")) + sorted(
        n for n in names if n.startswith("clip")
    )
    torch.manual_seed(0)
    vit = create_model("vit_test")
    assert isinstance(vit, VisionTransformer)
    with torch.no_grad():
        assert vit(images(2)).shape == (2, 10)
    assert vit.preprocess is not None and tuple(vit.preprocess.input_size) == (32, 32)
    clip = create_model("clip_test", vision={"depth": 1}, text={"context_length": 8})
    assert isinstance(clip, CLIP) and clip.visual.depth == 1 and clip.cfg.text.context_length == 8
    assert create_model("vit_test", num_classes=3).head.out_features == 3


def test_create_model_unknown_name() -> None:
    with pytest.raises(ValueError) as err:
        create_model("vit_nonexistent")
    msg = str(err.value)
    assert "vit_nonexistent" in msg
    for name in ("vit_test", "clip_test"):
        assert name in msg


@pytest.mark.parametrize("name", ["vit_test", "clip_test"])
def test_create_model_pretrained_true(name: str) -> None:
    with pytest.raises(ValueError) as err:
        create_model(name, pretrained=True)
    msg = str(err.value)
    assert "ships no weights" in msg and name in msg
