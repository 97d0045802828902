"""benchmarks/token_reduction.py: the presets, the tiny smoke path of the GPU (vitb) code path, and the
vitb method rows on a 12-block encoder with ViT-B/16's token grid (narrow width, CPU)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from vitkit.frb.recipe import DemoConfig
from vitkit.models.vit import VisionTransformer
from vitkit.reduce import evaluate as E
from vitkit.reduce import evit
from vitkit.reduce import experiment as X
from vitkit.reduce.consumer import ConsumerConfig, TokenSetConsumer

pytestmark = pytest.mark.usefixtures("one_thread")

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "token_reduction.py"


def test_small_preset_is_the_cpu_setting_of_the_recorded_figures(tr):
    p = tr.SMALL
    assert p.enc == DemoConfig(crop=96, patch=12, dim=64, depth=4, heads=4, steps=1500, batch_size=64, lr=2e-3, seed=0)
    assert (p.pages.size, p.bench_pages.size, p.bench_pages.block_width) == ((288, 288), (192, 192), (0.45, 0.75))
    assert (p.n_train, p.n_val, p.n_test, p.consumer_steps, p.consumer_batch, p.batch, p.repeats) == (
        1500, 150, 600, 900, 16, 8, 7)
    rows = tr.methods(p, {})
    assert list(rows) == ["dense", "HiRED 20%", "HiRED 40%", "HiRED-early 20%", "HiRED 20% α=0.25",
                          "HiRED-early 20% α=0.25", "HiRED-early 20% @block 2", "EViT keep 0.5", "EViT keep 0.7"]
    assert rows["HiRED-early 20%"][1].select_layer == 1 and rows["EViT keep 0.5"][1].layers == (1, 2)
    assert list(p.tome_candidates) == ["ToMe r=8", "ToMe r=12", "ToMe r=[24,14,8,4]", "ToMe r=[32,12,6,2]",
                                       "ToMe r=[32,16,8,4]"]


def test_vitb_preset_geometry(tr):
    p = tr.VITB
    assert (p.enc.crop, p.enc.patch, p.enc.dim, p.enc.depth, p.enc.heads) == (224, 16, 768, 12, 12)
    assert p.bench_pages.size == (448, 448) and p.consumer == dict(dim=768, depth=8, heads=12) and p.batch >= 32
    rows = tr.methods(p, {})
    assert rows["HiRED 20%"][1].layers(12) == (0, 10)  # phase 2 at the second-to-last block
    assert rows["HiRED-early 20%"][1].select_layer == 5 and "HiRED-early 20% @block 10" in rows
    assert rows["EViT keep 0.5"][1].layers == (3, 6, 9)


def test_vitb_rows_run_on_a_12_block_encoder_with_vitb_token_grid(tr):
    """Every vitb row (ToMe candidates included) applies and runs on 448-px pages with a 224/16 encoder."""
    enc = VisionTransformer(img_size=224, patch_size=16, embed_dim=24, depth=12, num_heads=2, num_classes=15).eval()
    cons = TokenSetConsumer(ConsumerConfig(in_dim=24, dim=16, depth=1, heads=2, num_partitions=5, grid=(14, 14))).eval()
    rows = {**tr.methods(tr.VITB, {}), **{n: (tr.tome, c) for n, c in tr.VITB.tome_candidates.items()}}
    x = torch.rand(2, 3, 448, 448) * 2 - 1
    res = E.throughput(enc, cons, rows, x, tr.GRID, repeats=1, dtype=torch.bfloat16)
    assert res["dense"]["tokens"] == 5 * 196
    assert res["HiRED 20%"]["tokens"] == res["HiRED-early 20%"]["tokens"] == 196  # ⌊0.2 · 980⌋
    assert all(0 < r["tokens"] < 5 * 196 for n, r in res.items() if n != "dense")
    assert all(b.token_hook is None and b.attn.readout is None for b in enc.blocks)


def test_deep_preset_is_small_geometry_with_vitb_layer_choices_and_every_row_runs(tr):
    """deep = small's pages, crops and consumer with a 12-block encoder; every row (ToMe candidates included:
    their schedules must fit 64 tokens per partition over 12 blocks) applies and runs on 192-px pages."""
    p, s = tr.DEEP, tr.SMALL
    assert (p.enc.crop, p.enc.patch, p.enc.dim, p.enc.depth) == (96, 12, 64, 12)
    assert (p.pages, p.bench_pages, p.consumer) == (s.pages, s.bench_pages, s.consumer)
    assert (p.early_layer, p.evit_layers) == (tr.VITB.early_layer, tr.VITB.evit_layers)
    enc = VisionTransformer(img_size=96, patch_size=12, embed_dim=16, depth=12, num_heads=2, num_classes=15).eval()
    cons = TokenSetConsumer(ConsumerConfig(in_dim=16, dim=16, depth=1, heads=2, num_partitions=5, grid=(8, 8))).eval()
    rows = {**tr.methods(p, {}), **{n: (tr.tome, c) for n, c in p.tome_candidates.items()}}
    assert "HiRED-early 20% @block 10" in rows
    res = E.throughput(enc, cons, rows, torch.rand(2, 3, 192, 192) * 2 - 1, tr.GRID, repeats=1)
    assert res["dense"]["tokens"] == 5 * 64 and res["HiRED-early 20%"]["tokens"] == 64
    assert all(0 < r["tokens"] < 5 * 64 for n, r in res.items() if n != "dense")


def test_tiny_smoke_runs_the_gpu_code_path_end_to_end(tr, tmp_path):
    """--size tiny with bf16 autocast, a time budget and an extra consumer: every stage, results into --out
    (at most 7 files: the GPU machine returns 8, one is the log), caches and weights into --work."""
    out, work = tmp_path / "out", tmp_path / "work"
    res = tr.main(["--size", "tiny", "--dtype", "bf16", "--time-budget", "300", "--out", str(out), "--work",
                   str(work), "--extra-consumer", "HiRED-early 20%", "--also", "ToMe r=[2,1,0,0,0,0,0,0,0,0,0,0]",
                   "--consumer-dim", "48", "--consumer-heads", "4"])
    rows = res["rows"]
    assert rows["ToMe r=[2,1,0,0,0,0,0,0,0,0,0,0]"]["tokens_per_page"] == 5 * (16 - 3)  # --also: one more row, here a ToMe schedule
    assert list(rows)[:9] == list(tr.methods(tr.TINY, {})) and res["tome_choice"] in tr.TINY.tome_candidates
    assert rows["dense"]["tokens_per_page"] == 5 * 16 and rows["HiRED 20%"]["tokens_per_page"] == 16
    assert all(r["e2e_ips"] > 0 and r["consumer_ips"] > 0 and 0 <= r["accuracy"] <= 1 and r["peak_mib"] > 0
               for r in rows.values())
    assert rows["dense"]["e2e_speedup"] == 1.0 and res["test_pages"] == tr.TINY.n_test
    for r in rows.values():  # per-page results behind each accuracy, and the paired error of Δ against dense
        assert len(r["correct"]) == tr.TINY.n_test and r["correct"].count("1") / tr.TINY.n_test == r["accuracy"]
        assert r["accuracy_delta_se_pts"] >= 0
    assert rows["dense"]["accuracy_delta_se_pts"] == 0.0
    assert res["machine"]["dtype"] == "bf16 autocast" and res["machine"]["preset"] == "tiny"
    assert res["consumer_summary"]["steps"] == tr.TINY.consumer_steps
    # --consumer-dim/--consumer-heads: a consumer wider than the encoder (width 32), read back by the bench
    assert res["consumer_summary"]["config"]["dim"] == 48 and res["consumer_summary"]["config"]["heads"] == 4
    assert res["consumer_summary"]["config"]["depth"] == tr.TINY.consumer["depth"]
    assert res["extra"]["consumer"] == "consumer_hired_early_20"
    extra = json.loads((out / "bench_consumer_hired_early_20.json").read_text())
    assert extra["consumer_summary"]["reduced_from"] == ["HiRED-early 20%"] and set(extra["rows"]) == set(rows)
    assert extra["tome_choice"] == res["tome_choice"] and extra["tome_probe"] is None  # the same rows, not re-probed
    files = {f.name for f in out.iterdir()}
    assert files == {"bench_consumer.json", "table_consumer.md", "bench_consumer_hired_early_20.json",
                     "table_consumer_hired_early_20.md", "plan.json", "encoder_summary.json", "token_reduction.png"}
    assert (work / "encoder" / "model").is_dir() and (work / "consumer" / "consumer.pt").is_file()
    assert json.loads((out / "encoder_summary.json").read_text())["steps"] == tr.TINY.enc.steps
    plan = json.loads((out / "plan.json").read_text())
    assert plan["encoder_steps"] <= tr.TINY.enc.steps and plan["encoder_compute_s"] > 0 and plan["encoder_data_s"] > 0
    assert plan["encoder_s_per_step"] >= max(plan["encoder_compute_s"], plan["encoder_data_s"])
    table = (out / "table_consumer.md").read_text()
    assert table.startswith("CPU (") and "| HiRED-early 20% |" in table
    (out / "table_consumer.md").unlink()  # --stage plot: the table again from the recorded JSON alone
    tr.main(["--size", "tiny", "--stage", "plot", "--out", str(out), "--work", str(work)])
    assert (out / "table_consumer.md").read_text() == table


@pytest.mark.parametrize("argv, says", [
    (["--consumer-dim", "50", "--consumer-heads", "4"], "not divisible by heads 4"),
    (["--consumer-depth", "0"], "depth must be ≥ 1"),
    (["--consumer-dim", "64", "--stage", "bench"], "with --stage consumer or all"),
])
def test_bad_consumer_sizes_fail_before_any_training(tr, tmp_path, capsys, argv, says):
    with pytest.raises(SystemExit):
        tr.main(["--size", "tiny", "--out", str(tmp_path), *argv])
    assert says in capsys.readouterr().err and not (tmp_path / "encoder").exists()


def test_a_misspelt_method_fails_before_any_training(tr, tmp_path, capsys):
    with pytest.raises(SystemExit):
        tr.main(["--size", "tiny", "--extra-consumer", "HiRED early", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert "--extra-consumer 'HiRED early'" in err and "HiRED-early 20%" in err
    assert not (tmp_path / "encoder").exists()


def test_extra_rows_by_name_parse_tome_schedules_and_evit_rates(tr):
    run = X.Run(preset=tr.DEEP)
    mod, cfg = X.method_by_name(run, "EViT keep 0.6", "--also")
    assert mod is evit and cfg.keep_rate == 0.6 and cfg.layers == (3, 6, 9)
    mod, cfg = X.method_by_name(run, "ToMe r=[4,2]", "--also")
    assert mod is tr.tome and cfg.r == [4, 2]
    for bad in ("EViT keep 1.5", "EViT keep half", "ToMe r=x"):
        with pytest.raises(ValueError, match=r"--also .*EViT keep <rate in \(0, 1\]>"):
            X.method_by_name(run, bad, "--also")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown without CUDA")
def test_cuda_requested_without_cuda_is_an_error(tr, tmp_path, capsys):
    with pytest.raises(SystemExit):
        tr.main(["--size", "tiny", "--device", "cuda", "--out", str(tmp_path)])
    assert "--device cuda" in capsys.readouterr().err


def test_time_budget_needs_stage_all(tr, tmp_path, capsys):
    with pytest.raises(SystemExit):
        tr.main(["--size", "tiny", "--stage", "bench", "--time-budget", "60", "--out", str(tmp_path)])
    assert "--time-budget" in capsys.readouterr().err


def test_plot_is_optional(tr, tmp_path, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib → ImportError
    rows = {"dense": {"e2e_ips": 1.0, "accuracy": 0.5}}
    assert tr.plot({"consumer": rows}, tmp_path / "p.png") is False
    assert "matplotlib is not installed" in caplog.text and not (tmp_path / "p.png").exists()


def test_script_imports_without_matplotlib_rich_typer():
    """The GPU machine may lack them: importing the benchmark (and vitkit.demo) must not need them."""
    code = (
        "import sys, importlib.abc, importlib.util\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        if name.split('.')[0] in ('matplotlib', 'rich', 'typer'):\n"
        "            raise ImportError('blocked ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        f"spec = importlib.util.spec_from_file_location('tr', {str(SCRIPT)!r})\n"
        "m = importlib.util.module_from_spec(spec); sys.modules['tr'] = m; spec.loader.exec_module(m)\n"
        "print('ok')\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]


def _train_encoder_and_consumer(tr, tmp_path, device: str) -> None:
    """The engine puts the models on CUDA when there is one: the consumer's subsets and both evaluations must
    follow (tokens given on ``device``)."""
    from vitkit.engine import TrainConfig
    from vitkit.frb.recipe import train_crop_classifier
    from vitkit.reduce.consumer import train_consumer

    engine = "cuda" if torch.cuda.is_available() else "cpu"
    grey, y = X.render_pages("train", 16, tr.TINY.pages)
    cfg = DemoConfig(crop=32, patch=8, dim=32, depth=2, heads=2, steps=3, batch_size=8, out_dir=str(tmp_path / "e"),
                     progress=False)
    enc, res = train_crop_classifier(cfg, grey, y, grey[:4], y[:4])
    assert next(enc.parameters()).device.type == engine and "val_crop_accuracy" in res.history[-1]
    tok = torch.randn(16, 20, 32, device=device)
    part, pos = torch.zeros(20, dtype=torch.long, device=device), torch.zeros(20, 2, dtype=torch.long, device=device)
    ccfg = ConsumerConfig(in_dim=32, dim=16, depth=1, heads=2, num_partitions=1, grid=(4, 5))
    tcfg = TrainConfig(epochs=10, max_steps=3, batch_size=8, out_dir=str(tmp_path / "c"), progress=False, eval_every=3)
    model, res = train_consumer(tok, y, part, pos, ccfg, tcfg, val=(tok[:4], y[:4]), scores=tok.abs().sum(-1),
                                guided_prob=0.5)
    assert next(model.parameters()).device.type == engine and "val_accuracy" in res.history[-1]


def test_training_runs_where_the_engine_puts_the_model(tr, tmp_path):
    _train_encoder_and_consumer(tr, tmp_path, "cpu")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_training_on_cuda_moves_data_to_the_device(tr, tmp_path):
    _train_encoder_and_consumer(tr, tmp_path, "cuda")


def test_fit_steps_lowers_the_encoder_first_and_never_raises():
    assert E.fit_training_steps(1000, 0.1, 0.05, 2000, 1500) == (2000, 1500)  # 275 s: fits
    e, c = E.fit_training_steps(200, 0.1, 0.05, 2000, 1500)  # 75 s of consumer leaves 125 s: 1,250 encoder steps
    assert (e, c) == (1250, 1500)
    e, c = E.fit_training_steps(60, 0.1, 0.05, 2000, 1500)  # the encoder at its floor (400 = 40 s), the consumer gets 20 s
    assert (e, c) == (400, 400)
    assert E.fit_training_steps(1, 0.1, 0.05, 2000, 1500) == (400, 300)  # both at their floor


def _bench_json(path, correct: dict[str, str], speed: float = 2.0):
    rows = {k: {"tokens_per_page": 8, "consumer_speedup": speed, "e2e_speedup": speed, "accuracy": c.count("1") / len(c),
                "correct": c} for k, c in correct.items()}
    path.write_text(json.dumps({"rows": rows}))
    return str(path)


def test_pool_averages_paired_differences_over_benches(tr, tmp_path, capsys):
    """--stage pool: Δ of each row against dense and of each --pair is the per-page difference averaged over the
    benches (by hand: A − B = (+2/4 + 0/4) / 2 = +25 points; A − dense = (+1/4 − 1/4) / 2 = 0)."""
    one = _bench_json(tmp_path / "a.json", {"dense": "1100", "A": "1110", "B": "0100"})
    two = _bench_json(tmp_path / "b.json", {"dense": "1110", "A": "1100", "B": "1100", "C": "1111"})
    res = tr.main(["--stage", "pool", "--out", str(tmp_path / "out"), "--bench-json", one, "--bench-json", two,
                   "--pair", "A|B"])
    table = res["table"]
    assert "| A | 8 | 2.00 / 2.00 | 2.00 / 2.00 | 75.0 / 50.0% | +0.0 ± " in table
    assert "| A − B | +25.0 ± " in table and "| +50.0 / +0.0 |" in table
    assert "| C |" not in table  # only in one bench
    assert (tmp_path / "out" / "table_pooled.md").read_text().strip() == table and table in capsys.readouterr().out


@pytest.mark.parametrize("argv, says", [
    ([], "two or more --bench-json"),
    (["--pair", "A-B"], "--pair 'A-B'"),
    (["--pair", "A|Z"], "no row 'Z' in every bench"),
])
def test_pool_rejects_bad_input(tr, tmp_path, capsys, argv, says):
    one = _bench_json(tmp_path / "a.json", {"dense": "10", "A": "11"})
    two = _bench_json(tmp_path / "b.json", {"dense": "10", "A": "01"})
    files = [] if not argv else ["--bench-json", one, "--bench-json", two]
    with pytest.raises(SystemExit):
        tr.main(["--stage", "pool", "--out", str(tmp_path), *files, *argv])
    assert says in capsys.readouterr().err


def test_pool_rejects_benches_of_different_pages(tr, tmp_path, capsys):
    one = _bench_json(tmp_path / "a.json", {"dense": "10", "A": "11"})
    two = _bench_json(tmp_path / "b.json", {"dense": "101", "A": "011"})
    with pytest.raises(SystemExit):
        tr.main(["--stage", "pool", "--out", str(tmp_path), "--bench-json", one, "--bench-json", two])
    assert "different numbers of test pages" in capsys.readouterr().err
