"""OOD metrics against naive threshold-sweep references (ties, tensors, edge cases)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vitkit.ood import metrics as M


def naive_auroc(si, so):
    # Mann-Whitney: P(in > out) + 0.5 P(in == out), pair by pair
    tot = 0.0
    for a in si:
        for b in so:
            tot += 1.0 if a > b else 0.5 if a == b else 0.0
    return tot / (len(si) * len(so))


def naive_fpr(si, so, tpr=0.95):
    best = -np.inf
    for t in sorted(set(si) | set(so)):
        if np.mean([a >= t for a in si]) >= tpr:
            best = max(best, t)
    return float(np.mean([b >= best for b in so]))


def naive_ap(pos, neg):
    # sum over distinct thresholds of (recall step) * precision
    ap, prev_r = 0.0, 0.0
    for t in sorted(set(pos) | set(neg), reverse=True):
        tp = sum(a >= t for a in pos)
        fp = sum(b >= t for b in neg)
        r = tp / len(pos)
        ap += (r - prev_r) * tp / (tp + fp)
        prev_r = r
    return ap


def naive_oscr(ks, kc, us):
    pts = [(0.0, 0.0)]
    for t in sorted(set(ks) | set(us), reverse=True):
        ccr = sum(1 for s, c in zip(ks, kc, strict=True) if c and s >= t) / len(ks)
        fpr = sum(1 for s in us if s >= t) / len(us)
        pts.append((fpr, ccr))
    area = 0.0
    for (x0, y0), (x1, y1) in zip(pts[:-1], pts[1:], strict=True):
        area += (x1 - x0) * (y0 + y1) / 2
    return area


@pytest.mark.parametrize("seed", range(6))
def test_against_naive(seed):
    rng = np.random.default_rng(seed)
    n_in, n_out = rng.integers(5, 40, size=2)
    si = rng.normal(1.0, 1.0, n_in)
    so = rng.normal(0.0, 1.0, n_out)
    if seed % 2:  # many ties
        si, so = np.round(si), np.round(so)
    assert M.auroc(si, so) == pytest.approx(naive_auroc(si, so), abs=1e-12)
    for tpr in (0.95, 0.5, 1.0):
        assert M.fpr_at_tpr(si, so, tpr) == pytest.approx(naive_fpr(si, so, tpr), abs=1e-12)
    assert M.aupr_in(si, so) == pytest.approx(naive_ap(list(si), list(so)), abs=1e-12)
    assert M.aupr_out(si, so) == pytest.approx(naive_ap(list(-so), list(-si)), abs=1e-12)
    kc = rng.random(n_in) < 0.7
    assert M.oscr(si, kc, so) == pytest.approx(naive_oscr(list(si), list(kc), list(so)), abs=1e-12)


def test_extremes_and_tensors():
    si, so = torch.tensor([2.0, 3.0, 4.0]), torch.tensor([0.0, 1.0])
    assert M.auroc(si, so) == 1.0
    assert M.auroc(so, si) == 0.0
    assert M.fpr_at_tpr(si, so) == 0.0
    assert M.aupr_in(si, so) == pytest.approx(1.0)
    assert M.aupr_out(si, so) == pytest.approx(1.0)
    assert M.oscr(si, torch.tensor([1, 1, 1]), so) == pytest.approx(1.0)
    assert M.oscr(si, torch.tensor([1, 0, 1]), so) == pytest.approx(2 / 3)
    # all equal: chance
    assert M.auroc(np.zeros(4), np.zeros(7)) == pytest.approx(0.5)
    assert isinstance(M.auroc(si, so), float)


def test_fpr95_definition():
    si = np.arange(100, dtype=float)  # 95% kept => threshold 5
    so = np.array([4.0, 5.0, 6.0, 200.0])
    assert M.fpr_at_tpr(si, so, 0.95) == pytest.approx(3 / 4)


def test_bad_input():
    with pytest.raises(ValueError, match="scores_out is empty"):
        M.auroc([1.0], [])
    with pytest.raises(ValueError, match="NaN"):
        M.auroc([float("nan")], [1.0])
    with pytest.raises(ValueError, match="tpr"):
        M.fpr_at_tpr([1.0], [0.0], tpr=0.0)
    with pytest.raises(ValueError, match="known_correct"):
        M.oscr([1.0, 2.0], [True], [0.0])
