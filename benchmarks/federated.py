"""Claim (SYSTEMS.md §1): FedMVP's harmonic mean of local / base / new accuracy beats FedCoOp's by ≥ 1.5
points; runs survive dropout and a killed client within 1 point of clean; a robust strategy (FedMedian,
Krum) keeps one poisoned client of 5 within 1 point while FedAvg degrades.

Setting: the FRB fonts split base (8) / new (7) (``vitkit/adapt/font_attributes.json``); a small CLIP
trained on attribute captions of the base fonts only; 5 clients, each with 4 base fonts in its own page
style (:mod:`vitkit.federated.task`). All runs go through the same Flower ServerApp/ClientApp and Flower's
strategies; ``--stage compare`` and ``--stage faults`` use vitkit's in-process grid (identical messages and
aggregation, no ray start-up), ``--stage timing`` measures wall time per round in-process, in Flower's
simulation engine (ray) and as SuperLink + SuperNode processes. ``--stage grid`` runs the compare stage's methods
in-process over every rounds × clients cell (``--grid-clients``, ``--grid-rounds``); a cell whose client count
differs from the bundle's gets a sibling bundle ``BUNDLE_cN`` with the same sizes and the same frozen CLIP.

    OMP_NUM_THREADS=1 python benchmarks/federated.py --stage compare --seeds 1,2
    OMP_NUM_THREADS=1 python benchmarks/federated.py --stage grid --seeds 1,2 --grid-clients 2,5 --grid-rounds 3,6
    OMP_NUM_THREADS=1 python benchmarks/federated.py --stage faults --seeds 1
    OMP_NUM_THREADS=1 python benchmarks/federated.py --stage timing

The bundle (CLIP + client data) is written once to ``--bundle`` and reused.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import time
from dataclasses import replace
from pathlib import Path

import torch

from vitkit.bench import machine
from vitkit.federated.runner import run_inprocess, run_processes, run_simulation_process
from vitkit.federated.task import (
    BundleConfig,
    FedConfig,
    build_model,
    bundle_config,
    harmonic_mean,
    load_bundle,
    page_accuracy,
    prepare_bundle,
)

log = logging.getLogger("federated")
KEYS = ("local", "base", "new", "hm")


def zero_shot(bundle: str) -> dict:
    """The frozen CLIP without any prompt: descriptions (FedMVP's classifier, prompts off) and font names."""
    clip, data = load_bundle(bundle)
    out = {}
    mvp = build_model(FedConfig(bundle=bundle, method="fedmvp"), clip, data)
    mvp._prompting = False  # the plain tower: zero-shot with the class descriptions
    coop = build_model(FedConfig(bundle=bundle, method="fedcoop"), clip, data)
    with torch.no_grad():
        coop.ctx.zero_()  # a neutral context ≈ "text written in the {font} font" without training
    for name, model in (("zero-shot descriptions", mvp), ("zero-shot names (ctx = 0)", coop)):
        local = statistics.mean(page_accuracy(model, data, list(c["fonts"])) for c in data["clients"])
        base, new = page_accuracy(model, data, list(data["base"])), page_accuracy(model, data, list(data["new"]))
        out[name] = {"local": local, "base": base, "new": new, "hm": harmonic_mean([local, base, new])}
    return out


def summarise(rows: list[dict]) -> dict:
    """mean and std over seeds of each metric."""
    out = {}
    for k in KEYS:
        vals = [r[k] for r in rows]
        out[k] = statistics.mean(vals)
        out[k + "_std"] = statistics.stdev(vals) if len(vals) > 1 else 0.0
    out["seeds"] = [r["seed"] for r in rows]
    out["round_s"] = statistics.median(s for r in rows for s in r["round_seconds"])
    return out


def print_table(title: str, table: dict) -> None:
    print(f"\n## {title}\n")
    print("| run | local | base | new | HM | s/round |")
    print("|---|---|---|---|---|---|")
    for name, r in table.items():
        cells = [f"{100 * r[k]:.1f}" + (f" ± {100 * r[k + '_std']:.1f}" if r.get(k + "_std") else "") for k in KEYS]
        print(f"| {name} | " + " | ".join(cells) + f" | {r.get('round_s', float('nan')):.1f} |")


def run_arms(base: FedConfig, methods: list[str], alphas: list[float], seeds: list[int], lr: dict, out: Path) -> dict:
    """Each method (FedMVP and local at every α in ``alphas``) over ``seeds`` in-process → run name → summary
    over seeds, with its runs under ``"runs"``."""
    table = {}
    t0 = time.perf_counter()
    for method, alpha in [(m, a) for m in methods for a in (alphas if m != "fedcoop" else [10.0])]:
        name = method if alpha == 10.0 else f"{method} (α={alpha:g})"
        rows = [run_inprocess(replace(base, method=method, seed=s, lr=lr[method], alpha=alpha,
                                      out=str(out / f"{method}_a{alpha:g}_s{s}"))) for s in seeds]
        table[name] = summarise(rows)
        table[name]["runs"] = rows
        log.info("%s done (%.0f s so far)", name, time.perf_counter() - t0)
    return table


def bundle_for(bundle: str, clients: int) -> str:
    """A bundle with ``clients`` clients: ``bundle`` itself when it has that many, else a sibling folder written
    once with the same sizes and the same frozen CLIP (so grid cells differ only in the federation)."""
    cfg = bundle_config(bundle)
    if cfg.clients == clients:
        return bundle
    path = f"{bundle.rstrip('/')}_c{clients}"
    if not (Path(path) / "data.pt").exists():
        clip, _ = load_bundle(bundle)
        prepare_bundle(replace(cfg, clients=clients), path, clip=clip)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stage", choices=("compare", "faults", "timing", "grid"), default="compare")
    ap.add_argument("--bundle", default="runs/federated/bundle")
    ap.add_argument("--out", default="runs/bench/federated")
    ap.add_argument("--seeds", default="1,2", help="federated seeds (prompt init, batches, dropout draws)")
    ap.add_argument("--clients", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--local-steps", type=int, default=8)
    ap.add_argument("--lr-mvp", type=float, default=0.003)
    ap.add_argument("--lr-coop", type=float, default=0.003)
    ap.add_argument("--lora-rank", type=int, default=0)
    ap.add_argument("--alphas", default="10", help="FedMVP consistency weights to run (compare stage; paper: 10)")
    ap.add_argument("--methods", default="fedmvp,fedcoop,local")
    ap.add_argument("--fault-method", default="fedmvp")
    ap.add_argument("--poison-scale", type=float, default=-4.0)
    ap.add_argument("--fault-kinds", default="availability,poison", help="faults stage: which groups of runs")
    ap.add_argument("--fault-strategies", default="fedavg,fedmedian,krum,fedtrimmedavg")
    ap.add_argument("--timing-rounds", type=int, default=3)
    ap.add_argument("--grid-clients", default="2,5", help="grid stage: client counts")
    ap.add_argument("--grid-rounds", default="3,6", help="grid stage: round counts")
    ap.add_argument("--modes", default="inprocess,simulation,processes")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("flwr").setLevel(logging.WARNING)
    torch.set_num_threads(1)
    print("# " + machine.line(machine.describe(), ["cores shared with other jobs"]))
    bundle = args.bundle
    if not (Path(bundle) / "data.pt").exists():
        prepare_bundle(BundleConfig(clients=args.clients), bundle)
    out = Path(args.out)
    seeds = [int(s) for s in args.seeds.split(",")]
    base = FedConfig(bundle=bundle, clients=args.clients, rounds=args.rounds, local_steps=args.local_steps,
                     lora_rank=args.lora_rank)
    lr = {"fedmvp": args.lr_mvp, "local": args.lr_mvp, "fedcoop": args.lr_coop}
    methods, alphas = args.methods.split(","), [float(x) for x in args.alphas.split(",")]
    results: dict = {"args": vars(args)}
    t0 = time.perf_counter()

    if args.stage == "compare":
        table = zero_shot(bundle) | run_arms(base, methods, alphas, seeds, lr, out)
        print_table(f"base-to-new, {args.clients} clients × {args.rounds} rounds × {args.local_steps} steps, "
                    f"seeds {seeds}", table)
        if "fedmvp" in table and "fedcoop" in table:
            d = [a["hm"] - b["hm"] for a, b in zip(table["fedmvp"]["runs"], table["fedcoop"]["runs"], strict=True)]
            print(f"\nFedMVP − FedCoOp HM per seed: {[round(100 * x, 1) for x in d]} points")
            table["hm_gain_per_seed"] = d
        results["compare"] = table

    elif args.stage == "faults":
        m = args.fault_method
        kinds = args.fault_kinds.split(",")
        runs = {"clean (FedAvg)": {}}
        if "availability" in kinds:
            runs.update({"30% dropout": {"dropout": 0.3}, "1 client killed in round 3": {"kill_client": 4, "kill_round": 3},
                         "30% dropout + 1 killed": {"dropout": 0.3, "kill_client": 4, "kill_round": 3}})
        if "poison" in kinds:
            for strat in args.fault_strategies.split(","):
                if strat != "fedavg":
                    runs[f"clean ({strat})"] = {"strategy": strat}
                runs[f"1 of 5 poisoned ×{args.poison_scale:g} ({strat})"] = {"strategy": strat, "poison_client": 0,
                                                                              "poison_scale": args.poison_scale}
        table = {}
        for name, kw in runs.items():
            rows = [run_inprocess(replace(base, method=m, seed=s, lr=lr[m], out=str(out / "faults" / f"{len(table)}_s{s}"),
                                          **kw)) for s in seeds]
            table[name] = summarise(rows)
            table[name]["participation"] = [r["participation"] for r in rows]
            log.info("%s done (%.0f s so far)", name, time.perf_counter() - t0)
        print_table(f"faults, {m}, {args.clients} clients × {args.rounds} rounds, seeds {seeds}", table)
        for name, r in table.items():
            ok = [[v["ok"] for v in p.values()] for p in r["participation"]]
            print(f"- {name}: clients aggregated per round {ok}")
        results["faults"] = table

    elif args.stage == "grid":
        table = {}
        for clients in [int(x) for x in args.grid_clients.split(",")]:
            cell_bundle = bundle_for(bundle, clients)
            for rounds in [int(x) for x in args.grid_rounds.split(",")]:
                cell = replace(base, bundle=cell_bundle, clients=clients, rounds=rounds)
                arms = run_arms(cell, methods, alphas, seeds, lr, out / "grid" / f"c{clients}_r{rounds}")
                table.update({f"{name}, {clients} clients × {rounds} rounds": r for name, r in arms.items()})
                log.info("cell %d clients × %d rounds done (%.0f s so far)", clients, rounds, time.perf_counter() - t0)
        print_table(f"rounds × clients grid, {args.local_steps} local steps per round, seeds {seeds}", table)
        results["grid"] = table

    else:
        table = {}
        cfg = replace(base, method="fedmvp", rounds=args.timing_rounds, seed=seeds[0], lr=lr["fedmvp"])
        runners = {"inprocess": run_inprocess, "simulation": run_simulation_process, "processes": run_processes}
        for mode in args.modes.split(","):
            t = time.perf_counter()
            try:
                r = runners[mode](replace(cfg, out=str(out / f"timing_{mode}")))
            except Exception as e:  # record what failed (ray missing, ports) and go on
                log.warning("%s failed: %s", mode, e)
                table[mode] = {"error": str(e)}
                continue
            table[mode] = {"round_seconds": r["round_seconds"], "median_round_s": statistics.median(r["round_seconds"]),
                           "total_s": time.perf_counter() - t, "hm": r["hm"]}
        print(f"\n## wall time per round (FedMVP, {cfg.clients} clients, {cfg.local_steps} steps, "
              f"{cfg.rounds} rounds)\n\n| mode | median s/round | rounds (s) | total incl. start-up (s) | HM |\n|---|---|---|---|---|")
        for mode, r in table.items():
            if "error" in r:
                print(f"| {mode} | failed: {r['error'][:60]} | | | |")
            else:
                print(f"| {mode} | {r['median_round_s']:.1f} | {', '.join(f'{s:.1f}' for s in r['round_seconds'])} | "
                      f"{r['total_s']:.0f} | {100 * r['hm']:.1f} |")
        results["timing"] = table

    results["wall_s"] = time.perf_counter() - t0
    path = Path(args.json or out / f"{args.stage}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1, default=float))
    print(f"\nwall {results['wall_s']:.0f} s → {path}")


if __name__ == "__main__":
    main()
