#!/usr/bin/env python
"""VisionGRU against a ViT of the same parameter count: cost as resolution grows, and FRB accuracy.

``--stage cost``: for each input size (default 224, 448, 768, 1024, 1248 px) and each model,
  * inference at batch 1: time per image from one process, the two models interleaved (A B / B A …)
    over ``--repeats`` repeats after a warm-up, median; peak memory of one forward;
  * a training step (AdamW, cross-entropy) at ``--train-batch`` (per size): peak memory of the first
    step and time of the following ``--train-timed`` steps (median), per image.
  Peak memory is measured, not estimated, in a fresh subprocess per (model, size, mode) (``--probe``),
  after a ``--warmup-px`` inference. On CPU: the rise of the peak RSS (VmHWM, reset through
  /proc/self/clear_refs) above the RSS before the forward/step — torch allocates CPU tensors in C++,
  unseen by ``tracemalloc``, and the profiler gives per-op allocations, not the process peak. On CUDA:
  ``torch.cuda.max_memory_allocated`` above what was allocated before (reset first).
  Growth exponents: least-squares slope of log(cost) on log(pixels) over the sizes ≥ ``--fit-from``.
``--stage scan``: the model's minGRU scan against the pure log-space one (speed, forward and backward).
``--stage frb``: both models trained from scratch with the same recipe and number of steps on ink
  crops of rendered FRB training pages (as ``vitkit demo``), then FRB easy/hard evaluated page by page
  (paper layout) with the demo's tiled classifier. Parameter counts are matched (printed).
``--stage scenes``: the same two models and recipe (the FRB stage's flags), multi-label classifiers of rendered
  scenes (``vitkit.data.scenes``, binary cross-entropy), scored on scenes of another seed (mAP, label accuracy).

Examples::

    python benchmarks/visiongru.py --stage cost --json runs/visiongru/cost.json
    python benchmarks/visiongru.py --stage frb --steps 600 --seeds 0 --json runs/visiongru/frb.json
    python benchmarks/visiongru.py --stage scenes --steps 1600 --seeds 0 1 --json runs/visiongru/scenes.json
    python benchmarks/visiongru.py --stage cost --pair tiny --device cuda --dtype bf16 --train-batch 8 \\
        --repeats 10 --json "$OUT/cost_bf16.json"
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import vitkit
from vitkit.bench import machine
from vitkit.bench.probe import ProbeError
from vitkit.bench.probe import run_probe as probe_process
from vitkit.bench.timing import interleaved, median, peak_cuda_mib, rss_rise, timed
from vitkit.models.attention import Attention
from vitkit.models.visiongru import VisionGRU, VisionGRUConfig
from vitkit.models.vit import VisionTransformer, ViTConfig

# pair name → (VisionGRU registry name, ViT kwargs of about the same parameter count)
PAIRS = {
    "micro": ("visiongru_micro", dict(embed_dim=192, depth=12, num_heads=3)),  # 5.5 M / 5.5 M (vit_tiny_patch16)
    "tiny": ("visiongru_tiny", dict(embed_dim=448, depth=12, num_heads=7)),  # 29.6 M / 29.4 M
}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
NUM_CLASSES = 15


def build(kind: str, pair: str, num_classes: int = NUM_CLASSES, **gru_kw) -> torch.nn.Module:
    """kind "gru", "vit" (vitkit's default fused SDPA attention: no N×N map) or "vit_eager" (the same ViT with
    the map materialised, softmax(QKᵀ/√d) then ·V, as a DeiT's attention does: ``Attention.attn_map_fn`` =
    identity switches every layer to that explicit path)."""
    gru_name, vit_kw = PAIRS[pair]
    if kind == "gru":
        return vitkit.create_model(gru_name, num_classes=num_classes, **gru_kw)
    vit = VisionTransformer(ViTConfig(patch_size=16, num_classes=num_classes, **vit_kw))
    if kind == "vit_eager":
        for m in vit.modules():
            if isinstance(m, Attention):
                m.attn_map_fn = torch.nn.Identity()
    return vit


def n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


# ------------------------------------------------------------------ memory probes (one per subprocess)


def probe(spec: dict) -> dict:
    """One (model, size, mode) in this fresh process: peak memory rise of the first forward/step, step times."""
    torch.set_num_threads(spec["threads"])
    torch.manual_seed(0)
    dev, dtype, B, s = spec["device"], DTYPES[spec["dtype"]], spec["batch"], spec["size"]
    model = build(spec["model"], spec["pair"]).to(dev)
    if spec.get("warmup_px"):  # one-time initialisation (kernel compilation or loading) is not a forward's peak
        with torch.inference_mode():
            model.eval()(torch.zeros(1, 3, spec["warmup_px"], spec["warmup_px"], device=dev))
    x = torch.randn(B, 3, s, s, device=dev)
    y = torch.randint(NUM_CLASSES, (B,), device=dev)
    amp = torch.autocast(dev, dtype=dtype, enabled=dtype != torch.float32)
    train = spec["mode"] == "train"
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4) if train else None
    model.train(train)

    def step() -> None:
        if train:
            with amp:
                loss = F.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        else:
            with torch.inference_mode(), amp:
                model(x)

    if dev == "cuda":  # the first step's peak above what was allocated before
        first = []
        peak = int(peak_cuda_mib(lambda: first.append(timed(step, dev)), dev) * 2**20)
        first = first[0]
    else:
        rise = rss_rise(lambda: timed(step, dev))
        peak, first = rise["peak_delta"], rise["result"]
    return {"peak_bytes": peak, "first_s": first, "times_s": [timed(step, dev) for _ in range(spec["timed"])]}


def run_probe(spec: dict) -> dict:
    try:
        return probe_process(__file__, "--probe", spec, env={"OMP_NUM_THREADS": str(spec["threads"])})
    except ProbeError as e:
        return {"error": str(e).strip().splitlines()[-1]}


# ------------------------------------------------------------------ cost stage


def kinds(args) -> tuple[str, ...]:
    """The models of the cost stage: VisionGRU and the ViT with the chosen attention (both by default)."""
    return {"fused": ("gru", "vit"), "eager": ("gru", "vit_eager"), "both": ("gru", "vit", "vit_eager")}[
        args.vit_attention]


def interleaved_inference(args, size: int) -> dict[str, list[float]]:
    """Batch-1 forward time of both models at ``size``, interleaved A B / B A …, after one warm-up each."""
    dev, dtype = args.device, DTYPES[args.dtype]
    models = {k: build(k, args.pair).to(dev).eval() for k in kinds(args)}
    x = torch.randn(1, 3, size, size, device=dev)
    amp = torch.autocast(dev, dtype=dtype, enabled=dtype != torch.float32)
    with torch.inference_mode(), amp:
        return interleaved({k: (lambda m=m: m(x)) for k, m in models.items()}, args.repeats, device=dev)


def fit_exponent(sizes: list[int], values: list[float]) -> float | None:
    pts = [(math.log(s * s), math.log(v)) for s, v in zip(sizes, values, strict=True) if v and v > 0]
    if len(pts) < 2:
        return None
    mx, my = statistics.fmean(p[0] for p in pts), statistics.fmean(p[1] for p in pts)
    return sum((a - mx) * (b - my) for a, b in pts) / sum((a - mx) ** 2 for a, _ in pts)


def cost_stage(args) -> dict:
    sizes, batches = args.sizes, args.train_batch
    if len(batches) == 1:
        batches = batches * len(sizes)
    if len(batches) != len(sizes):
        raise SystemExit(f"--train-batch needs one value or one per size ({len(sizes)}), got {batches}")
    rows = []
    for size, tb in zip(sizes, batches, strict=True):
        row: dict = {"size": size, "train_batch": tb}
        common = dict(pair=args.pair, size=size, device=args.device, dtype=args.dtype, threads=args.threads,
                      warmup_px=args.warmup_px)
        if "infer" in args.modes:
            t = interleaved_inference(args, size)
            for k in kinds(args):
                mem = run_probe(dict(model=k, batch=1, mode="infer", timed=0, **common))
                row[f"{k}_infer"] = {**mem, "s_per_image": median(t[k]), "times_s": t[k]}
        if "train" in args.modes:
            order = kinds(args) if sizes.index(size) % 2 == 0 else kinds(args)[::-1]
            for k in order:
                res = run_probe(dict(model=k, batch=tb, mode="train", timed=args.train_timed, **common))
                if "times_s" in res:
                    res["s_per_image"] = median(res["times_s"] or [res["first_s"]]) / tb
                row[f"{k}_train"] = res
        rows.append(row)
        print(f"  {size}px done: " + ", ".join(f"{k}={v.get('s_per_image', v.get('error'))}"
                                              for k, v in row.items() if isinstance(v, dict)), flush=True)
    fits = {}
    for key in [f"{k}_{m}" for m in ("infer", "train") for k in kinds(args)]:
        use = [r for r in rows if key in r and "peak_bytes" in r[key] and r["size"] >= args.fit_from]
        if key.endswith("_train"):  # a step's cost scales with the batch: fit only rows of the most common batch
            common = statistics.mode([r["train_batch"] for r in use]) if use else None
            use = [r for r in use if r["train_batch"] == common]
        sz = [r["size"] for r in use]
        fits[key] = {"time": fit_exponent(sz, [r[key]["s_per_image"] for r in use]),
                     "memory": fit_exponent(sz, [r[key]["peak_bytes"] for r in use]), "sizes": sz}
    return {"rows": rows, "fits": fits}


def print_cost(res: dict, params: dict) -> None:
    print(f"\nVisionGRU ({params['gru'] / 1e6:.2f} M) vs ViT ({params['vit'] / 1e6:.2f} M); "
          "vit = fused attention, vit_eager = materialised attention")
    for r in res["rows"]:
        for mode in ("infer", "train"):
            g = r.get(f"gru_{mode}")
            if not g or "peak_bytes" not in g:
                continue
            label = mode if mode == "infer" else f"train b{r['train_batch']}"
            cells = [f"{r['size']:>5} {label:>8} gru {g['s_per_image']:.4f} s {g['peak_bytes'] / 2**20:.1f} MiB"]
            for k in ("vit", "vit_eager"):
                v = r.get(f"{k}_{mode}")
                if v and "peak_bytes" in v:
                    cells.append(f"{k} {v['s_per_image']:.4f} s {v['peak_bytes'] / 2**20:.1f} MiB (gru/{k}: time "
                                 f"{g['s_per_image'] / v['s_per_image']:.3f}, memory "
                                 f"{g['peak_bytes'] / max(v['peak_bytes'], 1):.3f})")
            print(" | ".join(cells))
    print("growth exponents (cost ∝ pixels^k):")
    for k, f in res["fits"].items():
        fmt = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
        print(f"  {k:>15}: time k = {fmt(f['time'])}, memory k = {fmt(f['memory'])} (sizes {f['sizes']})")


# ------------------------------------------------------------------ scan stage


def scan_stage(args) -> dict:
    """``scan_linear`` (the model's) against ``scan`` (linear blocks, log-space carries) and the log-space one on a
    (1, L, D) sequence: forward, and forward + backward, interleaved over ``--repeats``, medians."""
    from vitkit.models.mingru import scan, scan_linear, scan_log

    gen = torch.Generator().manual_seed(0)
    gate, hidden = (torch.randn(1, args.scan_len, args.scan_dim, generator=gen) for _ in range(2))

    def fwd(fn):
        with torch.no_grad():
            fn(gate, hidden)

    def fwd_bwd(fn):
        fn(gate.clone().requires_grad_(True), hidden.clone().requires_grad_(True)).sum().backward()

    fns = (("scan_linear", scan_linear), ("scan", scan), ("scan_log", scan_log))
    runs = {f"{k}_{m}": (lambda f=f, step=step: step(f)) for k, f in fns
            for m, step in (("fwd", fwd), ("fwd_bwd", fwd_bwd))}
    times = interleaved(runs, args.repeats, warmup=1)
    med = {k: median(v) for k, v in times.items()}
    for m in ("fwd", "fwd_bwd"):
        print(f"  (1, {args.scan_len}, {args.scan_dim}) {m:>8}: " + ", ".join(
            f"{k} {med[f'{k}_{m}'] * 1e3:8.1f} ms" for k, _ in fns)
            + f"; scan/scan_linear {med[f'scan_{m}'] / med[f'scan_linear_{m}']:.2f}x")
    return {"times_s": times, "median_s": med}


# ------------------------------------------------------------------ FRB stage


def fit_run(args, model: torch.nn.Module, ds, kind: str, seed: int, out_dir: str, *, loss_fn=None, epochs: int = 1,
            label_smoothing: float = 0.1) -> dict:
    """Train ``model`` on ``ds`` with the stages' shared recipe (``--steps``, ``--batch``, ``--lr`` or ``--gru-lr``,
    5% warm-up) → the run's record: model, seed, lr, params, steps, train_s, loss curve, final loss."""
    from vitkit.engine import TrainConfig, Trainer

    lr = args.gru_lr if (kind == "gru" and args.gru_lr) else args.lr
    cfg = TrainConfig(epochs=epochs, max_steps=args.steps, batch_size=args.batch, lr=lr, label_smoothing=label_smoothing,
                      warmup_steps=max(1, args.steps // 20), out_dir=out_dir, progress=False, ckpt_every=args.steps,
                      log_every=args.log_every or max(1, args.steps // 10), seed=seed)
    t0 = time.perf_counter()
    res = Trainer(model, ds, cfg, loss_fn=loss_fn).fit()
    curve = [(h["step"], h["loss"]) for h in res.history if "loss" in h]
    return {"model": kind, "seed": seed, "lr": lr, "params": n_params(model), "steps": res.steps,
            "train_s": time.perf_counter() - t0, "curve": curve, "final_loss": curve[-1][1] if curve else None}


def frb_stage(args) -> dict:
    """Equal recipe and steps for both models; page-level FRB easy/hard (see the module docstring). With
    ``--val-pages``, also label-free-of-test figures to choose on: crop-level loss and accuracy on ink crops of
    independently rendered validation pages (``frb.val_split``, never FRB test pages). ``--no-test`` skips FRB."""
    from vitkit import frb
    from vitkit.frb.ink import InkCropDataset
    from vitkit.frb.pages import frb_pages

    size_range = (37, 43)  # the demo's training font sizes
    train = frb_pages(list(frb.train_split(args.pages, 0, size_range=size_range)))
    val = (InkCropDataset(*frb_pages(list(frb.val_split(args.val_pages, 0, size_range=size_range))), size=args.crop,
                          crops_per_page=4, seed=10_000) if args.val_pages else None)
    out: dict = {"runs": []}
    for seed in args.seeds:
        for kind in args.models:
            torch.manual_seed(seed)
            model = frb_gru(args) if kind == "gru" else frb_vit(args)
            ds = InkCropDataset(*train, size=args.crop, crops_per_page=-(-args.steps * args.batch // args.pages),
                                seed=seed)
            run = fit_run(args, model, ds, kind, seed, f"{args.work}/{kind}_s{seed}")
            if val is not None:
                run.update(crop_eval(model.eval(), val))
            if not args.no_test:
                run.update(frb_test(args, model.eval()))
            out["runs"].append(run)
            print(f"  {kind} seed {seed} lr {run['lr']:g}: " + ", ".join(
                f"{k} {run[k]:.4g}" for k in ("final_loss", "val_loss", "val_acc", "easy", "hard", "train_s")
                if run.get(k) is not None) + f" ({run['params'] / 1e6:.3f} M params)", flush=True)
            print("    loss curve: " + " ".join(f"{s}:{v:.3f}" for s, v in run["curve"]), flush=True)
    return out


@torch.no_grad()
def crop_eval(model: torch.nn.Module, ds, batch: int = 64) -> dict:
    """Mean cross-entropy (no smoothing) and accuracy of ``model`` over every crop of ``ds``."""
    loss, hits = 0.0, 0
    for i in range(0, len(ds), batch):
        xs, ys = zip(*(ds[j] for j in range(i, min(i + batch, len(ds)))), strict=True)
        logits = model(torch.stack(xs))
        y = torch.as_tensor(ys)
        loss += F.cross_entropy(logits, y, reduction="sum").item()
        hits += int((logits.argmax(1) == y).sum())
    return {"val_loss": loss / len(ds), "val_acc": hits / len(ds), "val_crops": len(ds)}


def frb_test(args, model: torch.nn.Module) -> dict:
    """FRB easy and hard, page by page (paper layout), with the demo's tiled classifier."""
    from vitkit import frb
    from vitkit.frb.classifier import TiledClassifier
    from vitkit.frb.ink import pil_to_tensor
    from vitkit.frb.protocols import evaluate_classifier

    clf = TiledClassifier(model, size=args.crop, stride=args.crop // 2).eval()
    t0 = time.perf_counter()
    acc = {name: evaluate_classifier(clf, split, transform=pil_to_tensor, batch_size=1, progress=False).accuracy
           for name, split in (("easy", frb.easy_split()), ("hard", frb.hard_split()))}  # pages differ in size
    return {**acc, "eval_s": time.perf_counter() - t0}


def frb_gru(args, num_classes: int = 15, size: int | None = None) -> VisionGRU:
    """The FRB-size VisionGRU; init options left unset take VisionGRUConfig's defaults."""
    extra = {k: v for k, v in (("linear_init", args.gru_init), ("gate_memory", args.gate_memory)) if v is not None}
    return VisionGRU(VisionGRUConfig(img_size=size or args.crop, dims=tuple(args.gru_dims),
                                     depths=tuple(args.gru_depths), num_classes=num_classes, **extra))


def frb_vit(args, num_classes: int = 15, size: int | None = None) -> VisionTransformer:  # the demo's ViT
    return VisionTransformer(ViTConfig(img_size=size or args.crop, patch_size=args.patch, embed_dim=args.vit_dim,
                                       depth=args.vit_depth, num_heads=3, num_classes=num_classes))


# ------------------------------------------------------------------ scenes stage


@torch.no_grad()
def scene_scores(model: torch.nn.Module, ds, batch: int = 100) -> dict:
    """``multilabel_scores`` of ``model`` over every (image, multi-hot) item of ``ds``."""
    from vitkit.engine.multilabel import multilabel_scores

    x, y = (torch.stack([torch.as_tensor(t) for t in col]) for col in zip(*(ds[i] for i in range(len(ds))), strict=True))
    logits = torch.cat([model(x[i : i + batch]) for i in range(0, len(x), batch)])
    return {**multilabel_scores(logits, y), "test_scenes": len(ds)}


def scenes_stage(args) -> dict:
    """Both models, the FRB stage's recipe and steps, multi-label classification of rendered scenes."""
    from vitkit.data.scenes import SceneDataset
    from vitkit.engine.multilabel import bce_loss

    train = SceneDataset(args.scene_train, seed=0, size=args.scene_size, cache=True)
    test = SceneDataset(args.scene_test, seed=1, size=args.scene_size, cache=True)  # other scenes, same generator
    out: dict = {"runs": [], "classes": list(train.class_names)}
    for seed in args.seeds:
        for kind in args.models:
            torch.manual_seed(seed)
            build_fn = frb_gru if kind == "gru" else frb_vit
            model = build_fn(args, num_classes=train.num_classes, size=args.scene_size)
            run = fit_run(args, model, train, kind, seed, f"{args.work}/scenes_{kind}_s{seed}", loss_fn=bce_loss,
                          epochs=-(-args.steps * args.batch // len(train)), label_smoothing=0.0)
            run.update(scene_scores(model.eval(), test))
            out["runs"].append(run)
            print(f"  {kind} seed {seed} lr {run['lr']:g}: mAP {run['mAP']:.4f}, label accuracy "
                  f"{run['label_accuracy']:.4f}, final loss {run['final_loss']:.4f}, train {run['train_s']:.0f} s "
                  f"({run['params'] / 1e6:.3f} M params)", flush=True)
    return out


# ------------------------------------------------------------------ main


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--probe", help=argparse.SUPPRESS)
    p.add_argument("--stage", choices=("cost", "frb", "scan", "scenes"), default="cost")
    p.add_argument("--pair", choices=sorted(PAIRS), default="micro", help="which equal-parameter pair (cost stage)")
    p.add_argument("--sizes", type=int, nargs="+", default=[224, 448, 768, 1024, 1248])
    p.add_argument("--modes", nargs="+", choices=("infer", "train"), default=["infer", "train"])
    p.add_argument("--repeats", type=int, default=3, help="interleaved inference repeats per size")
    p.add_argument("--train-batch", type=int, nargs="+", default=[8], help="one batch, or one per size")
    p.add_argument("--train-timed", type=int, default=1, help="timed training steps after the measured first one")
    p.add_argument("--fit-from", type=int, default=448, help="smallest size used in the exponent fits")
    p.add_argument("--vit-attention", choices=("fused", "eager", "both"), default="both",
                   help="the ViT baseline's attention: fused SDPA (vitkit's default), materialised N×N map, or both")
    p.add_argument("--warmup-px", type=int, default=64, help="memory probes: one inference at this size first, so "
                   "one-time initialisation (kernel loading, oneDNN setup) is not a forward's peak (0: none)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--scan-len", type=int, default=36_864, help="scan stage: tokens (768 px, stage 1 = 192²)")
    p.add_argument("--scan-dim", type=int, default=64, help="scan stage: channels (micro's stage-1 minGRU width)")
    # FRB stage
    p.add_argument("--pages", type=int, default=600, help="rendered training pages")
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--crop", type=int, default=96)
    p.add_argument("--patch", type=int, default=12, help="ViT patch (the demo's)")
    p.add_argument("--vit-dim", type=int, default=96)
    p.add_argument("--vit-depth", type=int, default=4)
    p.add_argument("--gru-dims", type=int, nargs="+", default=[16, 32, 64, 104])
    p.add_argument("--gru-depths", type=int, nargs="+", default=[1, 1, 2, 1])
    p.add_argument("--gru-init", choices=("trunc_normal", "torch"), default=None,
                   help="VisionGRU's Linear init (VisionGRUConfig.linear_init; default: the config's)")
    p.add_argument("--gate-memory", type=float, default=None,
                   help="VisionGRUConfig.gate_memory (0: no gate bias; default: the config's)")
    p.add_argument("--gru-lr", type=float, default=None, help="VisionGRU's own lr (default: --lr, as the ViT)")
    p.add_argument("--models", nargs="+", choices=("gru", "vit"), default=["gru", "vit"])
    p.add_argument("--val-pages", type=int, default=0, help="validation pages (frb.val_split) for crop loss/accuracy")
    p.add_argument("--no-test", action="store_true", help="skip the FRB test pages (choose on validation)")
    p.add_argument("--log-every", type=int, default=0, help="training-loss record every n steps (0: steps/10)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    # scenes stage (the model and training flags are the FRB stage's)
    p.add_argument("--scene-size", type=int, default=96, help="scenes stage: image side in px")
    p.add_argument("--scene-train", type=int, default=4000, help="scenes stage: training scenes (seed 0)")
    p.add_argument("--scene-test", type=int, default=500, help="scenes stage: test scenes (seed 1)")
    p.add_argument("--work", default="runs/visiongru")
    p.add_argument("--json", help="write the results here")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.probe:
        print(json.dumps(probe(json.loads(args.probe))))
        return 0
    torch.set_num_threads(args.threads)
    info = machine.describe(args.device, argv=sys.argv[1:])
    if args.stage == "cost":
        params = {k: n_params(build(k, args.pair)) for k in ("gru", "vit")}
        res = {"info": info, "params": params, **cost_stage(args)}
        print_cost(res, params)
    elif args.stage == "scan":
        res = {"info": info, **scan_stage(args)}
    elif args.stage == "scenes":
        res = {"info": info, **scenes_stage(args)}
    else:
        res = {"info": info, **frb_stage(args)}
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
