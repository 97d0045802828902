"""Multi-label classification (e.g. which scene classes are present): the training loss and the scores.

Written here rather than taken from a metrics library because the scores are three lines of tensor
code and every benchmark that trains a multi-label classifier (explanations, VisionGRU on scenes)
should report them the same way.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def bce_loss(model: nn.Module, batch) -> Tensor:
    """A :class:`~vitkit.engine.Trainer` ``loss_fn``: binary cross-entropy of ``model(images)`` (B, C) against
    multi-hot targets (B, C), averaged over batch and classes."""
    return F.binary_cross_entropy_with_logits(model(batch[0]), batch[1].float())


def multilabel_scores(logits: Tensor, targets: Tensor) -> dict[str, float]:
    """Scores of logits (N, C) against multi-hot targets (N, C).

    ``mAP``: the mean over classes with at least one positive of the average precision (precision at each
    positive, ranked by logit); ``exact_match``: share of rows with every class right at logit 0;
    ``label_accuracy``: share of (row, class) entries right at logit 0.
    """
    if logits.shape != targets.shape or logits.dim() != 2:
        raise ValueError(f"logits {tuple(logits.shape)} and targets {tuple(targets.shape)} must both be (N, C)")
    y = targets.bool()
    aps = []
    for c in range(y.shape[1]):
        if not y[:, c].any():
            continue
        hits = y[logits[:, c].argsort(descending=True), c].float()
        prec = hits.cumsum(0) / torch.arange(1, len(hits) + 1)
        aps.append(float((prec * hits).sum() / hits.sum()))
    pred = logits > 0
    return {"mAP": sum(aps) / len(aps) if aps else float("nan"),
            "exact_match": float((pred == y).all(1).float().mean()),
            "label_accuracy": float((pred == y).float().mean())}
