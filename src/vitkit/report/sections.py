"""Report sections: one function per section, each returning a :class:`~vitkit.report.html.Section`.

To add a section for a new feature, write ONE function here (or in the feature's module) that
takes plain data, builds the body with :func:`~vitkit.report.html.table`,
:func:`~vitkit.report.html.figure`, :func:`~vitkit.report.html.escape` and the plots in
:mod:`vitkit.report.plots`, and returns ``Section(id, title, html)``. Every string that comes from
data must go through ``escape`` (the helpers do it); ``Section.html`` is inserted verbatim.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np
from PIL import Image

from vitkit.report.html import Section, escape, figure, make_id, table
from vitkit.report.plots import bar_plot, confusion_plot, image_grid, line_plot

__all__ = [
    "ProtocolLike",
    "flatten_metrics",
    "protocol_section",
    "samples_section",
    "summary_section",
    "training_section",
]

#: Record keys that are bookkeeping, not evaluation figures (see vitkit.engine.trainer).
_TRAIN_KEYS = frozenset({"step", "epoch", "loss", "lr", "images_per_s"})
_CORRECT, _WRONG = "#1a7f37", "#cf222e"


class ProtocolLike(Protocol):
    """What :func:`protocol_section` reads from each split's result."""

    accuracy: float
    per_class: dict[str, float]
    confusion: np.ndarray
    class_names: list[str]


def _fmt(value: Any) -> str:
    if isinstance(value, bool | np.bool_):
        return str(bool(value))
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        v = float(value)
        return f"{v:.4f}" if math.isfinite(v) and 1e-3 <= abs(v) < 1e4 else f"{v:.4g}"
    return str(value)


def flatten_metrics(metrics: Mapping[Any, Any], prefix: str = "") -> dict[str, Any]:
    """``{"frb": {"easy": {"accuracy": 0.3}}}`` -> ``{"frb/easy/accuracy": 0.3}``."""
    flat: dict[str, Any] = {}
    for key, value in metrics.items():
        name = f"{prefix}/{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            flat.update(flatten_metrics(value, name))
        else:
            flat[name] = value
    return flat


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool | np.bool_)


def summary_section(
    metrics: Mapping[str, Any], notes: Sequence[str] | None = None, *, id: str = "summary",
    title: str = "Summary",
) -> Section:
    """A table of the headline figures (nested dicts flattened to ``a/b/c``) and optional notes."""
    flat = flatten_metrics(metrics)
    body = table(["metric", "value"], [(k, _fmt(v)) for k, v in flat.items()]) if flat else (
        '<p class="note">No metrics.</p>')
    if notes:
        body += "<ul>" + "".join(f"<li>{escape(n)}</li>" for n in notes) + "</ul>"
    return Section(id, title, body)


def training_section(history: Sequence[Mapping[str, Any]], *, id: str = "training",
                     title: str = "Training") -> Section:
    """Loss vs step from the records with ``"loss"``; every other numeric key (``val_accuracy``…,
    not ``step``/``epoch``/``lr``/``images_per_s``) vs step in a second plot. A record without
    ``"step"`` counts as step = its index."""
    loss_xy: tuple[list[float], list[float]] = ([], [])
    evals: dict[str, tuple[list[float], list[float]]] = {}
    for i, rec in enumerate(history):
        step = rec.get("step", i)
        step = float(step) if _is_number(step) else float(i)
        if _is_number(rec.get("loss")):
            loss_xy[0].append(step)
            loss_xy[1].append(float(rec["loss"]))
        for key, value in rec.items():
            if key not in _TRAIN_KEYS and _is_number(value):
                xs, ys = evals.setdefault(str(key), ([], []))
                xs.append(step)
                ys.append(float(value))
    parts = []
    if loss_xy[0]:
        parts.append(figure(line_plot({"loss": loss_xy}, "step", "loss", "Training loss"),
                            alt="training loss vs step"))
    else:
        parts.append('<p class="note">No training records with a loss.</p>')
    if evals:
        ylabel = next(iter(evals)) if len(evals) == 1 else "value"
        parts.append(figure(line_plot(evals, "step", ylabel, "Evaluation"), alt="evaluation metrics vs step"))
        last = {k: (xs[-1], ys[-1]) for k, (xs, ys) in evals.items()}
        parts.append(table(["metric", "last step", "last value"],
                           [(k, _fmt(int(s) if s.is_integer() else s), _fmt(v)) for k, (s, v) in last.items()]))
    return Section(id, title, "\n".join(parts))


def protocol_section(name: str, results: Mapping[str, ProtocolLike], *, id: str | None = None) -> Section:
    """An evaluation protocol with several splits: accuracy table, per-class grouped bars and a
    confusion matrix per split."""
    if not results:
        raise ValueError(f"protocol_section({name!r}) needs at least one split")
    rows = [(split, _fmt(r.accuracy), int(np.asarray(r.confusion).sum()), len(r.class_names))
            for split, r in results.items()]
    parts = [table(["split", "accuracy", "images", "classes"], rows)]
    per_class = {split: dict(r.per_class) for split, r in results.items() if r.per_class}
    if per_class:
        parts.append(figure(bar_plot(per_class, f"{name}: per-class accuracy", "accuracy"),
                            alt=f"{name} per-class accuracy"))
    for split, r in results.items():
        parts.append(f"<h3>{escape(split)}</h3>")
        parts.append(figure(confusion_plot(r.confusion, list(r.class_names), f"{name} — {split}"),
                            caption=f"Confusion matrix, {split} (rows: true class; colour: row fraction)"))
    return Section(id or make_id(name), name, "\n".join(parts))


def samples_section(
    title: str,
    images: Sequence[Image.Image],
    true_names: Sequence[str],
    pred_names: Sequence[str],
    ncols: int = 6,
    *,
    id: str | None = None,
    thumb_width: int = 128,
) -> Section:
    """A grid of images captioned with true and predicted class: green ✓ when right, red ✗ when wrong."""
    if not len(images) == len(true_names) == len(pred_names):
        raise ValueError(f"samples_section: {len(images)} images, {len(true_names)} true names and "
                         f"{len(pred_names)} predictions must be equally many")
    right = [t == p for t, p in zip(true_names, pred_names, strict=True)]
    captions = [f"{'✓' if ok else '✗'} true: {t}\npred: {p}"
                for ok, t, p in zip(right, true_names, pred_names, strict=True)]
    colors = [_CORRECT if ok else _WRONG for ok in right]
    head = f'<p class="note">{sum(right)} of {len(right)} correct.</p>'
    grid = image_grid(list(images), captions, ncols=ncols, thumb_width=thumb_width, caption_colors=colors)
    return Section(id or make_id(title), title, head + grid)
