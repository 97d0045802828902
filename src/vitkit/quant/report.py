"""The ``vitkit demo`` report section for quantization (≈ 20–30 s on 2 cores).

On the demo's trained ViT: per-crop validation accuracy at fp32, W8A8 and W4A4 with real-crop,
Gaussian-noise and a short SPDFQ calibration; the real int8 path's accuracy, time and file size
against fp32; a few SPDFQ images. Full figures: ``benchmarks/quantization.py``.
"""

from __future__ import annotations

import copy
import logging
import tempfile
import time
from pathlib import Path

import torch

log = logging.getLogger(__name__)


def _crops(pages, labels, size: int, per_page: int, seed: int):
    from ..frb.ink import InkCropDataset

    ds = InkCropDataset(pages, labels, size=size, crops_per_page=per_page, seed=seed)
    return torch.stack([ds[i][0] for i in range(len(ds))]), torch.stack([ds[i][1] for i in range(len(ds))])


@torch.no_grad()
def _acc(model, x, y) -> float:
    return (torch.cat([model(x[i : i + 256]).argmax(-1) for i in range(0, len(x), 256)]) == y).float().mean().item()


def _to_image(x):
    from PIL import Image

    g = ((x.mean(0).clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()
    return Image.fromarray(g).convert("RGB")


def demo_section(ctx, spdfq_steps: int = 30, n_calib: int = 8, val_pages: int = 100, recon_steps: int = 10):
    """Quantization section of ``vitkit demo``; adds ``ctx.metrics["quantization"]``."""
    from .. import save
    from ..report import Section, table
    from ..report.plots import image_grid
    from . import QuantConfig, apply, calibrate, calibration_images, remove, save_quantized, to_int8
    from .stats import linear_input_ranges, spread_by_kind

    t0 = time.perf_counter()
    model = ctx.model.eval()
    S, seed = model.cfg.img_size[0], ctx.cfg.seed
    vx, vy = _crops(ctx.val_pages[:val_pages], ctx.val_labels[:val_pages], S, 2, seed + 1)
    real_x, _ = _crops(ctx.train_pages[:64], ctx.train_labels[:64], S, 1, seed + 7)
    rng = (-1.0, 1.0)  # the demo's inputs are grey crops in [-1, 1]
    calib = {
        "real crops": calibration_images(model, "real", n_calib, images=real_x, seed=seed),
        "Gaussian noise": calibration_images(model, "noise", n_calib, seed=seed, pixel_range=rng),
        f"SPDFQ ({spdfq_steps} steps)": calibration_images(model, "spdfq", n_calib, seed=seed, steps=spdfq_steps,
                                                           pixel_range=rng, msr_every=2),
    }
    rows = [("fp32", "-", _acc(model, vx, vy))]
    spread = spread_by_kind(linear_input_ranges(model, real_x))
    for w, a in ((8, 8), (4, 4)):
        for name, imgs in calib.items():
            apply(model, QuantConfig(w_bits=w, a_bits=a, recon_steps=recon_steps))
            try:
                calibrate(model, imgs)
                rows.append((f"W{w}A{a}", name, _acc(model, vx, vy)))
            finally:
                remove(model)
    # the real int8 path: accuracy, time on a batch of crops, file size
    m8 = copy.deepcopy(model)
    to_int8(m8)
    acc8 = _acc(m8, vx, vy)
    batch = vx[:64]
    times = {"fp32": [], "int8": []}
    with torch.no_grad():
        for _ in range(5):
            for name, m in (("fp32", model), ("int8", m8)):
                t = time.perf_counter()
                m(batch)
                times[name].append(time.perf_counter() - t)
    med = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
    with tempfile.TemporaryDirectory() as d:
        save(model, Path(d) / "fp32")
        save_quantized(m8, Path(d) / "int8")
        size = {k: (Path(d) / k / "model.safetensors").stat().st_size for k in ("fp32", "int8")}
    rows.append(("W8A8 int8 kernels", "dynamic per token", acc8))
    ctx.metrics["quantization"] = {
        "val_crop_accuracy": {f"{b} {s}": a for b, s, a in rows},
        "int8_speedup": med["fp32"] / med["int8"], "file_bytes": size, "channel_spread": spread,
        "time_s": time.perf_counter() - t0,
    }
    spd = next(v for k, v in calib.items() if k.startswith("SPDFQ"))
    parts = [
        f"<p>The demo ViT quantized after training, no fine-tuning: weights per output channel, activations per "
        f"token, post-softmax attention with a log2 quantizer, {n_calib} calibration images, {recon_steps} steps of block "
        f"reconstruction. Accuracy on {len(vx)} validation crops (2 per page). SPDFQ images are synthesised "
        f"from noise in {spdfq_steps} steps here (the benchmark uses 1000).</p>",
        table(["bits", "calibration", "crop accuracy"], [(b, s, f"{a:.1%}") for b, s, a in rows]),
        "<p>Outlier channels, which make low-bit activations hard (ImageNet-trained ViTs have post-LayerNorm "
        "channels far wider than the rest): the widest input channel over the median one, worst block per layer — "
        + ", ".join(f"{k} ×{v:.1f}" for k, v in spread.items()) + " (qkv and fc1 read LayerNorm outputs).</p>",
        f"<p>Real int8 execution (<code>torch._int_mm</code>, W8A8 with dynamic per-token scales): "
        f"{med['fp32'] * 1e3:.1f} ms fp32 vs {med['int8'] * 1e3:.1f} ms int8 for 64 crops "
        f"(×{med['fp32'] / med['int8']:.2f}, {torch.get_num_threads()} thread(s), width {model.embed_dim}: small "
        f"layers gain less than ViT-S, see benchmarks/RESULTS.md); checkpoint {size['fp32'] / 1e6:.2f} MB → "
        f"{size['int8'] / 1e6:.2f} MB (patch embedding, norms and head stay fp32).</p>",
        "<p>SPDFQ calibration images (grey mean of the 3 channels):</p>",
        image_grid([_to_image(x) for x in spd[:8]], [f"#{i}" for i in range(min(8, len(spd)))], ncols=8,
                   thumb_width=96),
    ]
    log.info("quantization section: %.1f s", time.perf_counter() - t0)
    return Section("quantization", "Quantization: W8A8 / W4A4 and real int8", "\n".join(parts))
