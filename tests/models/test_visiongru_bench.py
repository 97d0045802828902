"""The scenes stage of ``benchmarks/visiongru.py``: its multi-label scores and a tiny end-to-end run."""

import json

import pytest
import torch


def test_multilabel_scores_hand_case(vgb):
    # items (logits, multi-hot); the model is the identity, so the logits are what is scored
    logits = torch.tensor([[3.0, -1.0], [2.0, 1.0], [1.0, 2.0], [-1.0, 3.0]])
    y = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    res = vgb.multilabel_scores(torch.nn.Identity(), list(zip(logits, y, strict=True)), batch=3)
    # class 0: ranking 3 (pos), 2 (neg), 1 (pos), -1 (neg) → AP = (1/1 + 2/3) / 2
    # class 1: ranking 3 (pos), 2 (neg), 1 (pos), -1 (neg) → the same
    assert res["mAP"] == pytest.approx((1 + 2 / 3) / 2)
    # logit > 0: rows 0 [T, F] ok; row 1 [T, T] vs [F, T]: 1 of 2; row 2 [T, T] vs [T, F]: 1 of 2; row 3 [F, T] ok
    assert res["label_accuracy"] == pytest.approx(6 / 8)
    assert res["test_scenes"] == 4


def test_scenes_stage_runs_both_models(vgb, tmp_path):
    out = tmp_path / "scenes.json"
    vgb.main(["--stage", "scenes", "--steps", "2", "--batch", "4", "--scene-size", "48", "--scene-train", "8",
              "--scene-test", "8", "--gru-dims", "8", "8", "8", "8", "--vit-dim", "24", "--patch", "12",
              "--work", str(tmp_path / "work"), "--json", str(out)])
    runs = json.loads(out.read_text())["runs"]
    assert [r["model"] for r in runs] == ["gru", "vit"]
    for r in runs:
        assert r["steps"] == 2 and 0.0 <= r["mAP"] <= 1.0 and 0.0 <= r["label_accuracy"] <= 1.0
