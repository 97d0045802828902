"""Pretraining runs: exact resume after a crash, a checkpoint vitkit.load reads as a plain ViT, the CLI."""

import pytest
import torch
from typer.testing import CliRunner

import vitkit
from vitkit.cli import app
from vitkit.pretrain import run as run_mod
from vitkit.pretrain.run import PretrainConfig, run_pretrain


def tiny(out, method="fsfm", steps=4) -> PretrainConfig:
    return PretrainConfig(method=method, n_images=16, size=16, patch=4, embed_dim=32, depth=1, num_heads=2,
                          steps=steps, batch_size=8, decoder_dim=32, decoder_depth=1, warmup_steps=1, ckpt_every=2,
                          out_dir=str(out), progress=False)


def test_fsfm_resumes_exactly_after_a_crash(tmp_path, monkeypatch):
    full = run_pretrain(tiny(tmp_path / "a"))
    calls = {"n": 0}
    real = run_mod.loss_fn

    def crashing(method):
        inner = real(method)

        def f(net, batch):
            calls["n"] += 1
            if calls["n"] == 3:  # during step 3, after the step-2 checkpoint: like kill -9
                raise RuntimeError("killed")
            return inner(net, batch)
        return f

    monkeypatch.setattr(run_mod, "loss_fn", crashing)
    with pytest.raises(RuntimeError, match="killed"):
        run_pretrain(tiny(tmp_path / "b"))
    monkeypatch.setattr(run_mod, "loss_fn", real)
    resumed = run_pretrain(tiny(tmp_path / "b"), resume=True)
    assert resumed["steps"] == full["steps"] == 4
    a = torch.load(tmp_path / "a" / "train" / "checkpoint.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "b" / "train" / "checkpoint.pt", weights_only=True)["model"]
    assert int(b["ema_step"]) == 4
    for k in a:  # online, decoders and EMA target all bit-identical
        assert torch.equal(a[k], b[k]), k


def test_encoder_checkpoint_is_a_plain_vit(tmp_path):
    run_pretrain(tiny(tmp_path, method="mae", steps=2))
    enc = vitkit.load(tmp_path / "encoder")
    assert type(enc).__name__ == "VisionTransformer" and enc.embed_hook is None
    assert enc(torch.rand(1, 3, 16, 16)).shape == (1, 32)


def test_cli_pretrain(tmp_path):
    r = CliRunner().invoke(app, ["pretrain", "mae", "--data", "scenes", "--steps", "2", "--out", str(tmp_path),
                                 "--n", "8", "--size", "16", "--patch", "4", "--dim", "32", "--depth", "1",
                                 "--batch", "4"])
    assert r.exit_code == 0, r.output
    assert "encoder" in r.output and (tmp_path / "encoder" / "model.safetensors").is_file()
    r = CliRunner().invoke(app, ["pretrain", "fsfm", "--data", str(tmp_path / "nowhere"), "--steps", "1",
                                 "--out", str(tmp_path / "x")])
    assert r.exit_code == 2 and "neither" in r.output
