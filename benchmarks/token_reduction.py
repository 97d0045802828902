"""Token reduction end to end on high-resolution FRB pages: HiRED, HiRED-early, EViT, ToMe vs dense.

Stages (each cached under --work, which defaults to --out):
  encoder   train a ViT crop classifier (the preset's crops) on ink crops of FRB pages (vitkit.engine)
  consumer  encode the high-resolution pages densely (thumbnail + 2×2 sub-images at the encoder's native size),
            train the token-set consumer on those frozen tokens with random token dropping (keep 10-100%) as
            augmentation; --guided P: a fraction P of the batches keeps attention-guided subsets instead;
            --reduced-from METHOD: half the batches are METHOD's token sets (repeatable: one method per
            batch; saved under --consumer NAME); --consumer-dim/--consumer-depth/--consumer-heads: another size
            than the preset's, e.g. wider and deeper than the encoder so that it dominates the cost, as the
            paper's language model does; --consumer-seed: another training seed
  bench     per method: consumer-side and end-to-end images/s (interleaved repeats, median), peak tensor
            memory, page accuracy on the test pages with consumer NAME; machine line + table + JSON + plot
            into --out (bench_NAME.json, table_NAME.md, token_reduction_NAME.png; with a separate --work one
            token_reduction.png for all consumers of the run). --extra-consumer METHOD (with --stage all): then,
            if the time budget allows, a consumer trained with --reduced-from METHOD is trained and benched too
  plot      the table and the accuracy-vs-throughput plot of --consumer NAME's bench JSON in --out again, from
            the JSON alone (no model runs): bench_NAME.json → table_NAME.md + plot
  pool      several benches of the same pages (e.g. consumer seeds, --bench-json FILE repeated) in one table: each
            row's Δ against dense, and each --pair "A|B", as the paired difference averaged over the benches

The stages' work (pages, training, time plan) is vitkit.reduce.experiment; evaluation is vitkit.reduce.evaluate,
tables and plot vitkit.reduce.report.

Presets (--size): small (default; the CPU figures in RESULTS.md), deep (small with a 12-block encoder and ViT-B's
layer choices, CPU), vitb (ViT-B/16 on 448×448 pages, GPU), tiny (the vitb code path at tiny dims, for tests);
benchmarks/README.md describes each and estimates vitb's cost. --time-budget S measures a few encoder and consumer
training steps first and lowers the step counts (never raises them) so that everything fits in S seconds.
--backbone NAME instead of --size: the cached pretrained backbone (vitkit weights get NAME), frozen, as the encoder,
at the deep preset's settings (backbone_preset), e.g. --backbone dinov2-s14 (ViT-S/14 at 98-px sub-images).

Run (CPU figures): OMP_NUM_THREADS=1 python benchmarks/token_reduction.py --stage all
Run (GPU, one command, ≤ 8 min by --time-budget; needs only torch, numpy, Pillow, safetensors; matplotlib
optional; benchmarks/README.md has the whole device command):
  PYTHONPATH=src python3 benchmarks/token_reduction.py --size vitb --device cuda --dtype bf16 --threads 8
      --workers 14 --time-budget 480 --extra-consumer "HiRED-early 20%" --work /tmp/tr_vitb --out "$OUT"
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch

from vitkit.bench import machine
from vitkit.frb.pages import PageConfig
from vitkit.frb.recipe import DemoConfig, build_model
from vitkit.reduce import ToMeConfig, tome
from vitkit.reduce import evaluate as E
from vitkit.reduce import experiment as X
from vitkit.reduce.consumer import load_consumer
from vitkit.reduce.experiment import GRID, Preset, Run, bench_pages, load_encoder, method_by_name, methods
from vitkit.reduce.report import accuracy_throughput_plot as plot
from vitkit.reduce.report import bench_table, parse_pairs, pooled_table, read_bench_rows
from vitkit.weights import load, save

log = logging.getLogger("token_reduction")

SMALL = Preset(
    "small",
    enc=DemoConfig(crop=96, patch=12, dim=64, depth=4, heads=4, steps=1500, batch_size=64, lr=2e-3, seed=0),
    pages=PageConfig(), bench_pages=PageConfig(size=(192, 192), block_width=(0.45, 0.75)),
    n_train=1500, n_val=150, n_test=600, consumer=dict(dim=64, depth=4, heads=4), consumer_steps=900,
    consumer_batch=16, consumer_lr=1e-3, mem_batch=32, batch=8, repeats=7, early_layer=1, evit_layers=(1, 2),
    tome_candidates={"ToMe r=8": ToMeConfig(r=8), "ToMe r=12": ToMeConfig(r=12),
                     "ToMe r=[24,14,8,4]": ToMeConfig(r=[24, 14, 8, 4]),
                     "ToMe r=[32,12,6,2]": ToMeConfig(r=[32, 12, 6, 2]),
                     "ToMe r=[32,16,8,4]": ToMeConfig(r=[32, 16, 8, 4])},
)
VITB = Preset(
    "vitb",
    enc=DemoConfig(crop=224, patch=16, dim=768, depth=12, heads=12, steps=2000, batch_size=128, lr=3e-4, seed=0),
    pages=PageConfig(size=(672, 672), font_size=(42, 61), margin=37),
    bench_pages=PageConfig(size=(448, 448), font_size=(42, 61), margin=37, block_width=(0.45, 0.75)),
    n_train=3000, n_val=150, n_test=1000, consumer=dict(dim=768, depth=8, heads=12), consumer_steps=1500,
    consumer_batch=32, consumer_lr=3e-4, mem_batch=32, batch=32, repeats=7, early_layer=5, evit_layers=(3, 6, 9),
    tome_candidates={"ToMe r=8": ToMeConfig(r=8), "ToMe r=12": ToMeConfig(r=12), "ToMe r=15": ToMeConfig(r=15),
                     "ToMe r=12 decreasing": ToMeConfig(r=12, schedule="decreasing"),
                     "ToMe r=16 decreasing": ToMeConfig(r=16, schedule="decreasing")},
    enc_train_pages=1500,
)
DEEP = Preset(  # the small geometry with a 12-block encoder: ViT-B's layer choices at a CPU-trainable width
    "deep",
    enc=DemoConfig(crop=96, patch=12, dim=64, depth=12, heads=4, steps=3000, batch_size=64, lr=1e-3, seed=0),
    pages=PageConfig(), bench_pages=PageConfig(size=(192, 192), block_width=(0.45, 0.75)),
    n_train=1500, n_val=150, n_test=1500, consumer=dict(dim=64, depth=4, heads=4), consumer_steps=3000,
    consumer_batch=16, consumer_lr=1e-3, mem_batch=32, batch=8, repeats=7, early_layer=5, evit_layers=(3, 6, 9),
    tome_candidates={"ToMe r=3": ToMeConfig(r=3), "ToMe r=4": ToMeConfig(r=4),
                     "ToMe r=4 decreasing": ToMeConfig(r=4, schedule="decreasing"),
                     "ToMe r=5 decreasing": ToMeConfig(r=5, schedule="decreasing")},
)
TINY = Preset(
    "tiny",
    enc=DemoConfig(crop=32, patch=8, dim=32, depth=12, heads=2, steps=6, batch_size=16, lr=1e-3, seed=0),
    pages=PageConfig(size=(96, 96), font_size=(9, 12), margin=4),
    bench_pages=PageConfig(size=(64, 64), font_size=(9, 12), margin=4, block_width=(0.45, 0.75)),
    n_train=32, n_val=16, n_test=16, consumer=dict(dim=32, depth=2, heads=2), consumer_steps=4,
    consumer_batch=8, consumer_lr=1e-3, mem_batch=4, batch=8, repeats=2, early_layer=5, evit_layers=(3, 6, 9),
    tome_candidates={"ToMe r=1": ToMeConfig(r=1), "ToMe r=1 decreasing": ToMeConfig(r=1, schedule="decreasing")},
    enc_train_pages=24,
)
PRESETS = {p.name: p for p in (SMALL, DEEP, VITB, TINY)}


def backbone_preset(name: str) -> Preset:
    """``--backbone NAME``: the cached pretrained backbone, frozen, as the encoder (FileNotFoundError naming
    ``vitkit weights get NAME`` when it is not cached). Its width, depth, heads and patch are read from the
    checkpoint; sub-images of 7×7 patches (98 px for patch 14: the nearest to the small preset's 8×8 of 12 px), pages
    of 2×2 of them, the deep preset's pages, page counts, consumer and layer choices scaled to the depth, and ToMe
    schedules that fit 49 tokens per sub-image (HiRED-early 20% at block 5 of 12 keeps 49 of 245 tokens)."""
    m = load(f"pretrained:{name}")
    depth = m.depth
    front = [12, 10, 8, 6, 2] + [1] * (depth - 5)  # front-loaded: ≈ HiRED-early 20%'s 49 tokens after block 5
    enc = replace(DemoConfig(patch=m.patch_size, dim=m.embed_dim, depth=depth, heads=m.cfg.num_heads, steps=0, seed=0),
                  backbone=name, crop=7 * m.patch_size)
    return replace(DEEP, name=name, enc=enc, bench_pages=PageConfig(size=(2 * enc.crop,) * 2, block_width=(0.45, 0.75)),
                   early_layer=round(5 * depth / 12), evit_layers=tuple(sorted({depth // 4, depth // 2, 3 * depth // 4})),
                   tome_candidates={"ToMe r=2": ToMeConfig(r=2), "ToMe r=3": ToMeConfig(r=3),
                                    "ToMe r=3 decreasing": ToMeConfig(r=3, schedule="decreasing"),
                                    "ToMe r=4 decreasing": ToMeConfig(r=4, schedule="decreasing"),
                                    f"ToMe r={json.dumps(front, separators=(',', ':'))}": ToMeConfig(r=front)})


def pretrained_encoder(run: Run) -> dict:
    """``--stage encoder`` with ``--backbone``: the pretrained backbone with a fresh (unused) head, saved untrained
    where :func:`load_encoder` reads it; the methods read its attention, the consumer its tokens."""
    enc = run.preset.enc
    save(build_model(enc).eval(), run.work / "encoder" / "model")
    summary = {"config": asdict(enc), "backbone": enc.backbone, "frozen": True, "steps": 0, "val_crop_accuracy": None}
    X.write_summary(run, "encoder", summary, to_out=True)
    log.info("encoder: pretrained %s, frozen (%d blocks, width %d)", enc.backbone, enc.depth, enc.dim)
    return summary


def machine_line(info: dict) -> str:
    return machine.line(info, [info["dtype"], f"batch {info['batch']} pages", f"preset {info['preset']}"])


def machine_info(run: Run, batch: int) -> dict:
    return machine.describe(run.device, dtype="bf16 autocast" if run.dtype == torch.bfloat16 else "fp32", batch=batch,
                            preset=run.preset.name)


def stage_bench(run: Run, repeats: int, batch: int, consumer: str, n_test: int | None = None,
                plot_with: tuple[str, ...] = (), also: tuple[str, ...] = (), tome_choice: str | None = None) -> dict:
    """Bench every method with consumer ``consumer``, plus the rows named in ``also`` (see
    :func:`method_by_name`); the plot also shows the benches of ``plot_with`` (consumer names whose bench
    JSON is in --out). ``tome_choice`` reuses an earlier bench's ToMe schedule instead of probing again,
    so two consumers' tables have the same rows."""
    t0 = time.perf_counter()
    p = run.preset
    enc, cons = load_encoder(run), load_consumer(run.work / consumer / "consumer.pt", run.device)
    x, y = bench_pages(run, "test", n_test or p.n_test)
    info = machine_info(run, batch)
    log.info("machine: %s", machine_line(info))
    # ToMe: measure candidate schedules, keep the one closest to HiRED-early 20% end to end
    cands = dict(p.tome_candidates)
    if tome_choice is None:
        probe, best = E.closest_throughput(enc, cons, ("HiRED-early 20%", methods(p, {})["HiRED-early 20%"]),
                                           {n: (tome, c) for n, c in cands.items()}, x[:batch], GRID,
                                           max(3, repeats // 2), dtype=run.dtype)
        log.info("ToMe probe %s; HiRED-early 20%% %.1f img/s → %s",
                 {n: round(probe[n]["e2e_ips"], 1) for n in cands}, probe["HiRED-early 20%"]["e2e_ips"], best)
    else:
        probe, best = None, tome_choice
    meths = methods(p, {best: cands[best]})
    meths.update({name: method_by_name(run, name, "--also") for name in also if name not in meths})
    tim = E.throughput(enc, cons, meths, x[:batch], GRID, repeats, dtype=run.dtype)
    summary = run.work / consumer / "summary.json"
    result = {"machine": info, "consumer": consumer,
              "consumer_summary": json.loads(summary.read_text()) if summary.exists() else None,
              "rows": {}, "tome_probe": probe, "tome_choice": best,
              "tome_config": asdict(cands[best]), "repeats": repeats, "batch": batch,
              "threads": torch.get_num_threads(), "test_pages": len(x)}
    json_path = run.out / f"bench_{consumer}.json"

    def saved(name: str, rows: dict) -> None:
        log.info("%s: %s", name, rows[name])
        json_path.write_text(json.dumps(result | {"rows": rows}, indent=2))  # partial results survive a time-out

    result["rows"] = E.bench_rows(enc, cons, meths, x, y, GRID, tim, p.mem_batch, run.dtype, saved)
    result["bench_s"] = time.perf_counter() - t0
    json_path.write_text(json.dumps(result, indent=2))
    stage_plot(run, consumer, plot_with)
    return result


def bench_text(result: dict) -> str:
    """The machine line and the rows' table of a bench JSON."""
    return (f"{machine_line(result['machine'])}; {result['test_pages']} test pages; consumer {result['consumer']}\n\n"
            + bench_table(result["rows"]))


def stage_plot(run: Run, consumer: str, plot_with: tuple[str, ...] = ()) -> dict:
    """``--stage plot``: the table and the plot of ``bench_CONSUMER.json`` in --out again (no model runs)."""
    result = json.loads((run.out / f"bench_{consumer}.json").read_text())
    table = bench_text(result)
    print(table, flush=True)
    (run.out / f"table_{consumer}.md").write_text(table + "\n")
    others = {n: json.loads((run.out / f"bench_{n}.json").read_text())["rows"] for n in plot_with
              if (run.out / f"bench_{n}.json").exists()}
    # one plot file in a separate --out (a GPU machine returns few files); one per consumer next to the cache
    path = run.out / ("token_reduction.png" if run.out != run.work else f"token_reduction_{consumer}.png")
    plot({consumer: result["rows"], **others}, path, result["machine"])
    return result


def main(argv: list[str] | None = None) -> dict | None:
    t_start = time.perf_counter()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stage", default="all", choices=["encoder", "consumer", "bench", "plot", "pool", "all"])
    ap.add_argument("--size", default=None, choices=sorted(PRESETS),
                    help="preset: small (default) = the CPU figures in RESULTS.md; deep = small with a 12-block "
                         "encoder (CPU); vitb = ViT-B/16 for a GPU; tiny = smoke test")
    ap.add_argument("--backbone", default=None, metavar="NAME",
                    help="instead of --size: the cached pretrained backbone NAME (vitkit weights get NAME, e.g. "
                         "dinov2-s14), frozen, as the encoder; pass it to every stage of the run")
    ap.add_argument("--out", default="runs/token_reduction", help="results: JSON, table, plot (and the cache "
                    "unless --work is given)")
    ap.add_argument("--work", default=None, help="cache for pages, encoder and consumers (default: --out)")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"],
                    help="bench precision: bf16 = torch.autocast(bfloat16) for accuracy and timing alike "
                         "(training uses the engine's choice: bf16 autocast on CUDA, fp32 on CPU)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--workers", type=int, default=1, help="processes rendering pages (pages are identical for any "
                    "value)")
    ap.add_argument("--repeats", type=int, default=None, help="timed rounds (default: the preset's)")
    ap.add_argument("--batch", type=int, default=None, help="pages per timed batch (default: the preset's)")
    ap.add_argument("--progress", action="store_true")
    ap.add_argument("--guided", type=float, default=0.0,
                    help="consumer: fraction of batches with attention-guided subsets (0 = random dropping only)")
    ap.add_argument("--consumer", default="consumer", help="consumer folder name under --work")
    ap.add_argument("--encoder-steps", type=int, default=None, help="encoder training steps (default: the preset's)")
    ap.add_argument("--consumer-steps", type=int, default=None, help="consumer training steps (default: the preset's)")
    ap.add_argument("--consumer-seed", type=int, default=0, help="consumer training: initialisation and batch order seed")
    for key in ("dim", "depth", "heads"):
        ap.add_argument(f"--consumer-{key}", type=int, default=None,
                        help=f"consumer {key} when training one (default: the preset's; the bench reads it from "
                             "the saved consumer). A consumer wider or deeper than the encoder puts most of the cost "
                             "after the encoder, as a language model does")
    ap.add_argument("--test-pages", type=int, default=None, help="test pages (1 page = 100/N accuracy points)")
    ap.add_argument("--time-budget", type=float, default=None, metavar="S",
                    help="with --stage all: measure a few training steps and lower the step counts so that the "
                         "whole run fits in S seconds from start")
    ap.add_argument("--extra-consumer", default=None, metavar="METHOD",
                    help="with --stage all: after the bench, if the time budget allows, train a second consumer with "
                         "--reduced-from METHOD (named consumer_<method>) and bench it too")
    ap.add_argument("--reduced-from", default=None, metavar="METHOD", action="append",
                    help="consumer: half the batches are the token sets METHOD (a table row, e.g. 'HiRED-early 20%%') "
                         "gives for the training pages, so the consumer sees that method's features; repeat it to mix "
                         "several methods (one per batch: one consumer for a paired comparison)")
    ap.add_argument("--also", default=None, metavar="METHOD", action="append",
                    help="bench: one more row (repeatable), e.g. 'ToMe r=[24,14,8,4]' besides the schedule the probe picks")
    ap.add_argument("--bench-json", default=None, metavar="FILE", action="append",
                    help="--stage pool: a bench JSON (repeatable; the same test pages, e.g. one per consumer seed)")
    ap.add_argument("--pair", default=None, metavar="A|B", action="append",
                    help="--stage pool: also the paired difference of row A − row B (repeatable)")
    args = ap.parse_args(argv)
    if args.stage == "pool":
        return stage_pool(ap, args)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("vitkit.reduce").setLevel(logging.WARNING)  # apply/remove in every timed round
    logging.getLogger(X.__name__).setLevel(logging.INFO)  # but the steps' progress
    if args.device == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda: torch.cuda.is_available() is False (no GPU, or a CPU-only torch build); "
                 "use --device cpu")
    if args.time_budget is not None and (args.stage != "all" or args.time_budget <= 0):
        ap.error("--time-budget needs --stage all and a positive number of seconds")
    torch.set_num_threads(args.threads)
    preset = PRESETS[args.size or "small"]
    if args.backbone is not None:
        if args.size is not None or args.encoder_steps is not None or args.time_budget is not None:
            ap.error("--backbone sets the encoder (pretrained, frozen): leave out --size, --encoder-steps and "
                     "--time-budget")
        from vitkit.weights.pretrained import SOURCES

        if args.backbone not in SOURCES:
            ap.error(f"--backbone must be one of {sorted(SOURCES)}, got {args.backbone!r}")
        try:
            preset = backbone_preset(args.backbone)
        except FileNotFoundError as e:
            ap.error(str(e))
    sizes = {k: getattr(args, f"consumer_{k}") for k in ("dim", "depth", "heads")}
    if any(v is not None for v in sizes.values()):
        if args.stage not in ("consumer", "all"):
            ap.error("--consumer-dim/--consumer-depth/--consumer-heads set the consumer to train: use them with "
                     "--stage consumer or all")
        try:
            preset = X.with_consumer_sizes(preset, **sizes)
        except ValueError as e:
            ap.error(f"--consumer-*: {e}")
    run = Run(preset, work=Path(args.work or args.out), out=Path(args.out), device=torch.device(args.device),
              dtype=torch.bfloat16 if args.dtype == "bf16" else None, progress=args.progress, workers=args.workers)
    run.work.mkdir(parents=True, exist_ok=True)
    run.out.mkdir(parents=True, exist_ok=True)
    repeats, batch = args.repeats or preset.repeats, args.batch or preset.batch
    n_test = args.test_pages or preset.n_test
    enc_steps, con_steps = args.encoder_steps or preset.enc.steps, args.consumer_steps or preset.consumer_steps
    log.info("machine: %s", machine_line(machine_info(run, batch)))
    for option, name in [*(("--reduced-from", r) for r in args.reduced_from or []), *(("--also", r) for r in args.also or []),
                         ("--extra-consumer", args.extra_consumer)]:
        if name is not None:  # a typo fails now, not after the training
            try:
                method_by_name(run, name, option)
            except ValueError as e:
                ap.error(str(e))
    if args.extra_consumer is not None and args.stage != "all":
        ap.error("--extra-consumer needs --stage all")
    summary = run.work / "encoder" / "summary.json"
    if args.stage in ("consumer", "bench") and summary.exists() and json.loads(summary.read_text()).get("backbone") != args.backbone:
        ap.error(f"the encoder in {run.work} is not --backbone {args.backbone}: use another --work or the same option")
    result = None
    try:
        rendered = None
        if args.time_budget is not None:  # render everything (in parallel) before measuring what is left
            t = time.perf_counter()
            rendered = X.encoder_pages(run)
            for split, n in (("train", preset.n_train), ("val", preset.n_val), ("test", n_test)):
                bench_pages(run, split, n)
            run.pool.close()
            log.info("all pages rendered in %.1f s", time.perf_counter() - t)
            plan = X.plan_steps(run, args.time_budget - (time.perf_counter() - t_start), enc_steps, con_steps, n_test,
                                pages=rendered[0])
            enc_steps, con_steps = plan["encoder_steps"], plan["consumer_steps"]
            (run.out / "plan.json").write_text(json.dumps(plan, indent=2))
        if args.stage in ("encoder", "all") and args.backbone is not None:
            pretrained_encoder(run)
        elif args.stage in ("encoder", "all"):
            X.train_encoder(run, enc_steps, rendered)
            rendered = None
        if args.stage in ("consumer", "all"):
            X.train_named_consumer(run, args.guided, args.consumer, con_steps, args.reduced_from, args.consumer_seed)
        if args.stage in ("bench", "all"):
            result = stage_bench(run, repeats, batch, args.consumer, n_test, also=tuple(args.also or ()))
            result["total_s"] = time.perf_counter() - t_start
            (run.out / f"bench_{args.consumer}.json").write_text(json.dumps(result, indent=2))
            log.info("total %.0f s", result["total_s"])
        if args.extra_consumer is not None:
            result["extra"] = extra_consumer(run, args, t_start, result, con_steps, repeats, batch, n_test)
        if args.stage == "plot":
            result = stage_plot(run, args.consumer)
    finally:
        run.pool.close()
    return result


def stage_pool(ap: argparse.ArgumentParser, args) -> dict:
    """``--stage pool``: :func:`vitkit.reduce.report.pooled_table` of the ``--bench-json`` files, printed and written to
    ``--out/table_pooled.md``."""
    try:
        pairs = parse_pairs(args.pair or [])
        text = pooled_table(read_bench_rows(args.bench_json or []), pairs)
    except ValueError as e:
        ap.error(str(e))
    print(text, flush=True)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "table_pooled.md").write_text(text + "\n")
    return {"table": text}


def extra_consumer_name(method_name: str) -> str:
    """Folder/file-safe consumer name for a method row ("HiRED-early 20%" → "consumer_hired_early_20")."""
    return "consumer_" + re.sub(r"[^a-z0-9]+", "_", method_name.lower()).strip("_")


def extra_consumer(run: Run, args, t_start: float, first: dict, con_steps: int, repeats: int, batch: int,
                   n_test: int) -> dict | None:
    """Train and bench a consumer with --reduced-from ``args.extra_consumer`` if the time left (under
    --time-budget) exceeds 1.3 × what the first consumer's training and bench took."""
    name = extra_consumer_name(args.extra_consumer)
    first_summary = first.get("consumer_summary") or {}
    need = 1.3 * (first_summary.get("train_s", 0.0) + first.get("bench_s", 0.0))
    if args.time_budget is not None:
        left = args.time_budget - (time.perf_counter() - t_start)
        if need > left:
            log.warning("--extra-consumer %r skipped: %.0f s left, about %.0f s needed", args.extra_consumer, left, need)
            return None
    X.train_named_consumer(run, 0.0, name, con_steps, [args.extra_consumer])
    res = stage_bench(run, repeats, batch, name, n_test, plot_with=(args.consumer,), also=tuple(args.also or ()),
                      tome_choice=first["tome_choice"])
    res["total_s"] = time.perf_counter() - t_start
    (run.out / f"bench_{name}.json").write_text(json.dumps(res, indent=2))
    log.info("total %.0f s", res["total_s"])
    return {"consumer": name, "reduced_from": args.extra_consumer, "bench_s": res["bench_s"]}


if __name__ == "__main__":
    main()
