"""Claim (issue 6): M-Tuning gives a higher open-set AUROC than CoOp with maximum-softmax scoring, at
equal closed-set accuracy (± 1 point).

Setting: the FRB open-set split — 10 known fonts (``frb.KNOWN_FONTS``), 5 unknown ones never seen
in training. A small CLIP-style model (:mod:`vitkit.adapt.frb_clip`) is trained contrastively on
crops of rendered pages of the known fonts with font captions; it is then frozen. Pages are
embedded by averaging their ink tiles' image embeddings. Prompt tuning (CoOp; M-Tuning with and
without CTT) runs on the embeddings of the known-font training pages. Evaluation: the FRB easy and
hard pages — known fonts (250 pages) for closed-set accuracy, unknown fonts (125 pages) as the open
set. Scores: higher = more likely known (maximum softmax probability over the known classes; for
M-Tuning the softmax also covers the open words). Metrics from ``vitkit.ood.metrics``.

``OMP_NUM_THREADS=1 python benchmarks/open_set.py`` (the trained CLIP is cached in ``--out``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import time
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F

import vitkit
from vitkit.adapt.frb_clip import TEMPLATE, FRBClipConfig, page_features, train_frb_clip
from vitkit.adapt.mtuning import MTuning, MTuningConfig
from vitkit.adapt.prompts import CoOp, CoOpConfig, train_prompts
from vitkit.adapt.wordnet import sample_open_words
from vitkit.data import frb
from vitkit.demo import frb_pages
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
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(f"# {platform.machine()}, {os.cpu_count()} cores, threads {torch.get_num_threads()}, torch {torch.__version__}, "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load {os.getloadavg()[0]:.1f}")

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

    rows: dict[str, dict] = {}

    def msp(logits):
        p = logits.softmax(-1)
        return p.argmax(-1), p.max(-1).values

    # zero-shot with the training caption
    w = text_classifier_weights(clip, known, [TEMPLATE])
    with torch.no_grad():
        scale = clip.logit_scale.exp()
        pk, sk = msp(scale * F.normalize(f_known, dim=-1) @ w.t())
        _, su = msp(scale * F.normalize(f_unknown, dim=-1) @ w.t())
    rows["zero-shot (caption template), MSP"] = evaluate(pk, sk, ky, su)

    # CoOp, maximum softmax probability
    torch.manual_seed(args.seed)
    coop = CoOp(clip, known, CoOpConfig(n_ctx=args.n_ctx))
    t = time.perf_counter()
    train_prompts(lambda f, y: coop.logits(f), coop.parameters(), f_train, labels, steps=args.prompt_steps,
                  lr=args.lr, seed=args.seed)
    coop_s = time.perf_counter() - t
    with torch.no_grad():
        tf = coop.text_features()
        pk, sk = msp(coop.logits(f_known, tf))
        _, su = msp(coop.logits(f_unknown, tf))
    rows["CoOp, MSP"] = {**evaluate(pk, sk, ky, su), "tune_s": coop_s}

    words = sample_open_words(args.pool, exclude=frb.FONT_NAMES + ["font", "text"], seed=args.seed)
    for g in [int(x) for x in args.groups.split(",")]:
        torch.manual_seed(args.seed)
        mt = MTuning(clip, known, words, MTuningConfig(n_ctx=args.n_ctx, n_open=args.n_open,
                                                        n_open_test=args.n_open_test, groups=g, seed=args.seed))
        t = time.perf_counter()
        mt.fit(f_train, labels, steps=args.prompt_steps, lr=args.lr, seed=args.seed)
        s = time.perf_counter() - t
        pk, sk = mt.predict(f_known)
        _, su = mt.predict(f_unknown)
        name = "M-Tuning (open words)" if g == 1 else f"M-Tuning (open words + CTT, {g} groups)"
        rows[name] = {**evaluate(pk, sk, ky, su), "tune_s": s}

    print(f"\nCLIP: {args.clip_steps} steps on {n_train} known-font pages ({clip_s:.0f} s); prompts: "
          f"{args.prompt_steps} steps, {args.n_ctx} context tokens; open words: {args.n_open} per step from "
          f"{args.pool} WordNet nouns, {args.n_open_test} at test")
    print(f"known test pages {len(f_known)}, unknown {len(f_unknown)}\n")
    print("| method | closed-set acc | AUROC | FPR95 | OSCR |")
    print("|---|---|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {r['closed_acc']:.1%} | {r['auroc']:.3f} | {r['fpr95']:.3f} | {r['oscr']:.3f} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "rows": rows, "clip_s": clip_s}, indent=2))


if __name__ == "__main__":
    main()
