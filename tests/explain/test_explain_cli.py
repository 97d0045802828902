"""``vitkit explain``."""

from __future__ import annotations

import json

import numpy as np
import torch
from PIL import Image
from typer.testing import CliRunner

import vitkit
from vitkit.cli import app

runner = CliRunner()


def test_explain_cli_writes_overlays_and_scores(tmp_path) -> None:
    torch.manual_seed(0)
    vit = vitkit.create_model("vit_test", labels=[f"c{i}" for i in range(10)])
    vitkit.save(vit, tmp_path / "vit")
    vitkit.save(vitkit.create_model("hybrid_test"), tmp_path / "hyb")
    img = tmp_path / "a.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(img)

    res = runner.invoke(app, ["explain", str(tmp_path / "vit"), str(img), "--method", "rollout,gradcam,chefer",
                              "--class", "c3", "--out", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    rec = json.loads((tmp_path / "out" / "scores.json").read_text())
    assert [r["method"] for r in rec] == ["rollout", "gradcam", "chefer"]
    assert all(r["class"] == "c3" and 0 < r["probability"] < 1 for r in rec)
    assert [(r["forwards"], r["backwards"]) for r in rec] == [(1, 0), (1, 1), (1, 1)]
    for r in rec:
        assert Image.open(r["overlay"]).size == (32, 32)

    res = runner.invoke(app, ["explain", str(tmp_path / "hyb"), str(img), "--out", str(tmp_path / "out2")])
    assert res.exit_code == 0, res.output
    (rec,) = json.loads((tmp_path / "out2" / "scores.json").read_text())
    assert rec["method"] == "evidence" and rec["map_grid"] == [8, 8]

    res = runner.invoke(app, ["explain", str(tmp_path / "vit"), str(img), "--class", "zebra", "--out", str(tmp_path)])
    assert res.exit_code == 2 and "zebra" in res.output
    res = runner.invoke(app, ["explain", str(tmp_path / "vit"), str(img), "-m", "evidence", "--out", str(tmp_path)])
    assert res.exit_code == 2 and "no evidence maps" in res.output


def test_report_section_renders_metrics_and_overlays() -> None:
    from vitkit.explain.examples import explain_examples
    from vitkit.explain.report import explanation_section
    from vitkit.report.html import Report

    model = vitkit.create_model("vit_test").eval()
    x = torch.randn(2, 3, 32, 32)
    ex = explain_examples(model, x, ["rollout", "gradcam"], ["a <b>", "b"])
    assert len(ex) == 2 and set(ex[0].maps) == {"rollout", "gradcam"} and ex[0].image.shape == (32, 32, 3)
    sec = explanation_section({"vit/rollout": {"pointing": 0.5, "del_blur": 0.25, "seconds_median": 0.012}}, ex)
    assert "pointing game" in sec.html and "0.500" in sec.html and "12.0" in sec.html
    assert sec.html.count("<img") == 6 and "a &lt;b&gt;" in sec.html
    assert "Explanations" in Report("t").add(sec).render()


def test_info_models_and_module_entry_point_know_the_hybrid() -> None:
    import subprocess
    import sys

    res = runner.invoke(app, ["info", "hybrid_test"])
    assert res.exit_code == 0 and "evidence maps" in res.output
    res = runner.invoke(app, ["models"])
    assert res.exit_code == 0 and "hybrid_test" in res.output
    # `python -m vitkit.cli` imports vitkit.cli twice (as __main__ too): the explain command must not cycle
    p = subprocess.run([sys.executable, "-m", "vitkit.cli", "explain", "--help"], capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0 and "--method" in p.stdout
