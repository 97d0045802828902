"""Report section for open-world recognition: ROC curves, known-vs-unknown score histograms, a table.

:func:`ood_section` turns evaluated detectors (see :func:`vitkit.ood.openset.evaluate`) into a
:class:`vitkit.report.Section`; :func:`demo_section` is the ``vitkit demo`` builder (the figures come
from :func:`vitkit.ood.openset.demo_results`).
"""

from __future__ import annotations

import logging

import numpy as np

log = logging.getLogger(__name__)

__all__ = ["demo_section", "histogram_plot", "ood_section", "roc_curve", "roc_plot"]


def roc_curve(scores_in, scores_out) -> tuple[np.ndarray, np.ndarray]:
    """(FPR, TPR) at every distinct threshold, from (0, 0) to (1, 1); in-distribution = positive."""
    si, so = np.asarray(scores_in, float), np.asarray(scores_out, float)
    s = np.concatenate([si, so])
    pos = np.r_[np.ones(len(si), bool), np.zeros(len(so), bool)]
    order = np.argsort(-s, kind="mergesort")
    s, pos = s[order], pos[order]
    last = np.r_[s[1:] != s[:-1], True]
    tpr = np.r_[0.0, np.cumsum(pos)[last] / max(len(si), 1)]
    fpr = np.r_[0.0, np.cumsum(~pos)[last] / max(len(so), 1)]
    return fpr, tpr


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def roc_plot(results: dict[str, dict], title: str = "") -> bytes:
    """ROC curves of every detector (``results[name]['page_scores_in'/'page_scores_out']``). PNG bytes."""
    from ..report.plots import figure_png

    fig = _figure(6, 4.5)
    ax = fig.add_subplot()
    for name, r in results.items():
        fpr, tpr = roc_curve(r["page_scores_in"], r["page_scores_out"])
        ax.plot(fpr, tpr, label=f"{name} (AUROC {r['auroc']:.3f})".replace("$", r"\$"), linewidth=1.5)
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    ax.axhline(0.95, color="grey", linewidth=0.6, linestyle="--")
    ax.set_xlabel("false positive rate (unknown accepted)")
    ax.set_ylabel("true positive rate (known kept)")
    if title:
        ax.set_title(title.replace("$", r"\$"))
    ax.legend(frameon=False, fontsize=8, loc="lower right")
    ax.grid(True, alpha=0.3)
    return figure_png(fig)


def histogram_plot(results: dict[str, dict], ncols: int = 3) -> bytes:
    """One panel per detector: histograms of known and unknown page scores. PNG bytes."""
    from ..report.plots import figure_png

    n = len(results)
    nrows = -(-n // ncols)
    fig = _figure(3.3 * ncols, 2.4 * nrows)
    for i, (name, r) in enumerate(results.items()):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        si, so = np.asarray(r["page_scores_in"]), np.asarray(r["page_scores_out"])
        lo, hi = float(min(si.min(), so.min())), float(max(si.max(), so.max()))
        bins = np.linspace(lo, hi if hi > lo else lo + 1e-6, 30)
        ax.hist(si, bins=bins, alpha=0.6, density=True, label="known fonts")
        ax.hist(so, bins=bins, alpha=0.6, density=True, label="unknown fonts")
        ax.set_title(name.replace("$", r"\$"), fontsize=9)
        ax.tick_params(labelsize=7)
        if i == 0:
            ax.legend(frameon=False, fontsize=7)
    return figure_png(fig)


def ood_section(results: dict[str, dict], notes: list[str], *, title: str = "Open-world recognition",
                id: str = "open-world") -> object:
    """A report Section: the metric table, ROC curves and score histograms, with ``notes`` above."""
    from ..report import Section, escape, figure, table

    rows = [(name, f"{r['auroc']:.3f}", f"{r['fpr95']:.3f}", f"{r['aupr_in']:.3f}", f"{r['aupr_out']:.3f}",
             f"{r['tile_auroc']:.3f}") for name, r in results.items()]
    body = "".join(f"<p>{escape(n)}</p>" for n in notes)
    body += table(["detector", "AUROC", "FPR95", "AUPR-in", "AUPR-out", "AUROC (single tiles)"], rows)
    body += figure(roc_plot(results), caption="ROC curves (page level; dashed: 95% of known pages kept)")
    body += figure(histogram_plot(results), caption="Page scores, known vs unknown fonts (higher = known)")
    return Section(id, title, body)


def demo_section(ctx) -> object:
    """``vitkit demo`` section: detectors on the demo's FROZEN backbone, known vs unknown fonts.

    The demo model was trained on all 15 fonts, so it cannot be evaluated honestly as an open-set
    classifier. Here it plays MoLAR's frozen foundation model: detectors are fitted on crops of the
    training pages of the 10 known fonts only, logit detectors use only the 10 known-font logits,
    and the validation pages are scored (known vs the 5 unknown fonts).
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small matmuls: on the shared 2-core machine 2 threads took 279 s, 1 thread 32 s
    try:
        return _demo_section(ctx)
    finally:
        torch.set_num_threads(threads)


def _demo_section(ctx) -> object:
    from .. import frb
    from .openset import demo_results

    d = demo_results(ctx.model, (ctx.train_pages, ctx.train_labels), (ctx.val_pages, ctx.val_labels), ctx.cfg.crop)
    res = d["results"]
    ctx.metrics["ood"] = {k: {m: round(v, 4) for m, v in r.items() if not m.startswith("page_scores")}
                          for k, r in res.items()}
    notes = [
        f"Known = {len(frb.KNOWN_FONTS)} fonts, unknown = {', '.join(frb.UNKNOWN_FONTS)}. Detectors were fitted on "
        f"{d['n_train_crops']} crops of {d['n_train_pages']} training pages in the known fonts and score the "
        f"{d['n_in_pages']} known-font and {d['n_out_pages']} unknown-font validation pages (page score = mean over "
        f"its ink tiles; higher = known). Logit detectors use only the 10 known-font logits.",
        "Caveat: the demo backbone was trained on all 15 fonts; here it is a frozen feature extractor (MoLAR's "
        "setting), but its features have seen the unknown fonts, so these figures are optimistic. The honest "
        "open-set figures (a ViT trained on the 10 known fonts only) are in benchmarks/RESULTS.md "
        "(benchmarks/ood.py).",
        f"Section built in {d['seconds']:.0f} s (one thread). MoLAR here: 200 head steps (library default 1500).",
    ]
    return ood_section(res, notes, title="Open-world recognition (known vs unknown fonts)", id="open-world")
