"""Measuring a quantized classifier: crop accuracy, agreement with the float model, calibration sets
cached on disk, the cost of one configuration, and real int8 against fp32 (speed and bytes).

Every function quantizes a copy or undoes what it applied (:func:`evaluate_config` removes the
wrappers even when calibration fails), so one float model serves a whole grid of configurations.
Quantized evaluation runs in IEEE fp32 on CUDA (:func:`vitkit.bench.timing.fp32_precision`), as
fake-quant figures would otherwise depend on TF32 rounding.
"""

from __future__ import annotations

import copy
import logging
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..bench.budget import batch_seconds, fit_steps, train_step_seconds
from ..bench.timing import fp32_precision, interleaved, median, synchronize, timed
from ..engine import model_device
from ..models.applied import describe
from . import psaq, spdfq
from .calibrate import calibration_images
from .int8 import Int8Linear, linear_bytes, to_int8
from .ptq import QuantConfig, apply, calibrate, reconstruct_blocks, remove
from .serialize import save_quantized
from .stats import channel_spread, linear_input_ranges, spread_by_kind

log = logging.getLogger(__name__)


def crop_tensors(pages: Tensor, labels: Tensor, size: int, per_page: int, seed: int) -> tuple[Tensor, Tensor]:
    """``per_page`` seeded ink crops (n, 3, size, size) of grey pages (P, 1, H, W) and their labels (n,)."""
    from ..frb.ink import InkCropDataset

    ds = InkCropDataset(pages, labels, size=size, crops_per_page=per_page, seed=seed)
    return torch.stack([ds[i][0] for i in range(len(ds))]), torch.stack([ds[i][1] for i in range(len(ds))])


@torch.no_grad()
def crop_predictions(model: nn.Module, x: Tensor, bs: int = 200) -> Tensor:
    """Predicted classes (n,) of crops x (n, 3, S, S), on the CPU; batches go to the model's device."""
    dev = model_device(model)
    return torch.cat([model(x[i : i + bs].to(dev)).argmax(-1).cpu() for i in range(0, len(x), bs)])


def crop_accuracy(model: nn.Module, x: Tensor, y: Tensor, bs: int = 200) -> float:
    """Share of crops x (n, 3, S, S) classified as y (n,)."""
    return (crop_predictions(model, x, bs) == y).float().mean().item()


def channel_spreads(model: nn.Module, x: Tensor) -> dict:
    """Max / median per-channel input range of every quantizable Linear on crops ``x``, and the largest per
    layer kind (qkv and fc1 read LayerNorm outputs, fc2 the GELU output, proj the attention output)."""
    ranges = linear_input_ranges(model, x)
    return {"per_layer": {n: channel_spread(r) for n, r in ranges.items()}, "max_by_kind": spread_by_kind(ranges)}


def frb_accuracy(model: nn.Module, crop: int) -> dict[str, float]:
    """Page accuracy on FRB easy and hard of ``model`` reading pages tile by tile (``crop``-px tiles)."""
    from .. import frb
    from ..frb.classifier import TiledClassifier
    from ..frb.ink import pil_to_tensor
    from ..frb.protocols import evaluate_classifier

    clf = TiledClassifier(model, size=crop, stride=crop // 2).eval()
    with torch.no_grad():
        return {name: evaluate_classifier(clf, split, transform=pil_to_tensor, batch_size=16, progress=False).accuracy
                for name, split in (("easy", frb.easy_split()), ("hard", frb.hard_split()))}


def cached_calibration(model: nn.Module, source: str, n: int, path: Path, *, tf32: bool = False, **kwargs
                       ) -> tuple[Tensor, float]:
    """(``n`` calibration images from ``source`` on the CPU, seconds it took to make them), read from ``path``
    when it exists, else made by :func:`vitkit.quant.calibration_images` (``kwargs``; synthesis in TF32 on
    CUDA with ``tf32``) and saved there."""
    if path.exists():
        d = torch.load(path, weights_only=True)
        log.info("%s calibration images from %s", source, path)
        return d["images"], float(d["seconds"])
    dev = model_device(model)
    with fp32_precision(tf32):
        box = []
        secs = timed(lambda: box.append(calibration_images(model, source, n, **kwargs).cpu()), dev)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"images": box[0], "seconds": secs}, path)
    log.info("%s calibration images: %.1f s", source, secs)
    return box[0], secs


def evaluate_config(model: nn.Module, cfg: QuantConfig, images: Tensor, vx: Tensor, vy: Tensor,
                    fp32_pred: Tensor | None = None, extra: Callable[[nn.Module], dict] | None = None) -> dict:
    """Quantize ``model`` with ``cfg`` (fake-quant, IEEE fp32), calibrate on ``images``, classify crops vx, undo.
    ``crop_acc`` against vy, the reconstruction's per-block (MSE before, after), with the float model's
    predictions ``fp32_pred`` ``agree_fp32`` (the share of crops whose class is unchanged), and what
    ``extra(quantized model)`` returns (e.g. :func:`frb_accuracy`)."""
    with fp32_precision(False):
        apply(model, cfg)
        try:
            info = calibrate(model, images)
            pred = crop_predictions(model, vx)
            more = extra(model) if extra is not None else {}
        finally:
            remove(model)
    row = {"crop_acc": (pred == vy).float().mean().item(),
           "recon_mse": [(r["mse_before"], r["mse_after"]) for r in info["reconstruction"]], **more}
    if fp32_pred is not None:
        row["agree_fp32"] = (pred == fp32_pred).float().mean().item()
    return row


def synthesis_step_seconds(model: nn.Module, n_images: int, msr_every: int, tf32: bool, seed: int = 0,
                           k: int = 3) -> float:
    """Seconds of one synthesis step of PSAQ-style plus one of SPDFQ for ``n_images`` images: 1 against
    ``k + 1`` steps, so that the set-up cost cancels."""
    dev = model_device(model)
    spd, psa = [], []
    with fp32_precision(tf32):
        for steps in (1, k + 1):
            cfg = dict(n_images=n_images, steps=steps, progress=False, pixel_range=(-1.0, 1.0), seed=seed)
            spd.append(timed(lambda cfg=cfg: spdfq.synthesize(model, spdfq.SPDFQConfig(msr_every=msr_every, **cfg)),
                             dev))
            psa.append(timed(lambda cfg=cfg: psaq.synthesize(model, psaq.PSAQConfig(**cfg)), dev))
    return max(0.0, (spd[1] - spd[0]) / k) + max(0.0, (psa[1] - psa[0]) / k)


def config_seconds(model: nn.Module, n_calib: int, recon_steps: int, vx: Tensor, vy: Tensor, seed: int = 0) -> dict:
    """Seconds of one configuration (W4A4 per tensor: range calibration on ``n_calib`` noise images,
    ``recon_steps`` block-reconstruction steps, evaluation on the crops vx), split into its fixed part and
    the per-reconstruction-step cost (1 against 6 steps); the model is left unquantized."""
    dev = model_device(model)
    crop = model.cfg.img_size
    calib = torch.randn(n_calib, 3, *crop, generator=torch.Generator().manual_seed(seed))
    with fp32_precision(False):
        synchronize(dev)
        t = time.perf_counter()
        apply(model, QuantConfig(w_bits=4, a_bits=4, act_granularity="tensor", recon_steps=0))
        calibrate(model, calib)
        crop_accuracy(model, vx, vy)
        synchronize(dev)
        t_fixed = time.perf_counter() - t
        recon = [timed(lambda s=s: reconstruct_blocks(model, calib, steps=s), dev) for s in (1, 6)]
        remove(model)
    t_recon = max(0.0, (recon[1] - recon[0]) / 5)
    return {"config_s": t_fixed + max(0.0, recon[0] - t_recon) + recon_steps * t_recon, "config_fixed_s": t_fixed,
            "recon_s_per_step": t_recon, "recon_fixed_s": max(0.0, recon[0] - t_recon)}


def file_bytes(fp32: nn.Module, int8: nn.Module) -> dict[str, float]:
    """Checkpoint bytes of the float model (``vitkit.save``) and its int8 copy (``save_quantized``), and the ratio."""
    from .. import save

    with tempfile.TemporaryDirectory() as d:
        save(fp32, Path(d) / "fp32")
        save_quantized(int8, Path(d) / "int8")
        size = {k: (Path(d) / k / "model.safetensors").stat().st_size for k in ("fp32", "int8")}
    return size | {"ratio": size["fp32"] / size["int8"]}


def speed_pair(fp32_fn, int8_fn, repeats: int, calls: int = 1, warmup: int = 1) -> dict:
    """fp32 against int8, alternating (fp32 first) over ``repeats`` rounds, each time the mean of ``calls``
    calls: milliseconds (median), speed-up as the median of per-round ratios and as the ratio of medians,
    and the raw seconds."""
    d = interleaved({"fp32": lambda: [fp32_fn() for _ in range(calls)], "int8": lambda: [int8_fn() for _ in range(calls)]},
                    repeats, warmup=warmup, rotate=False)
    d = {k: [s / calls for s in v] for k, v in d.items()}
    med = {k: median(v) for k, v in d.items()}
    return {"fp32_ms": med["fp32"] * 1e3, "int8_ms": med["int8"] * 1e3,
            "speedup_median_of_pairs": median([a / b for a, b in zip(d["fp32"], d["int8"], strict=True)]),
            "speedup_of_medians": med["fp32"] / med["int8"], "raw_s": d}


@torch.no_grad()
def int8_speed(vit: nn.Module, batch: int, threads: list[int], repeats: int) -> dict:
    """Real int8 W8A8 (dynamic per-token activations, ``torch._int_mm``) against fp32 on the CPU: the four
    Linear layers of a block of ``vit`` on ``batch`` images' tokens (mean of 3 calls per round) and the whole
    ``vit`` forward (``max(3, repeats // 3)`` rounds), per torch thread count; relative output error of the
    int8 model, checkpoint bytes and Linear-weight bytes of both."""
    dim, hidden = vit.embed_dim, vit.blocks[0].mlp.fc1.out_features
    tokens = vit.num_prefix_tokens + vit.grid_size[0] * vit.grid_size[1]
    torch.manual_seed(0)
    layers = [nn.Linear(dim, 3 * dim), nn.Linear(dim, dim), nn.Linear(dim, hidden), nn.Linear(hidden, dim)]
    int8 = [Int8Linear.from_linear(m) for m in layers]
    xs = [torch.randn(batch * tokens, m.in_features) for m in layers]
    vit8 = copy.deepcopy(vit)
    to_int8(vit8)
    img = torch.randn(batch, 3, *vit.cfg.img_size)
    out: dict = {"vit_s_int8_rel_err": ((vit8(img) - vit(img)).norm() / vit(img).norm()).item()}
    n_threads = torch.get_num_threads()
    for t in threads:
        torch.set_num_threads(t)
        r = {"linear": speed_pair(lambda: [F.linear(x, m.weight, m.bias) for m, x in zip(layers, xs, strict=True)],
                                  lambda: [m(x) for m, x in zip(int8, xs, strict=True)], repeats, calls=3),
             "vit_s": speed_pair(lambda: vit(img), lambda: vit8(img), max(3, repeats // 3))}
        out[f"threads_{t}"] = r
        log.info("threads %d: linear ×%.2f, ViT-S ×%.2f", t, r["linear"]["speedup_of_medians"],
                 r["vit_s"]["speedup_of_medians"])
    torch.set_num_threads(n_threads)
    out["file_bytes"] = file_bytes(vit, vit8)
    out["linear_bytes"] = {"fp32": linear_bytes(vit), "int8": linear_bytes(vit8)}
    out["linear_bytes"]["ratio"] = out["linear_bytes"]["fp32"] / out["linear_bytes"]["int8"]
    return out


def demo_metrics(model: nn.Module, train: tuple[Tensor, Tensor], val: tuple[Tensor, Tensor], seed: int = 0, *,
                 spdfq_steps: int = 30, n_calib: int = 8, val_pages: int = 100, recon_steps: int = 10) -> dict:
    """What the demo report shows about quantizing a trained crop classifier, on grey pages ``train`` and
    ``val`` ((P, 1, H, W), labels (P,)): crop accuracy on 2 crops of each of ``val_pages`` validation pages
    at fp32, W8A8 and W4A4 with real-crop, Gaussian-noise and SPDFQ calibration (``n_calib`` images,
    ``recon_steps`` of block reconstruction), the real int8 path's accuracy, speed on 64 crops and checkpoint
    bytes, the channel spread by layer kind, the model's record of what was applied (``recorded``: one
    :func:`vitkit.models.applied.describe` list per configuration) and the SPDFQ images (n_calib, 3, S, S)."""
    t0 = time.perf_counter()
    model = model.eval()
    S = model.cfg.img_size[0]
    vx, vy = crop_tensors(val[0][:val_pages], val[1][:val_pages], S, 2, seed + 1)
    real_x, _ = crop_tensors(train[0][:64], train[1][:64], S, 1, seed + 7)
    rng = (-1.0, 1.0)  # the demo's inputs are grey crops in [-1, 1]
    spd_name = f"SPDFQ ({spdfq_steps} steps)"
    calib = {
        "real crops": calibration_images(model, "real", n_calib, images=real_x, seed=seed),
        "Gaussian noise": calibration_images(model, "noise", n_calib, seed=seed, pixel_range=rng),
        spd_name: calibration_images(model, "spdfq", n_calib, seed=seed, steps=spdfq_steps, pixel_range=rng,
                                     msr_every=2),
    }
    rows = [("fp32", "-", crop_accuracy(model, vx, vy, 256))]
    recorded: dict[str, list[str]] = {}  # what the model's own record says was applied, as vitkit.save writes it
    spread = spread_by_kind(linear_input_ranges(model, real_x))
    for w, a in ((8, 8), (4, 4)):
        for name, imgs in calib.items():
            apply(model, QuantConfig(w_bits=w, a_bits=a, recon_steps=recon_steps))
            try:
                calibrate(model, imgs)
                rows.append((f"W{w}A{a}", name, crop_accuracy(model, vx, vy, 256)))
                recorded.setdefault(f"W{w}A{a}", describe(model))
            finally:
                remove(model)
    m8 = copy.deepcopy(model)
    to_int8(m8)
    recorded["int8 kernels"] = describe(m8)
    rows.append(("W8A8 int8 kernels", "dynamic per token", crop_accuracy(m8, vx, vy, 256)))
    batch = vx[:64]
    with torch.no_grad():
        speed = speed_pair(lambda: model(batch), lambda: m8(batch), 5, warmup=0)
    return {"rows": rows, "val_crops": len(vx), "n_calib": n_calib, "recon_steps": recon_steps,
            "spdfq_steps": spdfq_steps, "channel_spread": spread, "fp32_ms": speed["fp32_ms"],
            "int8_ms": speed["int8_ms"], "int8_speedup": speed["speedup_of_medians"],
            "file_bytes": file_bytes(model, m8), "threads": torch.get_num_threads(), "width": model.embed_dim,
            "spdfq_images": calib[spd_name], "recorded": recorded, "time_s": time.perf_counter() - t0}


def step_costs(model: nn.Module, batch: int, pages: tuple[Tensor, Tensor], n_calib: int, msr_every: int,
               recon_steps: int, vx: Tensor, vy: Tensor, synth_tf32: bool, seed: int = 0) -> dict:
    """Seconds per training step of ``model`` (its compute on ``batch`` random crops; building a batch of ink
    crops of ``pages`` on the CPU, as the engine does in the main process), per synthesis step
    (:func:`synthesis_step_seconds`) and per configuration (:func:`config_seconds`)."""
    from ..frb.ink import InkCropDataset

    dev = model_device(model)
    crop = model.cfg.img_size
    x, y = torch.randn(batch, 3, *crop, device=dev), torch.randint(0, model.cfg.num_classes, (batch,), device=dev)
    t_compute = train_step_seconds(model, lambda: (x, y), lambda m, b: F.cross_entropy(m(b[0]), b[1]), dev,
                                   warmup=2, steps=4)
    ds = InkCropDataset(pages[0][:32], pages[1][:32], size=crop[0], crops_per_page=4 * batch, seed=0)
    starts = iter(range(0, len(ds), batch))

    def crop_batch() -> Tensor:
        r = next(starts)
        return torch.stack([ds[i][0] for i in range(r, r + batch)]).contiguous()

    t_data = batch_seconds(crop_batch)[0]
    t_synth = synthesis_step_seconds(model, n_calib, msr_every, synth_tf32, seed)
    return {"train_s_per_step": max(t_compute, t_data), "train_compute_s": t_compute, "train_crops_s": t_data,
            "synth_s_per_step": t_synth, **config_seconds(model, n_calib, recon_steps, vx, vy, seed)}


def fit_plan(seconds: float, costs: dict[str, float], asked: dict[str, int],
             order: tuple[tuple[str, float], ...] = (("train", 0.5), ("synth", 0.5), ("train", 0.25), ("synth", 0.2)),
             ) -> dict[str, int]:
    """Training and synthesis step counts (``costs[k]`` seconds a step) that fit ``seconds``: training lowered
    first (to 50 %), then synthesis (to 50 %), training (to 25 %), synthesis (to 20 %) — each just enough to
    fit, stopping as soon as the total fits; never raised (:func:`vitkit.bench.budget.fit_steps`)."""
    return fit_steps(seconds, costs, asked, order)


def training_plan(costs: dict, seconds_left: float, asked: dict[str, int], n_configs: int, params: int,
                  safety: float = 1.2) -> dict:
    """Training and synthesis steps (``asked``: {"train": n, "synth": n}) that fit ``seconds_left`` after
    ``n_configs`` configurations and a reserve (saving, five checkpoints of model + AdamW state of ``params``
    parameters, evaluation and loading: 30 s + 5 × 12 bytes per parameter at ~1 GB/s), from the measured
    ``costs`` (:func:`step_costs`) by :func:`fit_plan`."""
    reserve = 30.0 + 5 * 12 * params / 1e9 + n_configs * costs["config_s"]
    per = {"train": costs["train_s_per_step"], "synth": costs["synth_s_per_step"]}
    steps = fit_plan(seconds_left / safety - reserve, per, asked)
    est = safety * (reserve + steps["train"] * per["train"] + steps["synth"] * per["synth"])
    log.info("time budget: %.0f s left; measured %.3f s/training step (compute %.3f, crops %.3f), %.3f s/synthesis "
             "step (PSAQ-style + SPDFQ), %.1f s/configuration → training %d steps (asked %d), synthesis %d (asked "
             "%d), ≈ %.0f s", seconds_left, per["train"], costs["train_compute_s"], costs["train_crops_s"],
             per["synth"], costs["config_s"], steps["train"], asked["train"], steps["synth"], asked["synth"], est)
    return {**costs, "seconds_left": seconds_left, "reserve_s": reserve, "safety": safety, "asked": asked,
            "train_steps": steps["train"], "synth_steps": steps["synth"], "estimated_s": est, "params": params}
