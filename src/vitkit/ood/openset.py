"""The FRB open-set task: features/logits of crops and page tiles, detectors fitted and evaluated.

Training features are pooled pre-logit features (``forward_head(forward_features(x), pre_logits=True)``)
of ink crops of known-font pages; a page is scored by the mean of its ink tiles' scores (the
tiles of :class:`vitkit.frb.classifier.TiledClassifier`), so train and test features come from the
same crop distribution. Used by ``benchmarks/ood.py`` and the demo section.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import Tensor

from .. import frb
from ..frb.classifier import TiledClassifier
from ..frb.ink import InkCropDataset
from ..progress import progress_bar
from . import metrics
from .detectors import Detector, make_detector

__all__ = ["Features", "crop_features", "demo_results", "evaluate", "fit_detectors", "page_scores", "tile_features"]


@dataclass
class Features:
    """features (N, D), logits (N, K), labels (N,) (−1 if unknown) and owner (N,): the page of each row."""

    features: Tensor
    logits: Tensor
    labels: Tensor
    owner: Tensor

    @property
    def n_pages(self) -> int:
        return int(self.owner.max()) + 1 if len(self.owner) else 0


@torch.no_grad()
def _embed(model, x: Tensor, batch: int = 256) -> tuple[Tensor, Tensor]:
    feats, logits = [], []
    for i in range(0, len(x), batch):
        f = model.forward_head(model.forward_features(x[i : i + batch]), pre_logits=True)
        feats.append(f)
        logits.append(model.head(f))
    return torch.cat(feats), torch.cat(logits)


@torch.no_grad()
def crop_features(model, pages: Tensor, labels: Tensor, *, crops_per_page: int = 50, size: int = 96,
                  seed: int = 123, batch: int = 256, progress: bool = False) -> Features:
    """Random ink crops of grey pages (P, 1, H, W) → :class:`Features` (``crops_per_page`` rows per page)."""
    ds = InkCropDataset(pages, labels, size=size, crops_per_page=crops_per_page, seed=seed)
    feats, logits, ys = [], [], []
    with progress_bar(progress) as bar:
        task = bar.add_task("embedding crops", total=len(ds))
        for i in range(0, len(ds), batch):
            items = [ds[j] for j in range(i, min(i + batch, len(ds)))]
            x = torch.stack([a for a, _ in items])
            f, lg = _embed(model, x, batch)
            feats.append(f), logits.append(lg), ys.append(torch.stack([b for _, b in items]))
            bar.advance(task, len(items))
    owner = torch.arange(len(pages)).repeat_interleave(crops_per_page)
    return Features(torch.cat(feats), torch.cat(logits), torch.cat(ys), owner)


@torch.no_grad()
def tile_features(model, pages: Tensor, labels: Tensor | None = None, *, size: int = 96,
                  stride: int = 48, batch: int = 64) -> Features:
    """Ink tiles of pages (P, C, H, W) (grey or RGB in [0, 1]) → :class:`Features`, one row per tile."""
    clf = TiledClassifier(model, size=size, stride=stride)
    feats, logits, owners = [], [], []
    for i in range(0, len(pages), batch):
        tiles, owner = clf.tiles(pages[i : i + batch].expand(-1, 3, -1, -1) if pages.shape[1] == 1
                                  else pages[i : i + batch])
        f, lg = _embed(model, tiles)
        feats.append(f), logits.append(lg), owners.append(owner + i)
    owner = torch.cat(owners)
    lab = labels[owner] if labels is not None else torch.full_like(owner, -1)
    return Features(torch.cat(feats), torch.cat(logits), lab, owner)


def fit_detectors(train: Features, specs: dict[str, dict]) -> dict[str, Detector]:
    """Fit detectors ``{label: {"name": …, **options}}`` on training crops (features or logits)."""
    out = {}
    for label, spec in specs.items():
        opts = dict(spec)
        det = make_detector(opts.pop("name", label), **opts)
        x = train.logits if det.input == "logits" else train.features
        out[label] = det.fit(x, train.labels)
    return out


def tile_scores(det: Detector, f: Features) -> Tensor:
    return det.score(f.logits if det.input == "logits" else f.features)


def page_scores(tile: Tensor, owner: Tensor, n_pages: int) -> Tensor:
    """Mean tile score per page: tile scores (T,), owner (T,) → (P,)."""
    s = torch.zeros(n_pages, dtype=tile.dtype).index_add_(0, owner, tile)
    return s / torch.bincount(owner, minlength=n_pages).clamp_min(1).to(tile.dtype)


def evaluate(dets: dict[str, Detector], known: Features, unknown: Features) -> dict[str, dict]:
    """AUROC, FPR95, AUPR-in/out per detector, page level (mean tile score) and tile level."""
    res = {}
    for name, det in dets.items():
        ti, to = tile_scores(det, known), tile_scores(det, unknown)
        pi, po = page_scores(ti, known.owner, known.n_pages), page_scores(to, unknown.owner, unknown.n_pages)
        res[name] = {
            "auroc": metrics.auroc(pi, po), "fpr95": metrics.fpr_at_tpr(pi, po, 0.95),
            "aupr_in": metrics.aupr_in(pi, po), "aupr_out": metrics.aupr_out(pi, po),
            "tile_auroc": metrics.auroc(ti, to), "tile_fpr95": metrics.fpr_at_tpr(ti, to, 0.95),
            "page_scores_in": pi.tolist(), "page_scores_out": po.tolist(),
        }
    return res


def demo_results(model, train: tuple[Tensor, Tensor], val: tuple[Tensor, Tensor], crop: int) -> dict:
    """Detectors on a FROZEN classifier of all 15 FRB fonts, known vs unknown fonts (MoLAR's setting).

    The detectors are fitted on crops (4 per page) of at most 300 training pages ``train`` (grey pages,
    labels) in the 10 known fonts and use only the known-font logits; the validation pages ``val`` are
    scored tile by tile (``crop``-px tiles, half overlapping): known fonts in, unknown out. Returns
    ``results`` (:func:`evaluate` per detector), ``n_train_crops``, ``n_train_pages``, ``n_in_pages``,
    ``n_out_pages`` and ``seconds``."""
    t0 = time.perf_counter()
    known_idx = torch.tensor([frb.FONT_NAMES.index(n) for n in frb.KNOWN_FONTS])
    is_known = torch.isin(train[1], known_idx)
    pages, labels = train[0][is_known][:300], train[1][is_known][:300]
    remap = torch.full((len(frb.FONT_NAMES),), -1, dtype=torch.long)
    remap[known_idx] = torch.arange(len(known_idx))
    model = model.eval()
    fit = crop_features(model, pages, remap[labels], crops_per_page=4, size=crop)
    vk = torch.isin(val[1], known_idx)
    fin = tile_features(model, val[0][vk], size=crop, stride=crop // 2)
    fout = tile_features(model, val[0][~vk], size=crop, stride=crop // 2)

    def known_logits(f: Features) -> Features:
        return Features(f.features, f.logits[:, known_idx], f.labels, f.owner)

    fit, fin, fout = known_logits(fit), known_logits(fin), known_logits(fout)
    budget = min(50, len(fit.features))
    specs = {"MSP": {"name": "msp"}, "max-logit": {"name": "max_logit"}, "energy": {"name": "energy"},
             f"KNN (k=10, all {len(fit.features)} crops)": {"name": "knn", "k": 10},
             "Mahalanobis": {"name": "mahalanobis"},
             f"MoLAR ({budget} exemplars)": {"name": "molar", "budget": budget, "steps": 200, "n_init": 3}}
    res = evaluate(fit_detectors(fit, specs), fin, fout)
    return {"results": res, "n_train_crops": len(fit.features), "n_train_pages": len(pages),
            "n_in_pages": fin.n_pages, "n_out_pages": fout.n_pages, "seconds": time.perf_counter() - t0}
