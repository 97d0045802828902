"""benchmarks/adaptation.py: bad arguments fail before any page is rendered or model trained."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "adaptation.py"


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
