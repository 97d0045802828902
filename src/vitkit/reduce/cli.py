"""``vitkit reduce``: apply HiRED, EViT or ToMe to a model and report tokens, speed (and accuracy with
a trained consumer) against dense on high-resolution FRB pages."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

METHODS = ("hired", "evit", "tome")


def parse_grid(text: str) -> tuple[int, int]:
    """``"2x3"`` → (2, 3)."""
    parts = text.lower().replace("×", "x").split("x")
    try:
        rows, cols = (int(p) for p in parts)
    except ValueError:
        raise ValueError(f"--grid {text!r} must look like ROWSxCOLS, e.g. 2x2") from None
    return rows, cols


def parse_ints(text: str, name: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"{name} {text!r} must be comma-separated ints, e.g. 1,2") from None


def build_method(method: str, *, grid, rate, alpha, select_layer, early, keep, layers, fuse, r):
    """(module, config) for a method name and CLI options."""
    from . import EViTConfig, HiREDConfig, ToMeConfig, evit, hired, tome

    if method == "hired":
        return hired, HiREDConfig(grid=grid, rate=rate, alpha=alpha, select_layer=select_layer, early=early)
    if method == "evit":
        return evit, EViTConfig(layers=tuple(parse_ints(layers, "--layers")), keep_rate=keep, fuse=fuse)
    if method == "tome":
        rs = parse_ints(r, "--r")
        return tome, ToMeConfig(r=rs[0] if len(rs) == 1 else rs)
    raise ValueError(f"METHOD must be one of {METHODS}, got {method!r}")


def reduce_cmd(
    method: Annotated[str, typer.Argument(help="hired, evit or tome.")],
    source: Annotated[str, typer.Argument(help="Encoder: checkpoint dir/file, hf-hub:org/name, or a registry name.")],
    consumer: Annotated[Path | None, typer.Option(help="A consumer.pt (benchmarks/token_reduction.py) for accuracy.")] = None,
    pages: Annotated[int, typer.Option(min=1, help="High-resolution FRB test pages to evaluate on.")] = 64,
    grid: Annotated[str, typer.Option(help="Sub-image grid ROWSxCOLS; pages are grid × the model's input size.")] = "2x2",
    rate: Annotated[float, typer.Option(help="HiRED: fraction of all tokens kept, in (0, 1].")] = 0.2,
    alpha: Annotated[float, typer.Option(help="HiRED: the thumbnail's share of the budget.")] = 0.5,
    select_layer: Annotated[int | None, typer.Option(help="HiRED: phase-2 block (default second-to-last).")] = None,
    early: Annotated[bool, typer.Option(help="HiRED-early: drop inside the encoder at --select-layer.")] = False,
    keep: Annotated[float, typer.Option(help="EViT: keep rate per dropping block, in (0, 1].")] = 0.7,
    layers: Annotated[str, typer.Option(help="EViT: blocks that drop tokens, e.g. 1,2.")] = "1",
    fuse: Annotated[bool, typer.Option(help="EViT: fuse the dropped tokens into one.")] = True,
    r: Annotated[str, typer.Option(help="ToMe: tokens merged per block (int, or one per block: 8,8,4,0).")] = "4",
    repeats: Annotated[int, typer.Option(min=1, help="Timing rounds (median).")] = 5,
    batch: Annotated[int, typer.Option(min=1, help="Pages per timed batch.")] = 8,
    threads: Annotated[int, typer.Option(min=1, help="torch CPU threads.")] = 1,
) -> None:
    """Apply a token-reduction METHOD to SOURCE; compare tokens, images/s and accuracy with dense."""
    import torch
    from rich.table import Table

    from ..cli.common import USER_ERRORS, fail, load_source, out
    from ..frb.ink import to_model_input
    from ..frb.pages import PageConfig, page_split, page_tensors
    from . import evaluate as E
    from .consumer import ConsumerConfig, TokenSetConsumer
    from .wiring import vision_tower

    torch.set_num_threads(threads)
    try:
        g = parse_grid(grid)
        m = build_method(method, grid=g, rate=rate, alpha=alpha, select_layer=select_layer, early=early, keep=keep,
                         layers=layers, fuse=fuse, r=r)
        model = load_source(source).eval()
        vis = vision_tower(model)
        h, w = vis.cfg.img_size
        cons = None
        if consumer is not None:
            if not consumer.is_file():
                raise FileNotFoundError(f"consumer file {consumer} does not exist")
            d = torch.load(consumer, weights_only=True)
            cons = TokenSetConsumer(ConsumerConfig(**d["cfg"]))
            cons.load_state_dict(d["state"])
            cons.eval()
            if cons.cfg.in_dim != vis.embed_dim or cons.cfg.num_partitions != 1 + g[0] * g[1]:
                raise ValueError(f"consumer {consumer} expects width {cons.cfg.in_dim} and {cons.cfg.num_partitions} "
                                 f"partitions; the model has width {vis.embed_dim} and --grid {grid} gives "
                                 f"{1 + g[0] * g[1]}")
        size = (h * g[0], w * g[1])
        pcfg = PageConfig(size=size, margin=min(16, min(size) // 8))
        grey, labels = page_tensors(page_split(pages, 0, split="test", cfg=pcfg))
        x = to_model_input(grey)
        methods = {"dense": None, method: m}
        with torch.no_grad():
            tim = E.throughput(model, cons, methods, x[:batch], g, repeats)
            acc = {k: E.accuracy(model, cons, v, x, labels, g)[0] for k, v in methods.items()} if cons else {}
    except USER_ERRORS as e:
        fail(e)
    table = Table("method", "tokens/page", "images/s" + (" (encoder + consumer)" if cons else " (encoder)"),
                  "× dense", *(["accuracy"] if cons else []), title=f"vitkit reduce {method} ({pages} pages, {threads} thread(s))")
    for k in methods:
        row = [k, f"{tim[k]['tokens']:.0f}", f"{tim[k]['e2e_ips']:.1f}", f"{tim[k]['e2e_ips'] / tim['dense']['e2e_ips']:.2f}"]
        if cons:
            row.append(f"{acc[k]:.1%}")
        table.add_row(*row)
    out.print(table)
    if cons is None:
        out.print("accuracy needs --consumer (train one with benchmarks/token_reduction.py)")
