"""Open-set fonts: OOD detectors on a ViT trained on the 10 known FRB fonts.

Train the demo's ViT on ink crops of known-font pages only (or reuse runs/ood_bench/model), embed
tens of thousands of training crops, fit MSP / max-logit / energy / KNN (all training features) /
Mahalanobis / MoLAR, and score held-out pages: in = known-font validation + easy + hard pages,
out = pages in the 5 unknown fonts (never seen in training). Then time MoLAR's scoring against
KNN over all training features (same tile features, one process, interleaved, median).

    OMP_NUM_THREADS=1 python benchmarks/ood.py [--steps 450] [--crops-per-page 40] [--reuse] [--molar-seeds 5]

With ``--backbone dinov2-s14`` (after ``vitkit weights get dinov2-s14``) nothing is trained but a head: the
features are the frozen pretrained backbone's CLS token (MoLAR's own setting) on 98-px crops, and the
logits for MSP / max-logit / energy come from a linear probe fitted on the training crops' features.

Every detector's AUROC is also given as a difference from KNN's with its paired (DeLong) standard error.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import replace
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from vitkit import frb, load, save
from vitkit.adapt.probe import ProbeConfig, fit_linear_probe
from vitkit.bench.timing import interleaved, median, timed
from vitkit.frb.pages import frb_pages
from vitkit.frb.recipe import DemoConfig, train_crop_classifier
from vitkit.ood import metrics
from vitkit.ood.detectors import make_detector
from vitkit.ood.openset import Features, crop_features, evaluate, fit_detectors, tile_features
from vitkit.ood.report import ood_section
from vitkit.report import Report
from vitkit.weights import pretrained


def _save_features(path: Path, *parts: Features, trained_head: bool = True) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({f"{i}.{k}": getattr(f, k).contiguous() for i, f in enumerate(parts)
               for k in ("features", "logits", "labels", "owner")} | {"trained_head": torch.tensor(trained_head)},
              str(path))


def _load_features(path: Path) -> list[Features]:
    t = load_file(str(path))
    return [Features(*(t[f"{i}.{k}"] for k in ("features", "logits", "labels", "owner"))) for i in range(3)]


def _molar_label(budget: int, seed: int) -> str:
    return f"molar (budget {budget})" if seed == 0 else f"molar (budget {budget}, seed {seed})"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=None, help="default runs/ood_bench (scratch) or runs/ood_bench_NAME")
    ap.add_argument("--backbone", default="scratch",
                    help="scratch (the demo's ViT trained here on the known fonts) or a pretrained source name, e.g. "
                         "dinov2-s14: frozen, CLS features, linear-probe head (fetch it first: vitkit weights get NAME)")
    ap.add_argument("--crop", type=int, default=None,
                    help="crop/tile size in px (default: the demo's 96 for scratch, 98 = 7 patches of 14 for pretrained)")
    ap.add_argument("--probe-steps", type=int, default=600, help="linear-probe steps (pretrained backbone only)")
    ap.add_argument("--train-pages", type=int, default=1200)
    ap.add_argument("--val-pages", type=int, default=300)
    ap.add_argument("--steps", type=int, default=450)
    ap.add_argument("--crops-per-page", type=int, default=40)
    ap.add_argument("--budgets", default="50,100,200")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--reuse", action="store_true", help="reuse OUT/model and OUT/features.safetensors if present")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--crop-views", action="store_true", help="also MoLAR with another crop of the page as 2nd view")
    ap.add_argument("--molar-seeds", type=int, default=1,
                    help="fit MoLAR with seeds 0..N-1 per budget (k-means starts and head init) and report their spread")
    a = ap.parse_args()
    if a.molar_seeds < 1:
        ap.error(f"--molar-seeds must be at least 1, got {a.molar_seeds}")
    scratch = a.backbone == "scratch"
    if not scratch and a.backbone not in pretrained.SOURCES:
        ap.error(f"--backbone must be scratch or one of {sorted(pretrained.SOURCES)}, got {a.backbone!r}")
    torch.set_num_threads(a.threads)
    out = Path(a.out or ("runs/ood_bench" if scratch else f"runs/ood_bench_{a.backbone}"))
    t0 = time.perf_counter()
    known, unknown = frb.KNOWN_FONTS, frb.UNKNOWN_FONTS
    cfg = DemoConfig(out_dir=str(out), steps=a.steps, train_pages=a.train_pages, progress=False)
    cfg = replace(cfg, crop=a.crop or (cfg.crop if scratch else 98))
    cache = out / "features.safetensors"
    if not scratch:
        try:
            model = pretrained.crop_classifier(f"pretrained:{a.backbone}", known)
        except FileNotFoundError as e:
            ap.error(str(e))
    if not scratch and a.reuse and cache.exists():
        train, fin, fout = _load_features(cache)
        print("reused", cache)
    elif a.reuse and cache.exists() and (out / "model").exists():
        model = load(out / "model").eval()
        train, fin, fout = _load_features(cache)
        print("reused", out / "model", "and", cache)
    else:
        tr_pages, tr_labels = frb_pages(list(frb.train_split(a.train_pages, 0)), fonts=known)
        val = list(frb.val_split(a.val_pages, 0))
        easy, hard = frb.easy_split(), frb.hard_split()
        in_pages, in_labels = frb_pages(val + easy + hard, fonts=known)
        out_pages, _ = frb_pages(val + easy + hard, fonts=unknown)
        vk_pages, vk_labels = frb_pages(val, fonts=known)
        print(f"pages: train {len(tr_pages)} (known), test in {len(in_pages)}, out {len(out_pages)}  "
              f"[{time.perf_counter() - t0:.0f}s]", flush=True)
        if scratch and a.reuse and (out / "model").exists():
            model = load(out / "model").eval()
            print("reused", out / "model")
        elif scratch:
            t = time.perf_counter()
            model, res = train_crop_classifier(cfg, tr_pages, tr_labels, vk_pages, vk_labels, labels=known)
            save(model, out / "model")
            print(f"trained {res.steps} steps × {cfg.batch_size} crops in {time.perf_counter() - t:.0f}s", flush=True)
        t = time.perf_counter()
        train = crop_features(model, tr_pages, tr_labels, crops_per_page=a.crops_per_page, size=cfg.crop)
        fin = tile_features(model, in_pages, in_labels, size=cfg.crop, stride=cfg.crop // 2)
        fout = tile_features(model, out_pages, None, size=cfg.crop, stride=cfg.crop // 2)
        _save_features(cache, train, fin, fout, trained_head=scratch)
        print(f"features in {time.perf_counter() - t:.0f}s", flush=True)
    if not scratch:  # the logit detectors need a head: a linear probe on the frozen training features
        t = time.perf_counter()
        model.head = fit_linear_probe(train.features, train.labels, len(known), ProbeConfig(steps=a.probe_steps))
        with torch.no_grad():
            for f in (train, fin, fout):
                f.logits = model.head(f.features)
        print(f"linear probe ({a.probe_steps} steps) in {time.perf_counter() - t:.0f}s", flush=True)
    print(f"training features: {tuple(train.features.shape)}; tiles: in {len(fin.features)}, out "
          f"{len(fout.features)}", flush=True)
    page_labels = torch.zeros(fin.n_pages, dtype=torch.long).index_copy_(0, fin.owner, fin.labels)
    page_logp = torch.zeros(fin.n_pages, fin.logits.shape[1]).index_add_(0, fin.owner, fin.logits.log_softmax(-1))
    closed_acc = (page_logp.argmax(-1) == page_labels).float().mean().item()
    print(f"closed-set page accuracy on known fonts {closed_acc:.3f}", flush=True)

    specs = {"msp": {}, "max_logit": {}, "energy": {}, f"knn (k={a.k}, all N)": {"name": "knn", "k": a.k},
             "mahalanobis": {}}
    budgets = [int(b) for b in a.budgets.split(",")]
    for b in budgets:
        for seed in range(a.molar_seeds):
            specs[_molar_label(b, seed)] = {"name": "molar", "budget": b, "seed": seed}
    fit_s = {}
    dets = {}
    for label, spec in specs.items():
        t = time.perf_counter()
        dets.update(fit_detectors(train, {label: spec}))
        fit_s[label] = time.perf_counter() - t
    if a.crop_views:  # MoLAR with multi-crop views: the second view is another crop of the same page
        for b in budgets:
            label = f"molar (budget {b}, crop views)"
            t = time.perf_counter()
            dets[label] = make_detector("molar", budget=b).fit(train.features, train.labels, groups=train.owner)
            fit_s[label] = time.perf_counter() - t
    res = evaluate(dets, fin, fout)
    knn_label = f"knn (k={a.k}, all N)"
    ref = res[knn_label]
    for r in res.values():  # paired over the same pages (DeLong): is a detector's AUROC above KNN's?
        r["auroc_minus_knn"], r["auroc_minus_knn_se"] = metrics.auroc_delta(
            r["page_scores_in"], r["page_scores_out"], ref["page_scores_in"], ref["page_scores_out"])
    print(f"\n{'detector':34s} {'AUROC':>7s} {'Δ vs KNN ± SE':>15s} {'FPR95':>7s} {'AUPR-in':>8s} {'AUPR-out':>8s} "
          f"{'tile AUROC':>10s} {'fit s':>6s}")
    for name, r in res.items():
        delta = f"{r['auroc_minus_knn']:+.4f} ± {r['auroc_minus_knn_se']:.4f}"
        print(f"{name:34s} {r['auroc']:7.4f} {delta:>15s} {r['fpr95']:7.4f} {r['aupr_in']:8.4f} {r['aupr_out']:8.4f} "
              f"{r['tile_auroc']:10.4f} {fit_s[name]:6.1f}")
    over_seeds = {}
    if a.molar_seeds > 1:
        for b in budgets:
            au = [res[_molar_label(b, s)]["auroc"] for s in range(a.molar_seeds)]
            dl = [res[_molar_label(b, s)]["auroc_minus_knn"] for s in range(a.molar_seeds)]
            over_seeds[b] = {"auroc_mean": statistics.mean(au), "auroc_sd": statistics.stdev(au),
                             "minus_knn_mean": statistics.mean(dl), "seeds_at_or_above_knn": sum(d >= 0 for d in dl)}
            print(f"MoLAR budget {b} over {a.molar_seeds} seeds: AUROC {over_seeds[b]['auroc_mean']:.4f} ± "
                  f"{over_seeds[b]['auroc_sd']:.4f} (sd); − KNN {over_seeds[b]['minus_knn_mean']:+.4f}; "
                  f"{over_seeds[b]['seeds_at_or_above_knn']}/{a.molar_seeds} seeds ≥ KNN")

    # timing: score all test tiles, KNN over all N training features vs MoLAR's exemplars, interleaved
    q = torch.cat([fin.features, fout.features])
    knn = dets[knn_label]
    timing = {}
    for b in budgets:
        mol = dets[_molar_label(b, 0)]
        knn.score(q[:64]), mol.score(q[:64])  # warm-up
        t = interleaved({"knn": lambda: knn.score(q), "molar": lambda mol=mol: mol.score(q)}, a.repeats, warmup=0,
                        rotate=False)
        mk, mm = median(t["knn"]), median(t["molar"])
        timing[b] = {"knn_s": mk, "molar_s": mm, "speedup": mk / mm}
        print(f"scoring {len(q)} tiles: KNN over {len(train.features)} features {mk * 1e3:.1f} ms, "
              f"MoLAR budget {b}: {mm * 1e3:.2f} ms → {mk / mm:.1f}× faster (median of {a.repeats})")
    with torch.no_grad():
        xb = torch.zeros(256, 3, cfg.crop, cfg.crop)
        back = timed(lambda: model.forward_features(xb)) / 256
    print(f"for scale: the backbone takes {back * 1e3:.2f} ms per tile "
          f"(KNN {timing[budgets[0]]['knn_s'] / len(q) * 1e3:.3f} ms, MoLAR {timing[budgets[0]]['molar_s'] / len(q) * 1e3:.4f} ms per tile)")
    summary = {"args": vars(a), "closed_set_page_accuracy": closed_acc, "n_train_features": len(train.features),
               "n_tiles_in": len(fin.features), "n_tiles_out": len(fout.features), "n_pages_in": fin.n_pages,
               "n_pages_out": fout.n_pages, "fit_s": fit_s, "timing": timing,
               "molar_over_seeds": over_seeds, "backbone_ms_per_tile": back * 1e3,
               "results": {k: {m: v for m, v in r.items() if not m.startswith("page_scores")} for k, r in res.items()},
               "wall_s": time.perf_counter() - t0}
    out.mkdir(parents=True, exist_ok=True)
    report = Report("vitkit — open-set fonts (benchmarks/ood.py)")
    report.add(ood_section(res, [
        (f"ViT trained on the {len(known)} known fonts only ({a.steps} steps)" if scratch else
         f"frozen pretrained {a.backbone} (CLS features, {cfg.crop}-px crops) + a linear probe on the {len(known)} known "
         f"fonts") + f"; in = {fin.n_pages} held-out pages "
        f"in known fonts (val + easy + hard), out = {fout.n_pages} pages in {', '.join(unknown)}; page score = "
        f"mean over ink tiles. KNN/Mahalanobis/MoLAR fitted on {len(train.features)} training crops.",
        f"Closed-set page accuracy on the known fonts: {closed_acc:.1%}."]))
    report.write(out / "report.html")
    (out / "ood_results.json").write_text(json.dumps(summary, indent=2))
    print(f"\nwall {summary['wall_s']:.0f}s → {out / 'ood_results.json'}")


if __name__ == "__main__":
    main()
