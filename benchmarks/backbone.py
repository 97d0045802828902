#!/usr/bin/env python
"""vitkit's ViT is as fast as transformers' with the same weights, and reading attention out costs little.

Two claims, measured in one process, method and baseline interleaved over repeats, medians reported:

1. Throughput. ``vitkit.create_model(MODEL)`` and ``transformers.ViTModel(ViTConfig(...),
   add_pooling_layer=False)`` with the *same* weights: the transformers model is saved with
   ``save_pretrained`` and loaded with ``vitkit.load(dir)`` (vitkit's real conversion path; the result is
   checked to have ``create_model(MODEL)``'s architecture, only the LayerNorm eps comes from the HF
   config). Outputs are compared first (fp32, max |diff| must be < 1e-4). Then vitkit's
   ``forward_features`` (final-normed tokens) and transformers' ``last_hidden_state`` (the same tensor)
   run under ``torch.inference_mode()`` in pairs whose order alternates (A,B / B,A / ...). Reported: images/s
   of each (median) and the vitkit/transformers throughput ratio, both as the median of per-pair
   ratios and as the ratio of the medians. Target: ratio >= 1.0.

2. Attention read-out. A ViT-B-width model (embed_dim 768, 12 heads, ``--readout-depth`` blocks,
   patch 16, batch 1) at 1,024 and 4,096 patch tokens (512x512 and 1024x1024 inputs) runs
   (a) a plain forward, (b) a forward with the CLS-row read-out on all layers, (c) a forward with full
   NxN maps on all layers. Time: interleaved repeats (order rotated each repeat), median, overheads
   (b)/(a) and (c)/(a). Memory: the bytes of the stored read-out tensors (exact; CLS row = B*H*N floats
   per layer, full maps = B*H*N^2), plus the transient peak of one forward of each variant: on CPU the
   rise of the peak RSS (VmHWM, the per-process part of ``ru_maxrss``, reset just before) around the
   forward, each variant in a fresh subprocess; on CUDA ``torch.cuda.max_memory_allocated`` above the
   memory allocated before the forward.
   Targets: CLS row adds <= 5% time and O(N) memory; full maps are the only O(N^2) path.

Example: ``python benchmarks/backbone.py`` (CPU defaults: batch 8, ViT-B/16, fp32);
``python benchmarks/backbone.py --device cuda --dtype bf16 --batch 64 --json results.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import torch

from vitkit.bench import machine
from vitkit.bench.probe import run_probe
from vitkit.bench.tables import fmt_bytes, render_table
from vitkit.bench.timing import interleaved, median, rss_rise, spread, timed

# transformers ViTConfig kwargs for each vitkit registry name (patch 16, 224x224).
HF_CONFIGS: dict[str, dict[str, int]] = {
    "vit_small_patch16_224": dict(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, intermediate_size=1536),
    "vit_base_patch16_224": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
    "vit_large_patch16_224": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096),
}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
VARIANTS = ("plain", "cls", "full")  # (a), (b), (c)
READOUT_PATCH = 16
TOLERANCE = 1e-4


# ---------------------------------------------------------------------------------------------- helpers
def machine_info(device: str) -> dict:
    info = machine.describe(device)
    try:
        import transformers

        info["transformers"] = transformers.__version__
    except ImportError:
        info["transformers"] = None
    import vitkit

    info["vitkit"] = vitkit.__version__
    return info


def print_table(title: str, columns: list[str], rows: list[list[str]]) -> None:
    print(render_table(title, columns, rows))


# ---------------------------------------------------------------------------------------------- part 1
def build_pair(name: str, device: str):
    """(vitkit model, transformers model) with identical weights, both eval, fp32, on ``device``."""
    import transformers

    import vitkit

    if name not in HF_CONFIGS:
        raise SystemExit(f"--model {name!r}: choose one of {sorted(HF_CONFIGS)}")
    torch.manual_seed(0)
    hf = transformers.ViTModel(transformers.ViTConfig(**HF_CONFIGS[name]), add_pooling_layer=False).eval()
    with tempfile.TemporaryDirectory(prefix="vitkit-bench-") as d:
        hf.save_pretrained(d)
        vk = vitkit.load(d).eval()  # HF checkpoint -> vitkit conversion (fused qkv etc.)
    # the converted model must be the registry architecture (only the LayerNorm eps differs: HF 1e-12)
    ref = vitkit.create_model(name).cfg
    for f in ("img_size", "patch_size", "embed_dim", "depth", "num_heads", "mlp_hidden_dim", "qkv_bias",
              "class_token", "act", "final_norm", "pre_norm"):
        a, b = getattr(vk.cfg, f), getattr(ref, f)
        assert a == b, f"converted model differs from create_model({name!r}) in {f}: {a} vs {b}"
    return vk.to(device), hf.to(device)


def bench_throughput(args, device: str, dtype: torch.dtype) -> dict:
    vk, hf = build_pair(args.model, device)
    size = vk.cfg.img_size
    g = torch.Generator().manual_seed(1)
    x = torch.randn(args.batch, 3, *size, generator=g).to(device)

    with torch.inference_mode():
        a = vk.forward_features(x)
        b = hf(pixel_values=x).last_hidden_state
        diff32 = (a.float() - b.float()).abs().max().item()
    print(f"output check (fp32, {tuple(a.shape)}): max |vitkit - transformers| = {diff32:.3e} (must be < {TOLERANCE:g})")
    assert a.shape == b.shape, f"shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}"
    assert diff32 < TOLERANCE, f"outputs differ: max abs diff {diff32:.3e} >= {TOLERANCE:g}"
    del a, b

    diff_dt = None
    if dtype != torch.float32:
        vk, hf, x = vk.to(dtype), hf.to(dtype), x.to(dtype)
        with torch.inference_mode():
            diff_dt = (vk.forward_features(x).float() - hf(pixel_values=x).last_hidden_state.float()).abs().max().item()
        print(f"output check ({args.dtype}): max |diff| = {diff_dt:.3e} (informative)")

    runs = {
        "vitkit": lambda: vk.forward_features(x),
        "transformers": lambda: hf(pixel_values=x).last_hidden_state,
    }
    with torch.inference_mode():  # pairs in alternating order (A,B / B,A / ...)
        t = interleaved(runs, args.repeats, warmup=args.warmup, device=device)
    for i in range(args.repeats):
        print(f"  pair {i + 1}/{args.repeats}: vitkit {t['vitkit'][i]:.3f}s  transformers {t['transformers'][i]:.3f}s")
    ips = {k: [args.batch / s for s in v] for k, v in t.items()}
    pair_ratios = [b / a for a, b in zip(t["vitkit"], t["transformers"], strict=True)]  # vitkit/hf throughput
    res = {
        "model": args.model,
        "batch": args.batch,
        "img_size": list(size),
        "dtype": args.dtype,
        "device": device,
        "repeats": args.repeats,
        "warmup": args.warmup,
        "max_abs_diff_fp32": diff32,
        "max_abs_diff_dtype": diff_dt,
        "seconds": t,
        "images_per_s_median": {k: median(v) for k, v in ips.items()},
        "time_spread": {k: spread(v) for k, v in t.items()},
        "ratio_median_of_pairs": median(pair_ratios),
        "ratio_of_medians": median(ips["vitkit"]) / median(ips["transformers"]),
        "pair_ratios": pair_ratios,
        "ratio_min": min(pair_ratios),
        "ratio_max": max(pair_ratios),
    }
    res["target_met"] = res["ratio_median_of_pairs"] >= 1.0
    return res


# ---------------------------------------------------------------------------------------------- part 2
def readout_model(tokens: int, depth: int, device: str, dtype: torch.dtype):
    import vitkit

    side = math.isqrt(tokens)
    if side * side != tokens:
        raise SystemExit(f"--readout-tokens {tokens}: must be a perfect square (a square patch grid)")
    img = side * READOUT_PATCH
    torch.manual_seed(0)
    model = vitkit.create_model("vit_base_patch16_224", img_size=img, depth=depth).eval().to(device, dtype)
    x = torch.randn(1, 3, img, img, generator=torch.Generator().manual_seed(1)).to(device, dtype)
    return model, x


def run_variant(model, x, variant: str) -> dict:
    """One forward of ``variant``; returns the stored read-out maps (empty for 'plain')."""
    if variant == "plain":
        model.forward_features(x)
        return {}
    with model.attention_readout(None, kind=variant) as maps:
        model.forward_features(x)
    return dict(maps)


def timed_variant(model, x, variant: str, device: str) -> tuple[float, dict]:
    """Seconds of one forward of ``variant`` (synchronised), and its maps (released by the caller, untimed)."""
    box = []
    return timed(lambda: box.append(run_variant(model, x, variant)), device), box[0]


def readout_op_seconds(model, x, device: str, calls: int = 30) -> float:
    """Median seconds of the CLS-row read-out op alone (``cls_attention``) on block 0's real q and k.

    A low-noise lower bound for what the CLS read-out adds per layer: the forward comparison above it
    is limited by the machine's run-to-run noise (a few % on a shared CPU), this op is not.
    """
    from vitkit.models.attention import cls_attention

    with torch.inference_mode():
        h, _ = model.embed(x)
        blk = model.blocks[0]
        a = blk.attn
        h = blk.norm1(h)
        B, N, C = h.shape
        q, k, _ = a.qkv(h).reshape(B, N, 3, a.num_heads, a.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        for _ in range(3):
            cls_attention(q, k, a.scale)
        return median([timed(lambda: cls_attention(q, k, a.scale), device) for _ in range(calls)])


def stored_bytes(maps: dict) -> int:
    return sum(t.numel() * t.element_size() for t in maps.values())


def memprobe(spec: str) -> None:
    """Child process: one forward of one variant; print the rise of the peak RSS over it as JSON."""
    p = json.loads(spec)
    torch.set_num_threads(p["threads"])
    model, x = readout_model(p["tokens"], p["depth"], "cpu", DTYPES[p["dtype"]])
    with torch.inference_mode():
        small = torch.zeros(1, 3, 2 * READOUT_PATCH, 2 * READOUT_PATCH, dtype=x.dtype)
        model.forward_features(small)  # initialise kernels / thread pools outside the measurement
        res = rss_rise(lambda: run_variant(model, x, p["variant"]))  # the maps stay alive for kept_delta
    print(json.dumps({**{k: v for k, v in res.items() if k != "result"}, "stored": stored_bytes(res["result"])}))


def cpu_peak(tokens: int, depth: int, variant: str, dtype: str) -> dict:
    spec = dict(tokens=tokens, depth=depth, variant=variant, dtype=dtype, threads=torch.get_num_threads())
    # glibc: serve every allocation >= 64 KiB by mmap and give it back on free, so that RSS follows the live
    # tensors (no heap caching between variants); other C libraries ignore the variable.
    return run_probe(__file__, "--_memprobe", spec, env={"MALLOC_MMAP_THRESHOLD_": "65536"})


def cuda_peak(model, x, variant: str) -> dict:
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    with torch.inference_mode():
        maps = run_variant(model, x, variant)
    torch.cuda.synchronize()
    res = {"peak_delta": torch.cuda.max_memory_allocated() - base, "kept_delta": torch.cuda.memory_allocated() - base,
           "baseline": base, "stored": stored_bytes(maps)}
    del maps
    return res


def bench_readout(args, device: str, dtype: torch.dtype) -> list[dict]:
    results = []
    for tokens in args.readout_tokens:
        model, x = readout_model(tokens, args.readout_depth, device, dtype)
        H, N, L, B = model.cfg.num_heads, tokens + model.num_prefix_tokens, model.depth, x.shape[0]
        esize = torch.finfo(dtype).bits // 8
        expect = {"plain": 0, "cls": B * H * N * esize * L, "full": B * H * N * N * esize * L}
        print(f"read-out at {tokens} patch tokens (N={N}, input {x.shape[-1]}x{x.shape[-1]}, depth {L}, batch {B})",
              flush=True)

        t = {v: [] for v in VARIANTS}
        stored = {}
        with torch.inference_mode():
            for v in VARIANTS:  # warm-up, and check the stored shapes and bytes
                maps = run_variant(model, x, v)
                stored[v] = stored_bytes(maps)
                if v != "plain":
                    shape = (B, H, N) if v == "cls" else (B, H, N, N)
                    assert len(maps) == L and all(tuple(m.shape) == shape for m in maps.values()), \
                        f"{v}: got shapes {[tuple(m.shape) for m in maps.values()]}, expected {L} x {shape}"
                assert stored[v] == expect[v], f"{v}: stored {stored[v]} bytes, expected {expect[v]}"
                del maps
            for i in range(args.readout_repeats):
                order = VARIANTS[i % 3 :] + VARIANTS[: i % 3]  # rotate who goes first
                for v in order:
                    seconds, maps = timed_variant(model, x, v, device)
                    t[v].append(seconds)
                    del maps  # freed outside the timed region
                print(f"  repeat {i + 1}/{args.readout_repeats}: " +
                      "  ".join(f"{v} {t[v][-1]:.3f}s" for v in VARIANTS), flush=True)

        op_s = readout_op_seconds(model, x, device)
        if args.no_memory:
            peaks = {v: None for v in VARIANTS}
        elif device == "cuda":
            peaks = {v: cuda_peak(model, x, v) for v in VARIANTS}
        else:
            del model, x  # the probes run in fresh processes
            peaks = {v: cpu_peak(tokens, args.readout_depth, v, args.dtype) for v in VARIANTS}
            for v in VARIANTS:
                assert peaks[v]["stored"] == stored[v], f"memory probe {v}: stored bytes differ"

        ratio = {v: [b / a for a, b in zip(t["plain"], t[v], strict=True)] for v in ("cls", "full")}
        res = {
            "patch_tokens": tokens,
            "N": N,
            "img_size": math.isqrt(tokens) * READOUT_PATCH,
            "depth": L,
            "heads": H,
            "batch": B,
            "dtype": args.dtype,
            "repeats": args.readout_repeats,
            "seconds": t,
            "median_s": {v: median(t[v]) for v in VARIANTS},
            "time_spread": {v: spread(t[v]) for v in VARIANTS},
            "overhead_pct_median_of_repeats": {v: 100 * (median(r) - 1) for v, r in ratio.items()},
            "overhead_pct_of_medians": {v: 100 * (median(t[v]) / median(t["plain"]) - 1) for v in ("cls", "full")},
            "cls_op_s_per_layer": op_s,
            "cls_op_pct_of_plain": 100 * op_s * L / median(t["plain"]),
            "stored_bytes": stored,
            "stored_bytes_per_layer": {v: stored[v] // L for v in VARIANTS},
            "peak": peaks,
            "peak_method": "cuda max_memory_allocated" if device == "cuda" else
            "peak-RSS rise over one forward (VmHWM, reset first), fresh subprocess per variant",
        }
        res["cls_time_target_met"] = res["overhead_pct_median_of_repeats"]["cls"] <= 5.0
        results.append(res)
    return results


# ---------------------------------------------------------------------------------------------- report
def report(info: dict, thr: dict | None, ro: list[dict] | None) -> None:
    print_table("Machine", ["", "value"], [[k, str(v)] for k, v in info.items()])
    if thr:
        m = thr["images_per_s_median"]
        rows = [
            ["vitkit", f"{m['vitkit']:.2f}", f"{median(thr['seconds']['vitkit']):.3f}",
             f"{100 * thr['time_spread']['vitkit']:.0f}%"],
            ["transformers", f"{m['transformers']:.2f}", f"{median(thr['seconds']['transformers']):.3f}",
             f"{100 * thr['time_spread']['transformers']:.0f}%"],
        ]
        print_table(
            f"Throughput: {thr['model']}, batch {thr['batch']}, {thr['img_size'][0]}x{thr['img_size'][1]}, "
            f"{thr['dtype']}, {thr['device']}, {thr['repeats']} interleaved pairs (max |diff| fp32 "
            f"{thr['max_abs_diff_fp32']:.1e})",
            ["model", "images/s (median)", "s/batch (median)", "spread"], rows)
        r = thr["ratio_median_of_pairs"]
        verdict = "MET" if thr["target_met"] else f"MISSED by {100 * (1 - r):.1f}%"
        if not thr["target_met"] and r >= 0.99:
            verdict += " (within 1% of parity)"
        print(f"ratio vitkit/transformers: median of pairs {thr['ratio_median_of_pairs']:.3f} "
              f"(range {thr['ratio_min']:.3f}-{thr['ratio_max']:.3f}), ratio of medians {thr['ratio_of_medians']:.3f}"
              f"  -> target >= 1.0 {verdict}")
    if ro:
        rows = []
        for r in ro:
            for v in VARIANTS:
                pk = r["peak"][v]
                over = "" if v == "plain" else f"{r['overhead_pct_median_of_repeats'][v]:+.1f}%"
                rows.append([
                    f"{r['patch_tokens']:,} ({r['img_size']}px)", {"plain": "(a) plain", "cls": "(b) CLS row",
                                                                   "full": "(c) full NxN"}[v],
                    f"{r['median_s'][v]:.3f}", over,
                    fmt_bytes(r["stored_bytes"][v]), fmt_bytes(r["stored_bytes_per_layer"][v]),
                    "-" if pk is None else fmt_bytes(pk["peak_delta"]),
                    "" if pk is None or v == "plain" else fmt_bytes(pk["peak_delta"] - r["peak"]["plain"]["peak_delta"]),
                ])
        r0 = ro[0]
        print_table(
            f"Attention read-out: embed 768, {r0['heads']} heads, depth {r0['depth']}, patch {READOUT_PATCH}, batch "
            f"{r0['batch']}, {r0['dtype']}, {r0['repeats']} interleaved repeats; peak = {r0['peak_method']}",
            ["patch tokens", "variant", "s (median)", "time vs (a)", "stored read-out", "stored/layer", "forward peak",
             "peak vs (a)"], rows)
        for r in ro:
            o = r["overhead_pct_median_of_repeats"]
            per = r["stored_bytes_per_layer"]
            print(f"{r['patch_tokens']:,} tokens: CLS row {o['cls']:+.1f}% time (target <= 5%: "
                  f"{'MET' if r['cls_time_target_met'] else 'MISSED'}; the op alone {1e3 * r['cls_op_s_per_layer']:.2f} "
                  f"ms/layer = {r['cls_op_pct_of_plain']:.2f}% of a plain forward), full maps {o['full']:+.1f}%; "
                  f"stored/layer CLS {per['cls']:,} B = B*H*N*{per['cls'] // (r['batch'] * r['heads'] * r['N'])}, "
                  f"full {per['full']:,} B = B*H*N^2*{per['full'] // (r['batch'] * r['heads'] * r['N'] ** 2)}")
        if len(ro) >= 2:
            a, b = ro[0], ro[-1]
            n = b["N"] / a["N"]
            line = (f"scaling {a['patch_tokens']:,} -> {b['patch_tokens']:,} tokens (N x{n:.2f}, N^2 x{n * n:.1f}): stored "
                    f"CLS x{b['stored_bytes']['cls'] / a['stored_bytes']['cls']:.2f}, "
                    f"full x{b['stored_bytes']['full'] / a['stored_bytes']['full']:.1f}")
            if a["peak"]["plain"] is not None:
                def extra(r: dict, v: str) -> int:
                    return r["peak"][v]["peak_delta"] - r["peak"]["plain"]["peak_delta"]
                line += (f"; peak over (a): CLS {fmt_bytes(extra(a, 'cls'))} -> {fmt_bytes(extra(b, 'cls'))}, "
                         f"full {fmt_bytes(extra(a, 'full'))} -> {fmt_bytes(extra(b, 'full'))}")
            print(line)
    noisy = []
    if thr:
        noisy += [f"throughput/{k}" for k, v in thr["time_spread"].items() if v > 0.15]
    for r in ro or []:
        noisy += [f"read-out {r['patch_tokens']}/{k}" for k, v in r["time_spread"].items() if v > 0.15]
    if noisy:
        print(f"NOTE: run-to-run spread above 15% in {', '.join(noisy)}: the machine was probably busy (load average "
              f"{info.get('load_avg')} -> {info.get('load_avg_end')}, this benchmark's own threads included); "
              f"consider a rerun.")


# ---------------------------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, epilog="Record figures in benchmarks/RESULTS.md (machine, date, command, tables).",
        formatter_class=type("Fmt", (argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter), {}))
    p.add_argument("--model", default="vit_base_patch16_224", choices=sorted(HF_CONFIGS),
                   help="vitkit registry name; transformers gets the matching ViTConfig")
    p.add_argument("--batch", type=int, default=None, help="throughput batch size; unset = 8 on cpu, 64 on cuda")
    p.add_argument("--repeats", type=int, default=10, help="interleaved vitkit/transformers pairs")
    p.add_argument("--warmup", type=int, default=2, help="untimed forwards of each model first")
    p.add_argument("--dtype", default="fp32", choices=sorted(DTYPES),
                   help="compute dtype for both models (outputs are always checked in fp32 first)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                   help="cuda: synchronised timing and torch.cuda.max_memory_allocated peaks")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads; unset = torch's choice")
    p.add_argument("--readout-tokens", type=int, nargs="+", default=[1024, 4096],
                   help="patch-token counts for the read-out benchmark (perfect squares; patch 16)")
    p.add_argument("--readout-depth", type=int, default=4, help="blocks of the read-out model (ViT-B width)")
    p.add_argument("--readout-repeats", type=int, default=12,
                   help="interleaved repeats of the three variants (a multiple of 3 balances the rotated order)")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory probes of the read-out")
    p.add_argument("--skip-throughput", action="store_true", help="only run the read-out benchmark")
    p.add_argument("--skip-readout", action="store_true", help="only run the throughput benchmark")
    p.add_argument("--json", type=Path, default=None, metavar="PATH", help="also write all results (raw timings too) here")
    p.add_argument("--_memprobe", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.batch is None:
        args.batch = 64 if args.device == "cuda" else 8
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args._memprobe is not None:
        memprobe(args._memprobe)
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device available")
    if args.repeats < 1 or args.readout_repeats < 1:
        raise SystemExit("--repeats and --readout-repeats must be >= 1")
    dtype = DTYPES[args.dtype]
    t_start = time.perf_counter()
    info = machine_info(args.device)
    info["command"] = " ".join(["python", "benchmarks/backbone.py", *(argv if argv is not None else sys.argv[1:])])
    print_table("Machine", ["", "value"], [[k, str(v)] for k, v in info.items()])

    thr = None if args.skip_throughput else bench_throughput(args, args.device, dtype)
    ro = None if args.skip_readout else bench_readout(args, args.device, dtype)
    info["load_avg_end"] = machine.load_avg()
    info["wall_s"] = round(time.perf_counter() - t_start, 1)
    print("\n" + "=" * 100)
    report(info, thr, ro)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"machine": info, "throughput": thr, "readout": ro}, indent=2, default=str))
        print(f"results written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
