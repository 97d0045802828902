"""``vitkit pretrain mae|fsfm``: self-supervised pretraining of a ViT encoder."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

pretrain_app = typer.Typer(help="Self-supervised pretraining (MAE, FSFM with region masking).",
                           no_args_is_help=True)

Data = Annotated[str, typer.Option("--data", help="scenes | frb (whole pages) | frb-crops (page crops, words as regions) | a folder of images.")]
Maps = Annotated[Path | None, typer.Option("--region-maps", help="Folder of PNG id maps (one per image, same stem) "
                                                                 "for --data DIR.")]
Steps = Annotated[int, typer.Option("--steps", min=1, help="Optimiser steps.")]
Out = Annotated[Path, typer.Option("--out", help="Output folder: train/ (checkpoints, metrics.jsonl), encoder/.")]
N = Annotated[int, typer.Option("--n", min=1, help="Scenes / pages to generate (a folder uses all its images).")]
Size = Annotated[int, typer.Option(min=8, help="Image side in pixels (a multiple of --patch).")]
Patch = Annotated[int, typer.Option(min=1, help="Patch size.")]
Dim = Annotated[int, typer.Option(min=8, help="Encoder width.")]
Depth = Annotated[int, typer.Option(min=1, help="Encoder blocks.")]
Batch = Annotated[int, typer.Option(min=1, help="Images per step.")]
Seed = Annotated[int, typer.Option(min=0, help="Seed of data, initialisation and order.")]
Resume = Annotated[bool, typer.Option(help="Continue an interrupted run from OUT/train/checkpoint.pt.")]


def _run(method: str, data: str, region_maps: Path | None, steps: int, out_dir: Path, n: int, size: int,
         patch: int, dim: int, depth: int, batch: int, seed: int, resume: bool) -> None:
    from ..cli.common import USER_ERRORS, fail, out
    from .run import PretrainConfig, run_pretrain

    try:
        cfg = PretrainConfig(method=method, data=data, region_maps=str(region_maps) if region_maps else None,
                             n_images=n, size=size, patch=patch, embed_dim=dim, depth=depth,
                             num_heads=max(1, dim // 16), steps=steps, batch_size=batch, seed=seed,
                             out_dir=str(out_dir))
        s = run_pretrain(cfg, resume=resume)
    except USER_ERRORS as e:
        fail(e)
    out.print(f"{method}: {s['steps']} steps, final loss {s['final_loss']:.4f}, {s['time_s']:.0f} s")
    out.print(f"encoder (vitkit.load reads it as a plain ViT): {s['encoder']}")


@pretrain_app.command("mae")
def mae_cmd(data: Data = "scenes", region_maps: Maps = None, steps: Steps = 1000, out_dir: Out = Path("runs/mae"),
            n: N = 2000, size: Size = 48, patch: Patch = 8, dim: Dim = 64, depth: Depth = 4, batch: Batch = 32,
            seed: Seed = 0, resume: Resume = False) -> None:
    """Masked autoencoder: 75% random masking, pixel decoder, loss on masked patches (normalised targets)."""
    _run("mae", data, region_maps, steps, out_dir, n, size, patch, dim, depth, batch, seed, resume)


@pretrain_app.command("fsfm")
def fsfm_cmd(data: Data = "scenes", region_maps: Maps = None, steps: Steps = 1000, out_dir: Out = Path("runs/fsfm"),
             n: N = 2000, size: Size = 48, patch: Patch = 8, dim: Dim = 64, depth: Depth = 4, batch: Batch = 32,
             seed: Seed = 0, resume: Resume = False) -> None:
    """FSFM: CRFR-P region masking, pixel + representation decoders, EMA target on the full image."""
    _run("fsfm", data, region_maps, steps, out_dir, n, size, patch, dim, depth, batch, seed, resume)
