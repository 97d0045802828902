"""The scenes stage of ``benchmarks/visiongru.py`` (a tiny end-to-end run) and the multi-label scores it reports."""

import json

import pytest
import torch

from vitkit.engine.multilabel import multilabel_scores


def test_multilabel_scores_hand_case():
    logits = torch.tensor([[3.0, -1.0], [2.0, 1.0], [1.0, 2.0], [-1.0, 3.0]])
    y = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    res = multilabel_scores(logits, y)
    # both classes rank positive, negative, positive, negative → AP = (1/1 + 2/3) / 2
    assert res["mAP"] == pytest.approx((1 + 2 / 3) / 2)
    # logit > 0: row 0 [T, F] right; row 1 [T, T] vs [F, T] and row 2 [T, T] vs [T, F] one of two; row 3 right
    assert res["label_accuracy"] == pytest.approx(6 / 8)
    assert res["exact_match"] == pytest.approx(2 / 4)
    assert multilabel_scores(torch.tensor([[1.0, -1.0]]), torch.tensor([[1, 0]]))["mAP"] == 1.0  # one class present
    with pytest.raises(ValueError, match=r"must both be \(N, C\)"):
        multilabel_scores(logits, y[:, :1])


def test_scenes_stage_runs_both_models(vgb, tmp_path):
    out = tmp_path / "scenes.json"
    vgb.main(["--stage", "scenes", "--steps", "2", "--batch", "4", "--scene-size", "48", "--scene-train", "8",
              "--scene-test", "8", "--gru-dims", "8", "8", "8", "8", "--vit-dim", "24", "--patch", "12",
              "--work", str(tmp_path / "work"), "--json", str(out)])
    runs = json.loads(out.read_text())["runs"]
    assert [r["model"] for r in runs] == ["gru", "vit"]
    for r in runs:
        assert r["steps"] == 2 and r["test_scenes"] == 8 and 0.0 <= r["mAP"] <= 1.0
