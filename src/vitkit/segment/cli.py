"""``vitkit segment``: weakly supervised segmentation on rendered scenes (CAM, MoRe, VPL)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

segment_app = typer.Typer(help="Weakly supervised segmentation on rendered scenes.", no_args_is_help=True)


@segment_app.command("wsss")
def wsss_cmd(
    method: Annotated[str, typer.Option(help="cam (baseline), more or vpl.")] = "cam",
    backbone: Annotated[
        str | None, typer.Option(help="A vitkit.load source to fine-tune (default: vitkit's ViT from scratch).")
    ] = None,
    train: Annotated[int, typer.Option(min=1, help="Training scenes (image labels only).")] = 1200,
    val: Annotated[int, typer.Option(min=1, help="Validation scenes (scored against exact masks).")] = 200,
    seed: Annotated[int, typer.Option(min=0, help="Seed of scenes, initialisation and data order.")] = 0,
    out_dir: Annotated[Path, typer.Option("--out", help="Output folder: metrics.json, report.html, checkpoints.")] = Path(
        "runs/wsss"),
    steps: Annotated[int, typer.Option(min=1, help="Training steps.")] = 1000,
    size: Annotated[int, typer.Option(min=16, help="Scene side in pixels.")] = 96,
    clip: Annotated[str | None, typer.Option(help="VPL: a real CLIP (vitkit.load source) for text prototypes.")] = None,
    resume: Annotated[bool, typer.Option(help="Continue an interrupted run from its checkpoints.")] = False,
) -> None:
    """Train on image labels, pseudo-label the training scenes, train a segmentation head on them;
    write OUT/metrics.json (pseudo_miou, val_miou, per-class IoU, seed) and OUT/report.html."""
    from ..cli import _USER_ERRORS, _fail, out
    from .wsss import WSSSConfig, run_wsss

    try:
        cfg = WSSSConfig(method=method, backbone=backbone, train=train, val=val, seed=seed, out_dir=str(out_dir),
                         steps=steps, size=size, clip_source=clip)
        m = run_wsss(cfg, resume=resume)
    except _USER_ERRORS as e:
        _fail(e)
    out.print(f"{m['method']} on {m['backbone']}, seed {m['seed']}: pseudo-label mIoU {m['pseudo_miou']:.1%} "
              f"(best threshold {m['pseudo_miou_best']:.1%}), val mIoU {m['val_miou']:.1%}, "
              f"{m['timing']['total_s']:.0f} s")
    out.print(f"metrics: {out_dir / 'metrics.json'}   report: {out_dir / 'report.html'}")
