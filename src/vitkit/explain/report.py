"""The report's explanation section: a metrics table and, per example image, each method's map side by side.

Hook-in (the demo report): build ``examples`` from a few FRB pages and scenes with
:func:`vitkit.explain.examples.explain_examples`, take ``metrics`` from ``benchmarks/explain.py``'s JSON (``seeds[s]["methods"]``)
or compute them with :mod:`vitkit.explain.metrics`, and ``report.add(explanation_section(metrics, examples))``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from PIL import Image

from ..report.html import Section, escape, table
from ..report.plots import image_grid
from .examples import Example, demo_examples
from .overlay import overlay

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
    """``vitkit demo`` section: rollout, Grad-CAM and gradient-weighted rollout on tiles of hard-split pages
    (:func:`vitkit.explain.examples.demo_examples`)."""
    examples, metrics = demo_examples(ctx.model, ctx.classifier, ctx.hard)
    ctx.metrics["explanations"] = metrics
    return explanation_section(metrics, examples, note=(
        "Where the demo's ViT looks on one tile of four hard-split pages, for the font it predicts. Scored "
        "maps (pointing game, deletion/insertion AUC against exact masks) are in benchmarks/explain.py."))
