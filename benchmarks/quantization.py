"""Low-bit quantization of the demo's FRB model keeps its accuracy down to W4A4 without real data; real int8 is faster.

Parts (``--part``): accuracy = {W8A8, W6A6, W4A4} × calibration {real, noise, PSAQ-style, SPDFQ} on a saved demo
model (``--model DIR``): per-crop accuracy on the demo's validation crops (150 pages × 4) and, with ``--frb``, page
accuracy on FRB easy/hard (slow: ~1 min per configuration on 2 cores); speed = int8 W8A8 (dynamic per-token
activations, torch._int_mm) against fp32 on the four Linear layers of a ViT-S block (197 tokens, batch ``--batch``)
and a whole ViT-S/16 forward, interleaved repeats, medians, threads 1 and 2; size = ViT-S/16's file in fp32 and int8.

Run: OMP_NUM_THREADS=1 python benchmarks/quantization.py --model runs/quant_base/model --json runs/bench/quant.json

``--backbone dinov2-s14`` (after ``vitkit weights get dinov2-s14``) instead of ``--model``: the frozen pretrained
backbone at 98-px crops with a linear-probe head on FRB training crops (15 fonts), built once into
``runs/quant_NAME/model``; calibration images are cached in ``runs/quant_NAME/calib``.

Sizes (``--size``): demo (default: a saved demo model, ``--model DIR``), vitb (a ViT-B-sized FRB crop classifier
trained first on a GPU, then {W4A4, W6A6, W8A8} × {per-token, per-tensor} × the sources), tiny (vitb's code path at
tiny dims, for tests); see benchmarks/README.md. ``--time-budget S`` measures a training step, a synthesis step and
one configuration, then lowers the steps (never raises them) until everything fits, skipping and listing the rest.

Run (GPU, one command; needs torch, numpy, Pillow, safetensors; benchmarks/README.md has the device command):
  PYTHONPATH=src python3 benchmarks/quantization.py --size vitb --device cuda --threads 8 --workers 14
      --time-budget 470 --work /tmp/quant_vitb --out "$OUT"
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

import vitkit
from vitkit import frb, quant
from vitkit.bench import machine
from vitkit.bench.pages import PagePool
from vitkit.bench.timing import fp32_precision
from vitkit.frb.pages import frb_pages
from vitkit.frb.recipe import DemoConfig, build_model, train_crop_classifier
from vitkit.quant import evaluate as QE
from vitkit.quant.report import SOURCES, console_tables, grid_table

log = logging.getLogger("quantization")

BITS = ((8, 8), (6, 6), (4, 4), (3, 3))
GREY = {False: "", True: "_grey"}  # cache-name suffix of grey synthetic calibration images


# ------------------------------------------------------------------ data
def demo_data(crop: int, seed: int = 0, val_pages: int = 150, calib_pages: int = 64):
    """Validation crops exactly as the demo validates (4 per page, seed + 1) and real calibration crops
    from training pages (the first ``calib_pages`` of the demo's training stream)."""
    vp, vl = frb_pages(list(frb.val_split(val_pages, seed)))
    vx, vy = QE.crop_tensors(vp, vl, crop, 4, seed + 1)
    tp, tl = frb_pages(list(frb.train_split(calib_pages, seed)))
    cx, _ = QE.crop_tensors(tp, tl, crop, 2, seed + 7)
    return vx, vy, cx


def calibration_sets(model, sources, n: int, cx, steps: dict, args, cache: Path, name: str, msr_every: int,
                     tf32: bool = False) -> tuple[dict, dict]:
    """Calibration images per source on the float model and the seconds each took, cached as
    ``cache/name.format(src=, steps=)`` (:func:`vitkit.quant.evaluate.cached_calibration`)."""
    calib, secs = {}, {}
    for src in sources:
        extra = {"alpha": args.alpha, "msr_every": msr_every} if src == "spdfq" else {}
        extra |= {"grey": True} if args.grey_synthetic and src != "real" else {}
        calib[src], secs[src] = QE.cached_calibration(
            model, src, n, cache / name.format(src=src, steps=steps.get(src)), tf32=tf32, images=cx, seed=args.seed,
            steps=steps.get(src), pixel_range=(-1.0, 1.0), progress=args.progress, **extra)
    return calib, secs


def backbone_model(args) -> Path:
    """``--backbone NAME``: the pretrained backbone + a linear probe on CLS features of 4 ink crops of each of
    ``--probe-pages`` training pages (all 15 fonts), saved once under ``runs/quant_NAME/model``."""
    from vitkit.adapt.probe import ProbeConfig, fit_linear_probe
    from vitkit.ood.openset import crop_features
    from vitkit.weights import pretrained

    d = Path(f"runs/quant_{args.backbone}") / "model"
    if (d / "model.safetensors").is_file():
        return d
    t = time.perf_counter()
    model = pretrained.crop_classifier(f"pretrained:{args.backbone}", list(frb.FONT_NAMES), img_size=98)
    tp, tl = frb_pages(list(frb.train_split(args.probe_pages, args.seed)))
    f = crop_features(model, tp, tl, crops_per_page=4, size=98, seed=args.seed + 17)
    model.head = fit_linear_probe(f.features, f.labels, len(frb.FONT_NAMES), ProbeConfig(seed=args.seed))
    vitkit.save(model, d)
    log.info("%s + linear probe on %d crops → %s (%.0f s)", args.backbone, len(f.features), d, time.perf_counter() - t)
    return d


def part_accuracy(args) -> dict:
    model = vitkit.load(args.model).to(args.device).eval()
    crop = model.cfg.img_size[0]
    t = time.perf_counter()
    vx, vy, cx = demo_data(crop)
    log.info("data: %d val crops, %d calibration crops (%.0f s)", len(vx), len(cx), time.perf_counter() - t)
    res: dict = {"model": str(args.model), "val_crops": len(vx), "n_calib": args.n_calib,
                 "act_granularity": args.act_granularity, "calib_method": args.calib_method, "rows": []}
    base = {"bits": "fp32", "source": "-", "crop_acc": QE.crop_accuracy(model, vx, vy)}
    if args.frb:
        base |= QE.frb_accuracy(model, crop)
    res["rows"].append(base)
    log.info("fp32: %s", base)
    res["channel_spread"] = QE.channel_spreads(model, cx)
    log.info("channel spread (max/median input range) by layer kind: %s", res["channel_spread"]["max_by_kind"])
    calib, synth_s = calibration_sets(model, args.sources, args.n_calib, cx,
                                      {"psaq": args.psaq_steps, "spdfq": args.spdfq_steps}, args, args.cache,
                                      f"{{src}}_n{args.n_calib}_s{{steps}}_seed{args.seed}{GREY[args.grey_synthetic]}.pt",
                                      args.msr_every)
    res["synthesis_s"] = synth_s
    if args.part == "synth":
        return res
    if args.int8_row:  # the real int8 kernels (W8A8, dynamic per-token, weight scales min-max)
        import copy

        m8 = copy.deepcopy(model)
        quant.to_int8(m8)
        row = {"bits": "W8A8-int8", "source": "-", "crop_acc": QE.crop_accuracy(m8, vx, vy)}
        if args.frb:
            row |= QE.frb_accuracy(m8, crop)
        res["rows"].append(row)
        log.info("%s", row)
    extra = (lambda m: QE.frb_accuracy(m, crop)) if args.frb else None
    for w, a in (b for b in BITS if f"w{b[0]}a{b[1]}" in args.bits):
        for src in args.sources:
            t = time.perf_counter()
            cfg = quant.QuantConfig(w_bits=w, a_bits=a, recon_steps=args.recon_steps, recon_lr=args.recon_lr,
                                    act_granularity=args.act_granularity, calib_method=args.calib_method)
            row = {"bits": f"W{w}A{a}", "source": src, **QE.evaluate_config(model, cfg, calib[src], vx, vy, extra=extra),
                   "time_s": time.perf_counter() - t}
            res["rows"].append(row)
            log.info("%s", row)
    return res


# ------------------------------------------------------------------ vitb / tiny: train, then every configuration
@dataclass(frozen=True)
class Preset:
    """A model trained by this script and the accuracy grid run on it (``--size vitb|tiny``)."""

    name: str
    model: DemoConfig  # crop = input size, patch, width, depth, heads, steps, batch, lr, page font sizes
    train_pages: int
    val_pages: int  # validation crops: 4 per page (the demo's protocol)
    calib_pages: int  # real calibration crops: 2 per page, from the first training pages
    n_calib: int
    synth_steps: int  # PSAQ-style and SPDFQ
    msr_every: int
    recon_steps: int
    bits: tuple[tuple[int, int], ...] = ((4, 4), (6, 6), (8, 8))  # the target (W4A4) first
    granularities: tuple[str, ...] = ("token", "tensor")


VITB = Preset("vitb", DemoConfig(crop=96, patch=8, dim=768, depth=12, heads=12, steps=3000, batch_size=128, lr=3e-4,
                                 size_range=(37, 43), seed=0, progress=False),
              train_pages=2400, val_pages=300, calib_pages=64, n_calib=32, synth_steps=1000, msr_every=1,
              recon_steps=100)
TINY = Preset("tiny", DemoConfig(crop=32, patch=8, dim=32, depth=4, heads=2, steps=6, batch_size=16, lr=1e-3,
                                 size_range=(37, 43), seed=0, progress=False),
              train_pages=12, val_pages=6, calib_pages=4, n_calib=4, synth_steps=3, msr_every=1, recon_steps=2)
PRESETS = {p.name: p for p in (VITB, TINY)}


def configurations(preset: Preset, sources=SOURCES, method: str = "mse") -> list[tuple[int, int, str, str, str]]:
    """(w_bits, a_bits, activation granularity, source, range method) in run order: bits as listed (W4A4
    first), then granularity, then source."""
    return [(w, a, g, s, method) for w, a in preset.bits for g in preset.granularities for s in sources]


def extra_configurations(preset: Preset, sources=SOURCES, method: str = "mse") -> list[tuple[int, int, str, str, str]]:
    """Run after the grid while time is left: W4A4 per tensor with min-max ranges for every source (on the
    CPU model the setting where the calibration source mattered most), unless the grid already uses min-max."""
    if method == "minmax" or (4, 4) not in preset.bits or "tensor" not in preset.granularities:
        return []
    return [(4, 4, "tensor", s, "minmax") for s in sources]


# ---- pages
def _render(split: str, start: int, stop: int, seed: int, size_range: tuple[int, int]):
    """Grey pages start..stop-1 of the FRB training generator's ``split`` (a pure function of the index)."""
    torch.set_num_threads(1)
    return frb_pages([frb.train_sample(i, seed, split=split, size_range=size_range) for i in range(start, stop)])


def sized_data(preset: Preset, workers: int = 1) -> dict:
    """Training and validation pages, the validation crops (4 per page, seed + 1, as the trainer validates)
    and the real calibration crops (2 per page of the first ``calib_pages`` training pages, seed + 7)."""
    m = preset.model
    with PagePool(workers) as pool:  # the same pages for any number of workers
        pages = pool.render(_render, {"train": preset.train_pages, "val": preset.val_pages}, m.seed, m.size_range)
    (tp, tl), (vp, vl) = pages["train"], pages["val"]
    vx, vy = QE.crop_tensors(vp, vl, m.crop, 4, m.seed + 1)
    cx, _ = QE.crop_tensors(tp[: preset.calib_pages], tl[: preset.calib_pages], m.crop, 2, m.seed + 7)
    return {"train": (tp, tl), "val": (vp, vl), "vx": vx, "vy": vy, "cx": cx}


# ---- time budget
def measure_costs(preset: Preset, device: torch.device, data: dict, synth_tf32: bool, seed: int = 0) -> dict:
    """Step and configuration costs (:func:`vitkit.quant.evaluate.step_costs`) on an untrained model of the preset."""
    torch.manual_seed(seed)
    model = build_model(preset.model).to(device)
    costs = QE.step_costs(model, preset.model.batch_size, data["train"], preset.n_calib, preset.msr_every,
                       preset.recon_steps, data["vx"], data["vy"], synth_tf32, seed)
    del model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return costs


def plan_steps(preset: Preset, seconds_left: float, costs: dict, asked: dict[str, int], n_configs: int) -> dict:
    """Steps that fit ``seconds_left`` (:func:`vitkit.quant.evaluate.training_plan`) for the preset's model."""
    with torch.device("meta"):
        params = sum(p.numel() for p in build_model(preset.model).parameters())
    return QE.training_plan(costs, seconds_left, asked, n_configs, params)


# ---- the run
def train_model(preset: Preset, data: dict, work: Path, device: torch.device, steps: int, progress: bool,
                lr: float | None = None):
    """Train (or reuse from ``work/model`` when its summary matches) the preset's crop classifier."""
    cfg = replace(preset.model, steps=steps, out_dir=str(work), progress=progress, lr=lr or preset.model.lr)
    summary_path = work / "train_summary.json"
    if summary_path.exists() and (work / "model").exists():
        summary = json.loads(summary_path.read_text())
        if summary.get("config") == json.loads(json.dumps(asdict(cfg))):
            log.info("reusing the model in %s (%d steps)", work / "model", steps)
            return vitkit.load(work / "model").to(device).eval(), summary
    if device.type == "cpu" and torch.cuda.is_available():
        log.warning("training on the CPU although CUDA is available: the engine picks CUDA by itself")
    t = time.perf_counter()
    (tp, tl), (vp, vl) = data["train"], data["val"]
    model, result = train_crop_classifier(cfg, tp, tl, vp, vl, out_dir=work / "train")
    train_s = time.perf_counter() - t
    vitkit.save(model.cpu(), work / "model")
    hist = [h for h in result.history if "val_crop_accuracy" in h]
    summary = {"config": asdict(cfg), "steps": result.steps, "train_s": train_s,
               "val_crop_accuracy": hist[-1]["val_crop_accuracy"] if hist else None,
               "history": [h for h in result.history if "val_crop_accuracy" in h or h.get("step") == result.steps]}
    summary_path.write_text(json.dumps(summary, indent=2))
    log.info("trained %d steps in %.0f s; validation crop accuracy %s", result.steps, train_s,
             summary["val_crop_accuracy"])
    return model.to(device).eval(), summary


def write_results(res: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"quant_{res['preset']}.json").write_text(json.dumps(res, indent=2))
    if any(r["bits"] == "fp32" for r in res["rows"]):
        (out / f"quant_{res['preset']}.md").write_text(grid_table(res) + "\n")


def run_sized(args, preset: Preset) -> dict:
    """--size vitb|tiny: pages → (time plan) → training → calibration images → every configuration."""
    t_start = time.perf_counter()
    deadline = t_start + args.time_budget if args.time_budget else None
    logging.getLogger("vitkit.quant.ptq").setLevel(logging.WARNING)  # per-block lines: the JSON keeps them
    device = torch.device(args.device)
    out, work = Path(args.out), Path(args.work or args.out)
    info = machine.describe(device)
    log.info("machine: %s", json.dumps(info))
    res: dict = {"machine": info, "preset": preset.name, "args": {k: str(v) for k, v in vars(args).items()},
                 "n_calib": preset.n_calib, "calib_method": args.calib_method, "rows": [], "skipped": [],
                 "train_precision": "bf16 autocast" if device.type == "cuda" else "fp32",
                 "synth_precision": "TF32" if device.type == "cuda" and not args.synth_fp32 else "fp32",
                 "eval_precision": "IEEE fp32 (fake-quant)"}
    log.info("precision: training %s, synthesis %s, calibration, reconstruction and evaluation %s",
             res["train_precision"], res["synth_precision"], res["eval_precision"])
    t = time.perf_counter()
    data = sized_data(preset, args.workers)
    res["pages_s"] = time.perf_counter() - t
    res["val_crops"] = len(data["vx"])
    log.info("%d training pages, %d validation crops, %d real calibration crops in %.1f s", len(data["train"][0]),
             len(data["vx"]), len(data["cx"]), res["pages_s"])
    asked = {"train": args.train_steps or preset.model.steps,
             "synth": preset.synth_steps if args.synth_steps is None else args.synth_steps}
    configs = [c for c in configurations(preset, args.sources, args.calib_method) if f"w{c[0]}a{c[1]}" in args.bits]
    extra = (extra_configurations(preset, args.sources, args.calib_method)
             if args.extra_minmax and "w4a4" in args.bits else [])
    steps = dict(asked)
    if deadline is not None:
        costs = measure_costs(preset, device, data, device.type == "cuda" and not args.synth_fp32, args.seed)
        res["plan"] = plan_steps(preset, deadline - time.perf_counter(), costs, asked, len(configs))
        steps = {"train": res["plan"]["train_steps"], "synth": res["plan"]["synth_steps"]}
    res["train_steps"], res["synth_steps"] = steps["train"], steps["synth"]
    write_results(res, out)
    model, res["training"] = train_model(preset, data, work, device, steps["train"], args.progress, args.lr)
    res["rows"].append({"bits": "fp32", "source": "-", "crop_acc": None})
    with fp32_precision(False):
        fp32_pred = QE.crop_predictions(model, data["vx"])
    res["rows"][0]["crop_acc"] = (fp32_pred == data["vy"]).float().mean().item()
    log.info("fp32 validation crop accuracy %.4f", res["rows"][0]["crop_acc"])
    with fp32_precision(False):
        res["channel_spread"] = QE.channel_spreads(model, data["cx"])
    log.info("channel spread (max/median input range) by layer kind: %s", res["channel_spread"]["max_by_kind"])
    calib, res["synthesis_s"] = calibration_sets(
        model, args.sources, preset.n_calib, data["cx"], {"psaq": steps["synth"], "spdfq": steps["synth"]}, args,
        work / "calib", f"{{src}}_n{preset.n_calib}_s{steps['synth']}_a{args.alpha:g}_m{preset.msr_every}_seed{args.seed}"
        f"{GREY[args.grey_synthetic]}.pt",
        preset.msr_every, tf32=not args.synth_fp32)
    write_results(res, out)
    recon = args.recon_steps if args.recon_steps is not None else preset.recon_steps
    est = res.get("plan", {}).get("config_s", 0.0)
    for w, a, g, src, method in configs + extra:
        name = f"W{w}A{a} per {g} {method} {src}"
        if deadline is not None and time.perf_counter() + est > deadline:
            res["skipped"].append(name)
            log.warning("skipped %s: %.0f s left, ≈ %.0f s needed", name, deadline - time.perf_counter(), est)
            continue
        t = time.perf_counter()
        row = {"bits": f"W{w}A{a}", "w": w, "a": a, "granularity": g, "method": method, "source": src,
               **QE.evaluate_config(model, quant.QuantConfig(w_bits=w, a_bits=a, recon_steps=recon, recon_lr=args.recon_lr,
                                                          act_granularity=g, calib_method=method),
                                 calib[src], data["vx"], data["vy"], fp32_pred)}
        row["time_s"] = time.perf_counter() - t
        est = max(est, row["time_s"])
        res["rows"].append(row)
        log.info("%s: accuracy %.4f, same class as fp32 %.4f (%.1f s)", name, row["crop_acc"], row["agree_fp32"],
                 row["time_s"])
        res["total_s"] = time.perf_counter() - t_start
        write_results(res, out)  # partial results survive a time-out
    res["total_s"] = time.perf_counter() - t_start
    res["machine"]["load_avg_end"] = machine.load_avg()
    write_results(res, out)
    print(grid_table(res), flush=True)
    log.info("total %.0f s", res["total_s"])
    return res


# ------------------------------------------------------------------ speed
def part_speed(args) -> dict:
    """Real int8 against fp32 on ViT-S/16 (:func:`vitkit.quant.evaluate.int8_speed`)."""
    vit = vitkit.create_model("vit_small_patch16_224").eval() if "vit_small_patch16_224" in vitkit.list_models() \
        else vitkit.VisionTransformer(embed_dim=384, depth=12, num_heads=6, num_classes=1000).eval()
    out = QE.int8_speed(vit, args.batch, args.threads, args.repeats)
    torch.set_num_threads(1)
    return out


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", choices=("demo", *PRESETS), default="demo",
                   help="demo = a saved model (--model); vitb = train a ViT-B-sized model first (GPU); tiny = smoke test")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--model", type=Path, help="a saved vitkit demo model (for --part accuracy)")
    p.add_argument("--part", choices=("all", "synth", "accuracy", "speed"), default="all",
                   help="synth = only produce (and cache) the calibration images of --sources; with --size vitb|tiny "
                        "only all (= accuracy) and accuracy")
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
    p.add_argument("--grey-synthetic", action="store_true", help="grey noise/PSAQ/SPDFQ images (FRB inputs are grey)")
    p.add_argument("--act-granularity", choices=("token", "tensor"), default="token",
                   help="activations: dynamic per-token scales, or static per-tensor scales set by calibration")
    p.add_argument("--recon-steps", type=int, default=None, help="block reconstruction steps (default: 100; "
                   "vitb/tiny: the preset's)")
    p.add_argument("--recon-lr", type=float, default=4e-5)
    p.add_argument("--batch", type=int, default=8, help="images per forward in the speed part")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2],
                   help="speed part: the thread counts timed; vitb/tiny: torch threads (the largest value given)")
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--progress", action="store_true")
    p.add_argument("--json", type=Path)
    p.add_argument("--backbone", default=None,
                   help="instead of --model: a pretrained source (e.g. dinov2-s14) + a linear probe on FRB crops")
    p.add_argument("--probe-pages", type=int, default=600, help="--backbone: training pages for the probe")
    g = p.add_argument_group("--size vitb|tiny")
    g.add_argument("--out", type=Path, default=None, help="JSON + markdown table (default runs/quant_<size>)")
    g.add_argument("--work", type=Path, default=None, help="trained model, checkpoints, calibration images "
                   "(default: --out)")
    g.add_argument("--workers", type=int, default=1, help="processes rendering pages (same pages for any value)")
    g.add_argument("--time-budget", type=float, default=None, metavar="S",
                   help="measure a few steps first and lower training and synthesis steps (never raise them) so "
                        "that the run fits in S seconds; configurations that would not finish are skipped")
    g.add_argument("--train-steps", type=int, default=None, help="training steps (default: the preset's)")
    g.add_argument("--synth-steps", type=int, default=None, help="PSAQ-style and SPDFQ steps (default: the preset's)")
    g.add_argument("--lr", type=float, default=None, help="training learning rate (default: the preset's)")
    g.add_argument("--synth-fp32", action="store_true", help="synthesis in IEEE fp32 on CUDA (default TF32)")
    g.add_argument("--extra-minmax", action=argparse.BooleanOptionalAction, default=True,
                   help="after the grid, while time is left: W4A4 per tensor with min-max ranges, every source")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: torch.cuda.is_available() is False (no GPU, or a CPU-only torch build); "
                "use --device cpu")
    if args.device == "cuda" and (args.part == "speed" or (args.part == "all" and args.size == "demo")
                                  or args.int8_row or args.frb):
        p.error("--device cuda: the real-int8 speed part, --int8-row and --frb run on the CPU only; use "
                "--part accuracy without them")
    for name in ("time_budget", "lr", "train_steps", "synth_steps", "recon_steps"):
        v = getattr(args, name)
        positive = name in ("time_budget", "lr", "train_steps")
        if v is not None and (v <= 0 if positive else v < 0):
            p.error(f"--{name.replace('_', '-')} must be {'> 0' if positive else '≥ 0'}, got {v}")
    if args.size != "demo":
        if args.part not in ("all", "accuracy") or args.int8_row or args.frb:
            p.error(f"--size {args.size}: only --part accuracy (the default 'all' means accuracy here), without "
                    "--int8-row and --frb; the CPU int8 parts run with --size demo")
        args.out = args.out or Path(f"runs/quant_{args.size}")
        torch.set_num_threads(max(args.threads))
        return run_sized(args, PRESETS[args.size])
    if args.recon_steps is None:
        args.recon_steps = 100
    if args.backbone is not None:
        from vitkit.weights import pretrained

        if args.backbone not in pretrained.SOURCES:
            p.error(f"--backbone must be one of {sorted(pretrained.SOURCES)}, got {args.backbone!r}")
        if args.model is not None:
            p.error("--backbone and --model are exclusive")
        if args.cache == p.get_default("cache"):
            args.cache = Path(f"runs/quant_{args.backbone}") / "calib"
        try:
            args.model = backbone_model(args)
        except FileNotFoundError as e:
            p.error(str(e))
    torch.set_num_threads(1)
    res: dict = {"machine": machine.describe(), "args": {k: str(v) for k, v in vars(args).items()}}
    with fp32_precision(False):
        if args.part in ("all", "synth", "accuracy"):
            if args.model is None:
                p.error("--model DIR is needed for the accuracy part")
            res["accuracy"] = part_accuracy(args)
    if args.part in ("all", "speed"):
        res["speed"] = part_speed(args)
    res["machine"]["load_avg_end"] = machine.load_avg()
    print(json.dumps(res["machine"]))
    print(console_tables(res))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(res, indent=2))
    return res


if __name__ == "__main__":
    main()
