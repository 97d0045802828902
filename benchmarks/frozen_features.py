"""Is a broadly pretrained backbone a good general one for fonts? Frozen features against the demo's ViT, equal budget.

Both sides get the same 15-font training pages (``frb.train_split(--train-pages)``) and the same number of
optimizer steps × batch (``--steps`` × 64):

* scratch: the demo's ViT (width 96, 4 blocks, patch 12, 96-px ink crops) trained end to end with the demo's
  recipe (fresh crops every step);
* pretrained (``--backbone``, e.g. dinov2-s14): frozen; its CLS features of ``--crops-per-page`` 98-px ink crops
  per page (7×7 patches of 14); a linear probe trained for the same steps × batch on them (cycling over them),
  and weighted k-NN (k = 20, T = 0.07, DINO's protocol) with them as the bank.

The scratch model's own pre-logit features get the same linear probe and k-NN (features compared like with
like, besides its end-to-end head). Scored on 4 ink crops per validation page (crop accuracy) and on FRB easy
(150) and hard (225) pages (page = mean over ink tiles at half-crop stride: log-probabilities for heads and
probes, votes for k-NN).

    OMP_NUM_THREADS=1 python benchmarks/frozen_features.py --backbone dinov2-s14 [--steps 500] [--train-pages 600]

``--ood-features runs/ood_bench_dinov2-s14/features.safetensors`` instead evaluates features that ``ood.py`` cached
(training crops and the ink tiles of 450 known-font test pages, 10 fonts): the same linear probe and k-NN, closed
set, with no backbone forward at all (for a machine too busy for another pass).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import replace
from pathlib import Path

import torch
from torch import Tensor

from vitkit import frb, load, save
from vitkit.adapt.probe import ProbeConfig, fit_linear_probe, knn_scores
from vitkit.bench import machine
from vitkit.frb.pages import frb_pages
from vitkit.frb.recipe import DemoConfig, train_crop_classifier
from vitkit.ood.openset import Features, crop_features, tile_features
from vitkit.weights import pretrained

K = len(frb.FONT_NAMES)


def _page_accuracy(scores: Tensor, f: Features, labels: Tensor) -> float:
    """Tile scores (T, K) summed per page (the mean's argmax) → accuracy against page labels (P,)."""
    pages = torch.zeros(len(labels), scores.shape[1]).index_add_(0, f.owner, scores)
    return (pages.argmax(1) == labels).float().mean().item()


def evaluate(name: str, model, cfg: DemoConfig, data: dict, steps: int, crops_per_page: int, seed: int,
             head: bool) -> dict:
    """Linear probe + k-NN on ``model``'s pre-logit features (and its own head if ``head``)."""
    t = time.perf_counter()
    train = crop_features(model, data["train"][0], data["train"][1], crops_per_page=crops_per_page, size=cfg.crop,
                          seed=seed + 31)
    val = crop_features(model, data["val"][0], data["val"][1], crops_per_page=4, size=cfg.crop, seed=seed + 47)
    tiles = {s: tile_features(model, data[s][0], data[s][1], size=cfg.crop, stride=cfg.crop // 2)
             for s in ("easy", "hard")}
    feat_s = time.perf_counter() - t
    t = time.perf_counter()
    probe = fit_linear_probe(train.features, train.labels, K, ProbeConfig(steps=steps, seed=seed))
    probe_s = time.perf_counter() - t
    row = {"features_s": feat_s, "probe_s": probe_s, "train_features": len(train.features),
           "tiles": {s: len(f.features) for s, f in tiles.items()}}
    with torch.no_grad():
        methods = {"linear probe": lambda f: probe(f.features).log_softmax(-1),
                   "k-NN": lambda f: knn_scores(train.features, train.labels, f.features, K, k=20)}
        if head:
            methods["own head"] = lambda f: f.logits.log_softmax(-1)
        for m, fn in methods.items():
            row[m] = {"val_crops": (fn(val).argmax(1) == val.labels).float().mean().item(),
                      **{s: _page_accuracy(fn(f), f, data[s][1]) for s, f in tiles.items()}}
    print(f"{name}: " + "; ".join(f"{m} " + ", ".join(f"{k} {v:.1%}" for k, v in row[m].items())
                                  for m in methods) + f"  (features {feat_s:.0f} s)", flush=True)
    return row


def from_ood_cache(path: Path, steps: int, seed: int) -> dict:
    """Linear probe + k-NN, 10 known fonts, on ``ood.py``'s cached features (train crops; known-font test tiles)."""
    from safetensors.torch import load_file

    t = load_file(str(path))
    train, tiles = (Features(*(t[f"{i}.{k}"] for k in ("features", "logits", "labels", "owner"))) for i in (0, 1))
    k = int(train.labels.max()) + 1
    pages = torch.zeros(tiles.n_pages, dtype=torch.long).index_copy_(0, tiles.owner, tiles.labels)
    probe = fit_linear_probe(train.features, train.labels, k, ProbeConfig(steps=steps, seed=seed))
    with torch.no_grad():
        methods = {"linear probe": probe(tiles.features).log_softmax(-1),
                   "k-NN (k=20)": knn_scores(train.features, train.labels, tiles.features, k, k=20)}
        if bool(t.get("trained_head", torch.tensor(True))):  # ood.py --backbone caches logits of an untrained head
            methods["cached head"] = tiles.logits.log_softmax(-1)
    row = {"train_features": len(train.features), "test_tiles": len(tiles.features), "test_pages": tiles.n_pages}
    for m, sc in methods.items():
        row[m] = {"tiles": (sc.argmax(1) == tiles.labels).float().mean().item(),
                  "pages": _page_accuracy(sc, tiles, pages)}
        print(f"{m:14s} tile accuracy {row[m]['tiles']:.1%}, page accuracy {row[m]['pages']:.1%} "
              f"({tiles.n_pages} pages, {len(tiles.features)} tiles, {k} fonts)")
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbone", default="dinov2-s14", help=f"pretrained source: {sorted(pretrained.SOURCES)}")
    ap.add_argument("--train-pages", type=int, default=600)
    ap.add_argument("--steps", type=int, default=500, help="optimizer steps × 64 for BOTH the scratch ViT and the probes")
    ap.add_argument("--crops-per-page", type=int, default=8, help="frozen-feature crops per training page")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("runs/frozen_features"))
    ap.add_argument("--skip", choices=("scratch", "pretrained"), default=None, help="run one side only")
    ap.add_argument("--ood-features", type=Path, default=None, help="evaluate ood.py's cached features instead")
    a = ap.parse_args()
    if a.ood_features is not None:
        row = from_ood_cache(a.ood_features, a.steps, a.seed)
        a.out.mkdir(parents=True, exist_ok=True)
        path = a.out / f"from_ood_{a.ood_features.parent.name}_s{a.steps}.json"
        path.write_text(json.dumps({"features": str(a.ood_features), "steps": a.steps, **row}, indent=2))
        print(f"→ {path}")
        return
    if a.backbone not in pretrained.SOURCES:
        ap.error(f"--backbone must be one of {sorted(pretrained.SOURCES)}, got {a.backbone!r}")
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    t0 = time.perf_counter()
    print("# " + machine.line(machine.describe()), flush=True)
    train_pages, train_labels = frb_pages(list(frb.train_split(a.train_pages, a.seed)))
    data = {"train": (train_pages, train_labels), "val": frb_pages(list(frb.val_split(150, a.seed))),
            "easy": frb_pages(frb.easy_split()), "hard": frb_pages(frb.hard_split())}
    print(f"pages: train {len(train_pages)}, val {len(data['val'][0])}  [{time.perf_counter() - t0:.0f} s]", flush=True)
    rows = {}
    cfg = replace(DemoConfig(), steps=a.steps, train_pages=a.train_pages, progress=False, seed=a.seed,
                  out_dir=str(a.out / "scratch"))
    if a.skip != "scratch":
        mdir = a.out / f"scratch_p{a.train_pages}_s{a.steps}_seed{a.seed}"
        if mdir.exists():
            model = load(mdir)
            train_s = float("nan")
        else:
            t = time.perf_counter()
            model, _ = train_crop_classifier(cfg, train_pages, train_labels, *data["val"])
            train_s = time.perf_counter() - t
            save(model, mdir)
        print(f"scratch ViT: {a.steps} steps × {cfg.batch_size} in {train_s:.0f} s", flush=True)
        rows["scratch"] = {"train_s": train_s, **evaluate("scratch", model, cfg, data, a.steps, a.crops_per_page,
                                                          a.seed, head=True)}
    if a.skip != "pretrained":
        try:
            model = pretrained.crop_classifier(f"pretrained:{a.backbone}", list(frb.FONT_NAMES))
        except FileNotFoundError as e:
            ap.error(str(e))
        pcfg = replace(cfg, crop=98)
        rows[a.backbone] = evaluate(a.backbone, model, pcfg, data, a.steps, a.crops_per_page, a.seed, head=False)

    print("\n| backbone | classifier | val crops | easy pages | hard pages |\n|---|---|---|---|---|")
    for b, r in rows.items():
        for m in ("own head", "linear probe", "k-NN"):
            if m in r:
                print(f"| {b} | {m} | {r[m]['val_crops']:.1%} | {r[m]['easy']:.1%} | {r[m]['hard']:.1%} |")
    a.out.mkdir(parents=True, exist_ok=True)
    path = a.out / f"frozen_features_{a.backbone}_s{a.steps}_seed{a.seed}.json"
    path.write_text(json.dumps({"args": {k: str(v) for k, v in vars(a).items()}, "rows": rows,
                                "wall_s": time.perf_counter() - t0}, indent=2))
    print(f"wall {time.perf_counter() - t0:.0f} s → {path}")


if __name__ == "__main__":
    main()
