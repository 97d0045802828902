"""The FRB CLIP-style model: BPE tokenizer, soft contrastive loss, a short training run, page features."""

from __future__ import annotations

import pytest
import torch

from vitkit import frb
from vitkit.frb.clip import (
    FRBClipConfig,
    caption_words,
    font_tokenizer,
    page_features,
    soft_clip_loss,
    train_bpe,
    train_frb_clip,
)
from vitkit.frb.pages import frb_pages

pytestmark = pytest.mark.usefixtures("one_thread")


def test_bpe_merges_frequent_pairs_and_round_trips():
    vocab, merges = train_bpe(["low", "low", "lower", "newest", "newest", "widest"], 10)
    assert merges[0] in {("l", "o"), ("e", "s"), ("s", "t</w>")}
    assert max(vocab, key=vocab.get) == "<|endoftext|>"
    tok = font_tokenizer(FRBClipConfig(bpe_merges=300))
    for name in frb.FONT_NAMES:
        ids = tok(f"text written in the {name} font")["input_ids"][0]
        assert (ids == tok.eos_token_id).any()  # fits the context
        assert tok.decode(ids).strip() == f"text written in the {name} font".lower()
    assert len(tok.encode("font")) == 1  # frequent words become single tokens
    assert train_bpe(caption_words(), 50) == train_bpe(caption_words(), 50)  # deterministic


def test_soft_clip_loss_counts_same_label_pairs_as_positives():
    labels = torch.tensor([0, 0, 1])
    good = torch.tensor([[5.0, 5.0, -5.0], [5.0, 5.0, -5.0], [-5.0, -5.0, 5.0]])
    bad = torch.tensor([[5.0, -5.0, -5.0], [-5.0, 5.0, -5.0], [-5.0, -5.0, 5.0]])
    assert soft_clip_loss(good, labels) < soft_clip_loss(bad, labels)
    torch.testing.assert_close(soft_clip_loss(good, labels), torch.tensor(0.6931 * 2 / 3), atol=1e-3, rtol=0)


def test_short_training_run_and_page_features(tmp_path):
    samples = list(frb.train_split(12))
    pages, labels = frb_pages(samples, fonts=frb.KNOWN_FONTS)
    texts = [s.text for s in samples if s.font in frb.KNOWN_FONTS]
    cfg = FRBClipConfig(crop=48, patch=12, dim=32, depth=1, heads=2, text_width=32, text_depth=1, text_heads=2,
                        embed_dim=16, steps=1, batch_size=8, bpe_merges=100)
    clip = train_frb_clip(cfg, pages, labels, texts, out_dir=tmp_path)
    f = page_features(clip, pages[:3])
    assert f.shape == (3, 16) and torch.isfinite(f).all()
    ids = clip.tokenize(["text written in the Lobster font"])
    assert clip.encode_text(ids).shape == (1, 16)
