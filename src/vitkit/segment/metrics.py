"""Segmentation metrics: a confusion matrix and mIoU over the classes present.

mIoU follows the MoRe/ToCo evaluation code: IoU_c = TP / (TP + FP + FN) from a confusion matrix
accumulated over the whole split, averaged over the classes whose union is non-empty (a class that
is in neither the truth nor the prediction is left out, not counted as 0 or 1).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

IGNORE = 255  # label of pixels that no loss and no metric sees


def confusion_matrix(pred: Tensor | np.ndarray, truth: Tensor | np.ndarray, num_classes: int,
                     ignore: int = IGNORE) -> np.ndarray:
    """(K, K) int64 counts, rows = truth, columns = prediction; pixels with truth ``ignore`` skipped.

    ``pred`` and ``truth`` are integer maps of the same shape (any leading dimensions).
    """
    p = torch.as_tensor(pred).reshape(-1).long()
    t = torch.as_tensor(truth).reshape(-1).long()
    if p.shape != t.shape:
        raise ValueError(f"prediction has {p.numel()} pixels but the truth has {t.numel()}")
    keep = t != ignore
    p, t = p[keep], t[keep]
    if len(t) and (int(t.max()) >= num_classes or int(p.max()) >= num_classes or int(min(t.min(), p.min())) < 0):
        raise ValueError(f"labels must be in [0, {num_classes}) (or {ignore} in the truth)")
    return torch.bincount(t * num_classes + p, minlength=num_classes**2).reshape(num_classes, num_classes).numpy()


def iou_per_class(conf: np.ndarray) -> np.ndarray:
    """(K,) IoU per class; NaN where the class is in neither truth nor prediction."""
    tp = np.diag(conf).astype(np.float64)
    union = conf.sum(0) + conf.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / np.maximum(union, 1), np.nan)


def mean_iou(conf: np.ndarray) -> float:
    """Mean IoU over the classes present (non-empty union)."""
    iou = iou_per_class(conf)
    return float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")


class IoUMeter:
    """Accumulates a confusion matrix over batches: ``update(pred, truth)``, then ``miou`` / ``per_class``."""

    def __init__(self, num_classes: int, ignore: int = IGNORE) -> None:
        self.num_classes, self.ignore = num_classes, ignore
        self.conf = np.zeros((num_classes, num_classes), np.int64)

    def update(self, pred, truth) -> None:
        self.conf += confusion_matrix(pred, truth, self.num_classes, self.ignore)

    @property
    def miou(self) -> float:
        return mean_iou(self.conf)

    def per_class(self, names: list[str] | tuple[str, ...]) -> dict[str, float | None]:
        """{name: IoU} (None for a class absent from truth and prediction)."""
        iou = iou_per_class(self.conf)
        return {n: (None if np.isnan(v) else round(float(v), 4)) for n, v in zip(names, iou, strict=True)}
