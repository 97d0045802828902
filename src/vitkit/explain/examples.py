"""Explained examples: images with each method's map, ready for :func:`vitkit.explain.report.explanation_section`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor, nn

from .overlay import denormalize

__all__ = ["Example", "demo_examples", "explain_examples"]


@dataclass
class Example:
    """One image (H, W, 3) uint8 with its maps {method: (h, w)} and a caption (e.g. the class)."""

    caption: str
    image: np.ndarray
    maps: dict[str, Tensor] = field(default_factory=dict)


def explain_examples(model: nn.Module, x: Tensor, methods: Sequence[str], captions: Sequence[str], *, target=None,
                     mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)) -> list[Example]:
    """Explain preprocessed images x (B, 3, H, W) with each method → :class:`Example` list."""
    from . import explain

    maps = {m: explain(model, x, m, target=target).maps for m in methods}
    return [Example(captions[i], denormalize(x[i], mean, std), {m: maps[m][i] for m in methods})
            for i in range(x.shape[0])]


def demo_examples(model: nn.Module, classifier, pages: Sequence, methods: Sequence[str] = ("rollout", "gradcam", "chefer")
                  ) -> tuple[list[Example], dict[str, dict[str, int]]]:
    """Rollout, Grad-CAM and gradient-weighted rollout on the first tile (as ``classifier`` cuts it) of up to four
    of the FRB ``pages`` (spread over the list), explained for the font the model predicts: the examples and
    each method's forward and backward passes on those tiles."""
    from ..frb.ink import pil_to_tensor, to_model_input
    from . import explain

    pages = pages[:: max(1, len(pages) // 4)][:4]
    x = to_model_input(torch.stack([classifier.page_tiles(pil_to_tensor(p.image))[0] for p in pages]))
    with torch.no_grad():
        pred = model(x).argmax(-1)
    labels = model.cfg.labels or [str(i) for i in range(model.cfg.num_classes)]
    captions = [f"{p.font} (pred. {labels[k]})" for p, k in zip(pages, pred.tolist(), strict=True)]
    examples = explain_examples(model, x, methods, captions, target=pred)
    metrics = {}
    for m in methods:
        e = explain(model, x, m, target=pred)
        metrics[m] = {"forwards": e.forwards, "backwards": e.backwards}
    return examples, metrics
