"""benchmarks/token_reduction.py --backbone NAME: a tiny random checkpoint cached under the real name stands in
for the pretrained weights (12 blocks, patch 14, layer scale: DINOv2-S's layout at width 16)."""

from __future__ import annotations

import json

import pytest
import torch

from vitkit import load
from vitkit.reduce import evaluate as E
from vitkit.reduce.consumer import ConsumerConfig, TokenSetConsumer

pytestmark = pytest.mark.usefixtures("one_thread")

NAME = "dinov2-s14"


@pytest.fixture()
def tiny_cached(cache_tiny_pretrained):
    return cache_tiny_pretrained(NAME, dim=16, depth=12)


def test_backbone_preset_reads_the_geometry_and_every_row_runs(tr, tiny_cached):
    """98-px sub-images (7×7 patches of 14) of 196-px pages, the deep preset's layer choices at depth 12; every row,
    ToMe candidates included (their schedules must fit 49 tokens per partition), applies and runs."""
    p = tr.backbone_preset(NAME)
    assert (p.enc.backbone, p.enc.crop, p.enc.patch, p.enc.dim, p.enc.depth, p.enc.heads) == (NAME, 98, 14, 16, 12, 2)
    assert p.bench_pages.size == (196, 196) and p.bench_pages.block_width == tr.DEEP.bench_pages.block_width
    assert (p.early_layer, p.evit_layers) == (tr.DEEP.early_layer, tr.DEEP.evit_layers) == (5, (3, 6, 9))
    assert (p.n_train, p.n_test, p.consumer) == (tr.DEEP.n_train, tr.DEEP.n_test, tr.DEEP.consumer)
    enc = tr.build_model(p.enc).eval()
    assert enc.cfg.img_size == (98, 98) and enc.grid_size == (7, 7)
    cons = TokenSetConsumer(ConsumerConfig(in_dim=16, dim=16, depth=1, heads=2, num_partitions=5, grid=(7, 7))).eval()
    rows = {**tr.methods(p, {}), **{n: (tr.tome, c) for n, c in p.tome_candidates.items()}}
    assert "HiRED-early 20% @block 10" in rows
    res = E.throughput(enc, cons, rows, torch.rand(2, 3, 196, 196) * 2 - 1, tr.GRID, repeats=1)
    assert res["dense"]["tokens"] == 5 * 49 and res["HiRED-early 20%"]["tokens"] == res["HiRED 20%"]["tokens"] == 49
    assert all(0 < r["tokens"] < 5 * 49 for n, r in res.items() if n != "dense")
    assert all(b.token_hook is None and b.attn.readout is None for b in enc.blocks)


def test_backbone_encoder_stage_saves_the_pretrained_weights_frozen(tr, tiny_cached, tmp_path):
    out = tmp_path / "run"
    summary = tr.main(["--backbone", NAME, "--stage", "encoder", "--out", str(out)])
    assert summary is None  # the encoder stage returns no bench
    saved = json.loads((out / "encoder" / "summary.json").read_text())
    assert saved["backbone"] == NAME and saved["frozen"] and saved["steps"] == 0
    enc, ref = load(out / "encoder" / "model").state_dict(), tiny_cached.state_dict()
    for k in ("blocks.0.attn.qkv.weight", "blocks.11.mlp.fc2.weight", "blocks.11.ls2.gamma", "norm.weight"):
        assert torch.equal(enc[k], ref[k]), k
    assert enc["pos_embed"].shape[1] == 1 + 7 * 7


def test_backbone_options_fail_in_one_line(tr, empty_cache, tmp_path, capsys):
    out = tmp_path / "run"
    for argv, msg in [(["--backbone", NAME], f"vitkit weights get {NAME}"),  # not cached
                      (["--backbone", "resnet"], "--backbone must be one of ['dinov2-s14']"),
                      (["--backbone", NAME, "--size", "deep"], "leave out --size"),
                      (["--backbone", NAME, "--encoder-steps", "5"], "leave out --size, --encoder-steps")]:
        with pytest.raises(SystemExit) as e:
            tr.main([*argv, "--out", str(out)])
        assert e.value.code == 2 and msg in capsys.readouterr().err.replace("\n", "")
    assert not out.exists()


def test_a_scratch_encoder_is_not_benched_as_the_backbone(tr, tiny_cached, tmp_path, capsys):
    out = tmp_path / "run"
    (out / "encoder").mkdir(parents=True)
    (out / "encoder" / "summary.json").write_text(json.dumps({"steps": 1500}))  # what train_encoder writes
    with pytest.raises(SystemExit) as e:
        tr.main(["--backbone", NAME, "--stage", "bench", "--out", str(out)])
    assert e.value.code == 2 and f"is not --backbone {NAME}" in capsys.readouterr().err
