"""Per-image metrics of a predicted binary mask against the truth: IoU, Dice and the saliency measures.

IoU and Dice are two lines of arithmetic (ours). MAE, S-measure, E-measure and weighted F-measure
come from ``pysodmetrics`` (imports as ``py_sod_metrics``; the measures' authors' own code, also
used by the paper) rather than being written again: install ``vitkit[promptable]``. Each image is
scored on its own (the paper averages per image). The E-measure reported is the mean of
pysodmetrics' 256-threshold curve ("mean E"); on a binary mask every threshold above 0 gives the
same map, so it equals the E-measure of that mask.
"""

from __future__ import annotations

import importlib.util
import warnings

import numpy as np

METRICS = ("iou", "dice", "mae", "sm", "em", "wfm")
SALIENCY = ("mae", "sm", "em", "wfm")
HIGHER_IS_BETTER = {"iou": True, "dice": True, "mae": False, "sm": True, "em": True, "wfm": True}


def saliency_available() -> bool:
    """True when ``py_sod_metrics`` can be imported (the ``promptable`` extra)."""
    return importlib.util.find_spec("py_sod_metrics") is not None


def iou_dice(pred: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """(IoU, Dice) of two (H, W) bool masks; both 1.0 when both masks are empty."""
    p, t = np.asarray(pred, bool), np.asarray(truth, bool)
    if p.shape != t.shape:
        raise ValueError(f"prediction {p.shape} and truth {t.shape} differ in shape")
    inter = float(np.logical_and(p, t).sum())
    union = float(np.logical_or(p, t).sum())
    total = float(p.sum() + t.sum())
    return (inter / union if union else 1.0), (2 * inter / total if total else 1.0)


def saliency_measures(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """MAE, S-measure, mean E-measure, weighted F-measure of one (H, W) prediction (bool, or float in
    [0, 1]) against a (H, W) bool truth, computed by pysodmetrics on uint8 maps (0/255)."""
    try:
        import py_sod_metrics as sod
    except ImportError as e:
        raise ImportError("the saliency measures need pysodmetrics: pip install 'vitkit[promptable]'") from e
    p = np.asarray(pred)
    p8 = (np.clip(p.astype(np.float64), 0, 1) * 255).round().astype(np.uint8)
    t8 = np.asarray(truth, bool).astype(np.uint8) * 255
    mae, sm, em, wfm = sod.MAE(), sod.Smeasure(), sod.Emeasure(), sod.WeightedFmeasure()
    # an object touching a corner leaves an S-measure quadrant empty: numpy warns on that mean and the
    # score is NaN, which the averages skip (``promptable.finite_mean``), so the warning is only noise
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Mean of empty slice", RuntimeWarning)
        for m in (mae, sm, em, wfm):
            m.step(pred=p8, gt=t8)
    return {"mae": float(mae.get_results()["mae"]), "sm": float(sm.get_results()["sm"]),
            "em": float(np.mean(em.get_results()["em"]["curve"])), "wfm": float(wfm.get_results()["wfm"])}


def score_mask(pred: np.ndarray, truth: np.ndarray, saliency: bool | None = None) -> dict[str, float]:
    """{iou, dice} and, when pysodmetrics is installed (or ``saliency=True``), {mae, sm, em, wfm}."""
    iou, dice = iou_dice(pred, truth)
    out = {"iou": iou, "dice": dice}
    if saliency or (saliency is None and saliency_available()):
        out.update(saliency_measures(pred, truth))
    return out
