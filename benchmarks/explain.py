"""Explanations on rendered scenes (multi-label): a ViT from scratch (rollout, Grad-CAM, gradient-weighted
rollout) against the evidence-map hybrid CNN-Transformer at (nearly) equal parameters and equal steps.

Per seed: both models are trained with the same data, steps, batch and optimiser; then on held-out scenes,
for every (image, present class) item: pointing game and energy-in-mask against the class's exact mask,
deletion / insertion AUC (sigmoid score of that class; blur and mean-colour substrates), passes and time
per explanation. A random map is the floor. Differences hybrid − ViT method are paired over the same
items (mean ± standard error). ``--pretrained SOURCE`` (any vitkit.load source, e.g. a converted
DINOv2-S/14) adds a linear probe on its frozen features, explained with the ViT methods; absent → skipped.

The defaults are benchmarks/RESULTS.md's current configuration (64-px scenes, ViT patch 8 width 64, the
BagNet-trunk hybrid at stride 4, 1,000 steps on 5,000 scenes; about 7 minutes a seed on one thread):

    python benchmarks/explain.py --seeds 1 2 --json runs/bench/explain.json
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import TensorDataset

from vitkit.data.scenes import CLASS_NAMES, render_many
from vitkit.engine.multilabel import bce_loss, multilabel_scores
from vitkit.engine.trainer import TrainConfig, Trainer
from vitkit.explain.metrics import (
    deletion_auc,
    energy_in_mask,
    explain_with_cost,
    insertion_auc,
    pointing_game,
)
from vitkit.models.hybrid import TRUNKS, HybridCNNTransformer, HybridConfig, hybrid_loss
from vitkit.models.vit import VisionTransformer, ViTConfig

log = logging.getLogger("explain_bench")
MEAN, STD = 0.5, 0.25
VIT_METHODS = ("rollout", "gradcam", "chefer")


def scenes(n: int, seed: int, size: int, cache: Path) -> dict[str, Tensor]:
    """Rendered scenes (cached as .npz): images normalised (N, 3, H, W), multi-hot (N, C), semantic (N, H, W)."""
    path = cache / f"scenes_{n}_{seed}_{size}.npz"
    if path.is_file():
        a = dict(np.load(path))
    else:
        a = render_many(n, seed=seed, size=size, progress=True)
        a = {k: a[k] for k in ("image", "multi_hot", "semantic")}
        cache.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(path, **a)
    x = (torch.from_numpy(a["image"]).permute(0, 3, 1, 2).float() / 255 - MEAN) / STD
    return {"x": x, "y": torch.from_numpy(a["multi_hot"]).float(), "sem": torch.from_numpy(a["semantic"]).long()}


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def build_vit(args) -> VisionTransformer:
    return VisionTransformer(ViTConfig(img_size=args.size, patch_size=args.patch, embed_dim=args.dim, depth=args.depth,
                                       num_heads=args.heads, num_classes=len(CLASS_NAMES), labels=list(CLASS_NAMES)))


def build_hybrid(args, target: int) -> HybridCNNTransformer:
    """The hybrid whose width brings it closest to ``target`` params, at stride ``args.hybrid_stride``
    (0: the ViT's patch, the same map grid)."""
    stride = args.hybrid_stride or args.patch
    if stride < 2 or stride & (stride - 1):
        raise ValueError(f"--hybrid-stride {stride}: the hybrid's stride must be a power of 2, at least 2")
    stages = stride.bit_length() - 1  # stem stride 2, then ×2 per further stage: stride 2^stages
    best = None
    for dim in range(args.heads * math.ceil(32 / args.heads), 4 * args.dim + 1, args.heads):  # widths the heads divide
        w = tuple(max(8, dim // 2 ** (stages - 1 - i)) for i in range(stages))
        cfg = HybridConfig(img_size=args.size, num_classes=len(CLASS_NAMES), trunk_widths=w, trunk_depths=(1,) * stages,
                           dim=dim, depth=args.hybrid_depth, num_heads=args.heads, window=args.window,
                           trunk=args.hybrid_trunk, labels=list(CLASS_NAMES))
        assert cfg.stride == stride, (cfg.stride, stride)
        p = n_params(HybridCNNTransformer(cfg))
        if best is None or abs(p - target) < abs(best[0] - target):
            best = (p, cfg)
    return HybridCNNTransformer(best[1])


def train(model: nn.Module, loss_fn, data: dict, args, seed: int, out: Path) -> float:
    torch.manual_seed(seed)
    cfg = TrainConfig(epochs=10_000, batch_size=args.batch, lr=args.lr, weight_decay=0.05, warmup_steps=args.steps // 10,
                      label_smoothing=0.0, max_steps=args.steps, ckpt_every=args.steps, log_every=50, seed=seed,
                      out_dir=str(out), progress=False)
    t0 = time.perf_counter()
    Trainer(model, TensorDataset(data["x"], data["y"]), cfg, loss_fn=loss_fn).fit()
    return time.perf_counter() - t0


@torch.no_grad()
def classify(model: nn.Module, data: dict) -> dict:
    model.eval()
    logits = torch.cat([model(data["x"][i : i + 100]) for i in range(0, len(data["x"]), 100)])
    return multilabel_scores(logits, data["y"])


def items(data: dict, n: int) -> list[tuple[int, int]]:
    """(image, class) pairs: every class present in each of the first n test images."""
    return [(i, int(c)) for i in range(min(n, len(data["x"]))) for c in data["y"][i].nonzero().flatten()]


def evaluate_maps(model: nn.Module, method: str, data: dict, its: list, args, seed: int) -> dict[str, list[float]]:
    """Per-item metrics of one method on one model."""
    model.eval()
    g = torch.Generator().manual_seed(1000 + seed)
    out: dict[str, list[float]] = {k: [] for k in ("pointing", "energy", "del_blur", "ins_blur", "del_mean", "ins_mean",
                                                   "seconds", "forwards", "backwards")}
    step = args.size * args.size // args.curve_steps
    for i, c in its:
        x = data["x"][i : i + 1]
        t = torch.tensor([c])
        if method == "random":
            grid = (args.size // args.patch,) * 2
            maps, cost = torch.rand(1, *grid, generator=g), None
        else:
            e, cost = explain_with_cost(model, x, method, target=t)
            maps = e.maps
        mask = data["sem"][i : i + 1] == c + 1  # semantic ids are 1-based
        out["pointing"].append(float(pointing_game(maps, mask)[0]))
        out["energy"].append(float(energy_in_mask(maps, mask)[0]))
        for sub in ("blur", "mean"):
            kw = dict(substrate=sub, step=step, score="sigmoid")
            out[f"del_{sub}"].append(float(deletion_auc(model, x, maps, t, **kw)[0]))
            out[f"ins_{sub}"].append(float(insertion_auc(model, x, maps, t, **kw)[0]))
        out["seconds"].append(cost.seconds if cost else 0.0)
        out["forwards"].append(cost.forwards if cost else 0)
        out["backwards"].append(cost.backwards if cost else 0)
    return out


CURVE_KEYS = ("pointing", "energy", "del_blur", "ins_blur", "del_mean", "ins_mean")


def gain_over_random(per: dict, name: str) -> dict[str, tuple[list[float], list[float]]]:
    """(better, worse) item lists per metric so that better − worse > 0 means ahead of the model's random map."""
    rnd = per[name.split("/")[0] + "/random"]
    out = {}
    for k in CURVE_KEYS:
        a, b = per[name][k], rnd[k]
        out[k] = (b, a) if k.startswith("del") else (a, b)  # deletion: lower is better
    return out


def paired(a, b) -> tuple[float, float]:
    d = np.asarray(a) - np.asarray(b)
    return float(d.mean()), float(d.std(ddof=1) / math.sqrt(len(d))) if len(d) > 1 else float("nan")


def linear_probe(source: str, train_data: dict, args) -> nn.Module | None:
    """A frozen pretrained ViT with a trained multi-label linear head, or None when the source is absent."""
    import vitkit

    try:
        model = vitkit.load(source)
    except (FileNotFoundError, ValueError, ImportError, OSError) as e:
        print(f"pretrained backbone skipped: {source} not available ({type(e).__name__})")
        return None
    vis = model if isinstance(model, VisionTransformer) else model.visual
    side = vis.patch_size * (args.size // args.patch)
    pp = getattr(model, "preprocess", None)  # the backbone was trained on its own normalisation, not this script's
    mean = torch.tensor(pp.mean if pp is not None else (0.5,) * 3).view(1, 3, 1, 1)
    std = torch.tensor(pp.std if pp is not None else (0.5,) * 3).view(1, 3, 1, 1)

    def resize(x: Tensor) -> Tensor:
        """This script's input (B, 3, H, W) → the backbone's: its normalisation, whole patches on the same grid."""
        x = (x * STD + MEAN - mean) / std
        return F.interpolate(x, size=(side, side), mode="bilinear", align_corners=False)

    with torch.no_grad():
        feats = torch.cat([vis.forward_head(vis.forward_features(resize(train_data["x"][i : i + 50])), pre_logits=True)
                           for i in range(0, len(train_data["x"]), 50)])
    head = nn.Linear(feats.shape[1], len(CLASS_NAMES))
    opt = torch.optim.Adam(head.parameters(), lr=1e-2)
    for _ in range(300):
        opt.zero_grad()
        F.binary_cross_entropy_with_logits(head(feats), train_data["y"]).backward()
        opt.step()
    vis.head = head  # the ViT's own head slot: the methods explain model(x) end to end

    class Resized(nn.Module):
        def __init__(self):
            super().__init__()
            self.vis = vis

        def forward(self, x):
            return self.vis(resize(x))

    return Resized().eval()


def summarise(per: dict[str, list[float]]) -> dict[str, float]:
    return {k: float(np.mean(v)) for k, v in per.items()} | {"seconds_median": float(np.median(per["seconds"]))}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2], help="training seeds (0 was used for tuning)")
    p.add_argument("--size", type=int, default=64, help="image side")
    p.add_argument("--patch", type=int, default=8, help="ViT patch (and the hybrid's stride unless --hybrid-stride)")
    p.add_argument("--hybrid-stride", type=int, default=4,
                   help="the hybrid's stride: 4 (a 16×16 map at 64 px, the paper's ResNet-50 map at 512 px), "
                        "or 0 for --patch (the ViT's grid)")
    p.add_argument("--dim", type=int, default=64, help="ViT width (the hybrid is matched in parameters)")
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--hybrid-depth", type=int, default=2, help="dual-resolution blocks")
    p.add_argument("--window", type=int, default=8)
    p.add_argument("--hybrid-trunk", choices=TRUNKS, default="bagnet",
                   help="the hybrid's CNN trunk: resnet (3×3 convs) or bagnet (small receptive field)")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--n-train", type=int, default=5000)
    p.add_argument("--n-test", type=int, default=300, help="test scenes for accuracy")
    p.add_argument("--n-explain", type=int, default=60, help="test scenes explained (every present class)")
    p.add_argument("--curve-steps", type=int, default=8, help="deletion/insertion steps (step = H·W / this)")
    p.add_argument("--pretrained", default=None, help="a vitkit.load source for a pretrained ViT (optional)")
    p.add_argument("--cache", type=Path, default=Path("runs/bench/explain_cache"))
    p.add_argument("--json", type=Path, default=Path("runs/bench/explain.json"))
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)

    train_data = scenes(args.n_train, 0, args.size, args.cache)
    test_data = scenes(args.n_test, 10_000, args.size, args.cache)  # a different scene seed: unseen layouts
    its = items(test_data, args.n_explain)
    report: dict = {"config": vars(args) | {"cache": str(args.cache), "json": str(args.json)}, "items": len(its),
                    "seeds": {}}
    for seed in args.seeds:
        torch.manual_seed(seed)
        vit = build_vit(args)
        hyb = build_hybrid(args, n_params(vit))
        r: dict = {"params": {"vit": n_params(vit), "hybrid": n_params(hyb)}, "hybrid_config": hyb.cfg.to_dict()}
        print(f"seed {seed}: training ViT ({r['params']['vit']:,}) and hybrid ({r['params']['hybrid']:,})", flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            r["train_s"] = {"vit": train(vit, bce_loss, train_data, args, seed, Path(tmp) / "vit"),
                            "hybrid": train(hyb, hybrid_loss(multilabel=True), train_data, args, seed, Path(tmp) / "hyb")}
        r["accuracy"] = {"vit": classify(vit, test_data), "hybrid": classify(hyb, test_data)}
        print(f"seed {seed}: trained in {r['train_s']}; explaining {len(its)} items", flush=True)
        per = {f"vit/{m}": evaluate_maps(vit, m, test_data, its, args, seed) for m in (*VIT_METHODS, "random")}
        per |= {f"hybrid/{m}": evaluate_maps(hyb, m, test_data, its, args, seed) for m in ("evidence", "random")}
        if args.pretrained:
            probe = linear_probe(args.pretrained, train_data, args)
            if probe is not None:
                r["accuracy"]["pretrained"] = classify(probe, test_data)
                # its random map too: every method's gain is measured against its own model's floor
                per |= {f"pretrained/{m}": evaluate_maps(probe, m, test_data, its, args, seed)
                        for m in (*VIT_METHODS, "random")}
        r["methods"] = {k: summarise(v) for k, v in per.items()}
        r["paired"] = {f"hybrid/evidence - vit/{m}": {k: paired(per["hybrid/evidence"][k], per[f"vit/{m}"][k])
                                                      for k in CURVE_KEYS} for m in VIT_METHODS}
        # raw AUCs sit on each model's own score scale; the gain over the same model's random map does not
        gains = {k: gain_over_random(per, k) for k in per if not k.endswith("/random")}
        r["gain_over_random"] = {k: {m: paired(*g[m]) for m in g} for k, g in gains.items()}
        r["paired_gain"] = {f"hybrid/evidence - vit/{m}": {c: paired(np.subtract(*gains["hybrid/evidence"][c]),
                                                                     np.subtract(*gains[f"vit/{m}"][c]))
                                                           for c in CURVE_KEYS[2:]} for m in VIT_METHODS}
        r["items"] = per
        report["seeds"][str(seed)] = r
        print_seed(seed, r)
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1))  # after every seed: a killed run keeps its seeds
    print_spread(report)
    print(f"wrote {args.json}")
    return 0


def print_seed(seed: int, r: dict) -> None:
    a = r["accuracy"]
    print(f"\nseed {seed}: params ViT {r['params']['vit']:,} hybrid {r['params']['hybrid']:,}; "
          f"train s ViT {r['train_s']['vit']:.0f} hybrid {r['train_s']['hybrid']:.0f}")
    for k, v in a.items():
        print(f"  {k:>10}: mAP {v['mAP']:.3f}  exact match {v['exact_match']:.3f}  label acc {v['label_accuracy']:.3f}")
    print(f"  {'method':<20} {'point':>6} {'energy':>6} {'del-b':>6} {'ins-b':>6} {'del-m':>6} {'ins-m':>6} "
          f"{'ms':>7} {'fw':>3} {'bw':>3}")
    for k, m in r["methods"].items():
        print(f"  {k:<20} {m['pointing']:6.3f} {m['energy']:6.3f} {m['del_blur']:6.3f} {m['ins_blur']:6.3f} "
              f"{m['del_mean']:6.3f} {m['ins_mean']:6.3f} {1000 * m['seconds_median']:7.1f} {m['forwards']:3.0f} "
              f"{m['backwards']:3.0f}")
    for k, d in r["paired"].items():
        print(f"  {k:<34} " + "  ".join(f"{n} {mu:+.3f}±{se:.3f}" for n, (mu, se) in d.items()))
    print("  gain over the same model's random map (deletion: random − method), paired:")
    for k, d in r["gain_over_random"].items():
        print(f"  {k:<34} " + "  ".join(f"{n} {mu:+.3f}±{se:.3f}" for n, (mu, se) in d.items()))
    for k, d in r["paired_gain"].items():
        print(f"  gain {k:<29} " + "  ".join(f"{n} {mu:+.3f}±{se:.3f}" for n, (mu, se) in d.items()))


def print_spread(report: dict) -> None:
    seeds = list(report["seeds"].values())
    if len(seeds) < 2:
        return
    print("\nover seeds (mean, min–max):")
    for model in seeds[0]["accuracy"]:
        v = [s["accuracy"][model]["mAP"] for s in seeds]
        print(f"  {model:>10} mAP {statistics.mean(v):.3f} ({min(v):.3f}–{max(v):.3f})")
    for k in seeds[0]["methods"]:
        parts = []
        for metric in ("pointing", "energy", "del_blur", "ins_blur"):
            v = [s["methods"][k][metric] for s in seeds]
            parts.append(f"{metric} {statistics.mean(v):.3f} ({min(v):.3f}–{max(v):.3f})")
        print(f"  {k:<20} " + "  ".join(parts))


if __name__ == "__main__":
    sys.exit(main())
