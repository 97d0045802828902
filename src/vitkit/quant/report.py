"""The ``vitkit demo`` report section for quantization (≈ 20–30 s on 2 cores).

:func:`quant_section` renders the metrics of :func:`vitkit.quant.evaluate.demo_metrics` (on the demo's
trained ViT: per-crop validation accuracy at fp32, W8A8 and W4A4 with real-crop, Gaussian-noise and a
short SPDFQ calibration; the real int8 path's accuracy, time and file size against fp32; a few SPDFQ
images); :func:`demo_section` computes them and renders. Full figures: ``benchmarks/quantization.py``.
"""

from __future__ import annotations

import logging

import torch

log = logging.getLogger(__name__)


def _to_image(x):
    from PIL import Image

    g = ((x.mean(0).clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()
    return Image.fromarray(g).convert("RGB")


def quant_section(m: dict):
    """The report Section of :func:`vitkit.quant.evaluate.demo_metrics`' dict ``m``."""
    from ..report import Section, table
    from ..report.plots import image_grid

    size, spd, spread = m["file_bytes"], m["spdfq_images"], m["channel_spread"]
    parts = [
        f"<p>The demo ViT quantized after training, no fine-tuning: weights per output channel, activations per "
        f"token, post-softmax attention with a log2 quantizer, {m['n_calib']} calibration images, {m['recon_steps']} "
        f"steps of block reconstruction. Accuracy on {m['val_crops']} validation crops (2 per page). SPDFQ images are "
        f"synthesised from noise in {m['spdfq_steps']} steps here (the benchmark uses 1000).</p>",
        table(["bits", "calibration", "crop accuracy"], [(b, s, f"{a:.1%}") for b, s, a in m["rows"]]),
        "<p>Outlier channels, which make low-bit activations hard (ImageNet-trained ViTs have post-LayerNorm "
        "channels far wider than the rest): the widest input channel over the median one, worst block per layer — "
        + ", ".join(f"{k} ×{v:.1f}" for k, v in spread.items()) + " (qkv and fc1 read LayerNorm outputs).</p>",
        f"<p>Real int8 execution (<code>torch._int_mm</code>, W8A8 with dynamic per-token scales): "
        f"{m['fp32_ms']:.1f} ms fp32 vs {m['int8_ms']:.1f} ms int8 for 64 crops "
        f"(×{m['int8_speedup']:.2f}, {m['threads']} thread(s), width {m['width']}: small "
        f"layers gain less than ViT-S, see benchmarks/RESULTS.md); checkpoint {size['fp32'] / 1e6:.2f} MB → "
        f"{size['int8'] / 1e6:.2f} MB (patch embedding, norms and head stay fp32).</p>",
        "<p>SPDFQ calibration images (grey mean of the 3 channels):</p>",
        image_grid([_to_image(x) for x in spd[:8]], [f"#{i}" for i in range(min(8, len(spd)))], ncols=8,
                   thumb_width=96),
    ]
    return Section("quantization", "Quantization: W8A8 / W4A4 and real int8", "\n".join(parts))


def demo_section(ctx, spdfq_steps: int = 30, n_calib: int = 8, val_pages: int = 100, recon_steps: int = 10):
    """Quantization section of ``vitkit demo``; adds ``ctx.metrics["quantization"]``."""
    from .evaluate import demo_metrics

    m = demo_metrics(ctx.model, (ctx.train_pages, ctx.train_labels), (ctx.val_pages, ctx.val_labels), ctx.cfg.seed,
                     spdfq_steps=spdfq_steps, n_calib=n_calib, val_pages=val_pages, recon_steps=recon_steps)
    ctx.metrics["quantization"] = {
        "val_crop_accuracy": {f"{b} {s}": a for b, s, a in m["rows"]}, "int8_speedup": m["int8_speedup"],
        "file_bytes": {k: m["file_bytes"][k] for k in ("fp32", "int8")}, "channel_spread": m["channel_spread"],
        "time_s": m["time_s"],
    }
    log.info("quantization section: %.1f s", m["time_s"])
    return quant_section(m)
