"""benchmarks/quantization.py --size vitb|tiny: the presets, the time plan, the table, the argument checks
and the tiny run of the vitb code path end to end (CPU; on CUDA with -m gpu)."""

from __future__ import annotations

import json

import pytest
import torch

from vitkit.frb.recipe import build_model
from vitkit.quant.evaluate import fit_plan
from vitkit.quant.report import grid_table

pytestmark = pytest.mark.usefixtures("one_thread")

def test_vitb_preset_is_vit_b_sized(qb):
    m = qb.VITB.model
    assert (m.dim, m.depth, m.heads, m.crop, m.patch) == (768, 12, 12, 96, 8)
    with torch.device("meta"):
        model = build_model(m)
    assert model.grid_size == (12, 12) and model.num_prefix_tokens == 1  # 145 tokens
    blocks = sum(p.numel() for p in model.blocks.parameters())
    assert 84e6 < blocks < 86e6  # ViT-B/16's 12 blocks: 85.1 M
    assert qb.VITB.synth_steps == 1000 and qb.VITB.recon_steps == 100 and qb.VITB.n_calib == 32
    assert m.crop <= 240  # the demo's pages are 440×240


def test_configurations_put_w4a4_first(qb):
    cfgs = qb.configurations(qb.VITB)
    assert len(cfgs) == 24 and len(set(cfgs)) == 24
    assert {c[:2] for c in cfgs[:8]} == {(4, 4)} and {c[2] for c in cfgs[:8]} == {"token", "tensor"}
    assert [c[3] for c in cfgs[:4]] == list(qb.SOURCES) and {c[4] for c in cfgs} == {"mse"}
    extra = qb.extra_configurations(qb.VITB)
    assert extra == [(4, 4, "tensor", s, "minmax") for s in qb.SOURCES]
    assert qb.extra_configurations(qb.VITB, method="minmax") == []  # the grid already uses min-max


def test_fit_plan_lowers_training_then_synthesis_and_never_raises():
    costs, asked = {"train": 0.05, "synth": 0.1}, {"train": 3000, "synth": 1000}
    assert fit_plan(1000, costs, asked) == asked  # 250 s: fits
    assert fit_plan(200, costs, asked) == {"train": 2000, "synth": 1000}  # 100 s of synthesis leave 100 s
    assert fit_plan(150, costs, asked) == {"train": 1500, "synth": 750}  # training at 50 %, synthesis fits
    assert fit_plan(90, costs, asked) == {"train": 800, "synth": 500}  # synthesis at 50 % (50 s), training 40 s
    assert fit_plan(1, costs, asked) == {"train": 750, "synth": 200}  # both at their last floors
    assert fit_plan(1e9, costs, asked) == asked


def test_table_shows_the_target_gaps(qb):
    rows = [{"bits": "fp32", "source": "-", "crop_acc": 0.9}]
    for src, acc in (("real", 0.8), ("noise", 0.5), ("psaq", 0.6), ("spdfq", 0.75)):
        rows.append({"bits": "W4A4", "w": 4, "a": 4, "granularity": "tensor", "method": "mse", "source": src,
                     "crop_acc": acc, "agree_fp32": acc + 0.05})
    rows.append({"bits": "W4A4", "w": 4, "a": 4, "granularity": "tensor", "method": "minmax", "source": "noise",
                 "crop_acc": 0.3})
    rows.append({"bits": "W8A8", "w": 8, "a": 8, "granularity": "token", "method": "mse", "source": "real",
                 "crop_acc": 0.9})
    res = {"rows": rows, "machine": {"gpu": "H100", "torch": "2.11", "cuda": "13.0", "date": "d", "cpu": "x",
                                     "cpu_count": 16, "threads": 8},
           "preset": "vitb", "val_crops": 1200, "n_calib": 32, "synth_steps": 1000, "synth_precision": "TF32",
           "train_steps": 3000, "train_precision": "bf16 autocast", "eval_precision": "IEEE fp32",
           "skipped": ["W8A8 per tensor real"], "calib_method": "mse"}
    text = grid_table(res)
    assert "| W4A4 | per tensor | 80.0% | 50.0% | 60.0% | 75.0% | +15.0 | -5.0 |" in text
    assert "| W8A8 | per token | 90.0% | – | – | – | – | – |" in text
    assert "| W4A4 | per tensor, minmax | – | 30.0% | – | – | – | – |" in text
    assert "fp32 crop accuracy 90.0% on 1200 validation crops" in text and "W8A8 per tensor real" in text
    assert "| W4A4 | per tensor | 85.0% | 55.0% | 65.0% | 80.0% |" in text  # agreement with fp32


def test_argument_errors_name_the_option(qb, capsys):
    for argv, msg in ((["--size", "vitb", "--part", "speed"], "--size vitb"),
                      (["--size", "tiny", "--time-budget", "0"], "--time-budget"),
                      (["--size", "tiny", "--train-steps", "0"], "--train-steps"),
                      (["--size", "tiny", "--lr", "-1"], "--lr")):
        with pytest.raises(SystemExit):
            qb.main(argv)
        assert msg in capsys.readouterr().err
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit):
            qb.main(["--size", "tiny", "--device", "cuda"])
        assert "torch.cuda.is_available() is False" in capsys.readouterr().err


def _tiny_run(qb, tmp_path, device: str) -> dict:
    out, work = tmp_path / "out", tmp_path / "work"
    res = qb.main(["--size", "tiny", "--device", device, "--threads", "1", "--time-budget", "300", "--out", str(out),
                   "--work", str(work)])
    rows = res["rows"]
    assert rows[0]["bits"] == "fp32" and len(rows) == 1 + 24 + 4 and not res["skipped"]
    assert [(r["w"], r["a"], r["granularity"], r["source"], r["method"]) for r in rows[1:]] == (
        qb.configurations(qb.TINY) + qb.extra_configurations(qb.TINY))
    assert all(0 <= r["crop_acc"] <= 1 for r in rows) and all(0 <= r["agree_fp32"] <= 1 for r in rows[1:])
    assert all(len(r["recon_mse"]) == qb.TINY.model.depth and all(a <= b for b, a in r["recon_mse"])
               for r in rows[1:])  # reconstruction never leaves a block worse
    assert res["plan"]["train_steps"] <= qb.TINY.model.steps and res["plan"]["synth_steps"] <= qb.TINY.synth_steps
    assert res["val_crops"] == 4 * qb.TINY.val_pages and res["training"]["steps"] == res["train_steps"]
    assert sorted(p.name for p in out.iterdir()) == ["quant_tiny.json", "quant_tiny.md"]  # the weights stay in work
    assert (work / "model").is_dir() and len(list((work / "calib").iterdir())) == 4
    saved = json.loads((out / "quant_tiny.json").read_text())
    assert saved["rows"] == json.loads(json.dumps(rows))
    table = (out / "quant_tiny.md").read_text()
    assert table == grid_table(saved) + "\n"  # the table regenerates from the recorded JSON alone
    assert table.count("| W4A4 | per token |") == 2 and table.count("| W4A4 | per tensor |") == 2  # both tables
    assert table.count("| W4A4 | per tensor, minmax |") == 2 and table.count("| W8A8 |") == 4
    spread = res["channel_spread"]  # is there an outlier channel for W4A4 to struggle with? (in the table's head)
    assert len(spread["per_layer"]) == 4 * qb.TINY.model.depth and min(spread["per_layer"].values()) >= 1.0
    assert list(spread["max_by_kind"]) == ["qkv", "proj", "fc1", "fc2"] and "widest input channel" in table
    return res


def test_tiny_runs_the_vitb_code_path_end_to_end(qb, tmp_path):
    res = _tiny_run(qb, tmp_path, "cpu")
    assert res["machine"]["gpu"] is None and res["synth_precision"] == "fp32"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_tiny_on_cuda(qb, tmp_path):
    res = _tiny_run(qb, tmp_path, "cuda")
    assert res["machine"]["gpu"] and res["synth_precision"] == "TF32" and res["train_precision"] == "bf16 autocast"
