"""Out-of-distribution metrics. Convention: a higher score means "more in-distribution / known".

Every function takes 1-D numpy arrays or tensors and returns a Python float. Ties are handled
exactly (all samples that share a score cross a threshold together), so AUROC equals the
Mann-Whitney statistic with ties counted one half.
"""

from __future__ import annotations

import numpy as np

__all__ = ["auroc", "auroc_delta", "fpr_at_tpr", "aupr_in", "aupr_out", "oscr"]


def _as_1d(x, name: str) -> np.ndarray:
    if hasattr(x, "detach"):  # torch.Tensor without importing torch
        x = x.detach().cpu().numpy()
    a = np.asarray(x, dtype=np.float64).reshape(-1)
    if a.size == 0:
        raise ValueError(f"{name} is empty: pass at least one score")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains NaN or infinite scores: check the detector's output")
    return a


def _curve(pos: np.ndarray, neg: np.ndarray):
    """Counts of positives / negatives with score >= t for every distinct threshold t, descending.

    Returns (tp, fp) of shape (T,), cumulative, starting after the highest threshold.
    """
    scores = np.concatenate([pos, neg])
    is_pos = np.concatenate([np.ones(pos.size, bool), np.zeros(neg.size, bool)])
    order = np.argsort(-scores, kind="mergesort")
    scores, is_pos = scores[order], is_pos[order]
    tp = np.cumsum(is_pos)
    fp = np.cumsum(~is_pos)
    last = np.r_[scores[1:] != scores[:-1], True]  # last index of each block of equal scores
    return tp[last], fp[last]


def auroc(scores_in, scores_out) -> float:
    """Area under the ROC curve with in-distribution as the positive class (0.5 = chance)."""
    pos, neg = _as_1d(scores_in, "scores_in"), _as_1d(scores_out, "scores_out")
    tp, fp = _curve(pos, neg)
    tpr = np.r_[0.0, tp / pos.size]
    fpr = np.r_[0.0, fp / neg.size]
    return float(np.trapezoid(tpr, fpr))


def _placements(pos: np.ndarray, neg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """DeLong's placement values: for each positive the share of negatives it beats (ties ½), (m,),
    and for each negative the share of positives that beat it, (n,). Both average to the AUROC."""
    sn, sp = np.sort(neg), np.sort(pos)
    v10 = (np.searchsorted(sn, pos, "left") + np.searchsorted(sn, pos, "right")) / (2.0 * neg.size)
    v01 = 1.0 - (np.searchsorted(sp, neg, "left") + np.searchsorted(sp, neg, "right")) / (2.0 * pos.size)
    return v10, v01


def auroc_delta(a_in, a_out, b_in, b_out) -> tuple[float, float]:
    """AUROC(a) − AUROC(b) for two detectors scored on the same samples, and its paired standard error.

    DeLong, DeLong & Clarke-Pearson (1988): the variance of the difference from the placement values'
    covariance across the two detectors, so a shared hard sample counts once. ``a_in``/``b_in`` (m,)
    must score the same in-distribution samples in the same order, ``a_out``/``b_out`` (n,) the same
    out-of-distribution ones. Needs m, n >= 2. Returns (delta, se).
    """
    ai, ao = _as_1d(a_in, "a_in"), _as_1d(a_out, "a_out")
    bi, bo = _as_1d(b_in, "b_in"), _as_1d(b_out, "b_out")
    if ai.size != bi.size or ao.size != bo.size:
        raise ValueError(f"the two detectors must score the same samples: in {ai.size} vs {bi.size}, "
                         f"out {ao.size} vs {bo.size}")
    if ai.size < 2 or ao.size < 2:
        raise ValueError("auroc_delta needs at least 2 in- and 2 out-of-distribution scores")
    a10, a01 = _placements(ai, ao)
    b10, b01 = _placements(bi, bo)
    d10, d01 = a10 - b10, a01 - b01  # the variance of a difference is the difference's variance
    var = d10.var(ddof=1) / ai.size + d01.var(ddof=1) / ao.size
    return float(a10.mean() - b10.mean()), float(np.sqrt(var))


def fpr_at_tpr(scores_in, scores_out, tpr: float = 0.95) -> float:
    """Share of out-of-distribution scores >= the highest threshold that keeps `tpr` of the in-scores.

    FPR95 for `tpr=0.95`: threshold t = the largest score with mean(scores_in >= t) >= tpr.
    """
    if not 0.0 < tpr <= 1.0:
        raise ValueError(f"tpr={tpr} must be in (0, 1]")
    pos, neg = _as_1d(scores_in, "scores_in"), _as_1d(scores_out, "scores_out")
    srt = np.sort(pos)[::-1]
    k = int(np.ceil(tpr * pos.size - 1e-9))  # smallest number of in-samples to keep
    t = srt[max(k, 1) - 1]
    return float(np.mean(neg >= t))


def _average_precision(pos: np.ndarray, neg: np.ndarray) -> float:
    tp, fp = _curve(pos, neg)
    precision = tp / (tp + fp)
    recall = tp / pos.size
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def aupr_in(scores_in, scores_out) -> float:
    """Average precision with in-distribution as the positive class (high score = positive)."""
    return _average_precision(_as_1d(scores_in, "scores_in"), _as_1d(scores_out, "scores_out"))


def aupr_out(scores_in, scores_out) -> float:
    """Average precision with out-of-distribution as the positive class (low score = positive)."""
    return _average_precision(-_as_1d(scores_out, "scores_out"), -_as_1d(scores_in, "scores_in"))


def oscr(known_scores, known_correct, unknown_scores) -> float:
    """Open-set classification rate: area under CCR(t) against FPR(t) (Dhamija et al. 2018).

    CCR(t) = share of known samples classified correctly with score >= t,
    FPR(t) = share of unknown samples with score >= t; the curve runs from (0, 0) to (1, accuracy).
    """
    k = _as_1d(known_scores, "known_scores")
    if hasattr(known_correct, "detach"):
        known_correct = known_correct.detach().cpu().numpy()
    c = np.asarray(known_correct).reshape(-1).astype(bool)
    if c.size != k.size:
        raise ValueError(f"known_correct has {c.size} entries but known_scores has {k.size}: they must match")
    u = _as_1d(unknown_scores, "unknown_scores")
    scores = np.concatenate([k, u])
    good = np.concatenate([c, np.zeros(u.size, bool)])
    unk = np.concatenate([np.zeros(k.size, bool), np.ones(u.size, bool)])
    order = np.argsort(-scores, kind="mergesort")
    scores, good, unk = scores[order], good[order], unk[order]
    last = np.r_[scores[1:] != scores[:-1], True]
    ccr = np.r_[0.0, np.cumsum(good)[last] / k.size]
    fpr = np.r_[0.0, np.cumsum(unk)[last] / u.size]
    return float(np.trapezoid(ccr, fpr))
