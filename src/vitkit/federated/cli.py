"""``vitkit federated run``: federated prompt learning (FedMVP, FedCoOp, local-only) on Flower.

Flower is imported only when a run starts, so ``vitkit --help`` works without the ``federated`` extra.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

# typer reads help text as rich markup: the backslash keeps "[federated]" from being taken for a style tag
federated_app = typer.Typer(help="Federated prompt learning on Flower (pip install 'vitkit\\[federated]').",
                            no_args_is_help=True)

MODES = ("processes", "simulation", "inprocess")


@federated_app.command("run")
def run_cmd(
    clients: Annotated[int, typer.Option("--clients", "-n", min=1, help="Number of sites (SuperNodes).")] = 5,
    rounds: Annotated[int, typer.Option("--rounds", "-r", min=1, help="Federated rounds.")] = 10,
    method: Annotated[str, typer.Option(help="fedmvp | fedcoop | local")] = "fedmvp",
    strategy: Annotated[str, typer.Option(help="Flower strategy: fedavg | fedmedian | fedtrimmedavg | krum")] = "fedavg",
    mode: Annotated[str, typer.Option(help="processes (SuperLink + SuperNodes on loopback) | simulation "
                                           "(Flower's engine, needs ray) | inprocess")] = "processes",
    bundle: Annotated[Path, typer.Option(help="Data bundle folder (written first if missing).")] = Path("runs/federated/bundle"),
    clip: Annotated[str | None, typer.Option(
        "--clip", metavar="SOURCE",
        help="The frozen CLIP the bundle is written with: anything vitkit.load accepts (a CLIP folder saved by "
             "vitkit.save, a Hugging Face or open_clip CLIP folder, a weights file, hf-hub:org/name, pretrained:NAME). "
             "It must have a tokenizer. Default: vitkit's small CLIP trained on base-font captions. Used when the "
             "bundle is written; an existing --bundle written with another CLIP is refused (pass a new --bundle).",
    )] = None,
    out_dir: Annotated[Path, typer.Option("--out", help="Where config.json, result.json, logs and pids.json go.")] = Path("runs/federated/run"),
    local_steps: Annotated[int, typer.Option(min=1, help="Local SGD steps per round.")] = 10,
    lr: Annotated[float, typer.Option(help="SGD learning rate.")] = 0.003,
    lora_rank: Annotated[int, typer.Option(min=0, help="FedMVP: LoRA rank on the cross-attention (0 = off).")] = 0,
    seed: Annotated[int, typer.Option(help="Seed.")] = 0,
    dropout: Annotated[float, typer.Option(help="Probability that a client drops out of a round.")] = 0.0,
    kill_client: Annotated[int, typer.Option(help="Partition id of a client that dies mid-round (-1 = none).")] = -1,
    kill_round: Annotated[int, typer.Option(help="Round in which --kill-client dies.")] = 2,
    poison_client: Annotated[int, typer.Option(help="Partition id of a poisoned client (-1 = none).")] = -1,
    poison_scale: Annotated[float, typer.Option(help="Poisoned update = global + scale · update (−4 = sign-flipped).")] = -4.0,
    round_timeout: Annotated[float, typer.Option(help="Seconds the server waits for a round's replies.")] = 120.0,
) -> None:
    """Run one federated experiment; processes mode starts flower-superlink and N flower-supernode processes,
    records their pids and ends exactly those when the run ends or fails."""
    from ..cli.common import USER_ERRORS, fail, out
    from .task import BundleConfig, FedConfig, bundle_config, load_clip, prepare_bundle

    try:
        if mode not in MODES:
            raise ValueError(f"--mode must be one of {MODES}, got {mode!r}")
        # a path is recorded resolved, so the same CLIP given relative or absolute matches an existing bundle
        source = "" if clip is None else str(Path(clip).resolve()) if Path(clip).exists() else clip
        if (bundle / "data.pt").exists():
            made = bundle_config(bundle)
            if made.clients < clients:
                raise ValueError(f"--bundle {bundle} holds data for {made.clients} clients, not --clients {clients}: "
                                 "pass a new --bundle folder (it is written for --clients)")
            made_with = made.clip_source
            if clip is not None and source != made_with:
                raise ValueError(f"--bundle {bundle} was written with the CLIP {made_with or '(vitkit small CLIP)'}, "
                                 f"not --clip {clip}: pass a new --bundle folder for this CLIP")
        else:
            cfg_b = BundleConfig(clients=clients, clip_source=source)
            clip_model = load_clip(clip, crop=cfg_b.clip.crop) if clip is not None else None
            out.print(f"writing the data bundle to {bundle} "
                      + (f"(CLIP: {source})" if clip else "(trains the small CLIP on base-font captions first)"))
            prepare_bundle(cfg_b, bundle, clip=clip_model)
        cfg = FedConfig(bundle=str(bundle.resolve()), out=str(out_dir.resolve()), method=method, strategy=strategy,
                        clients=clients, rounds=rounds, local_steps=local_steps, lr=lr, lora_rank=lora_rank, seed=seed,
                        dropout=dropout, kill_client=kill_client, kill_round=kill_round, poison_client=poison_client,
                        poison_scale=poison_scale, round_timeout=round_timeout)
        with out.status(f"federated {method}/{strategy}: {clients} clients × {rounds} rounds ({mode})"):
            from . import runner

            if mode == "processes":
                result = runner.run_processes(cfg)
            elif mode == "simulation":
                result = runner.run_simulation_process(cfg)
            else:
                result = runner.run_inprocess(cfg)
    except (*USER_ERRORS, TimeoutError) as e:
        fail(e)
    secs = result["round_seconds"]
    out.print(f"local {result['local']:.1%}  base {result['base']:.1%}  new {result['new']:.1%}  "
              f"HM {result['hm']:.1%}   {sum(secs) / max(1, len(secs)):.1f} s/round")
    out.print(f"participation per round: {json.dumps({k: v['ok'] for k, v in result['participation'].items()})}")
    out.print(f"result: {Path(cfg.out) / 'result.json'}")
