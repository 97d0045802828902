"""Which tokens each method kept, drawn on the page, and the demo-report section that shows it.

:func:`kept_overlay` paints a high-resolution page with its kept sub-image tokens bright and the
dropped ones dimmed, and the thumbnail (partition 0) beside it with its own kept tokens.
:func:`accuracy_throughput_plot`, :func:`bench_table` and :func:`pooled_table` show a benchmark's rows
(:func:`read_bench_rows` and :func:`parse_pairs` check a pooled table's inputs).
:func:`demo_section` runs HiRED, HiRED-early, EViT and ToMe on one validation page of ``vitkit demo``
with the demo's trained ViT as the encoder (a few forward passes: well under a second).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from torch import Tensor

from .partitions import TokenSet

log = logging.getLogger(__name__)


def kept_overlay(grey: Tensor, ts: TokenSet, grid: tuple[int, int], b: int = 0, scale: int = 1) -> Image.Image:
    """Page ``grey`` (H, W) in [0, 1] with the tokens of image ``b`` of ``ts`` marked.

    Left: the page, sub-image tokens kept at full contrast with a red outline, dropped ones faded.
    Right: the thumbnail (the page squeezed to the partition size) with its kept tokens marked.
    """
    H, W = grey.shape
    R, C = grid
    gh, gw = ts.grid
    th, tw = H // R, W // C
    page = (grey.clamp(0, 1).numpy() * 255).astype(np.uint8)
    faded = (255 - (255 - page.astype(np.float32)) * 0.25).astype(np.uint8)
    keep_mask = np.zeros((H, W), dtype=bool)
    thumb_keep = np.zeros((gh, gw), dtype=bool)
    boxes = []
    for part, (r, c) in zip(ts.partition[b].tolist(), ts.pos[b].tolist(), strict=True):
        if r < 0:
            continue
        if part == 0:
            thumb_keep[r, c] = True
            continue
        y0 = (part - 1) // C * th + r * th // gh
        x0 = (part - 1) % C * tw + c * tw // gw
        y1, x1 = y0 + th // gh, x0 + tw // gw
        keep_mask[y0:y1, x0:x1] = True
        boxes.append((x0, y0, x1 - 1, y1 - 1))
    left = Image.fromarray(np.where(keep_mask, page, faded)).convert("RGB")
    draw = ImageDraw.Draw(left)
    for box in boxes:
        draw.rectangle(box, outline=(220, 40, 40))
    for k in range(1, R):
        draw.line([(0, k * th), (W, k * th)], fill=(40, 90, 220))
    for k in range(1, C):
        draw.line([(k * tw, 0), (k * tw, H)], fill=(40, 90, 220))
    # thumbnail panel, same height as the page
    thumb = Image.fromarray(page).resize((max(1, H * gw // gh), H), Image.BILINEAR)  # squeezed like the thumbnail
    tarr = np.asarray(thumb)
    tmask = np.kron(thumb_keep, np.ones((H // gh + 1, thumb.width // gw + 1), dtype=bool))[:H, : thumb.width]
    tfaded = (255 - (255 - tarr.astype(np.float32)) * 0.25).astype(np.uint8)
    right = Image.fromarray(np.where(tmask, tarr, tfaded)).convert("RGB")
    out = Image.new("RGB", (W + 8 + right.width, H), (255, 255, 255))
    out.paste(left, (0, 0))
    out.paste(right, (W + 8, 0))
    if scale != 1:
        out = out.resize((out.width * scale, out.height * scale), Image.NEAREST)
    return out


def group_overlay(grey: Tensor, source: Tensor, grid: tuple[int, int], patch_grid: tuple[int, int],
                  num_prefix: int) -> Image.Image:
    """ToMe's merged groups on the page: sub-image patches that ended in the same token share a tint
    (unmerged patches stay untinted). ``source`` (P, num_prefix + gh·gw): final row of each original
    token per partition (``TokenState.extras["tome_source"]`` of one image's partitions)."""
    H, W = grey.shape
    R, C = grid
    gh, gw = patch_grid
    th, tw = H // R, W // C
    page = (grey.clamp(0, 1).numpy() * 255).astype(np.float32)
    out = np.repeat(page[..., None], 3, axis=2)
    rng = np.random.default_rng(0)
    palette = rng.integers(60, 230, (source.shape[1], 3)).astype(np.float32)
    for part in range(1, source.shape[0]):
        rows = source[part, num_prefix:].tolist()
        counts = np.bincount(rows, minlength=max(rows) + 1)
        for t, row in enumerate(rows):
            if counts[row] < 2:
                continue
            y0 = (part - 1) // C * th + (t // gw) * th // gh
            x0 = (part - 1) % C * tw + (t % gw) * tw // gw
            y1, x1 = y0 + th // gh, x0 + tw // gw
            out[y0:y1, x0:x1] = out[y0:y1, x0:x1] * 0.55 + palette[row] * 0.45
    return Image.fromarray(out.clip(0, 255).astype(np.uint8))


def method_overlays(model, page: Tensor, methods: Sequence[tuple[str, object, object]], grid: tuple[int, int]):
    """page (1, 1, H, W) grey → [(name, overlay, tokens kept)] for (name, module or None, cfg) methods: the
    token sets of :func:`vitkit.reduce.evaluate.kept_token_sets` drawn with :func:`kept_overlay` (ToMe: the
    merged groups, :func:`group_overlay`, instead of the representatives)."""
    from .evaluate import kept_token_sets

    vis = getattr(model, "visual", model)
    out = []
    for name, ts, source in kept_token_sets(model, page, methods, grid):
        img = kept_overlay(page[0, 0], ts, grid)
        if source is not None:
            img.paste(group_overlay(page[0, 0], source, grid, ts.grid, vis.num_prefix_tokens), (0, 0))
        out.append((name, img, len(ts)))
    return out


def demo_section(ctx):
    """``vitkit demo`` section: the tokens each method keeps on one validation page."""
    from ..report import Section, escape, figure, table
    from . import EViTConfig, HiREDConfig, ToMeConfig, evit, hired, tome

    model = ctx.model
    P = model.patch_size
    S = model.cfg.img_size[0]
    page = ctx.val_pages[:1]
    H, W = page.shape[-2:]
    R, C = max(1, H // S), max(1, W // S)
    page = page[..., : R * S, : C * S]  # the largest grid of native-size sub-images that fits
    depth = model.depth
    T = (S // P) ** 2
    r = max(1, T // (2 * depth))
    methods = [
        ("dense", None, None),
        ("HiRED 20%", hired, HiREDConfig(grid=(R, C), rate=0.2)),
        ("HiRED-early 20%", hired, HiREDConfig(grid=(R, C), rate=0.2, select_layer=max(0, depth // 2 - 1),
                                                early=True)),
        ("EViT keep 0.5", evit, EViTConfig(layers=(max(1, depth // 2 - 1),), keep_rate=0.5)),
        (f"ToMe r={r}", tome, ToMeConfig(r=r)),
    ]
    shown = method_overlays(model, page, methods, (R, C))
    parts = [
        f"<p>The demo's ViT encodes the first validation page ({R * S}×{C * S} px crop) as a thumbnail plus a "
        f"{R}×{C} grid of {S}×{S} sub-images ({T} tokens each, {(1 + R * C) * T} in all). Red boxes: sub-image "
        "tokens handed to the downstream model; right panel: the thumbnail's kept tokens. HiRED spends its "
        "budget where the thumbnail's first-layer CLS attention points, then keeps the tokens a late layer's "
        "CLS attention ranks highest; EViT keeps the top CLS-attention tokens inside the encoder (plus one fused "
        "token); ToMe merges similar tokens (tints: patches merged into the same token). Figures for "
        "speed and accuracy: <code>benchmarks/token_reduction.py</code> and benchmarks/RESULTS.md.</p>",
        table(["method", "tokens kept"], [(n, k) for n, _, k in shown]),
    ]
    for name, img, k in shown:
        parts.append(figure(img, caption=f"{name}: {k} tokens", alt=escape(name)))
    ctx.metrics["token_reduction"] = {n: k for n, _, k in shown}
    return Section("token-reduction", "Token reduction: which tokens each method keeps", "\n".join(parts))


def accuracy_throughput_plot(results: dict[str, dict], path, info: dict | None = None) -> bool:
    """Accuracy vs end-to-end throughput of bench rows (see :func:`vitkit.reduce.evaluate.bench_rows`), one
    marker per consumer (``{consumer name: rows}``), saved as a PNG at ``path``; ``info``: the machine
    description (:func:`vitkit.bench.machine.describe` with dtype and batch). Returns False (and logs why)
    when matplotlib is not installed."""
    try:
        import matplotlib
    except ImportError:
        log.warning("matplotlib is not installed: no plot %s (the JSON and the table hold every figure)", path)
        return False
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.5))
    colors = {}
    for k, rows in enumerate(results.values()):
        marker = "os^"[k % 3]
        for n, r in rows.items():
            c = colors.setdefault(n, matplotlib.colormaps["tab20"](len(colors) % 20))  # 11+ rows: 10 colours repeat
            ax.scatter(r["e2e_ips"], 100 * r["accuracy"], color=c, marker=marker,
                       label=n if k == 0 else None)
            if k == 0:
                ax.annotate(n, (r["e2e_ips"], 100 * r["accuracy"]), fontsize=7, xytext=(4, 2),
                            textcoords="offset points")
    where = "1 CPU thread" if info is None or info["gpu"] is None and info["threads"] == 1 else (
        f"{info['gpu'] or str(info['threads']) + ' CPU threads'}, {info['dtype']}, batch {info['batch']}")
    ax.set_xlabel(f"end-to-end images/s (encoder + consumer, {where})")
    ax.set_ylabel("page accuracy (%)")
    ax.set_title("High-resolution FRB: accuracy vs throughput (" + "; ".join(
        f"{'os^'[k % 3]} = {c}" for k, c in enumerate(results)) + ")", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def bench_table(rows: dict) -> str:
    """Markdown table of bench rows (:func:`vitkit.reduce.evaluate.bench_rows`): tokens, speed, peak memory,
    accuracy and Δ against dense ± its paired standard error."""
    lines = ["| method | tokens/page | consumer img/s | × dense | end-to-end img/s | × dense | peak MiB e2e / consumer "
             "| accuracy | Δ pts |", "|---|---|---|---|---|---|---|---|---|"]
    for n, r in rows.items():
        lines.append(f"| {n} | {r['tokens_per_page']:.0f} | {r['consumer_ips']:.1f} | {r['consumer_speedup']:.2f} | "
                     f"{r['e2e_ips']:.1f} | {r['e2e_speedup']:.2f} | {r['peak_mib']:.1f} / {r['consumer_peak_mib']:.1f} "
                     f"| {100 * r['accuracy']:.1f}% | {r['accuracy_delta_pts']:+.1f} ± {r.get('accuracy_delta_se_pts', float('nan')):.1f} |")
    return "\n".join(lines)


def pooled_table(benches: dict[str, dict], pairs: list[tuple[str, str]]) -> str:
    """Several benches of the same test pages (e.g. one per consumer seed; ``benches`` = label → the "rows" of a
    bench JSON) in one table: each row's speed-ups and accuracy per bench, and its Δ against dense as the paired
    difference per page averaged over the benches, ± its standard error over pages; then the same for each
    (A, B) in ``pairs``. Rows missing from any bench are left out; ValueError for a pair naming such a row."""
    from .evaluate import paired_delta, pooled_correct

    runs = list(benches.values())
    names, correct = pooled_correct(benches)  # correct: row → (benches, pages) of 0/1
    for a, b in pairs:
        for k in (a, b):
            if k not in names:
                raise ValueError(f"--pair {a}|{b}: no row {k!r} in every bench; rows: {names}")

    def delta(a: str, b: str) -> tuple[float, float]:
        d, se = paired_delta(correct[a].mean(0), correct[b].mean(0))
        return 100 * d, 100 * se

    def each(key: str, k: str, fmt: str) -> str:
        return " / ".join(format(r[k][key] * (100 if key == "accuracy" else 1), fmt) for r in runs)

    lines = [f"benches: {' / '.join(benches)}; {correct['dense'].shape[1]} test pages", "",
             f"| method | tokens/page | consumer × dense | end-to-end × dense | accuracy | Δ pts ± paired SE (mean of {len(runs)}) |",
             "|---|---|---|---|---|---|"]
    for k in names:
        d, se = delta(k, "dense")
        lines.append(f"| {k} | {runs[0][k]['tokens_per_page']:.0f} | {each('consumer_speedup', k, '.2f')} | "
                     f"{each('e2e_speedup', k, '.2f')} | {each('accuracy', k, '.1f')}% | {d:+.1f} ± {se:.1f} |")
    if pairs:
        lines += ["", "| A − B | Δ pts ± paired SE | per bench | end-to-end × dense, A / B |", "|---|---|---|---|"]
    for a, b in pairs:
        d, se = delta(a, b)
        per = " / ".join(f"{100 * x:+.1f}" for x in (correct[a] - correct[b]).mean(1).tolist())
        lines.append(f"| {a} − {b} | {d:+.1f} ± {se:.1f} | {per} | "
                     + ", ".join(f"{r[a]['e2e_speedup']:.2f} / {r[b]['e2e_speedup']:.2f}" for r in runs) + " |")
    return "\n".join(lines)


def read_bench_rows(files: Sequence[str | Path]) -> dict[str, dict]:
    """file → the "rows" of each bench JSON in ``files`` (two or more, for :func:`pooled_table`); ValueError naming
    a file that is not a readable bench JSON."""
    if len(files) < 2:
        raise ValueError("--stage pool needs two or more --bench-json FILE (benches of the same test pages)")
    benches = {}
    for f in files:
        try:
            benches[str(f)] = json.loads(Path(f).read_text())["rows"]
        except (OSError, ValueError, KeyError) as e:
            raise ValueError(f"--bench-json {f}: not a readable bench JSON with 'rows' ({e})") from e
    return benches


def parse_pairs(pairs: Sequence[str]) -> list[tuple[str, str]]:
    """"A|B" → (A, B) for each of ``pairs`` (rows whose paired difference :func:`pooled_table` shows); ValueError
    naming one without exactly one '|'."""
    out = []
    for pair in pairs:
        if pair.count("|") != 1:
            raise ValueError(f"--pair {pair!r}: write two row names separated by one '|', e.g. 'HiRED 20%|ToMe r=12'")
        a, b = pair.split("|")
        out.append((a, b))
    return out
