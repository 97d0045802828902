"""Classify image files with any vitkit classifier, the way it was trained to read them.

A model with a page pipeline (:class:`~vitkit.frb.classifier.PagePolicy` in ``model.pipeline``, saved
with e.g. ``vitkit demo``'s font classifier) reads every image as a page of any size: normalised,
rescaled to its text scale, averaged over ink tiles. Any other classifier gets its
``model.preprocess`` (resize, crop, normalise) and one forward pass. ``vitkit predict`` is this
function plus a table.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from PIL import Image
from torch import Tensor, nn

from .data import preprocess_batch
from .frb.classifier import TiledClassifier
from .frb.ink import pil_to_tensor


def page_classifier(model: nn.Module) -> TiledClassifier | None:
    """The page classifier that ``model``'s saved pipeline describes, or ``None`` when it has none."""
    policy = getattr(model, "pipeline", None)
    return None if policy is None else TiledClassifier(model, policy=policy).eval()


@torch.inference_mode()
def classify_images(model: nn.Module, images: Sequence[Image.Image], *, batch_size: int = 16) -> Tensor:
    """Class probabilities ``(N, K)`` of ``images`` (RGB PIL images of any sizes) under ``model``."""
    if not images:
        raise ValueError("classify_images needs at least one image")
    pages = page_classifier(model)
    out = []
    for i in range(0, len(images), batch_size):
        chunk = images[i : i + batch_size]
        if pages is not None:
            logits = pages([pil_to_tensor(im) for im in chunk])
        else:
            if getattr(model, "preprocess", None) is None:
                raise ValueError("the model has no preprocess config (set model.preprocess or load it with vitkit.load)")
            logits = model(preprocess_batch(list(chunk), model.preprocess))
        out.append(logits.float().softmax(-1))
    return torch.cat(out)
