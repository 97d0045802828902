"""``vitkit segment``: weakly supervised segmentation (CAM, MoRe, VPL) and the promptable evaluation on rendered scenes."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

segment_app = typer.Typer(help="Segmentation on rendered scenes: weakly supervised (wsss), promptable (evaluate).",
                          no_args_is_help=True)


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
    more_recipe: Annotated[str, typer.Option(
        help="MoRe: default, or code (the public code's recipe: auxiliary-CAM masks early, raw-feature InfoNCE, "
             "ToCo patch-token contrast; no better than the default at this scale).")] = "default",
    resume: Annotated[bool, typer.Option(help="Continue an interrupted run from its checkpoints.")] = False,
) -> None:
    """Train on image labels, pseudo-label the training scenes, train a segmentation head on them;
    write OUT/metrics.json (pseudo_miou, val_miou, per-class IoU, seed) and OUT/report.html."""
    from ..cli.common import USER_ERRORS, fail, out
    from .more import MoReConfig
    from .wsss import WSSSConfig, run_wsss

    try:
        cfg = WSSSConfig(method=method, backbone=backbone, train=train, val=val, seed=seed, out_dir=str(out_dir),
                         steps=steps, size=size, clip_source=clip, more=MoReConfig.from_recipe(more_recipe))
        m = run_wsss(cfg, resume=resume)
    except USER_ERRORS as e:
        fail(e)
    out.print(f"{m['method']} on {m['backbone']}, seed {m['seed']}: pseudo-label mIoU {m['pseudo_miou']:.1%} "
              f"(best threshold {m['pseudo_miou_best']:.1%}), val mIoU {m['val_miou']:.1%}, "
              f"{m['timing']['total_s']:.0f} s")
    out.print(f"metrics: {out_dir / 'metrics.json'}   report: {out_dir / 'report.html'}")


@segment_app.command("evaluate")
def evaluate_cmd(
    segmenter: Annotated[str, typer.Option(
        help="builtin (vitkit's small promptable segmenter, trained on scenes), sam:CKPT or sam2:CKPT.")] = "builtin",
    concepts: Annotated[str, typer.Option(help="Comma list: salient,camouflaged,defects,lesions.")] = (
        "salient,camouflaged,defects,lesions"),
    prompts: Annotated[str, typer.Option(
        help="Comma list: box,point,auto,context (context = 1, 5 and 20 annotated prompt images, no prompt on the "
             "target).")] = "box,point,auto,context",
    perturb: Annotated[bool, typer.Option(help="Also evaluate seeded perturbed boxes and clicks.")] = True,
    seed: Annotated[int, typer.Option(min=0, help="Seed of scenes, perturbations and the builtin's training.")] = 0,
    images: Annotated[int, typer.Option(min=1, help="Images per concept.")] = 40,
    clips: Annotated[int, typer.Option(min=0, help="Video clips per concept (0 = no video protocol).")] = 8,
    steps: Annotated[int | None, typer.Option(
        min=1, help="builtin: training steps (default: PromptTrainConfig's, 5000).")] = None,
    out_dir: Annotated[Path, typer.Option("--out", help="Output folder: results.json, report.html, builtin.pt.")] = Path(
        "runs/promptable"),
    workers: Annotated[int | None, typer.Option(
        min=1, help="Processes for the evaluation after training (default: 2, or 1 on a one-core machine), each "
                    "with its own copy of the segmenter; the scores do not depend on it.")] = None,
) -> None:
    """Evaluate a promptable segmenter on context-dependent concepts with box, click and automatic
    prompts, clean and perturbed, images and video; write OUT/results.json and OUT/report.html.
    A trained builtin segmenter is kept in OUT/builtin.pt and reused by the next run."""
    from ..cli.common import USER_ERRORS, fail, out
    from .promptable import PromptableConfig, run_promptable
    from .promptable_report import image_table
    from .promptable_train import PromptTrainConfig

    try:
        cfg = PromptableConfig(segmenter=segmenter, concepts=tuple(c.strip() for c in concepts.split(",") if c.strip()),
                               prompts=tuple(p.strip() for p in prompts.split(",") if p.strip()), perturb=perturb,
                               seed=seed, images=images, clips=clips, train=PromptTrainConfig(**({} if steps is None else {"steps": steps})),
                               out_dir=str(out_dir), **({} if workers is None else {"workers": workers}))
        r = run_promptable(cfg)
    except USER_ERRORS as e:
        fail(e)
    head, rows = image_table(r)
    out.print("  ".join(head))
    for row in rows:
        out.print("  ".join(row))
    out.print(f"{r['timing']['total_s']:.0f} s   results: {out_dir / 'results.json'}   report: {out_dir / 'report.html'}")
