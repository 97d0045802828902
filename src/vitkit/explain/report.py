"""The report's explanation section: a metrics table and, per example image, each method's map side by side.

Hook-in (the demo report): build ``examples`` from a few FRB pages and scenes with
:func:`explain_examples`, take ``metrics`` from ``benchmarks/explain.py``'s JSON (``seeds[s]["methods"]``)
or compute them with :mod:`vitkit.explain.metrics`, and ``report.add(explanation_section(metrics, examples))``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from PIL import Image
from torch import Tensor, nn

from ..report.html import Section, escape, table
from ..report.plots import image_grid
from .overlay import denormalize, overlay

#: metric key → column header (and which way is better)
COLUMNS = {
    "pointing": "pointing game ↑",
    "energy": "energy in mask ↑",
    "del_blur": "deletion AUC (blur) ↓",
    "ins_blur": "insertion AUC (blur) ↑",
    "del_mean": "deletion AUC (mean) ↓",
    "ins_mean": "insertion AUC (mean) ↑",
    "seconds_median": "ms / image",
    "forwards": "forwards",
    "backwards": "backwards",
}


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


def _cell(key: str, value) -> str:
    if not isinstance(value, int | float):
        return str(value)
    if key == "seconds_median":
        return f"{1000 * value:.1f}"
    if key in ("forwards", "backwards"):
        return f"{value:g}"
    return f"{value:.3f}"


def explanation_section(metrics: Mapping[str, Mapping[str, float]], examples: Sequence[Example], *,
                        id: str = "explanations", title: str = "Explanations", thumb_width: int = 128,
                        note: str = "") -> Section:
    """Metrics per method (rows: method names, e.g. "vit/gradcam"; columns: :data:`COLUMNS` present)
    and, per example, the image followed by each method's overlay."""
    parts = []
    if note:
        parts.append(f'<p class="note">{escape(note)}</p>')
    if metrics:
        keys = [k for k in COLUMNS if any(k in v for v in metrics.values())]
        rows = [[name] + [_cell(k, v.get(k, "")) for k in keys] for name, v in metrics.items()]
        parts.append(table(["method"] + [COLUMNS[k] for k in keys], rows))
    if examples:
        methods = list(dict.fromkeys(m for ex in examples for m in ex.maps))
        imgs, caps = [], []
        for ex in examples:
            imgs.append(Image.fromarray(ex.image))
            caps.append(ex.caption)
            for m in methods:
                if m in ex.maps:
                    imgs.append(overlay(ex.image, ex.maps[m]))
                else:
                    imgs.append(Image.new("RGB", (ex.image.shape[1], ex.image.shape[0]), "white"))
                caps.append(m)
        parts.append(image_grid(imgs, caps, ncols=1 + len(methods), thumb_width=thumb_width))
    if not parts:
        parts.append('<p class="note">No explanations.</p>')
    return Section(id, title, "\n".join(parts))


def demo_section(ctx) -> Section:
    """``vitkit demo`` section: rollout, Grad-CAM and gradient-weighted rollout on tiles of hard-split pages.

    The demo model classifies ink tiles, so each example is one tile of a page (the page's first tile as
    the page classifier cuts it), explained for the font the model predicts; each method's passes are
    counted on the same tiles.
    """
    import torch

    from ..frb.ink import pil_to_tensor, to_model_input
    from . import explain

    model, clf = ctx.model, ctx.classifier
    pages = ctx.hard[:: max(1, len(ctx.hard) // 4)][:4]
    x = to_model_input(torch.stack([clf.page_tiles(pil_to_tensor(p.image))[0] for p in pages]))
    with torch.no_grad():
        pred = model(x).argmax(-1)
    labels = model.cfg.labels or [str(i) for i in range(model.cfg.num_classes)]
    methods = ("rollout", "gradcam", "chefer")
    examples = explain_examples(model, x, methods, [f"{p.font} (pred. {labels[k]})" for p, k in zip(pages, pred.tolist(), strict=True)],
                                target=pred)
    metrics = {}
    for m in methods:
        e = explain(model, x, m, target=pred)
        metrics[m] = {"forwards": e.forwards, "backwards": e.backwards}
    ctx.metrics["explanations"] = metrics
    return explanation_section(metrics, examples, note=(
        "Where the demo's ViT looks on one tile of four hard-split pages, for the font it predicts. Scored "
        "maps (pointing game, deletion/insertion AUC against exact masks) are in benchmarks/explain.py."))
