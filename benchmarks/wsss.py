"""Weakly supervised segmentation on rendered scenes: CAM baseline vs MoRe vs VPL, per backbone and seed.

Each (backbone, method, seed) is one ``vitkit segment wsss`` run (:func:`vitkit.segment.run_wsss`, the
default configuration unless overridden): pseudo-label mIoU on the training scenes at the fixed
background threshold and at the best threshold of a sweep, val mIoU of the head trained on the
pseudo-labels, classification F1 and the run's time. A backbone source that cannot be loaded (the
pretrained DINOv2-S/14 when it is not cached) is skipped with one line.

    OMP_NUM_THREADS=1 python benchmarks/wsss.py --seeds 0,1 [--methods cam,more,vpl]
        [--backbones scratch,pretrained:dinov2-s14] [--steps 1000] [--json runs/wsss_bench/wsss.json]

Differences to CAM are paired by seed (same scenes, same initialisation of the shared parts).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from pathlib import Path

import torch

from vitkit.bench import machine
from vitkit.segment.more import RECIPES, MoReConfig
from vitkit.segment.wsss import METHODS, WSSSConfig, run_wsss

KEYS = ("pseudo_miou", "pseudo_miou_best", "cam_pseudo_miou", "val_miou", "val_cls_f1")


def _available(source: str) -> str | None:
    """None when ``source`` loads, else the one-line reason."""
    if source == "scratch":
        return None
    import vitkit

    try:
        vitkit.load(source)
    except Exception as e:  # any failure to load means: not available here
        return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    return None


def _fmt(values: list[float]) -> str:
    if len(values) == 1:
        return f"{100 * values[0]:.1f}"
    return f"{100 * statistics.mean(values):.1f} ± {100 * statistics.stdev(values):.1f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--backbones", default="scratch,pretrained:dinov2-s14")
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--steps", type=int, default=None, help="training steps (default: the CLI's)")
    ap.add_argument("--train", type=int, default=None)
    ap.add_argument("--val", type=int, default=None)
    ap.add_argument("--out", default="runs/wsss_bench")
    ap.add_argument("--json", default=None, help="where to write every run's metrics (default OUT/wsss.json)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--more-recipe", default="default", choices=RECIPES,
                    help="MoRe's training recipe: default, or code (MoReConfig.code_recipe)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    methods = [m for m in args.methods.split(",") if m]
    seeds = [int(s) for s in args.seeds.split(",") if s]
    over = {k: v for k, v in (("steps", args.steps), ("train", args.train), ("val", args.val)) if v is not None}
    print("machine: " + machine.line(machine.describe(threads=args.threads)))
    runs: list[dict] = []
    json_path = Path(args.json or Path(args.out) / "wsss.json")
    json_path.parent.mkdir(parents=True, exist_ok=True)
    for bb in [b for b in args.backbones.split(",") if b]:
        why = _available(bb)
        if why:
            print(f"skip backbone {bb}: not available here ({why})")
            continue
        for seed in seeds:
            for method in methods:
                cfg = WSSSConfig(method=method, seed=seed, backbone=None if bb == "scratch" else bb,
                                 out_dir=str(Path(args.out) / bb.replace(":", "_") / f"{method}_s{seed}"),
                                 more=MoReConfig.from_recipe(args.more_recipe), progress=False, **over)
                m = run_wsss(cfg)
                runs.append({k: m[k] for k in ("method", "seed", "backbone", *KEYS, "best_threshold", "timing")}
                            | {"backbone_arg": bb})
                print(f"{bb:>10} {method:>5} seed {seed}: pseudo {100 * m['pseudo_miou']:.1f} "
                      f"(best {100 * m['pseudo_miou_best']:.1f} @ {m['best_threshold']}), val {100 * m['val_miou']:.1f}, "
                      f"f1 {100 * m['val_cls_f1']:.1f}, {m['timing']['total_s']:.0f} s", flush=True)
                json_path.write_text(json.dumps({"args": vars(args), "runs": runs}, indent=2))
    print(f"\nload at end {os.getloadavg()[0]:.1f} (other jobs share this machine)\n")
    print("| backbone | method | pseudo mIoU | pseudo mIoU, best thr. | val mIoU | Δ pseudo vs CAM | Δ val vs CAM "
          "| cls F1 | time (s) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for bb in dict.fromkeys(r["backbone_arg"] for r in runs):
        cam = {r["seed"]: r for r in runs if r["backbone_arg"] == bb and r["method"] == "cam"}
        for method in methods:
            rs = [r for r in runs if r["backbone_arg"] == bb and r["method"] == method]
            if not rs:
                continue
            dp = [r["pseudo_miou"] - cam[r["seed"]]["pseudo_miou"] for r in rs if r["seed"] in cam]
            dv = [r["val_miou"] - cam[r["seed"]]["val_miou"] for r in rs if r["seed"] in cam]
            print(f"| {bb} | {method} | {_fmt([r['pseudo_miou'] for r in rs])} | "
                  f"{_fmt([r['pseudo_miou_best'] for r in rs])} | {_fmt([r['val_miou'] for r in rs])} | "
                  f"{_fmt(dp) if method != 'cam' and dp else '–'} | {_fmt(dv) if method != 'cam' and dv else '–'} | "
                  f"{_fmt([r['val_cls_f1'] for r in rs])} | "
                  f"{statistics.mean(r['timing']['total_s'] for r in rs):.0f} |")
    print(f"\nseeds {seeds}; per-run metrics in {json_path}")


if __name__ == "__main__":
    main()
