"""`vitkit ood fit|score`: features files, a tiny font classifier on FRB pages, one-line errors."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

import vitkit
from vitkit import frb
from vitkit.cli import app
from vitkit.ood.detectors import load_detector

runner = CliRunner()


@pytest.fixture(scope="module")
def feats(tmp_path_factory):
    d = tmp_path_factory.mktemp("feats")
    g = torch.Generator().manual_seed(0)
    y = torch.arange(120) % 3
    x = torch.randn(3, 8, generator=g)[y] * 3 + torch.randn(120, 8, generator=g)
    save_file({"features": x, "labels": y, "logits": torch.randn(120, 3, generator=g)}, str(d / "train.safetensors"))
    save_file({"features": torch.randn(10, 5)}, str(d / "other.safetensors"))
    return d


@pytest.mark.parametrize("name,opts", [("knn", ["-o", "k=3"]), ("molar", ["-o", "budget=6", "-o", "steps=5"]),
                                       ("energy", [])])
def test_fit_and_score_features(feats, name, opts, tmp_path):
    det = tmp_path / "d.safetensors"
    r = runner.invoke(app, ["ood", "fit", "--detector", name, "--features", str(feats / "train.safetensors"),
                            "--out", str(det), *opts])
    assert r.exit_code == 0, r.output
    assert load_detector(det).name == name
    r = runner.invoke(app, ["ood", "score", str(det), "--features", str(feats / "train.safetensors"),
                            "--out", str(tmp_path / "s.json"), "--threshold", "0"])
    assert r.exit_code == 0, r.output
    assert len(json.loads((tmp_path / "s.json").read_text())["scores"]) == 120


def test_fit_from_model_and_score_images(tmp_path, one_thread):
    fonts = list(frb.KNOWN_FONTS[:3])
    ckpt = vitkit.save(vitkit.create_model("vit_test", num_classes=3, labels=fonts), tmp_path / "m")
    det = tmp_path / "knn.safetensors"
    r = runner.invoke(app, ["ood", "fit", "--model", str(ckpt), "--detector", "knn", "-o", "k=2",
                            "--pages", "15", "--crops-per-page", "4", "--out", str(det)])
    assert r.exit_code == 0, r.output
    assert load_detector(det).bank.shape == (12, 64)  # 15 pages: one per font, 3 in these fonts × 4 crops
    page = tmp_path / "page.png"
    frb.render_text("quick brown fox", frb.UNKNOWN_FONTS[0]).save(page)
    r = runner.invoke(app, ["ood", "score", str(det), str(page), "--model", str(ckpt), "--threshold", "0.5",
                            "--out", str(tmp_path / "s.json")])
    assert r.exit_code == 0, r.output
    assert "known" in r.output  # the verdict column ("known" or "unknown")
    res = json.loads((tmp_path / "s.json").read_text())
    assert res["images"] == [str(page)] and -1.0 <= res["scores"][0] <= 1.0


def test_errors(feats, tmp_path):
    det = tmp_path / "d.safetensors"
    r = runner.invoke(app, ["ood", "fit", "--detector", "knn", "--out", str(det)])
    assert r.exit_code == 2 and "exactly one of --model" in r.output
    r = runner.invoke(app, ["ood", "fit", "--detector", "molar", "--features", str(feats / "train.safetensors"),
                            "-o", "budget=500", "--out", str(det)])
    assert r.exit_code == 2 and "budget=500 is larger than the 120" in r.output
    r = runner.invoke(app, ["ood", "fit", "--detector", "nope", "--features", str(feats / "train.safetensors"),
                            "--out", str(det)])
    assert r.exit_code == 2 and "unknown detector 'nope'" in r.output
    runner.invoke(app, ["ood", "fit", "-d", "knn", "--features", str(feats / "train.safetensors"), "--out", str(det)])
    r = runner.invoke(app, ["ood", "score", str(det), "--features", str(feats / "other.safetensors")])
    assert r.exit_code == 2 and "dimension 8" in r.output
    r = runner.invoke(app, ["ood", "fit", "-d", "knn", "-o", "k", "--features", str(feats / "train.safetensors"),
                            "--out", str(det)])
    assert r.exit_code == 2 and "key=value" in r.output
    ckpt = vitkit.save(vitkit.create_model("vit_test"), tmp_path / "m")
    r = runner.invoke(app, ["ood", "fit", "--model", str(ckpt), "--out", str(det)])
    assert r.exit_code == 2 and "not FRB font names" in r.output
