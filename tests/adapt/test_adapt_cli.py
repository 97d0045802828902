"""`vitkit adapt`: LoRA / VPT / CoOp on a tiny checkpoint, adapter files, one-line errors."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

import vitkit
from vitkit import frb
from vitkit.adapt import lora
from vitkit.cli import app

runner = CliRunner()
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def vit_ckpt(tmp_path_factory):
    model = vitkit.VisionTransformer(img_size=48, patch_size=12, embed_dim=32, depth=1, num_heads=2,
                                     num_classes=10, labels=list(frb.KNOWN_FONTS))
    return vitkit.save(model, tmp_path_factory.mktemp("ckpt") / "vit")


def test_adapt_lora_writes_a_loadable_adapter(vit_ckpt, tmp_path):
    r = runner.invoke(app, ["adapt", str(vit_ckpt), "--method", "lora", "--steps", "2", "--batch-size", "8",
                            "--pages", "8", "--out", str(tmp_path), "--parts", "qkv", "--rank", "4"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "adapter.safetensors").exists() and "trainable values" in r.output
    model = vitkit.load(vit_ckpt)
    model.head = torch.nn.Linear(32, 15)  # the adapter file carries the new 15-way head
    touched = lora.load_adapter(model, tmp_path / "adapter.safetensors")
    assert touched == ["blocks.0.attn.qkv"]
    assert model.blocks[0].attn.qkv.lora_A["default"].shape == (3, 4, 32)


def test_adapt_vpt(vit_ckpt, tmp_path):
    r = runner.invoke(app, ["adapt", str(vit_ckpt), "--method", "vpt", "--steps", "2", "--batch-size", "8",
                            "--pages", "8", "--fonts", "known", "--tokens", "3", "--deep", "--out", str(tmp_path)])
    assert r.exit_code == 0, r.output
    from safetensors.torch import load_file

    sd = load_file(str(tmp_path / "prompts.safetensors"))
    assert sd["vpt.tokens"].shape == (1, 3, 32) and sd["head.weight"].shape == (10, 32)


def test_adapt_coop(tmp_path, tiny_tokenizer):
    from vitkit.models.clip import CLIP, CLIPConfig, TextConfig
    from vitkit.models.vit import ViTConfig

    cfg = CLIPConfig(ViTConfig(img_size=(48, 48), patch_size=12, embed_dim=32, depth=1, num_heads=2, proj_dim=16,
                               pre_norm=True, family="clip"),
                     TextConfig(vocab_size=514, context_length=32, width=32, depth=1, num_heads=2, proj_dim=16,
                                eos_token_id=513))
    clip = CLIP(cfg)
    clip.tokenizer = tiny_tokenizer
    ckpt = vitkit.save(clip, tmp_path / "clip")
    r = runner.invoke(app, ["adapt", str(ckpt), "--method", "coop", "--steps", "2", "--pages", "8", "--tokens", "2",
                            "--out", str(tmp_path / "o")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "o" / "coop.safetensors").exists()


def test_adapt_errors(vit_ckpt, tmp_path):
    r = runner.invoke(app, ["adapt", str(vit_ckpt), "--method", "lora", "--targets", "to_q", "--steps", "1",
                            "--pages", "8", "--out", str(tmp_path)])
    assert r.exit_code == 2 and "to_q" in r.output and "matched no Linear layer" in r.output
    r = runner.invoke(app, ["adapt", str(vit_ckpt), "--method", "adapterfusion", "--out", str(tmp_path)])
    assert r.exit_code == 2 and "--method must be one of" in r.output
    r = runner.invoke(app, ["adapt", str(vit_ckpt), "--method", "coop", "--pages", "8", "--out", str(tmp_path)])
    assert r.exit_code == 2 and "needs a CLIP checkpoint" in r.output
