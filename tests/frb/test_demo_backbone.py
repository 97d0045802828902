"""`vitkit demo --backbone NAME`: a tiny random checkpoint cached under the real name stands in for the weights."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from typer.testing import CliRunner

from vitkit import VisionTransformer, frb
from vitkit.cli import app
from vitkit.frb.recipe import DemoConfig, build_model, train_crop_classifier

NAME = "dinov2-s14"  # the demo accepts only named sources; the cache holds a tiny model under this name


@pytest.fixture()
def tiny_cached(cache_tiny_pretrained):
    return cache_tiny_pretrained(NAME, dim=32, depth=2)


def test_default_demo_config_is_unchanged_by_the_option():
    cfg = DemoConfig()
    assert cfg.backbone is None and cfg.sections and cfg.crop == 96 and cfg.lr == 2e-3 and cfg.steps == 4000
    assert type(build_model(cfg)) is VisionTransformer and build_model(cfg).patch_size == cfg.patch
    b = cfg.for_backbone(NAME)
    assert (b.backbone, b.crop, b.batch_size, b.steps, b.robustness, b.sections) == (NAME, 98, 32, 300, False, False)
    assert DemoConfig.quick().for_backbone(NAME).steps == 40  # a shorter run stays short


def test_backbone_model_is_built_from_the_cached_checkpoint(tiny_cached, tmp_path, one_thread):
    cfg = DemoConfig.quick().for_backbone(NAME)
    model = build_model(cfg)
    assert model.cfg.img_size == (98, 98) and model.patch_size == 14 and model.cfg.num_classes == 15
    assert model.cfg.labels == frb.FONT_NAMES and model.embed_dim == 32 and model.depth == 2
    sd, ref = model.state_dict(), tiny_cached.state_dict()
    for k in ("blocks.0.attn.qkv.weight", "blocks.1.mlp.fc2.weight", "blocks.1.ls2.gamma", "norm.weight"):
        assert torch.equal(sd[k], ref[k]), k
    assert model.pos_embed.shape[1] == 1 + 7 * 7  # resampled once to the crop's 7×7 grid
    # a couple of real training steps through the demo's own loop on ink-like pages
    g = torch.Generator().manual_seed(0)
    pages = (torch.rand(4, 1, 120, 160, generator=g) > 0.1).float()
    labels = torch.tensor([0, 1, 2, 3])
    cfg = replace(DemoConfig.quick(progress=False, out_dir=str(tmp_path / "run")).for_backbone(NAME), steps=2,
                  batch_size=4)
    trained, result = train_crop_classifier(cfg, pages, labels, pages, labels)
    assert result.steps == 2 and not trained.training
    assert not torch.equal(trained.head.weight, build_model(cfg).head.weight)  # the head moved


def test_demo_with_backbone_not_cached_fails_in_one_line_before_any_work(empty_cache, tmp_path):
    out = tmp_path / "demo"
    r = CliRunner().invoke(app, ["demo", "--quick", "--backbone", NAME, "--out", str(out)])
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert f"vitkit weights get {NAME}" in r.output.replace("\n", "")
    assert not (out / "frb").exists()  # failed before generating the benchmark
    bad = CliRunner().invoke(app, ["demo", "--quick", "--backbone", "no-such-net", "--out", str(out)])
    assert bad.exit_code == 2 and "unknown backbone" in bad.output and NAME in bad.output.replace("\n", "")
    with pytest.raises(FileNotFoundError, match=f"vitkit weights get {NAME}"):
        build_model(DemoConfig().for_backbone(NAME))


def test_demo_help_names_the_option():
    r = CliRunner().invoke(app, ["demo", "--help"])
    assert r.exit_code == 0 and "--backbone" in r.output and "weights get" in r.output.replace("\n", " ")
