"""benchmarks/adaptation.py: bad arguments fail before any page is rendered or model trained."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "adaptation.py"


def _bench():
    """The benchmark script as a module (it is not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("adaptation_bench", SCRIPT)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def test_unknown_arm_is_an_error_naming_it_before_any_work(tmp_path):
    out = tmp_path / "run"
    r = subprocess.run([sys.executable, str(SCRIPT), "--arms", "full,lora_x", "--out", str(out)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert "--arms: unknown arm(s) ['lora_x']" in r.stderr and "lora_embed" in r.stderr
    assert not out.exists()


def test_backbone_options_are_checked_before_any_work(tmp_path):
    out = tmp_path / "run"
    bad = subprocess.run([sys.executable, str(SCRIPT), "--backbone", "resnet", "--out", str(out)],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "--backbone must be scratch or one of ['dinov2-s14']" in bad.stderr
    probe = subprocess.run([sys.executable, str(SCRIPT), "--arms", "probe", "--out", str(out)],
                           capture_output=True, text=True, timeout=120)
    assert probe.returncode == 2 and "--arms probe needs a pretrained --backbone" in probe.stderr
    assert not out.exists()


def test_pages_of_different_sizes_are_scored(one_thread):
    """FRB pages are cut to their text, so sizes differ within a split: scoring must not batch them."""
    from vitkit import VisionTransformer
    from vitkit.frb.recipe import DemoConfig

    bench = _bench()
    model = VisionTransformer(img_size=96, patch_size=12, embed_dim=24, depth=1, num_heads=2, num_classes=15)
    res = bench.page_results(model, DemoConfig(), "test", limit=3)
    assert {name: len(r.predictions) for name, r in res.items()} == {"easy": 3, "hard": 3}
    assert all(0.0 <= r.accuracy <= 1.0 for r in res.values())


def test_adaptation_checkpoints_and_a_rerun_resumes_instead_of_retraining(one_thread, tmp_path):
    """A killed adaptation run resumes from its last checkpoint: rerunning a finished one trains no further."""
    from dataclasses import replace

    import torch

    from vitkit import VisionTransformer
    from vitkit.frb.recipe import DemoConfig

    bench = _bench()
    pages, labels = bench.frb_pages(list(bench.frb.train_split(4, 0)))
    cfg = replace(DemoConfig(), batch_size=4)

    def run(init_seed: int) -> dict:
        torch.manual_seed(init_seed)
        model = VisionTransformer(img_size=96, patch_size=24, embed_dim=16, depth=1, num_heads=2, num_classes=15)
        bench.adapt(model, pages, labels, cfg, 6, 1e-3, tmp_path / "arm", seed=0)
        return {k: v.clone() for k, v in model.state_dict().items()}

    first = run(0)
    assert (tmp_path / "arm" / "checkpoint.pt").is_file()
    # a differently initialised model ends with the first run's weights only if it resumed from its checkpoint
    second = run(1)
    assert all(torch.equal(first[k], second[k]) for k in first)
