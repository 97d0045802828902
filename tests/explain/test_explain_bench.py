"""benchmarks/explain.py with ``--pretrained``: the probe sees the backbone's own normalisation, and the
pretrained model's methods are scored against its own random map (end to end on tiny models)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

import vitkit
from vitkit import VisionTransformer
from vitkit.data.transforms import PreprocessConfig

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "explain.py"


def _bench():
    spec = importlib.util.spec_from_file_location("explain_bench", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def _saved_backbone(tmp_path, patch: int = 4):
    torch.manual_seed(0)
    vit = VisionTransformer(img_size=16, patch_size=patch, embed_dim=16, depth=1, num_heads=2, num_classes=0)
    vit.preprocess = PreprocessConfig(input_size=(16, 16), mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    return vitkit.save(vit, tmp_path / "backbone")


def test_probe_feeds_the_backbone_its_own_normalisation(tmp_path, one_thread):
    bench = _bench()
    source = _saved_backbone(tmp_path)
    args = type("A", (), {"size": 32, "patch": 8})()  # an 8-px grid cell of the script = one 4-px patch here
    data = {"x": torch.randn(6, 3, 32, 32), "y": (torch.rand(6, len(bench.CLASS_NAMES)) < 0.3).float()}
    probe = bench.linear_probe(str(source), data, args)
    vis = probe.vis
    x = torch.randn(2, 3, 32, 32)
    mean = torch.tensor((0.485, 0.456, 0.406)).view(1, 3, 1, 1)
    std = torch.tensor((0.229, 0.224, 0.225)).view(1, 3, 1, 1)
    pixels = x * bench.STD + bench.MEAN
    want = vis(F.interpolate((pixels - mean) / std, size=(16, 16), mode="bilinear", align_corners=False))
    with torch.no_grad():
        assert torch.allclose(probe(x), want, atol=1e-5)
        unnormalised = vis(F.interpolate(x, size=(16, 16), mode="bilinear", align_corners=False))
        assert not torch.allclose(probe(x), unnormalised, atol=1e-3)


def test_pretrained_methods_are_scored_against_their_own_random_map(tmp_path, one_thread):
    bench = _bench()
    source = _saved_backbone(tmp_path)
    out = tmp_path / "explain.json"
    rc = bench.main(["--seeds", "3", "--size", "32", "--patch", "8", "--dim", "16", "--depth", "1", "--heads", "2",
                     "--hybrid-depth", "1", "--window", "4", "--steps", "2", "--batch", "8", "--n-train", "16",
                     "--n-test", "8", "--n-explain", "2", "--curve-steps", "2", "--pretrained", str(source),
                     "--cache", str(tmp_path / "cache"), "--json", str(out)])
    assert rc == 0
    seed = json.loads(out.read_text())["seeds"]["3"]
    assert "pretrained" in seed["accuracy"]
    for m in ("rollout", "gradcam", "chefer", "random"):
        assert f"pretrained/{m}" in seed["methods"]
    for m in ("rollout", "gradcam", "chefer"):
        assert set(seed["gain_over_random"][f"pretrained/{m}"]) == set(bench.CURVE_KEYS)


def test_hybrid_matches_the_vit_parameters_at_any_stride_and_trunk():
    """'Equal parameters': whatever the trunk and stride, the hybrid lands within 5.5% of the ViT."""
    from argparse import Namespace

    bench = _bench()
    for patch, stride, trunk in ((8, None, "resnet"), (8, 4, "bagnet"), (4, 4, "resnet"), (8, 8, "bagnet")):
        args = Namespace(size=64, patch=patch, dim=64, depth=4, heads=4, hybrid_depth=2, window=8,
                         hybrid_stride=stride, hybrid_trunk=trunk)
        vit = bench.n_params(bench.build_vit(args))
        hyb = bench.build_hybrid(args, vit)
        assert hyb.cfg.stride == (stride or patch) and hyb.cfg.trunk == trunk
        assert abs(bench.n_params(hyb) / vit - 1) < 0.055, (patch, stride, trunk)


def test_a_hybrid_stride_that_is_not_a_power_of_two_is_refused():
    from argparse import Namespace

    import pytest

    bench = _bench()
    for stride in (3, -4, 1):
        args = Namespace(size=64, patch=8, dim=64, depth=4, heads=4, hybrid_depth=2, window=8,
                         hybrid_stride=stride, hybrid_trunk="resnet")
        with pytest.raises(ValueError, match=f"--hybrid-stride {stride}: the hybrid's stride must be a power of 2"):
            bench.build_hybrid(args, 1000)
