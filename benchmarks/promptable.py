"""Promptable segmentation on context-dependent concepts: the built-in segmenter, every concept and prompt kind,
clean vs perturbed, images and video (one ``vitkit segment evaluate`` run per seed).

    OMP_NUM_THREADS=1 python benchmarks/promptable.py --seeds 1,2 [--images 40] [--clips 8] [--steps N]
        [--segmenter builtin] [--json runs/promptable_bench/promptable.json]

``--steps``, ``--scenes``, ``--batch-size`` default to :class:`PromptTrainConfig`'s (the default
``vitkit segment evaluate`` run's training).

Per seed the built-in segmenter is trained afresh (seed = its scenes, initialisation and sampling)
unless ``OUT/seed{S}/builtin.pt`` exists (then reused: ``--retrain`` deletes it first). Tables: mean
over seeds (± half the range) of IoU, S-measure, mean E and wF per concept × prompt × condition;
the perturbation drop (clean − perturbed IoU) paired by image; video IoU per prompted-frame count.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from vitkit.bench import machine
from vitkit.segment.concepts import CONCEPTS
from vitkit.segment.promptable import PromptableConfig, run_promptable
from vitkit.segment.promptable_train import PromptTrainConfig

SHOW = ("iou", "dice", "sm", "em", "wfm", "mae")


def _spread(values: list[float]) -> str:
    v = [x for x in values if x is not None]
    if not v:
        return "–"
    return f"{np.mean(v):.3f}" + (f" ± {(max(v) - min(v)) / 2:.3f}" if len(v) > 1 else "")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--segmenter", default="builtin")
    ap.add_argument("--concepts", default=",".join(CONCEPTS))
    ap.add_argument("--prompts", default="box,point,auto,context")
    ap.add_argument("--images", type=int, default=40)
    ap.add_argument("--clips", type=int, default=8)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--scenes", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--retrain", action="store_true")
    ap.add_argument("--out", default="runs/promptable_bench")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    seeds = [int(s) for s in args.seeds.split(",")]
    train_overrides = {k: v for k, v in (("steps", args.steps), ("scenes", args.scenes),
                                         ("batch_size", args.batch_size)) if v is not None}
    runs = {}
    for s in seeds:
        out = Path(args.out) / f"seed{s}"
        for name in ("builtin.pt", "builtin_train.pt"):
            if args.retrain and (out / name).exists():
                (out / name).unlink()
        cfg = PromptableConfig(segmenter=args.segmenter, concepts=tuple(args.concepts.split(",")),
                               prompts=tuple(args.prompts.split(",")), seed=s, images=args.images, clips=args.clips,
                               train=PromptTrainConfig(**train_overrides),
                               out_dir=str(out), progress=False)
        t = time.perf_counter()
        runs[s] = run_promptable(cfg)
        print(f"seed {s}: {time.perf_counter() - t:.0f} s ({runs[s]['segmenter']})", flush=True)
    keys = list(runs[seeds[0]]["images"])
    print(f"\nimages ({args.images} per concept), mean over seeds {seeds} (± half range)")
    print(f"{'concept':12s} {'prompt':13s} {'condition':10s} " + " ".join(f"{m:>15s}" for m in SHOW) + f" {'clicks':>8s}")
    table = {}
    for k in keys:
        row = {m: _spread([runs[s]["images"][k].get(m) for s in seeds]) for m in (*SHOW, "clicks")}
        table[k] = row
        c, p, cond = k.split("|")
        print(f"{c:12s} {p:13s} {cond:10s} " + " ".join(f"{row[m]:>15s}" for m in SHOW) + f" {row['clicks']:>8s}")
    drops = {}
    for k in keys:
        c, p, cond = k.split("|")
        if cond != "perturbed":
            continue
        d = [float(np.mean([a["iou"] - b["iou"] for a, b in zip(runs[s]["per_image"][f"{c}|{p}|clean"],
                                                                 runs[s]["per_image"][k], strict=True)]))
             for s in seeds]
        drops[f"{c}|{p}"] = d
    if drops:
        print("\nperturbation drop in IoU (clean − perturbed, paired by image)")
        for k, d in drops.items():
            print(f"  {k:22s} {_spread(d)}")
    vkeys = list(runs[seeds[0]]["video"])
    if vkeys:
        print(f"\nvideo ({args.clips} clips per concept, IoU over all frames)")
        for k in vkeys:
            print(f"  {k:32s} {_spread([runs[s]['video'][k]['iou'] for s in seeds])}")
    summary = {
        "command": "python benchmarks/promptable.py " + " ".join(
            f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if v not in (None, False)),
        "machine": machine.describe(), "threads": torch.get_num_threads(), "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "seeds": seeds, "table": table, "perturbation_drop_iou": drops,
        "video_iou": {k: [runs[s]["video"][k]["iou"] for s in seeds] for k in vkeys},
        "timing": {s: runs[s]["timing"] for s in seeds}, "segmenter": {s: runs[s]["segmenter"] for s in seeds},
        "means": {s: {"images": runs[s]["images"], "video": runs[s]["video"]} for s in seeds},
    }
    path = Path(args.json or Path(args.out) / "promptable.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=1), encoding="utf-8")
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
