"""Plots for the report: pure functions from data to PNG bytes (or, for images, HTML).

Figures are built on ``matplotlib.figure.Figure`` with an Agg canvas, never through
``pyplot``, so nothing here touches matplotlib's global state or needs a display. Text that
comes from data (labels, titles) is drawn literally: ``$`` never starts mathtext.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from vitkit.report.html import escape, figure_png, png_data_uri

if TYPE_CHECKING:  # matplotlib is imported when a plot is drawn, so `import vitkit.demo` works without it
    from matplotlib.figure import Figure

__all__ = ["bar_plot", "confusion_plot", "figure_png", "image_grid", "line_plot"]

#: Up to this many classes, the confusion matrix shows the counts in its cells.
MAX_ANNOTATED_CLASSES = 20
_COLOR = re.compile(r"^(#[0-9A-Fa-f]{3,8}|[A-Za-z]{1,30})$")


def _plain(text: object) -> str:
    """``text`` as a string matplotlib draws literally (escaped ``$``: no mathtext)."""
    return str(text).replace("$", r"\$")


def _new_figure(width: float, height: float) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def line_plot(
    series: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    xlabel: str = "",
    ylabel: str = "",
    title: str = "",
    *,
    logy: bool = False,
) -> bytes:
    """One line per ``name -> (xs, ys)``; a legend when there is more than one. PNG bytes."""
    if not series:
        raise ValueError("line_plot needs at least one series")
    fig = _new_figure(7, 3.6)
    ax = fig.add_subplot()
    for name, (xs, ys) in series.items():
        xs, ys = np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)
        if xs.shape != ys.shape or xs.ndim != 1:
            raise ValueError(f"series {name!r}: xs and ys must be 1-D of equal length, got {xs.shape} and {ys.shape}")
        ax.plot(xs, ys, label=_plain(name), marker="o" if len(xs) <= 30 else None, markersize=3, linewidth=1.5)
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(_plain(xlabel))
    ax.set_ylabel(_plain(ylabel))
    if title:
        ax.set_title(_plain(title))
    ax.grid(True, alpha=0.3)
    if len(series) > 1:
        ax.legend(frameon=False)
    return figure_png(fig)


def confusion_plot(matrix: np.ndarray, labels: Sequence[str], title: str = "") -> bytes:
    """A (K, K) confusion matrix of counts (rows: true class, columns: predicted).

    Colours are row-normalised (the fraction of each true class); counts are written in the
    cells when K <= :data:`MAX_ANNOTATED_CLASSES`. PNG bytes.
    """
    m = np.asarray(matrix)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise ValueError(f"confusion matrix must be square (K, K), got shape {m.shape}")
    k = m.shape[0]
    if len(labels) != k:
        raise ValueError(f"confusion matrix is {k}x{k} but {len(labels)} labels were given")
    rows = m.sum(axis=1, keepdims=True).astype(float)
    frac = np.divide(m, rows, out=np.zeros(m.shape, dtype=float), where=rows > 0)

    side = float(np.clip(2.5 + 0.4 * k, 4.0, 16.0))
    fig = _new_figure(side + 1.2, side)
    ax = fig.add_subplot()
    im = ax.imshow(frac, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    fig.colorbar(im, ax=ax, shrink=0.8, label="fraction of true class")
    font = 9 if k <= 20 else max(4, 9 - (k - 20) // 10)
    if k <= 100:
        names = [_plain(s) for s in labels]
        ax.set_xticks(range(k), names, rotation=45, ha="right", rotation_mode="anchor", fontsize=font)
        ax.set_yticks(range(k), names, fontsize=font)
    else:
        ax.set_xticks([])
        ax.set_yticks([])
    if k <= MAX_ANNOTATED_CLASSES:
        cell = max(6, 10 - k // 4)
        for i in range(k):
            for j in range(k):
                if m[i, j]:
                    ax.text(j, i, f"{m[i, j]:g}", ha="center", va="center", fontsize=cell,
                            color="white" if frac[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if title:
        ax.set_title(_plain(title))
    return figure_png(fig)


def bar_plot(values: Mapping[str, Mapping[str, float]], title: str = "", ylabel: str = "") -> bytes:
    """Grouped bars: ``{group: {category: value}}``, one colour per group (e.g. split), the
    categories (e.g. classes) along x in first-seen order. Values in [0, 1] get a 0..1 axis. PNG bytes."""
    if not values:
        raise ValueError("bar_plot needs at least one group")
    categories: list[str] = []
    for inner in values.values():
        categories.extend(c for c in inner if c not in categories)
    if not categories:
        raise ValueError("bar_plot needs at least one value")
    n_groups, n_cat = len(values), len(categories)
    width = 0.8 / n_groups
    fig = _new_figure(float(np.clip(2.0 + 0.25 * n_cat * max(1, n_groups) ** 0.5, 6.0, 16.0)), 3.8)
    ax = fig.add_subplot()
    x = np.arange(n_cat)
    all_vals = []
    for g, (group, inner) in enumerate(values.items()):
        ys = np.array([float(inner.get(c, np.nan)) for c in categories])
        all_vals.extend(ys[np.isfinite(ys)])
        ax.bar(x + (g - (n_groups - 1) / 2) * width, np.nan_to_num(ys), width, label=_plain(group))
    ax.set_xticks(x, [_plain(c) for c in categories], rotation=45 if n_cat > 4 else 0,
                  ha="right" if n_cat > 4 else "center", rotation_mode="anchor",
                  fontsize=9 if n_cat <= 30 else 6)
    if all_vals and 0.0 <= min(all_vals) and max(all_vals) <= 1.0:
        ax.set_ylim(0.0, 1.0)
    ax.set_ylabel(_plain(ylabel))
    if title:
        ax.set_title(_plain(title))
    ax.grid(True, axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    if n_groups > 1:  # outside the axes: bars reach the top when accuracy is 1
        fig.legend(loc="outside upper right", frameon=False, ncols=min(n_groups, 6))
    return figure_png(fig)


def image_grid(
    images: Sequence[Image.Image],
    captions: Sequence[str],
    ncols: int = 6,
    thumb_width: int = 128,
    caption_colors: Sequence[str] | None = None,
) -> str:
    """An HTML grid of embedded thumbnails (``thumb_width`` px wide) with captions.

    Captions are escaped (newlines become line breaks); ``caption_colors`` are CSS colour
    names or ``#hex`` values, one per image.
    """
    if len(captions) != len(images):
        raise ValueError(f"{len(images)} images but {len(captions)} captions")
    if caption_colors is not None and len(caption_colors) != len(images):
        raise ValueError(f"{len(images)} images but {len(caption_colors)} caption colours")
    if ncols < 1 or thumb_width < 1:
        raise ValueError(f"ncols and thumb_width must be positive, got {ncols} and {thumb_width}")
    cells = []
    for i, (img, cap) in enumerate(zip(images, captions, strict=True)):
        thumb = _thumbnail(img, thumb_width)
        style = ""
        if caption_colors is not None:
            color = str(caption_colors[i])
            if not _COLOR.match(color):
                raise ValueError(f"caption colour {color!r} must be a CSS colour name or #hex value")
            style = f' style="color:{color}"'
        text = "<br>".join(escape(line) for line in str(cap).split("\n"))
        cells.append(
            f'<div class="cell"><img src="{png_data_uri(thumb)}" width="{thumb.width}" '
            f'height="{thumb.height}" alt="{escape(" ".join(str(cap).split()))}"><div{style}>{text}</div></div>'
        )
    return (f'<div class="grid" style="grid-template-columns:repeat({int(ncols)}, '
            f'minmax(0, {int(thumb_width) + 16}px))">{"".join(cells)}</div>')


def _thumbnail(img: Image.Image, width: int) -> Image.Image:
    """``img`` resized to ``width`` px wide (aspect kept): smooth when shrinking, crisp when enlarging."""
    img = img if img.mode in ("RGB", "RGBA", "L") else img.convert("RGB")
    height = max(1, round(img.height * width / img.width))
    resample = Image.Resampling.LANCZOS if width < img.width else Image.Resampling.NEAREST
    return img.resize((width, height), resample)
