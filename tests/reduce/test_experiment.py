"""vitkit.reduce.experiment: pages rendered in chunks and cached, summaries, consumer sizes of a preset.
(The training steps run end to end in test_token_reduction_bench.py's tiny smoke test.)"""

from __future__ import annotations

import json

import pytest
import torch

from vitkit.frb.pages import PageConfig
from vitkit.frb.recipe import DemoConfig
from vitkit.reduce import experiment as X

pytestmark = pytest.mark.usefixtures("one_thread")

PAGES = PageConfig(size=(64, 64), font_size=(9, 12), margin=4, block_width=(0.45, 0.75))
PRESET = X.Preset("test", enc=DemoConfig(crop=32, patch=8, dim=32, depth=4, heads=2, steps=2, batch_size=8),
                  pages=PAGES, bench_pages=PAGES, n_train=4, n_val=3, n_test=3, consumer=dict(dim=32, depth=2, heads=2),
                  consumer_steps=2, consumer_batch=4, consumer_lr=1e-3, mem_batch=2, batch=2, repeats=1, early_layer=1,
                  evit_layers=(1, 2))


def test_render_pages_chunks_equal_one_pass():
    g, y = X.render_pages("val", 5, PAGES)
    a, b = X.render_range("val", 0, 2, PAGES), X.render_range("val", 2, 5, PAGES)
    assert torch.equal(torch.cat([a[0], b[0]]), g) and torch.equal(torch.cat([a[1], b[1]]), y)


def test_render_range_leaves_the_callers_threads():
    """The pool renders small jobs in the calling process: its thread count must survive."""
    torch.set_num_threads(2)
    try:
        X.render_range("val", 0, 1, PAGES)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(1)


def test_bench_pages_are_cached_as_uint8_and_rendered_again_for_another_count(tmp_path, monkeypatch):
    run = X.Run(PRESET, work=tmp_path)
    x, y = X.bench_pages(run, "val", 3)
    assert x.shape == (3, 3, 64, 64) and -1 <= x.min() and x.max() <= 1 and y.shape == (3,)
    cached = torch.load(tmp_path / "pages_val.pt", weights_only=True)
    assert cached["grey"].dtype == torch.uint8 and torch.equal(cached["labels"], y)
    grey, _ = X.render_pages("val", 3, PAGES)
    assert torch.allclose(cached["grey"].float() / 255, grey, atol=0.5 / 255)  # uint8 rounding only

    def fail(*a, **k):
        raise AssertionError("rendered again")

    monkeypatch.setattr(X, "pages", fail)
    x2, y2 = X.bench_pages(run, "val", 3)  # from the cache
    assert torch.equal(x2, x) and torch.equal(y2, y)
    with pytest.raises(AssertionError, match="rendered again"):
        X.bench_pages(run, "val", 2)  # another count: the cache does not fit


def test_write_summary_copies_to_a_separate_out_only_when_asked(tmp_path):
    run = X.Run(PRESET, work=tmp_path / "work", out=tmp_path / "out")
    X.write_summary(run, "encoder", {"steps": 3}, to_out=True)
    X.write_summary(run, "consumer", {"steps": 4})
    assert json.loads((tmp_path / "work" / "encoder" / "summary.json").read_text()) == {"steps": 3}
    assert json.loads((tmp_path / "out" / "encoder_summary.json").read_text()) == {"steps": 3}
    assert (tmp_path / "work" / "consumer" / "summary.json").exists()
    assert not (tmp_path / "out" / "consumer_summary.json").exists()
    same = X.Run(PRESET, work=tmp_path / "one")  # out = work: nothing copied
    X.write_summary(same, "encoder", {"steps": 3}, to_out=True)
    assert [p.name for p in (tmp_path / "one").iterdir()] == ["encoder"]


def test_with_consumer_sizes_overrides_only_what_is_given_and_checks_the_result():
    p = X.with_consumer_sizes(PRESET, dim=48, depth=None, heads=4)
    assert p.consumer == dict(dim=48, depth=2, heads=4) and PRESET.consumer == dict(dim=32, depth=2, heads=2)
    assert X.with_consumer_sizes(PRESET, dim=None, depth=None, heads=None) == PRESET
    with pytest.raises(ValueError, match="not divisible by heads 4"):
        X.with_consumer_sizes(PRESET, dim=50, heads=4)
    with pytest.raises(ValueError, match="depth must be ≥ 1"):
        X.with_consumer_sizes(PRESET, depth=0)


def test_consumer_config_reads_the_encoders_tokens():
    from vitkit.frb.recipe import build_model

    enc = build_model(PRESET.enc)
    cfg = X.consumer_config(X.Run(PRESET), enc)
    assert (cfg.in_dim, cfg.num_partitions, cfg.grid, cfg.num_classes) == (32, 5, (4, 4), 15)
    assert (cfg.dim, cfg.depth, cfg.heads) == (32, 2, 2)
    rows = X.methods(PRESET, {})
    assert rows["HiRED 20%"][1].grid == X.GRID and "HiRED-early 20% @block 2" in rows
