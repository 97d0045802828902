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


def naive_delong(ai, ao, bi, bo):
    # DeLong by definition: the kernel matrix psi(x_i, y_j) for each detector, its row and column means
    def psi(si, so):
        return (si[:, None] > so[None, :]) + 0.5 * (si[:, None] == so[None, :])
    pa, pb = psi(ai, ao), psi(bi, bo)
    v10 = np.stack([pa.mean(1), pb.mean(1)])  # (2, m)
    v01 = np.stack([pa.mean(0), pb.mean(0)])  # (2, n)
    s10, s01 = np.cov(v10), np.cov(v01)
    c = np.array([1.0, -1.0])
    return pa.mean() - pb.mean(), float(np.sqrt(c @ s10 @ c / len(ai) + c @ s01 @ c / len(ao)))


def test_auroc_delta_matches_the_definition_with_ties():
    rng = np.random.default_rng(0)
    ai, ao = rng.integers(0, 6, 40).astype(float), rng.integers(0, 5, 30).astype(float)  # many ties
    bi, bo = ai + rng.normal(0, 2, 40).round(), ao + rng.normal(0, 2, 30).round()
    d, se = M.auroc_delta(ai, ao, bi, bo)
    rd, rse = naive_delong(ai, ao, bi, bo)
    assert d == pytest.approx(rd, abs=1e-12) and se == pytest.approx(rse, rel=1e-9)
    assert d == pytest.approx(M.auroc(ai, ao) - M.auroc(bi, bo), abs=1e-12)


def test_auroc_delta_of_a_detector_with_itself_is_exactly_zero():
    g = torch.Generator().manual_seed(1)
    si, so = torch.randn(50, generator=g) + 1, torch.randn(20, generator=g)
    assert M.auroc_delta(si, so, si, so) == (0.0, 0.0)
    # a monotone transform ranks the same: still zero
    assert M.auroc_delta(si, so, si.exp(), so.exp())[0] == 0.0


def test_auroc_delta_se_matches_the_spread_over_repeated_experiments():
    # two correlated detectors of different quality; the DeLong SE of one experiment should predict the
    # standard deviation of the difference over many independent experiments
    rng = np.random.default_rng(2)
    deltas, ses = [], []
    for _ in range(300):
        zi, zo = rng.normal(1.0, 1, 120), rng.normal(0.0, 1, 80)  # shared signal: makes the pairing matter
        ai, ao = zi + rng.normal(0, 0.5, 120), zo + rng.normal(0, 0.5, 80)
        bi, bo = zi + rng.normal(0, 1.0, 120), zo + rng.normal(0, 1.0, 80)
        d, se = M.auroc_delta(ai, ao, bi, bo)
        deltas.append(d)
        ses.append(se)
    assert np.mean(deltas) > 3 * np.std(deltas) / np.sqrt(len(deltas))  # a is better on average
    assert np.mean(ses) == pytest.approx(np.std(deltas, ddof=1), rel=0.2)


def test_auroc_delta_rejects_unpaired_inputs():
    with pytest.raises(ValueError, match="same samples"):
        M.auroc_delta([1, 2, 3], [0, 1], [1, 2], [0, 1])
    with pytest.raises(ValueError, match="at least 2"):
        M.auroc_delta([1], [0, 1], [1], [0, 1])
