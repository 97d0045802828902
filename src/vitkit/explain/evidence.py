"""Evidence maps of the hybrid CNN-Transformer (:mod:`vitkit.models.hybrid`): the explanation is part
of the prediction. The map for class k is the model's own evidence map (B, h, w) whose spatial mean
is the logit, so it is faithful by construction and costs the one forward that predicts.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .capture import Explanation, pick_target


def explain_evidence(model: nn.Module, x: Tensor, target=None) -> Explanation:
    """Evidence map of ``model`` (a hybrid: anything with ``evidence(x) -> (logits, maps)``) for class
    ``target`` (default: top class) on images x (B, 3, H, W). Maps (B, h, w), signed."""
    if not hasattr(model, "evidence"):
        raise ValueError(f"{type(model).__name__} has no evidence maps: method 'evidence' needs the hybrid "
                         "CNN-Transformer (vitkit.models.hybrid); for a ViT use rollout, gradcam or chefer")
    with torch.no_grad():
        logits, maps = model.evidence(x)
    tgt = pick_target(logits, target)
    m = maps[torch.arange(maps.shape[0]), tgt]
    return Explanation("evidence", m, logits, tgt)
