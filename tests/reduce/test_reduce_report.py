from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from vitkit.demo import DemoContext
from vitkit.frb.recipe import DemoConfig, build_model
from vitkit.reduce.partitions import TokenSet
from vitkit.reduce.report import demo_section, group_overlay, kept_overlay, parse_pairs, read_bench_rows

pytestmark = pytest.mark.usefixtures("one_thread")


def test_overlay_marks_the_kept_patches():
    grey = torch.zeros(8, 16)  # all ink: kept patches stay black, dropped ones fade
    # 1×2 grid of 8×8 sub-images, 2×2 patches each; keep sub-image 1's patch (0, 1) and a thumbnail token
    ts = TokenSet(torch.zeros(1, 2, 4), torch.tensor([[0, 1]]), torch.tensor([[[0, 0], [0, 1]]]), (2, 2), 3)
    img = np.asarray(kept_overlay(grey, ts, (1, 2)))
    assert img.shape == (8, 16 + 8 + 8, 3)
    assert img[1:3, 5:7].max() == 0  # inside the kept patch (rows 0-3, cols 4-7): ink kept
    assert img[5, 9, 0] > 100  # a dropped patch is faded
    assert tuple(img[0, 4]) == (220, 40, 40)  # red outline


def test_demo_section_runs_on_a_tiny_demo_model():
    cfg = DemoConfig(crop=32, patch=8, dim=32, depth=2, heads=2)
    model = build_model(cfg).eval()
    pages = torch.rand(2, 1, 70, 100)
    ctx = DemoContext(cfg, None, model, None, pages, torch.tensor([0, 1]), pages, torch.tensor([0, 1]), [], [])
    sec = demo_section(ctx)
    assert sec.id == "token-reduction" and sec.html.count("<figure>") == 5
    kept = ctx.metrics["token_reduction"]
    assert kept["dense"] == 7 * 16 and kept["HiRED 20%"] == int(0.2 * 7 * 16)


def test_group_overlay_tints_merged_patches_only():
    grey = torch.ones(4, 8)  # white page, 1×2 grid of 4×4 sub-images, 2×2 patches of 2×2 px
    # partition 0 = thumbnail (ignored); in partition 1, patches 0 and 3 were merged into row 1
    source = torch.tensor([[0, 1, 2, 3, 4], [0, 1, 2, 3, 1], [0, 1, 2, 3, 4]])
    img = np.asarray(group_overlay(grey, source, (1, 2), (2, 2), num_prefix=1)).astype(int)
    assert (img[0, 0] != 255).any() and (img[3, 3] == img[0, 0]).all()  # patches 0 and 3: same tint
    assert (img[0, 2] == 255).all() and (img[0, 4:] == 255).all()  # unmerged, and partition 2 untouched


def test_read_bench_rows_needs_two_readable_bench_jsons(tmp_path):
    a, b, bad = tmp_path / "a.json", tmp_path / "b.json", tmp_path / "bad.json"
    a.write_text(json.dumps({"rows": {"dense": {"correct": "10"}}}))
    b.write_text(json.dumps({"rows": {"dense": {"correct": "01"}}, "machine": {}}))
    bad.write_text(json.dumps({"table": "no rows"}))
    assert read_bench_rows([a, str(b)]) == {str(a): {"dense": {"correct": "10"}}, str(b): {"dense": {"correct": "01"}}}
    with pytest.raises(ValueError, match="two or more --bench-json"):
        read_bench_rows([a])
    with pytest.raises(ValueError, match=r"--bench-json .*bad.json: not a readable bench JSON"):
        read_bench_rows([a, bad])
    with pytest.raises(ValueError, match=r"--bench-json .*missing.json: not a readable"):
        read_bench_rows([a, tmp_path / "missing.json"])


def test_parse_pairs_splits_at_one_bar():
    assert parse_pairs(["A|B", "HiRED 20%|ToMe r=[2,1]"]) == [("A", "B"), ("HiRED 20%", "ToMe r=[2,1]")]
    assert parse_pairs([]) == []
    for bad in ("A-B", "A|B|C"):
        with pytest.raises(ValueError, match=f"--pair '{bad}'"):
            parse_pairs([bad])
