"""The open-world report section: ROC helper, plots, and the demo builder on a tiny model."""

from __future__ import annotations

import numpy as np
import pytest

from vitkit import frb
from vitkit.ood.metrics import auroc
from vitkit.ood.report import ood_section, roc_curve


def test_roc_curve_area_is_auroc():
    rng = np.random.default_rng(0)
    si, so = np.round(rng.normal(1, 1, 40), 1), np.round(rng.normal(0, 1, 30), 1)
    fpr, tpr = roc_curve(si, so)
    assert fpr[0] == tpr[0] == 0 and fpr[-1] == tpr[-1] == 1
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)
    assert np.trapezoid(tpr, fpr) == pytest.approx(auroc(si, so))


def test_ood_section_html():
    r = {"a<b": {"auroc": 0.9, "fpr95": 0.3, "aupr_in": 0.8, "aupr_out": 0.7, "tile_auroc": 0.85,
                 "page_scores_in": [1.0, 2.0, 3.0], "page_scores_out": [0.5, 1.5]}}
    s = ood_section(r, ["note & more"])
    assert "a&lt;b" in s.html and "note &amp; more" in s.html and s.html.count("<img") == 2


def test_demo_section_on_tiny_context(tmp_path, one_thread):
    from vitkit.demo import DemoContext
    from vitkit.frb.classifier import TiledClassifier
    from vitkit.frb.pages import frb_pages
    from vitkit.frb.recipe import DemoConfig, build_model
    from vitkit.ood.report import demo_section

    cfg = DemoConfig(crop=32, patch=8, dim=32, depth=2, heads=2, progress=False)
    model = build_model(cfg).eval()
    tp, tl = frb_pages(list(frb.train_split(30, 0)))
    vp, vl = frb_pages(list(frb.val_split(15, 0)))
    ctx = DemoContext(cfg, tmp_path, model, TiledClassifier(model, size=32, stride=16), tp, tl, vp, vl, [], [])
    sec = demo_section(ctx)
    assert sec.id == "open-world" and sec.html.count("<img") == 2
    m = ctx.metrics["ood"]
    assert {"MSP", "energy", "Mahalanobis"} <= set(m) and any(k.startswith("MoLAR") for k in m)
    assert all(0.0 <= v["auroc"] <= 1.0 for v in m.values())
