"""Does region-masked pretraining (FSFM) transfer to unseen manipulations better than MAE or no pretraining?

For every seed: pretrain the same ViT with MAE and with FSFM for the same number of steps on rendered
scenes (FSFM masks with CRFR-P over the scenes' part maps), then fine-tune each encoder and a
from-scratch one for the same number of steps as a real/manipulated detector on ONE manipulation type
(``--train-kind``), and measure AUC on every type (the others are unseen). Prints a table (mean ± sd
over seeds of each type's AUC and of the unseen average) and writes JSON.

``--detect-source`` picks the detector's images: ``scenes`` (the default; its types are copy, move, recolour,
inpaint, splice) or ``frb`` (crops of FRB training pages; copy, move, inpaint, splice and font, a word spliced
in from a page in another font). ``--pretrain-data`` picks what MAE/FSFM see: scenes (the default), whole FRB
pages, or the FRB page crops (``frb-crops``, words as regions). The two detection sources are cached apart
(``detect.json``/``detector`` and ``detect_frb.json``/``detector_frb``), so scene results stay reproducible.

Stages are cached under ``--out`` (``{arm}_s{seed}/encoder`` and ``detect.json``), so the work can be
split over several invocations: ``--arms fsfm --seeds 0 --stage pretrain`` etc.; a later call only does
what is missing and ``--stage table`` prints the table from the cache.

Second transfer check (``--stage probe``, part of ``all``): a linear probe on each frozen encoder's pooled
features of FRB ink crops (15 fonts; crops of training pages to train it, of validation pages to score it), the
from-scratch arm being the randomly initialised encoder. Same crops, probe budget and seed for every arm.

    OMP_NUM_THREADS=1 python benchmarks/pretrain.py --seeds 0,1
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from pathlib import Path

import torch

from vitkit.adapt.probe import ProbeConfig, fit_linear_probe
from vitkit.pretrain.detect import DetectorConfig, cross_manipulation_auc, detector_from, finetune_detector
from vitkit.pretrain.manip import ALL_KINDS, KINDS_BY_SOURCE
from vitkit.pretrain.run import PretrainConfig, run_pretrain
from vitkit.weights.load import load

ARMS = ("scratch", "mae", "fsfm")


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", default="0,1", help="comma-separated seeds (pretraining data, init, fine-tuning)")
    p.add_argument("--arms", default=",".join(ARMS), help="scratch,mae,fsfm")
    p.add_argument("--stage", default="all", choices=("all", "pretrain", "finetune", "probe", "table"))
    p.add_argument("--train-kind", default="splice", choices=ALL_KINDS,
                   help="the manipulation type the detector is fine-tuned on (one of the source's types)")
    p.add_argument("--detect-source", default="scenes", choices=tuple(KINDS_BY_SOURCE),
                   help="the detector's images: rendered scenes or FRB page crops")
    p.add_argument("--pretrain-data", default="scenes", choices=("scenes", "frb", "frb-crops"),
                   help="what MAE/FSFM pretrain on: scenes (part maps), whole FRB pages or FRB page crops (word maps); "
                        "runs other than scenes go to ARM_sSEED_DATA folders")
    p.add_argument("--size", type=int, default=48)
    p.add_argument("--patch", type=int, default=8)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--pretrain-images", type=int, default=2000)
    p.add_argument("--pretrain-steps", type=int, default=200)
    p.add_argument("--pretrain-batch", type=int, default=32)
    p.add_argument("--pretrain-lr", type=float, default=1e-3)
    p.add_argument("--finetune-steps", type=int, default=400)
    p.add_argument("--finetune-batch", type=int, default=32)
    p.add_argument("--finetune-lr", type=float, default=3e-4)
    p.add_argument("--n-train", type=int, default=2048)
    p.add_argument("--n-test", type=int, default=256)
    p.add_argument("--probe-pages", type=int, default=300, help="FRB training pages for the linear probe")
    p.add_argument("--probe-val-pages", type=int, default=150, help="FRB validation pages that score it")
    p.add_argument("--probe-crops", type=int, default=8, help="ink crops per page")
    p.add_argument("--probe-text", type=float, default=12.0,
                   help="text core height (px) the pages are brought to, so a crop holds a few letters")
    p.add_argument("--probe-steps", type=int, default=600)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="runs/pretrain_bench")
    p.add_argument("--json", default=None, help="write the results here (default OUT/results.json)")
    return p.parse_args(argv)


def run_dir(a, arm: str, seed: int) -> Path:
    """An arm's folder for one seed (encoder, detectors, results); named after the pretraining data unless scenes."""
    return Path(a.out) / (f"{arm}_s{seed}" + ("" if a.pretrain_data == "scenes" else f"_{a.pretrain_data}"))


def pretrain_cfg(a, arm: str, seed: int) -> PretrainConfig:
    return PretrainConfig(method=arm, data=a.pretrain_data, n_images=a.pretrain_images, size=a.size, patch=a.patch,
                          embed_dim=a.dim, depth=a.depth, num_heads=max(1, a.dim // 16), steps=a.pretrain_steps,
                          batch_size=a.pretrain_batch, lr=a.pretrain_lr, seed=seed,
                          out_dir=str(run_dir(a, arm, seed)), progress=False)


def do_pretrain(a, arm: str, seed: int) -> None:
    cfg = pretrain_cfg(a, arm, seed)
    if (Path(cfg.out_dir) / "pretrain.json").is_file():
        return
    t = time.perf_counter()
    s = run_pretrain(cfg, resume=True)
    logging.info("pretrained %s seed %d: loss %.4f in %.0f s", arm, seed, s["final_loss"], time.perf_counter() - t)


def detect_names(source: str) -> tuple[str, str]:
    """(results file, detector checkpoint folder) of a detection source inside a run folder."""
    return ("detect.json", "detector") if source == "scenes" else (f"detect_{source}.json", f"detector_{source}")


def do_finetune(a, arm: str, seed: int) -> dict | None:
    run = run_dir(a, arm, seed)
    res_name, det_dir = detect_names(a.detect_source)
    res_path = run / res_name
    if res_path.is_file():
        return json.loads(res_path.read_text())
    pcfg = pretrain_cfg(a, "mae", seed)
    if arm == "scratch":
        torch.manual_seed(seed)
        encoder = None
    else:
        if not (run / "encoder").is_dir():
            logging.warning("no pretrained %s encoder for seed %d: run --stage pretrain first", arm, seed)
            return None
        encoder = load(run / "encoder")
        torch.manual_seed(seed)  # the same head initialisation for every arm
    model = detector_from(encoder, pcfg.encoder_config())
    dcfg = DetectorConfig(train_kind=a.train_kind, n_train=a.n_train, n_test=a.n_test, steps=a.finetune_steps,
                          batch_size=a.finetune_batch, lr=a.finetune_lr, seed=seed, out_dir=str(run / det_dir),
                          source=a.detect_source)
    t = time.perf_counter()
    finetune_detector(model, dcfg, resume=True)
    t_ft = time.perf_counter() - t
    kinds = KINDS_BY_SOURCE[a.detect_source]
    aucs = cross_manipulation_auc(model, kinds, n_test=a.n_test, seed=seed + 500, source=a.detect_source)
    unseen = [aucs[k] for k in kinds if k != a.train_kind]
    res = {"arm": arm, "seed": seed, "source": a.detect_source, "train_kind": a.train_kind, "auc": aucs,
           "unseen_mean": sum(unseen) / len(unseen), "finetune_s": round(t_ft, 1)}
    res_path.write_text(json.dumps(res, indent=2))
    logging.info("%s seed %d: unseen AUC %.3f %s", arm, seed, res["unseen_mean"], aucs)
    return res


def frb_probe_crops(a) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Ink crops (N, 3, S, S) in [0, 1] (the pretraining input range) with font labels: of FRB training
    pages (the probe's training set) and of validation pages (its test set), S = the encoders' size."""
    from vitkit.frb.ink import InkCropDataset
    from vitkit.frb.pages import frb_pages
    from vitkit.frb.recipe import DemoConfig, training_pages

    cfg, band = DemoConfig(), (a.probe_text, a.probe_text)
    out = []
    for split, n, seed in (("train", a.probe_pages, 0), ("val", a.probe_val_pages, 1)):
        pages, labels = frb_pages(training_pages(cfg, n, split), text_height=band)
        ds = InkCropDataset(pages, labels, size=a.size, crops_per_page=a.probe_crops, seed=seed)
        items = ds.__getitems__(range(len(ds)))
        out += [(torch.stack([x for x, _ in items]) + 1) / 2, torch.stack([y for _, y in items])]
    return tuple(out)


@torch.no_grad()
def pooled(model, x: torch.Tensor, batch: int = 256) -> torch.Tensor:
    """Images (N, 3, S, S) → the encoder's pooled features (N, C)."""
    model.eval()
    return torch.cat([model.forward_head(model.forward_features(x[i : i + batch]), pre_logits=True)
                      for i in range(0, len(x), batch)])


def do_probe(a, arm: str, seed: int, crops) -> dict | None:
    run = run_dir(a, arm, seed)
    res_path = run / "probe.json"
    if res_path.is_file():
        return json.loads(res_path.read_text())
    if arm == "scratch":
        torch.manual_seed(seed)
        encoder = detector_from(None, pretrain_cfg(a, "mae", seed).encoder_config())
    elif (run / "encoder").is_dir():
        encoder = load(run / "encoder")
    else:
        logging.warning("no pretrained %s encoder for seed %d: run --stage pretrain first", arm, seed)
        return None
    xtr, ytr, xte, yte = crops
    head = fit_linear_probe(pooled(encoder, xtr), ytr, int(ytr.max()) + 1,
                            ProbeConfig(steps=a.probe_steps, seed=seed))
    with torch.no_grad():
        acc = (head(pooled(encoder, xte)).argmax(-1) == yte).float().mean().item()
    res = {"arm": arm, "seed": seed, "frb_probe_accuracy": acc, "train_crops": len(ytr), "test_crops": len(yte)}
    run.mkdir(parents=True, exist_ok=True)
    res_path.write_text(json.dumps(res, indent=2))
    logging.info("%s seed %d: FRB linear-probe crop accuracy %.3f", arm, seed, acc)
    return res


def fmt(vals: list[float]) -> str:
    if not vals:
        return "—"
    m = statistics.mean(vals)
    return f"{m:.3f} ± {statistics.stdev(vals):.3f}" if len(vals) > 1 else f"{m:.3f}"


def table(a, arms: list[str], seeds: list[int]) -> dict:
    kinds = KINDS_BY_SOURCE[a.detect_source]
    res_name = detect_names(a.detect_source)[0]
    rows = {}
    for arm in arms:
        rs = [json.loads(p.read_text()) for s in seeds if (p := run_dir(a, arm, s) / res_name).is_file()]
        rows[arm] = rs
    probes = {arm: [json.loads(p.read_text())["frb_probe_accuracy"] for s in seeds
                    if (p := run_dir(a, arm, s) / "probe.json").is_file()] for arm in arms}
    print(f"detection on {a.detect_source}, trained on {a.train_kind}")
    header = ["arm", "seeds", "unseen mean"] + [k + (" (train)" if k == a.train_kind else "") for k in kinds]
    header.append("FRB probe")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for arm, rs in rows.items():
        cells = [arm, ",".join(str(r["seed"]) for r in rs), fmt([r["unseen_mean"] for r in rs])]
        cells += [fmt([r["auc"][k] for r in rs]) for k in kinds]
        cells.append(fmt(probes[arm]))
        print("| " + " | ".join(cells) + " |")
    diffs = {}
    for other in ("mae", "scratch"):
        if "fsfm" in rows and other in rows:
            paired = {r["seed"]: r["unseen_mean"] for r in rows[other]}
            d = [r["unseen_mean"] - paired[r["seed"]] for r in rows["fsfm"] if r["seed"] in paired]
            diffs[f"fsfm-{other}"] = d
            print(f"FSFM − {other}, unseen mean AUC, paired by seed: {fmt(d)} (per seed {[round(x, 3) for x in d]})")
    return {"rows": rows, "paired_differences": diffs, "frb_probe": probes}


def main(argv=None) -> int:
    a = parse(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(a.threads)
    seeds = [int(s) for s in a.seeds.split(",") if s]
    arms = [s for s in a.arms.split(",") if s]
    bad = set(arms) - set(ARMS)
    if bad:
        print(f"unknown arms {sorted(bad)}; choose from {ARMS}", file=sys.stderr)
        return 2
    if a.train_kind not in KINDS_BY_SOURCE[a.detect_source]:
        print(f"--train-kind {a.train_kind} is not a {a.detect_source} type; choose from "
              f"{KINDS_BY_SOURCE[a.detect_source]}", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    crops = frb_probe_crops(a) if a.stage in ("all", "probe") else None
    for seed in seeds:
        for arm in arms:
            if arm != "scratch" and a.stage in ("all", "pretrain"):
                do_pretrain(a, arm, seed)
            if a.stage in ("all", "finetune"):
                do_finetune(a, arm, seed)
            if a.stage in ("all", "probe"):
                do_probe(a, arm, seed, crops)
    result = table(a, arms, seeds)
    result["args"] = vars(a)
    result["wall_s"] = round(time.perf_counter() - t0, 1)
    path = Path(a.json) if a.json else Path(a.out) / "results.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
