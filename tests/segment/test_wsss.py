"""The WSSS pipeline end to end on tiny settings, through the CLI and the Python API."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from vitkit.cli import app
from vitkit.segment.wsss import WSSSConfig, run_wsss


def _tiny(tmp_path, method: str, **kw) -> WSSSConfig:
    cfg = WSSSConfig(method=method, train=16, val=8, size=32, patch=8, dim=32, depth=2, heads=4, steps=2,
                     batch_size=8, scales=(1.0,), out_dir=str(tmp_path / method), progress=False, **kw)
    cfg.clip.steps, cfg.clip.batch_size, cfg.clip.dim, cfg.clip.depth = 2, 8, 32, 1
    cfg.head.epochs = 1
    return cfg


@pytest.mark.parametrize("method", ["cam", "more", "vpl"])
def test_each_method_runs_and_writes_metrics(tmp_path, method):
    m = run_wsss(_tiny(tmp_path, method))
    for key in ("pseudo_miou", "pseudo_miou_best", "val_miou", "cam_pseudo_miou"):
        assert 0.0 <= m[key] <= 1.0
    assert m["seed"] == 0 and m["method"] == method
    assert m["pseudo_miou_best"] >= m["pseudo_miou"] - 1e-9 or m["bg_threshold"] not in m["sweep"]
    assert set(m["per_class_iou"]) == {"background", "house", "tree", "car", "person", "flower", "boat", "fish",
                                       "mushroom", "lamp", "bottle"}
    saved = json.loads((tmp_path / method / "metrics.json").read_text())
    assert saved["val_miou"] == m["val_miou"]
    html = (tmp_path / method / "report.html").read_text()
    assert "Training scenes" in html and "data:image/png;base64," in html


def test_cli_wsss_and_resume(tmp_path):
    out = tmp_path / "cli"
    args = ["segment", "wsss", "--method", "cam", "--train", "32", "--val", "4", "--steps", "2", "--size", "32",
            "--out", str(out)]
    # the CLI keeps the default architecture; 32-px scenes with patch 8 keep it small
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "val mIoU" in " ".join(res.output.split()) and (out / "metrics.json").is_file()
    res = CliRunner().invoke(app, [*args, "--resume"])  # finished run: resumes at the last step
    assert res.exit_code == 0, res.output


def test_cli_more_code_recipe_is_recorded(tmp_path):
    args = ["segment", "wsss", "--method", "more", "--more-recipe", "code", "--train", "32", "--val", "4",
            "--steps", "2", "--size", "32", "--out", str(tmp_path)]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    more = json.loads((tmp_path / "metrics.json").read_text())["config"]["more"]
    assert more["w_ptc"] == 0.3 and more["lir_from_aux"] and not more["normalize_patches"]


@pytest.mark.parametrize("args, msg", [
    (["--method", "grabcut"], "method must be one of"),
    (["--train", "4"], "smaller than one batch"),
    (["--backbone", "/no/such/checkpoint"], "no/such"),
    (["--method", "more", "--more-recipe", "toco"], "MoRe recipe must be one of"),
])
def test_cli_bad_arguments_fail_with_one_line(tmp_path, args, msg):
    res = CliRunner().invoke(app, ["segment", "wsss", "--out", str(tmp_path), "--size", "32", "--train", "40",
                                   "--val", "2", "--steps", "1", *args])
    assert res.exit_code == 2 and msg in res.output and len(res.output.strip().splitlines()) == 1


def test_flip_augmentation_mirrors_width_not_channels():
    import torch

    from vitkit.segment.wsss import flip_images

    x = torch.arange(2 * 2 * 3 * 3, dtype=torch.uint8).view(2, 2, 3, 3)
    torch.manual_seed(0)
    y = flip_images(x.repeat(16, 1, 1, 1))
    for a, b in zip(x.repeat(16, 1, 1, 1), y, strict=True):
        assert torch.equal(a, b) or torch.equal(a.flip(1), b)
    assert any(not torch.equal(a, b) for a, b in zip(x.repeat(16, 1, 1, 1), y, strict=True))
