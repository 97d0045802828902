"""Token reduction end to end on high-resolution FRB pages: HiRED, HiRED-early, EViT, ToMe vs dense.

Stages (each cached under --out):
  encoder   train a small ViT crop classifier (96×96 crops, patch 12) on high-resolution pages
  consumer  encode training pages densely (thumbnail + 3×3 sub-images), train the token-set consumer
            on those frozen tokens with random token dropping as augmentation
  bench     per method: consumer-side and end-to-end images/s (interleaved repeats, median),
            peak memory, page accuracy on the test pages; table + plot
Run: OMP_NUM_THREADS=1 python benchmarks/token_reduction.py --stage all
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch

from vitkit.data.frb_pages import PageConfig, page_split, page_tensors
from vitkit.demo import DemoConfig, train_crop_classifier

log = logging.getLogger("token_reduction")

ENC = DemoConfig(crop=96, patch=12, dim=64, depth=4, heads=4, steps=1500, batch_size=64, lr=2e-3, seed=0)
PAGES = PageConfig()
N_TRAIN, N_VAL, N_TEST = 1500, 150, 300


def pages(split: str, n: int):
    return page_tensors(page_split(n, 0, split=split, cfg=PAGES))


def stage_encoder(out: Path, progress: bool) -> None:
    from vitkit import save

    t = time.perf_counter()
    tr, trl = pages("train", N_TRAIN)
    va, val = pages("val", N_VAL)
    log.info("pages rendered in %.1f s", time.perf_counter() - t)
    cfg = replace(ENC, out_dir=str(out / "encoder"), progress=progress)
    model, result = train_crop_classifier(cfg, tr, trl, va, val)
    save(model, out / "encoder" / "model")
    hist = [h for h in result.history if "val_crop_accuracy" in h]
    (out / "encoder" / "summary.json").write_text(json.dumps({
        "config": asdict(cfg), "train_s": time.perf_counter() - t, "steps": result.steps,
        "val_crop_accuracy": hist[-1]["val_crop_accuracy"] if hist else None}, indent=2))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stage", default="all", choices=["encoder", "consumer", "bench", "all"])
    ap.add_argument("--out", default="runs/token_reduction")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--progress", action="store_true")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.stage in ("encoder", "all"):
        stage_encoder(out, args.progress)


if __name__ == "__main__":
    main()
