"""The ``vitkit demo`` report section for quantization (≈ 20–30 s on 2 cores).

:func:`quant_section` renders the metrics of :func:`vitkit.quant.evaluate.demo_metrics` (on the demo's
trained ViT: per-crop validation accuracy at fp32, W8A8 and W4A4 with real-crop, Gaussian-noise and a
short SPDFQ calibration; the real int8 path's accuracy, time and file size against fp32; a few SPDFQ
images); :func:`demo_section` computes them and renders. Full figures: ``benchmarks/quantization.py``, whose
JSONs :func:`grid_table` and :func:`console_tables` render.
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
    from ..report import Section, escape, table
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
        "<p>What the quantized model records as applied (saved by <code>vitkit.save</code>, re-applied by "
        "<code>vitkit.load</code>, shown by <code>vitkit info</code>):</p><ul>"
        + "".join(f"<li>{escape(k)}: {escape('; '.join(v) or 'nothing')}</li>" for k, v in m.get("recorded", {}).items())
        + "</ul>",
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


# ------------------------------------------------------------------ benchmarks/quantization.py's tables
SOURCES = ("real", "noise", "psaq", "spdfq")
SOURCE_NAMES = {"real": "real", "noise": "noise", "psaq": "PSAQ-style", "spdfq": "SPDFQ"}


def _row_key(r: dict) -> tuple:
    """(w, a, granularity, range method) of a quantized row; Nones for the fp32 row."""
    return r.get("w"), r.get("a"), r.get("granularity"), r.get("method")


def _row_label(key: tuple, res: dict) -> str:
    """'W4A4 | per tensor', with the range method when it is not the run's (``res['calib_method']``)."""
    w, a, g, method = key
    return f"W{w}A{a} | per {g}" + (f", {method}" if method and method != res.get("calib_method") else "")


def grid_table(res: dict) -> str:
    """The accuracy grid of a ``--size vitb|tiny`` quantization JSON: one line per (bits, activations), one column per source, and the target's gaps."""
    rows = res["rows"]
    fp32 = next(r["crop_acc"] for r in rows if r["bits"] == "fp32")
    srcs = [s for s in SOURCES if any(r["source"] == s for r in rows)]
    head = "| bits | activations | " + " | ".join(SOURCE_NAMES[s] for s in srcs)
    lines = [head + " | SPDFQ − max(noise, PSAQ) | SPDFQ − real |", "|---|---|" + "---|" * (len(srcs) + 2)]
    keys = list(dict.fromkeys(_row_key(r) for r in rows if r["bits"] != "fp32"))
    for key in keys:
        acc = {r["source"]: r["crop_acc"] for r in rows if _row_key(r) == key}
        cells = [f"{100 * acc[s]:.1f}%" if s in acc else "–" for s in srcs]
        gap_free = (100 * (acc["spdfq"] - max(acc["noise"], acc["psaq"])) if {"spdfq", "noise", "psaq"} <= acc.keys()
                    else None)
        gap_real = 100 * (acc["spdfq"] - acc["real"]) if {"spdfq", "real"} <= acc.keys() else None
        fmt = lambda v: "–" if v is None else f"{v:+.1f}"  # noqa: E731
        lines.append(f"| {_row_label(key, res)} | " + " | ".join(cells) + f" | {fmt(gap_free)} | {fmt(gap_real)} |")
    if any("agree_fp32" in r for r in rows):
        lines += ["", "Crops whose predicted class is the fp32 model's:", "",
                  "| bits | activations | " + " | ".join(SOURCE_NAMES[s] for s in srcs) + " |",
                  "|---|---|" + "---|" * len(srcs)]
        for key in keys:
            agree = {r["source"]: r.get("agree_fp32") for r in rows if _row_key(r) == key}
            cells = [f"{100 * agree[s]:.1f}%" if agree.get(s) is not None else "–" for s in srcs]
            lines.append(f"| {_row_label(key, res)} | " + " | ".join(cells) + " |")
    m = res["machine"]
    dev = m["gpu"] or f"CPU ({m['cpu']}, {m['cpu_count']} cores, {m['threads']} threads)"
    head = (f"{dev}; torch {m['torch']}, CUDA {m['cuda']}; {m['date']}; preset {res['preset']}; fp32 crop accuracy "
            f"{100 * fp32:.1f}% on {res['val_crops']} validation crops; {res['n_calib']} calibration images; "
            f"synthesis {res['synth_steps']} steps ({res['synth_precision']}); training {res['train_steps']} steps "
            f"({res['train_precision']}); calibration and evaluation {res['eval_precision']}")
    if res.get("channel_spread"):
        kinds = ", ".join(f"{k} {v:.1f}" for k, v in res["channel_spread"]["max_by_kind"].items())
        head += (f"; widest input channel over the median channel (real calibration crops), worst layer per kind: "
                 f"{kinds}")
    skipped = f"\n\nskipped (time budget): {res['skipped']}" if res.get("skipped") else ""
    return head + "\n\n" + "\n".join(lines) + skipped


def console_tables(res: dict) -> str:
    """The demo-size results (``accuracy`` and ``speed`` parts of a quantization JSON) as console text."""
    out: list[str] = []

    def emit(*parts) -> None:  # as print() would write them
        out.append(" ".join(str(p) for p in parts))

    if "accuracy" in res:
        acc = res["accuracy"]
        emit(f"\naccuracy — model {acc['model']}, {acc['val_crops']} val crops, {acc['n_calib']} calibration images, "
             f"activations per {acc['act_granularity']}, ranges {acc.get('calib_method')}")
        has_frb = "easy" in acc["rows"][0]
        emit(f"{'bits':9} {'source':6} {'crop acc':>9}" + (f" {'FRB easy':>9} {'FRB hard':>9}" if has_frb else ""))
        for r in acc["rows"]:
            line = f"{r['bits']:9} {r['source']:6} {r['crop_acc']:9.1%}"
            if has_frb:
                line += f" {r['easy']:9.1%} {r['hard']:9.1%}"
            emit(line)
        emit("synthesis s:", {k: round(v, 1) for k, v in acc["synthesis_s"].items()})
        if "channel_spread" in acc:
            emit("widest input channel over the median channel, worst layer per kind:",
                 {k: round(v, 1) for k, v in acc["channel_spread"]["max_by_kind"].items()})
    if "speed" in res:
        sp = res["speed"]
        emit("\nint8 W8A8 vs fp32 (ms per call, median; speed-up = median of per-repeat ratios)")
        for k, v in sp.items():
            if k.startswith("threads_"):
                for name in ("linear", "vit_s"):
                    d = v[name]
                    emit(f"{k:10} {name:7} fp32 {d['fp32_ms']:8.2f}  int8 {d['int8_ms']:8.2f}  "
                         f"×{d['speedup_median_of_pairs']:.2f}")
        emit("file bytes:", sp["file_bytes"], " linear bytes:", sp["linear_bytes"])
        emit(f"ViT-S int8 relative output error: {sp['vit_s_int8_rel_err']:.4f}")
    return "\n".join(out)
