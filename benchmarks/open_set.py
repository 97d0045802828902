"""Claim: M-Tuning gives a higher open-set AUROC than CoOp with maximum-softmax scoring, at
equal closed-set accuracy (± 1 point).

Setting: the FRB open-set split — 10 known fonts (``frb.KNOWN_FONTS``), 5 unknown ones never seen
in training. A small CLIP-style model (:mod:`vitkit.frb.clip`) is trained contrastively on
crops of rendered pages of the known fonts with font captions; it is then frozen. Pages are
embedded by averaging their ink tiles' image embeddings. Prompt tuning (CoOp; M-Tuning with and
without CTT) runs on the embeddings of the known-font training pages. Evaluation: the FRB easy and
hard pages — known fonts (250 pages) for closed-set accuracy, unknown fonts (125 pages) as the open
set. Scores: higher = more likely known (maximum softmax probability over the known classes; for
M-Tuning the softmax also covers the open words). Metrics from ``vitkit.ood.metrics``.

``OMP_NUM_THREADS=1 python benchmarks/open_set.py`` (the trained CLIP is cached in ``--out``).

Closed-set parity (``MTuningConfig.closed_weight`` / ``closed_rule``): ``--closed-weight`` and
``--closed-rule`` add M-Tuning rows with those settings. ``--select`` chooses them on validation data
only and never looks at the test pages: ``frb.val_split`` pages of the known fonts (embedded once
and cached) give the closed-set accuracy of prompts tuned on all 10 known fonts; for the open-set
side, each of ``--folds`` folds holds out two known fonts, tunes on the training pages of the other
eight and scores the val pages of the eight (known) against those of the two (simulated open set).
Among the settings whose val closed-set accuracy is at least CoOp's − 1 point, the highest mean
simulated AUROC wins (ties: the smaller weight). The 5 unknown fonts are never used to select.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F

import vitkit
from vitkit import frb
from vitkit.adapt.mtuning import MTuning, MTuningConfig
from vitkit.adapt.prompts import CoOp, CoOpConfig, train_prompts
from vitkit.adapt.wordnet import sample_open_words
from vitkit.bench import machine
from vitkit.frb.clip import TEMPLATE, FRBClipConfig, page_features, train_frb_clip
from vitkit.frb.pages import frb_pages
from vitkit.models.clip import text_classifier_weights
from vitkit.ood import metrics as M

log = logging.getLogger("open_set")


def evaluate(pred_known, score_known, y_known, score_unknown) -> dict:
    correct = (pred_known == y_known).numpy()
    sk, su = score_known.numpy(), score_unknown.numpy()
    return {"closed_acc": float(correct.mean()), "auroc": M.auroc(sk, su), "fpr95": M.fpr_at_tpr(sk, su, 0.95),
            "oscr": M.oscr(sk, correct, su)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/bench/open_set")
    ap.add_argument("--train-pages", type=int, default=900, help="rendered training pages (2/3 in known fonts)")
    ap.add_argument("--clip-steps", type=int, default=1500)
    ap.add_argument("--prompt-steps", type=int, default=300)
    ap.add_argument("--n-ctx", type=int, default=8)
    ap.add_argument("--n-open", type=int, default=16)
    ap.add_argument("--n-open-test", type=int, default=64)
    ap.add_argument("--pool", type=int, default=500, help="WordNet nouns in the open-word pool")
    ap.add_argument("--groups", default="1,2", help="M-Tuning CTT group counts to run")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--closed-weight", default="0", help="M-Tuning closed-set weights λ to run (comma list; 0 = paper)")
    ap.add_argument("--closed-rule", default="selected", help="closed-set rules to run: selected, joint (comma list)")
    ap.add_argument("--prompt-seeds", default=None, help="prompt-tuning seeds (comma list; default --seed)")
    ap.add_argument("--select", action="store_true", help="choose groups/λ/rule on validation data, then stop")
    ap.add_argument("--val-pages", type=int, default=450, help="frb.val_split samples (2/3 in known fonts)")
    ap.add_argument("--val-render", choices=("augmented", "clean"), default="augmented",
                    help="val pages as training pages are rendered (augmented) or without rotation/blur/noise/JPEG, "
                         "as the FRB evaluation pages are (clean)")
    ap.add_argument("--folds", type=int, default=5, help="--select: simulated open-set folds (2 known fonts held out)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print("# " + machine.line(machine.describe()))

    known = list(frb.KNOWN_FONTS)
    cfg = replace(FRBClipConfig(), steps=args.clip_steps, seed=args.seed)
    ckpt = out / f"clip_p{args.train_pages}_s{args.clip_steps}_seed{args.seed}"
    feats_path = ckpt / "page_features.pt"  # cached page embeddings: later runs only tune prompts
    clip_s = float("nan")
    if feats_path.exists():
        clip = vitkit.load(ckpt).eval()
        cached = torch.load(feats_path, weights_only=True)
        f_train, labels, f_known, ky, f_unknown = (cached[k] for k in ("train", "labels", "known", "ky", "unknown"))
        log.info("CLIP and page features reused from %s", ckpt)
    else:
        t0 = time.perf_counter()
        train = [s for s in frb.train_split(args.train_pages, args.seed) if s.font in known]
        pages, labels = frb_pages(train, fonts=known)
        log.info("data: %d known-font training pages (%.0f s)", len(pages), time.perf_counter() - t0)
        if (ckpt / "model.safetensors").exists():
            clip = vitkit.load(ckpt).eval()
            log.info("CLIP reused from %s", ckpt)
        else:
            t = time.perf_counter()
            clip = train_frb_clip(cfg, pages, labels, [s.text for s in train], out_dir=out / "clip_train")
            clip_s = time.perf_counter() - t
            vitkit.save(clip, ckpt)
            log.info("CLIP trained in %.0f s", clip_s)
        t = time.perf_counter()
        f_train = page_features(clip, pages)
        test = frb.easy_split() + frb.hard_split()
        kp, ky = frb_pages(test, fonts=known)
        up, _ = frb_pages(test, fonts=frb.UNKNOWN_FONTS)
        f_known, f_unknown = page_features(clip, kp), page_features(clip, up)
        torch.save({"train": f_train, "labels": labels, "known": f_known, "ky": ky, "unknown": f_unknown}, feats_path)
        log.info("features: %d train, %d known test, %d unknown test pages (%.0f s)", len(f_train), len(f_known),
                 len(f_unknown), time.perf_counter() - t)
    clip.requires_grad_(False)
    n_train = len(f_train)
    words = sample_open_words(args.pool, exclude=frb.FONT_NAMES + ["font", "text"], seed=args.seed)
    seeds = [int(x) for x in (args.prompt_seeds or str(args.seed)).split(",")]
    weights = [float(x) for x in args.closed_weight.split(",")]
    rules = args.closed_rule.split(",")

    if args.select:
        f_val, y_val = val_features(clip, ckpt, args.val_pages, args.seed, args.val_render)
        select_on_val(clip, known, words, f_train, labels, f_val, y_val, args, seeds,
                      [int(x) for x in args.groups.split(",")], weights, rules)
        return

    rows: dict[str, dict] = {}

    # zero-shot with the training caption
    w = text_classifier_weights(clip, known, [TEMPLATE])
    with torch.no_grad():
        scale = clip.logit_scale.exp()
        pk, sk = msp(scale * F.normalize(f_known, dim=-1) @ w.t())
        _, su = msp(scale * F.normalize(f_unknown, dim=-1) @ w.t())
    rows["zero-shot (caption template), MSP"] = evaluate(pk, sk, ky, su)

    def add(name: str, r: dict, seed: int) -> None:
        key = name if len(seeds) == 1 else f"{name} [seed {seed}]"
        rows[key] = r

    for seed in seeds:
        # CoOp, maximum softmax probability
        t = time.perf_counter()
        coop = tune_coop(clip, known, f_train, labels, args, seed)
        coop_s = time.perf_counter() - t
        pk, sk = coop_predict(coop, f_known)
        _, su = coop_predict(coop, f_unknown)
        add("CoOp, MSP", {**evaluate(pk, sk, ky, su), "tune_s": coop_s}, seed)

        for g in [int(x) for x in args.groups.split(",")]:
            for lam in weights:
                t = time.perf_counter()
                mt = tune_mtuning(clip, known, words, f_train, labels, args, seed, g, lam)
                s = time.perf_counter() - t
                for rule in rules if g > 1 else rules[:1]:
                    mt.cfg.closed_rule = rule
                    pk, sk = mt.predict(f_known)
                    _, su = mt.predict(f_unknown)
                    add(mtuning_name(g, lam, rule), {**evaluate(pk, sk, ky, su), "tune_s": s}, seed)

    print(f"\nCLIP: {args.clip_steps} steps on {n_train} known-font pages ({clip_s:.0f} s); prompts: "
          f"{args.prompt_steps} steps, {args.n_ctx} context tokens; open words: {args.n_open} per step from "
          f"{args.pool} WordNet nouns, {args.n_open_test} at test")
    print(f"known test pages {len(f_known)}, unknown {len(f_unknown)}\n")
    print_table(rows)
    if len(seeds) > 1:
        print(f"\nmean over prompt seeds {seeds}:\n")
        names = dict.fromkeys(k.rsplit(" [seed", 1)[0] for k in rows if " [seed " in k)
        print_table({n: {m: sum(rows[f"{n} [seed {s}]"][m] for s in seeds) / len(seeds)
                         for m in ("closed_acc", "auroc", "fpr95", "oscr")} for n in names})
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "rows": rows, "clip_s": clip_s}, indent=2))


def msp(logits):
    p = logits.softmax(-1)
    return p.argmax(-1), p.max(-1).values


def print_table(rows: dict[str, dict]) -> None:
    print("| method | closed-set acc | AUROC | FPR95 | OSCR |")
    print("|---|---|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {r['closed_acc']:.1%} | {r['auroc']:.3f} | {r['fpr95']:.3f} | {r['oscr']:.3f} |")


def mtuning_name(groups: int, closed_weight: float, rule: str) -> str:
    name = "M-Tuning (open words)" if groups == 1 else f"M-Tuning (open words + CTT, {groups} groups)"
    if closed_weight > 0:
        name += f", closed-set λ={closed_weight:g}"
    if groups > 1 and rule != "selected":
        name += f", {rule} closed-set rule"
    return name


def tune_coop(clip, classes, f, y, args, seed: int) -> CoOp:
    torch.manual_seed(seed)
    coop = CoOp(clip, classes, CoOpConfig(n_ctx=args.n_ctx))
    train_prompts(lambda x, _: coop.logits(x), coop.parameters(), f, y, steps=args.prompt_steps, lr=args.lr, seed=seed)
    return coop


@torch.no_grad()
def coop_predict(coop: CoOp, f):
    return msp(coop.logits(f))


def tune_mtuning(clip, classes, words, f, y, args, seed: int, groups: int, closed_weight: float) -> MTuning:
    torch.manual_seed(seed)
    mt = MTuning(clip, classes, words, MTuningConfig(n_ctx=args.n_ctx, n_open=args.n_open, n_open_test=args.n_open_test,
                                                     groups=groups, closed_weight=closed_weight, seed=seed))
    mt.fit(f, y, steps=args.prompt_steps, lr=args.lr, seed=seed)
    return mt


CLEAN = {"rotation_prob": 0.0, "blur": 0.0, "noise": 0.0, "jpeg_prob": 0.0}


def val_features(clip, ckpt: Path, n: int, seed: int, render: str = "augmented"):
    """Embeddings (P, D) and labels of the known-font pages among ``frb.val_split(n, seed)`` (cached);
    ``render="clean"`` turns the training augmentations (rotation, blur, noise, JPEG) off."""
    path = ckpt / f"val_features_{n}_{render}.pt"
    if path.exists():
        cached = torch.load(path, weights_only=True)
        return cached["val"], cached["labels"]
    pages, y = frb_pages(list(frb.val_split(n, seed, **(CLEAN if render == "clean" else {}))), fonts=list(frb.KNOWN_FONTS))
    f = page_features(clip, pages)
    torch.save({"val": f, "labels": y}, path)
    log.info("val features: %d known-font pages", len(f))
    return f, y


def select_on_val(clip, known, words, f_train, y_train, f_val, y_val, args, seeds, groups, weights, rules) -> None:
    """Closed-set accuracy on val pages (prompts tuned on all known fonts) and simulated open-set AUROC
    (folds holding out 2 known fonts), averaged over ``seeds``; prints the table and the choice."""
    folds = [known[2 * i : 2 * i + 2] for i in range(min(args.folds, len(known) // 2))]
    configs = [("CoOp", 0, 0.0, "")] + [("MT", g, lam, r) for g in groups for lam in weights for r in (rules if g > 1 else rules[:1])]
    acc = {c: [] for c in configs}
    auroc = {c: [] for c in configs}

    def run(classes, f, y, f_eval, y_eval, seed):
        """→ {config: (pred on f_eval, score on f_eval)} for every config."""
        out = {}
        coop = tune_coop(clip, classes, f, y, args, seed)
        out[configs[0]] = coop_predict(coop, f_eval)
        for g in groups:
            for lam in weights:
                mt = tune_mtuning(clip, classes, words, f, y, args, seed, g, lam)
                for r in rules if g > 1 else rules[:1]:
                    mt.cfg.closed_rule = r
                    out[("MT", g, lam, r)] = mt.predict(f_eval)
        return out

    t0 = time.perf_counter()
    for seed in seeds:
        for c, (pred, _) in run(known, f_train, y_train, f_val, y_val, seed).items():
            acc[c].append((pred == y_val).float().mean().item())
        for held in folds:
            keep = [k for k in known if k not in held]
            remap = torch.full((len(known),), -1, dtype=torch.long)
            for j, k in enumerate(keep):
                remap[known.index(k)] = j
            tr, va = remap[y_train] >= 0, remap[y_val] >= 0
            for c, (_, score) in run(keep, f_train[tr], remap[y_train[tr]], f_val, None, seed).items():
                auroc[c].append(M.auroc(score[va].numpy(), score[~va].numpy()))
        log.info("selection, seed %d done (%.0f s)", seed, time.perf_counter() - t0)

    def mean(v):
        return sum(v) / len(v)

    print(f"\nValidation: {len(f_val)} known-font val pages ({args.val_render}); simulated open set: folds {folds}; seeds {seeds}\n")
    print("| setting | val closed-set acc | simulated AUROC (mean over folds) |")
    print("|---|---|---|")
    for c in configs:
        name = "CoOp, MSP" if c[0] == "CoOp" else mtuning_name(c[1], c[2], c[3])
        print(f"| {name} | {mean(acc[c]):.1%} | {mean(auroc[c]):.3f} |")
    floor = mean(acc[configs[0]]) - 0.01
    ok = [c for c in configs[1:] if mean(acc[c]) >= floor - 1e-9]
    if not ok:
        print(f"\nno M-Tuning setting reaches CoOp's val closed-set accuracy − 1 point ({floor:.1%})")
        return
    best = max(ok, key=lambda c: (mean(auroc[c]), -c[2]))
    print(f"\nchosen (val acc ≥ {floor:.1%}, highest simulated AUROC): --groups {best[1]} --closed-weight {best[2]:g} "
          f"--closed-rule {best[3]}")


if __name__ == "__main__":
    main()
