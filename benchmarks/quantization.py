"""Low-bit quantization of the demo's FRB model, and real int8 speed (issue 5).

Parts (``--part``):
  accuracy  {W8A8, W6A6, W4A4} × calibration {real, noise, PSAQ-style, SPDFQ} on a saved demo model
            (``--model DIR``, e.g. runs/quant_base/model): per-crop accuracy on the demo's validation
            crops (150 pages × 4 crops) and, with ``--frb``, page accuracy on FRB easy/hard through
            ``TiledClassifier`` (slow: ~1 min per configuration on 2 cores)
  speed     int8 W8A8 (dynamic per-token activations, torch._int_mm) against fp32 F.linear on the
            four Linear layers of a ViT-S block (dim 384, MLP 1536, 197 tokens, batch ``--batch``), and
            a whole ViT-S/16 forward; interleaved repeats, medians; threads 1 and 2
  size      file size of ViT-S/16 saved in fp32 (vitkit.save) and int8 (save_quantized)

Run: OMP_NUM_THREADS=1 python benchmarks/quantization.py --model runs/quant_base/model --json runs/bench/quant.json
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import vitkit
from vitkit import quant
from vitkit.data import frb
from vitkit.data.crops import InkCropDataset
from vitkit.demo import frb_pages

log = logging.getLogger("quantization")

BITS = ((8, 8), (6, 6), (4, 4), (3, 3))
SOURCES = ("real", "noise", "psaq", "spdfq")


def machine() -> dict:
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor())
    return {"cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__, "date": time.strftime("%Y-%m-%d %H:%M"),
            "load_avg": os.getloadavg()}


# ------------------------------------------------------------------ data
def crops(pages, labels, size: int, per_page: int, seed: int):
    ds = InkCropDataset(pages, labels, size=size, crops_per_page=per_page, seed=seed)
    x = torch.stack([ds[i][0] for i in range(len(ds))])
    y = torch.stack([ds[i][1] for i in range(len(ds))])
    return x, y


def demo_data(crop: int, seed: int = 0, val_pages: int = 150, calib_pages: int = 64):
    """Validation crops exactly as the demo validates (4 per page, seed + 1) and real calibration crops
    from training pages (the first ``calib_pages`` of the demo's training stream)."""
    vp, vl = frb_pages(list(frb.val_split(val_pages, seed)))
    vx, vy = crops(vp, vl, crop, 4, seed + 1)
    tp, tl = frb_pages(list(frb.train_split(calib_pages, seed)))
    cx, _ = crops(tp, tl, crop, 2, seed + 7)
    return vx, vy, cx


@torch.no_grad()
def crop_accuracy(model, x, y, bs: int = 200) -> float:
    pred = torch.cat([model(x[i : i + bs]).argmax(-1) for i in range(0, len(x), bs)])
    return (pred == y).float().mean().item()


def frb_accuracy(model, crop: int) -> dict:
    from vitkit.data.crops import pil_to_tensor
    from vitkit.data.frb_eval import evaluate_classifier
    from vitkit.models.tiled import TiledClassifier

    clf = TiledClassifier(model, size=crop, stride=crop // 2).eval()
    with torch.no_grad():
        return {name: evaluate_classifier(clf, split, transform=pil_to_tensor, batch_size=16, progress=False).accuracy
                for name, split in (("easy", frb.easy_split()), ("hard", frb.hard_split()))}


def calibration_sets(args, model, cx) -> tuple[dict, dict]:
    """Calibration images per source, produced on the float model once and cached in ``--cache``."""
    calib, synth_s = {}, {}
    args.cache.mkdir(parents=True, exist_ok=True)
    for src in args.sources:
        steps = {"psaq": args.psaq_steps, "spdfq": args.spdfq_steps}.get(src)
        path = args.cache / f"{src}_n{args.n_calib}_s{steps}_seed{args.seed}.pt"
        if path.exists():
            d = torch.load(path, weights_only=True)
            calib[src], synth_s[src] = d["images"], float(d["seconds"])
            log.info("%s calibration images from %s", src, path)
            continue
        t = time.perf_counter()
        extra = {"alpha": args.alpha, "msr_every": args.msr_every} if src == "spdfq" else {}
        calib[src] = quant.calibration_images(model, src, args.n_calib, images=cx, seed=args.seed, steps=steps,
                                              pixel_range=(-1.0, 1.0), progress=args.progress, **extra)
        synth_s[src] = time.perf_counter() - t
        torch.save({"images": calib[src], "seconds": synth_s[src]}, path)
        log.info("%s calibration images: %.0f s", src, synth_s[src])
    return calib, synth_s


def part_accuracy(args) -> dict:
    model = vitkit.load(args.model).eval()
    crop = model.cfg.img_size[0]
    t = time.perf_counter()
    vx, vy, cx = demo_data(crop)
    log.info("data: %d val crops, %d calibration crops (%.0f s)", len(vx), len(cx), time.perf_counter() - t)
    res: dict = {"model": str(args.model), "val_crops": len(vx), "n_calib": args.n_calib,
                 "act_granularity": args.act_granularity, "calib_method": args.calib_method, "rows": []}
    base = {"bits": "fp32", "source": "-", "crop_acc": crop_accuracy(model, vx, vy)}
    if args.frb:
        base |= frb_accuracy(model, crop)
    res["rows"].append(base)
    log.info("fp32: %s", base)
    calib, synth_s = calibration_sets(args, model, cx)
    res["synthesis_s"] = synth_s
    if args.part == "synth":
        return res
    if args.int8_row:  # the real int8 kernels (W8A8, dynamic per-token, weight scales min-max)
        import copy

        m8 = copy.deepcopy(model)
        quant.to_int8(m8)
        row = {"bits": "W8A8-int8", "source": "-", "crop_acc": crop_accuracy(m8, vx, vy)}
        if args.frb:
            row |= frb_accuracy(m8, crop)
        res["rows"].append(row)
        log.info("%s", row)
    for w, a in (b for b in BITS if f"w{b[0]}a{b[1]}" in args.bits):
        for src in args.sources:
            t = time.perf_counter()
            cfg = quant.QuantConfig(w_bits=w, a_bits=a, recon_steps=args.recon_steps, recon_lr=args.recon_lr,
                                    act_granularity=args.act_granularity, calib_method=args.calib_method)
            quant.apply(model, cfg)
            info = quant.calibrate(model, calib[src])
            row = {"bits": f"W{w}A{a}", "source": src, "crop_acc": crop_accuracy(model, vx, vy),
                   "recon_mse": [(r["mse_before"], r["mse_after"]) for r in info["reconstruction"]]}
            if args.frb:
                row |= frb_accuracy(model, crop)
            quant.remove(model)
            row["time_s"] = time.perf_counter() - t
            res["rows"].append(row)
            log.info("%s", row)
    return res


# ------------------------------------------------------------------ speed
def timed(fn, n: int) -> float:
    t = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t) / n


def part_speed(args) -> dict:
    out: dict = {}
    dim, hidden, tokens = 384, 1536, 197
    torch.manual_seed(0)
    layers = [torch.nn.Linear(dim, 3 * dim), torch.nn.Linear(dim, dim), torch.nn.Linear(dim, hidden),
              torch.nn.Linear(hidden, dim)]
    int8 = [quant.Int8Linear.from_linear(m) for m in layers]
    xs = [torch.randn(args.batch * tokens, m.in_features) for m in layers]
    vit = vitkit.create_model("vit_small_patch16_224").eval() if "vit_small_patch16_224" in vitkit.list_models() \
        else vitkit.VisionTransformer(embed_dim=384, depth=12, num_heads=6, num_classes=1000).eval()
    vit8 = vitkit.VisionTransformer(vit.cfg).eval()
    vit8.load_state_dict(vit.state_dict())
    quant.to_int8(vit8)
    img = torch.randn(args.batch, 3, 224, 224)
    with torch.no_grad():
        err = ((vit8(img) - vit(img)).norm() / vit(img).norm()).item()
    out["vit_s_int8_rel_err"] = err

    def f_fp32():
        for m, x in zip(layers, xs, strict=True):
            F.linear(x, m.weight, m.bias)

    def f_int8():
        for m, x in zip(int8, xs, strict=True):
            m(x)

    for threads in args.threads:
        torch.set_num_threads(threads)
        with torch.no_grad():
            for fn in (f_fp32, f_int8):
                fn()
            lin = {"fp32": [], "int8": []}
            for _ in range(args.repeats):
                lin["fp32"].append(timed(f_fp32, 3))
                lin["int8"].append(timed(f_int8, 3))
            full = {"fp32": [], "int8": []}
            vit(img), vit8(img)
            for _ in range(max(3, args.repeats // 3)):
                full["fp32"].append(timed(lambda: vit(img), 1))
                full["int8"].append(timed(lambda: vit8(img), 1))
        r = {}
        for name, d in (("linear", lin), ("vit_s", full)):
            med = {k: statistics.median(v) for k, v in d.items()}
            pair = statistics.median(a / b for a, b in zip(d["fp32"], d["int8"], strict=True))
            r[name] = {"fp32_ms": med["fp32"] * 1e3, "int8_ms": med["int8"] * 1e3,
                       "speedup_median_of_pairs": pair, "speedup_of_medians": med["fp32"] / med["int8"],
                       "raw_s": d}
        out[f"threads_{threads}"] = r
        log.info("threads %d: linear ×%.2f, ViT-S ×%.2f", threads, r["linear"]["speedup_of_medians"],
                 r["vit_s"]["speedup_of_medians"])
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as d:
        vitkit.save(vit, Path(d) / "fp32")
        quant.save_quantized(vit8, Path(d) / "int8")
        size = {k: (Path(d) / k / "model.safetensors").stat().st_size for k in ("fp32", "int8")}
    out["file_bytes"] = size | {"ratio": size["fp32"] / size["int8"]}
    out["linear_bytes"] = {"fp32": quant.int8.linear_bytes(vit), "int8": quant.int8.linear_bytes(vit8)}
    out["linear_bytes"]["ratio"] = out["linear_bytes"]["fp32"] / out["linear_bytes"]["int8"]
    return out


def print_tables(res: dict) -> None:
    if "accuracy" in res:
        acc = res["accuracy"]
        print(f"\naccuracy — model {acc['model']}, {acc['val_crops']} val crops, {acc['n_calib']} calibration images, "
              f"activations per {acc['act_granularity']}, ranges {acc.get('calib_method')}")
        has_frb = "easy" in acc["rows"][0]
        print(f"{'bits':9} {'source':6} {'crop acc':>9}" + (f" {'FRB easy':>9} {'FRB hard':>9}" if has_frb else ""))
        for r in acc["rows"]:
            line = f"{r['bits']:9} {r['source']:6} {r['crop_acc']:9.1%}"
            if has_frb:
                line += f" {r['easy']:9.1%} {r['hard']:9.1%}"
            print(line)
        print("synthesis s:", {k: round(v, 1) for k, v in acc["synthesis_s"].items()})
    if "speed" in res:
        sp = res["speed"]
        print("\nint8 W8A8 vs fp32 (ms per call, median; speed-up = median of per-repeat ratios)")
        for k, v in sp.items():
            if k.startswith("threads_"):
                for name in ("linear", "vit_s"):
                    d = v[name]
                    print(f"{k:10} {name:7} fp32 {d['fp32_ms']:8.2f}  int8 {d['int8_ms']:8.2f}  "
                          f"×{d['speedup_median_of_pairs']:.2f}")
        print("file bytes:", sp["file_bytes"], " linear bytes:", sp["linear_bytes"])
        print(f"ViT-S int8 relative output error: {sp['vit_s_int8_rel_err']:.4f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, help="a saved vitkit demo model (for --part accuracy)")
    p.add_argument("--part", choices=("all", "synth", "accuracy", "speed"), default="all",
                   help="synth = only produce (and cache) the calibration images of --sources")
    p.add_argument("--sources", nargs="+", choices=SOURCES, default=list(SOURCES))
    p.add_argument("--bits", nargs="+", choices=("w8a8", "w6a6", "w4a4", "w3a3"), default=["w8a8", "w6a6", "w4a4"])
    p.add_argument("--calib-method", choices=("minmax", "percentile", "mse"), default="mse")
    p.add_argument("--int8-row", action="store_true", help="also evaluate the real int8 kernel path")
    p.add_argument("--cache", type=Path, default=Path("runs/bench/quant_calib"), help="calibration-image cache")
    p.add_argument("--msr-every", type=int, default=2, help="SPDFQ: multi-semantic crops every k-th step")
    p.add_argument("--frb", action="store_true", help="also FRB easy/hard page accuracy per configuration (slow)")
    p.add_argument("--n-calib", type=int, default=32)
    p.add_argument("--spdfq-steps", type=int, default=200, help="paper: ~1000 (too slow on 2 shared cores)")
    p.add_argument("--psaq-steps", type=int, default=200)
    p.add_argument("--alpha", type=float, default=1e3, help="SPDFQ attention-prior weight")
    p.add_argument("--act-granularity", choices=("token", "tensor"), default="token",
                   help="activations: dynamic per-token scales, or static per-tensor scales set by calibration")
    p.add_argument("--recon-steps", type=int, default=100)
    p.add_argument("--recon-lr", type=float, default=4e-5)
    p.add_argument("--batch", type=int, default=8, help="images per forward in the speed part")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--progress", action="store_true")
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    torch.set_num_threads(1)
    res: dict = {"machine": machine(), "args": {k: str(v) for k, v in vars(args).items()}}
    if args.part in ("all", "synth", "accuracy"):
        if args.model is None:
            p.error("--model DIR is needed for the accuracy part")
        res["accuracy"] = part_accuracy(args)
    if args.part in ("all", "speed"):
        res["speed"] = part_speed(args)
    res["machine"]["load_avg_end"] = os.getloadavg()
    print(json.dumps(res["machine"]))
    print_tables(res)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
