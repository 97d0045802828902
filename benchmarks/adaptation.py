"""Claim: LoRA rank 8 on qkv trains ≤ 1% of the backbone's parameters and, adapting a model
trained on 10 fonts to all 15, comes within 1 point of full fine-tuning (equal steps).

1. Base: the demo's ViT (4 blocks, width 96, patch 12 on 96×96 ink crops; --dim/--depth/--heads/--patch for
   a wider one) trained from scratch on the 10 known fonts (``frb.KNOWN_FONTS``) of the rendered training pages.
2. Adapt to all 15 fonts from that base, each arm for the same number of steps on the same crops:
   a new 15-way head (rows of the 10 known fonts copied from the base head, 5 new rows freshly
   initialised) plus either full fine-tuning of every weight, or LoRA (rank 8, alpha 16) on the fused
   qkv (q, k and v slices) with the rest of the backbone frozen.
3. Page accuracy on FRB easy (150) and hard (225) with ``TiledClassifier``; trainable-parameter
   share, also for ViT-B/16 (where the ≤ 1% figure is meant).

With ``--backbone dinov2-s14`` (after ``vitkit weights get dinov2-s14``) the base is the pretrained backbone
instead (98-px crops, 7×7 patches of 14), and the adaptation is LP-FT on the 15 fonts: a 15-way linear probe on
the frozen CLS features of ``--probe-crops`` crops per training page, trained for ``--probe-steps`` steps
(default: ``--adapt-steps``; the "probe" arm), is the head every other arm starts from; full fine-tuning and LoRA
then train for ``--adapt-steps`` more steps. ``--arms`` picks which of full / lora run (one per process keeps each run short).

Run with one thread on a shared machine: ``OMP_NUM_THREADS=1 python benchmarks/adaptation.py``.
The base model is cached in ``--out`` and reused by later runs with the same settings.
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
from torch import nn

from vitkit import VisionTransformer, create_model, frb
from vitkit.adapt import lora
from vitkit.adapt.probe import ProbeConfig, fit_linear_probe
from vitkit.bench import machine
from vitkit.engine import TrainConfig, Trainer, model_device
from vitkit.frb.classifier import TiledClassifier
from vitkit.frb.ink import InkCropDataset, pil_to_tensor
from vitkit.frb.pages import frb_pages
from vitkit.frb.protocols import evaluate_classifier
from vitkit.frb.recipe import DemoConfig, build_model, train_crop_classifier
from vitkit.ood.openset import crop_features
from vitkit.weights import pretrained

log = logging.getLogger("adaptation")
# LoRA arms → (LoRA targets, modules trained in full besides the adapters)
LORA_ARMS = {"lora": (("qkv",), ("head",)), "lora_mlp": (("qkv", "fc1", "fc2"), ("head",)),
             "lora_embed": (("qkv",), ("head", "patch_embed"))}  # lora_embed: a diagnostic


def new_head(model: VisionTransformer, old_labels: list[str], labels: list[str]) -> None:
    """Replace the head by a len(labels)-way one; rows of classes the old head knew are copied."""
    old = model.head
    head = nn.Linear(old.in_features, len(labels))
    nn.init.trunc_normal_(head.weight, std=0.02)
    nn.init.zeros_(head.bias)
    with torch.no_grad():
        for i, name in enumerate(labels):
            if name in old_labels:
                j = old_labels.index(name)
                head.weight[i] = old.weight[j]
                head.bias[i] = old.bias[j]
    model.head = head
    model.cfg.num_classes = len(labels)
    model.cfg.labels = list(labels)


def adapt(model, pages, labels, cfg: DemoConfig, steps: int, lr: float, out: Path, seed: int) -> float:
    """Train ``model`` (its trainable parameters) on ink crops for ``steps``; returns seconds.

    Checkpoints every tenth of the run in ``out`` and resumes from there, so a killed run loses at most a
    tenth (``out`` names the arm, seed, learning rate and steps: a checkpoint is only resumed by the same run)."""
    n = len(pages)
    ds = InkCropDataset(pages, labels, size=cfg.crop, crops_per_page=max(1, -(-steps * cfg.batch_size // n)),
                        seed=seed + 17)  # crops the base never saw; the same for every arm
    tcfg = TrainConfig(epochs=1, max_steps=steps, batch_size=cfg.batch_size, lr=lr, warmup_steps=max(1, steps // 20),
                       weight_decay=0.05, label_smoothing=0.1, out_dir=str(out), progress=False,
                       ckpt_every=max(1, steps // 10), log_every=max(1, steps // 10), seed=seed)
    t = time.perf_counter()
    Trainer(model, ds, tcfg).fit(resume=True)
    return time.perf_counter() - t


def score_splits(score: str) -> dict[str, list]:
    """The pages an arm is scored on: FRB easy/hard ("test"), or for choosing settings without touching them
    ("val") ``frb.protocol_val_split`` — training-vocabulary sentences and title-case phrases rendered exactly
    like easy and hard, all 15 fonts."""
    if score == "test":
        return {"easy": frb.easy_split(), "hard": frb.hard_split()}
    if score == "val":
        val = frb.protocol_val_split()
        return {"val_sentence": [x for x in val if x.split == "val-sentence"],
                "val_title": [x for x in val if x.split == "val-title"]}
    raise ValueError(f"--score must be test or val, got {score!r}")


def page_results(model, cfg: DemoConfig, score: str = "test", limit: int | None = None) -> dict:
    """Split name → ``ProtocolResult`` (accuracy, per-font accuracy, per-page predictions) of ``model``.

    ``limit``: score every ``len(split) // limit``-th page only (spread over all fonts), for slow backbones."""
    clf = TiledClassifier(model.eval(), size=cfg.crop, stride=cfg.crop // 2).eval()
    device = model_device(model)  # the engine trains on CUDA when there is one
    # FRB pages differ in size (canvases cut to the text): one page per call, as the demo scores them
    return {name: evaluate_classifier(clf, split, transform=pil_to_tensor, batch_size=1, progress=False,
                                      device=device)
            for name, split in score_splits(score).items()
            for split in [split if not limit or limit >= len(split) else split[:: -(-len(split) // limit)]]}


def page_accuracy(model, cfg: DemoConfig, score: str = "test") -> dict[str, float]:
    return {name: r.accuracy for name, r in page_results(model, cfg, score).items()}


def backbone_params(model: nn.Module) -> int:
    return sum(p.numel() for n, p in model.named_parameters() if "lora_" not in n and not n.startswith("head"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/bench/adaptation")
    ap.add_argument("--train-pages", type=int, default=1200)
    ap.add_argument("--base-steps", type=int, default=1000)
    ap.add_argument("--adapt-steps", type=int, default=500)
    ap.add_argument("--lr-full", type=float, default=1e-3)
    ap.add_argument("--lr-lora", type=float, default=2e-3)
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--parts", default="qkv", help="qkv slices LoRA adapts")
    ap.add_argument("--arms", default="full,lora",
                    help="comma list of: full, lora, lora_mlp (LoRA on fc1, fc2 too), lora_embed (diagnostic: LoRA on "
                         "qkv plus the whole patch embedding trained), probe (pretrained --backbone only)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--adapt-seed", type=int, default=None, help="seed of the adaptation runs (default --seed)")
    ap.add_argument("--dim", type=int, default=DemoConfig.dim, help="backbone width (LoRA's share ≈ 2·parts·rank / (12·dim))")
    ap.add_argument("--depth", type=int, default=DemoConfig.depth)
    ap.add_argument("--heads", type=int, default=DemoConfig.heads)
    ap.add_argument("--patch", type=int, default=DemoConfig.patch, help="patch size on the 96×96 crops")
    ap.add_argument("--base-lr", type=float, default=DemoConfig.lr, help="learning rate of the base training")
    ap.add_argument("--score", choices=("test", "val"), default="test",
                    help="pages to score: FRB easy/hard (test) or frb.protocol_val_split (val: for choosing lrs)")
    ap.add_argument("--backbone", default="scratch",
                    help="scratch (the base trained here on 10 fonts) or a pretrained source, e.g. dinov2-s14 (LP-FT, "
                         "see the module docstring; fetch it first: vitkit weights get NAME)")
    ap.add_argument("--batch", type=int, default=None, help="crops per step (default: the demo's 64)")
    ap.add_argument("--probe-crops", type=int, default=4, help="crops per page for the linear probe (pretrained only)")
    ap.add_argument("--probe-steps", type=int, default=None,
                    help="pretrained only: steps of the linear probe every arm starts from (default --adapt-steps); "
                         "keep it fixed to change only the fine-tuning budget")
    ap.add_argument("--score-pages", type=int, default=None,
                    help="pretrained only: score about this many pages per split (every k-th page), for time")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    if args.backbone != "scratch" and args.backbone not in pretrained.SOURCES:
        ap.error(f"--backbone must be scratch or one of {sorted(pretrained.SOURCES)}, got {args.backbone!r}")
    if args.backbone == "scratch" and "probe" in args.arms.split(","):
        ap.error("--arms probe needs a pretrained --backbone (the scratch base has no frozen features worth probing)")
    if args.probe_steps is not None and (args.backbone == "scratch" or args.probe_steps < 1):
        ap.error("--probe-steps needs a pretrained --backbone and a positive number of steps")
    unknown = [a for a in args.arms.split(",") if a not in ("full", "probe") and a not in LORA_ARMS]
    if unknown:
        ap.error(f"--arms: unknown arm(s) {unknown}; use full, {', '.join(LORA_ARMS)}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print("# " + machine.line(machine.describe()))

    cfg = replace(DemoConfig(), steps=args.base_steps, train_pages=args.train_pages, progress=False, seed=args.seed,
                  dim=args.dim, depth=args.depth, heads=args.heads, patch=args.patch, lr=args.base_lr)
    t0 = time.perf_counter()
    train = list(frb.train_split(args.train_pages, args.seed))
    val = list(frb.val_split(150, args.seed))
    known_pages, known_labels = frb_pages(train, fonts=frb.KNOWN_FONTS)
    kval_pages, kval_labels = frb_pages(val, fonts=frb.KNOWN_FONTS)
    all_pages, all_labels = frb_pages(train)
    log.info("data: %d known-font pages, %d pages in all (%.0f s)", len(known_pages), len(all_pages),
             time.perf_counter() - t0)

    if args.backbone != "scratch":
        pcfg = replace(cfg, crop=98, batch_size=args.batch or cfg.batch_size)  # 98 px: 7×7 patches of 14
        rows = lp_ft(args, pcfg, all_pages, all_labels, out)
        _print_rows(rows, list(rows["probe"]["per_font"]), pcfg)
        if args.json:
            Path(args.json).write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2))
        return
    if args.batch:
        cfg = replace(cfg, batch_size=args.batch)
    size = "" if (cfg.dim, cfg.depth, cfg.heads, cfg.patch, cfg.lr) == (DemoConfig.dim, DemoConfig.depth, DemoConfig.heads,
                                                                       DemoConfig.patch, DemoConfig.lr) \
        else f"_d{cfg.dim}x{cfg.depth}h{cfg.heads}p{cfg.patch}lr{cfg.lr:g}"
    base_path = out / f"base_p{args.train_pages}_s{args.base_steps}_seed{args.seed}{size}.safetensors"
    known = list(frb.KNOWN_FONTS)
    if base_path.exists():
        from safetensors.torch import load_file

        base = build_model(cfg, known)
        base.load_state_dict(load_file(str(base_path)))
        base_s = float("nan")
        log.info("base model reused from %s", base_path)
    else:
        t = time.perf_counter()
        base, _ = train_crop_classifier(cfg, known_pages, known_labels, kval_pages, kval_labels, labels=known,
                                        out_dir=out / "base_train")
        base_s = time.perf_counter() - t
        from safetensors.torch import save_file

        save_file(base.state_dict(), str(base_path))
        log.info("base trained in %.0f s", base_s)

    rows = {}
    base_acc = page_accuracy(_with_labels(base, known), cfg, args.score)
    log.info("base (10-way head, on all 15 fonts' pages): %s", base_acc)
    aseed = args.seed if args.adapt_seed is None else args.adapt_seed
    for arm in args.arms.split(","):
        torch.manual_seed(aseed)
        model = build_model(cfg, known)
        model.load_state_dict(base.state_dict())
        new_head(model, known, list(frb.FONT_NAMES))
        if arm == "full":
            lr = args.lr_full
            trainable = sum(p.numel() for p in model.parameters())
            adapter = 0
        else:
            lr = args.lr_lora
            targets, save = LORA_ARMS[arm]
            lora.apply(model, lora.LoraConfig(rank=args.rank, alpha=2 * args.rank, targets=targets,
                                              qkv_parts=args.parts, modules_to_save=save))
            trainable = lora.mark_trainable(model)
            adapter = lora.count_parameters(model)[0]
        run_dir = out / f"adapt_{arm}_s{aseed}_lr{lr:g}_n{args.adapt_steps}"
        secs = adapt(model, all_pages, all_labels, cfg, args.adapt_steps, lr, run_dir, aseed)
        res = page_results(model, cfg, args.score)
        summary = {"lr": lr, "trainable": trainable, "adapter_params": adapter,
                   "backbone_params": backbone_params(model), "train_s": secs,
                   **{name: r.accuracy for name, r in res.items()}}
        log.info("%s: %s", arm, summary)
        # + per font and per page (the same pages in every arm and seed: paired comparisons between arms)
        rows[arm] = {**summary,
                     "per_font": {name: {f: float(a) for f, a in r.per_class.items()} for name, r in res.items()},
                     "predictions": {name: [int(p) for p in r.predictions] for name, r in res.items()},
                     "targets": {name: [int(t) for t in r.targets] for name, r in res.items()}}

    vb = create_model("vit_base_patch16_224") if "vit_base_patch16_224" in __import__("vitkit").list_models() else None
    vitb = None
    if vb is not None:
        lora.apply(vb, lora.LoraConfig(rank=args.rank, targets=("qkv",), qkv_parts=args.parts))
        a, b = lora.count_parameters(vb)
        vitb = {"adapter_params": a, "backbone_params": b, "share": a / b}

    print(f"\nbase: {args.base_steps} steps on {len(known_pages)} pages of the 10 known fonts"
          f" ({base_s:.0f} s); base page accuracy with its 10-way head on all 15 fonts: "
          + ", ".join(f"{k} {v:.1%}" for k, v in base_acc.items()))
    print(f"adaptation: {args.adapt_steps} steps × batch {cfg.batch_size} on {len(all_pages)} pages of 15 fonts\n")
    names = list(base_acc)
    _print_rows(rows, names, cfg)
    if vitb:
        print(f"\nViT-B/16, LoRA rank {args.rank} on qkv ({args.parts}): {vitb['adapter_params']:,} / "
              f"{vitb['backbone_params']:,} = {vitb['share']:.2%} of the backbone")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "base_acc": base_acc, "rows": rows, "vit_b": vitb},
                                              indent=2))


def _print_rows(rows: dict, names: list[str], cfg: DemoConfig) -> None:
    print(f"(batch {cfg.batch_size}, {cfg.crop}-px crops)")
    print("| arm | lr | trainable values | adapter / backbone | " + " | ".join(names) + " | train s |")
    print("|---|---|---|---|---|---|---|")
    for arm, r in rows.items():
        share = f"{r['adapter_params'] / r['backbone_params']:.2%}" if r["adapter_params"] else (
            "head only" if arm == "probe" else "100% (all)")
        print(f"| {arm} | {r['lr']:g} | {r['trainable']:,} | {share} | " + " | ".join(f"{r[k]:.1%}" for k in names)
              + f" | {r['train_s']:.0f} |")


def _arm_row(model, cfg, score, lr, trainable, adapter, secs, limit=None) -> dict:
    res = page_results(model, cfg, score, limit)
    return {"lr": lr, "trainable": trainable, "adapter_params": adapter, "backbone_params": backbone_params(model),
            "train_s": secs, **{name: r.accuracy for name, r in res.items()},
            "per_font": {name: {f: float(a) for f, a in r.per_class.items()} for name, r in res.items()},
            "predictions": {name: [int(p) for p in r.predictions] for name, r in res.items()},
            "targets": {name: [int(t) for t in r.targets] for name, r in res.items()}}


def lp_ft(args, cfg: DemoConfig, pages, labels, out: Path) -> dict:
    """Pretrained backbone: the linear probe (cached in ``out``), then the full / LoRA arms from it."""
    from safetensors.torch import load_file, save_file

    names = list(frb.FONT_NAMES)
    src = f"pretrained:{args.backbone}"
    aseed = args.seed if args.adapt_seed is None else args.adapt_seed
    probe_steps = args.adapt_steps if args.probe_steps is None else args.probe_steps
    head_path = out / f"probe_{args.backbone}_p{args.train_pages}_c{args.probe_crops}_s{probe_steps}_seed{aseed}.safetensors"
    model = pretrained.crop_classifier(src, names)
    rows = {}
    if head_path.exists():
        model.head.load_state_dict(load_file(str(head_path)))
        secs = float("nan")
        log.info("probe head reused from %s", head_path)
    else:
        t = time.perf_counter()
        f = crop_features(model, pages, labels, crops_per_page=args.probe_crops, size=cfg.crop, seed=aseed + 17)
        model.head = fit_linear_probe(f.features, f.labels, len(names),
                                      ProbeConfig(steps=probe_steps, batch_size=cfg.batch_size, seed=aseed))
        secs = time.perf_counter() - t
        save_file({k: v.contiguous() for k, v in model.head.state_dict().items()}, str(head_path))
    head = {k: v.clone() for k, v in model.head.state_dict().items()}
    row_path = head_path.with_name(f"{head_path.stem}_{args.score}{args.score_pages or ''}.json")
    if "probe" in args.arms.split(",") or not row_path.exists():
        rows["probe"] = _arm_row(model, cfg, args.score, ProbeConfig().lr, model.head.weight.numel()
                                 + model.head.bias.numel(), 0, secs, args.score_pages)
        row_path.write_text(json.dumps(rows["probe"]))
    else:
        rows["probe"] = json.loads(row_path.read_text())
    log.info("probe: %s", {k: v for k, v in rows["probe"].items() if not isinstance(v, dict)})
    for arm in [a for a in args.arms.split(",") if a != "probe"]:
        torch.manual_seed(aseed)
        model = pretrained.crop_classifier(src, names)
        model.head.load_state_dict(head)
        if arm == "full":
            lr, trainable, adapter = args.lr_full, sum(p.numel() for p in model.parameters()), 0
        else:
            lr = args.lr_lora
            targets, save = LORA_ARMS[arm]
            lora.apply(model, lora.LoraConfig(rank=args.rank, alpha=2 * args.rank, targets=targets,
                                              qkv_parts=args.parts, modules_to_save=save))
            trainable = lora.mark_trainable(model)
            adapter = lora.count_parameters(model)[0]
        run_dir = out / f"adapt_{args.backbone}_{arm}_s{aseed}_lr{lr:g}_n{args.adapt_steps}"
        secs = adapt(model, pages, labels, cfg, args.adapt_steps, lr, run_dir, aseed)
        rows[arm] = _arm_row(model, cfg, args.score, lr, trainable, adapter, secs, args.score_pages)
        log.info("%s: %s", arm, {k: v for k, v in rows[arm].items() if not isinstance(v, dict)})
    return rows


def _with_labels(model, labels):
    """The base model scored on 15-font pages: its 10-way logits padded with -inf for unknown fonts."""

    class Padded(nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, x):
            y = self.m(x)
            pad = y.new_full((y.shape[0], len(frb.FONT_NAMES)), -1e4)
            idx = torch.tensor([frb.FONT_NAMES.index(n) for n in labels], device=y.device)
            pad[:, idx] = y
            return pad

        def forward_features(self, x):
            return self.m.forward_features(x)

        def forward_head(self, x, pre_logits=False):
            return self.m.forward_head(x, pre_logits)

    return Padded(model).eval()


if __name__ == "__main__":
    main()
