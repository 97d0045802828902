"""The ``vitkit`` application: the core commands, and the method commands registered from their packages."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from ..adapt.cli import adapt_cmd
from ..explain.cli import explain_cmd
from ..federated.cli import federated_app
from ..ood.cli import ood_app
from ..pretrain.cli import pretrain_app
from ..quant.cli import quantize_cmd
from ..reduce.cli import reduce_cmd
from ..segment.cli import segment_app
from ..weights.cli import weights_app
from .common import USER_ERRORS, err, fail, load_source, out

app = typer.Typer(
    help="vitkit: one Vision Transformer backbone; adapt, reduce, quantize, detect OOD, explain.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _main(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log progress (INFO level).")] = False):
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


@app.command("models")
def models_cmd() -> None:
    """List the built-in architecture names (usable with `create_model` and as SOURCE)."""
    from ..models.clip import CLIPConfig
    from ..models.hybrid import HybridConfig
    from ..models.registry import list_models, model_config
    from ..models.visiongru import VisionGRUConfig

    table = Table("name", "kind", "dim", "depth", "heads", "patch", "input")
    for name in list_models():
        cfg = model_config(name)
        if isinstance(cfg, VisionGRUConfig):  # hierarchical: dims and depths per stage, no heads, stride-4 stem
            table.add_row(name, cfg.family, f"{cfg.dims[0]}→{cfg.dims[-1]}", "/".join(map(str, cfg.depths)), "-",
                          "4", "any")
            continue
        if isinstance(cfg, HybridConfig):  # a CNN trunk: its "patch" is the trunk's stride
            table.add_row(name, cfg.family, str(cfg.dim), str(cfg.depth), str(cfg.num_heads), f"stride {cfg.stride}",
                          f"{cfg.img_size[0]}×{cfg.img_size[1]}")
            continue
        v = cfg.vision if isinstance(cfg, CLIPConfig) else cfg
        kind = "clip" if isinstance(cfg, CLIPConfig) else v.family
        table.add_row(name, kind, str(v.embed_dim), str(v.depth), str(v.num_heads), str(v.patch_size),
                      f"{v.img_size[0]}×{v.img_size[1]}")
    out.print(table)


def _image_flops(model, size: tuple[int, int]) -> float:
    import torch

    from ..models.flops import count_flops

    visual = getattr(model, "visual", model)
    return float(count_flops(visual, torch.zeros(1, visual.cfg.in_chans, *size)))


@app.command("info")
def info_cmd(
    source: Annotated[str, typer.Argument(help="Checkpoint dir/file, hf-hub:org/name, or a registry name.")],
) -> None:
    """Show a model's configuration, parameter count and GFLOPs at its input size."""
    try:
        model = load_source(source)
    except USER_ERRORS as e:
        fail(e)
    from ..models.clip import CLIP
    from ..models.hybrid import HybridCNNTransformer
    from ..models.visiongru import VisionGRU

    if isinstance(model, VisionGRU):
        out.print(_gru_info_table(source, model))
        return
    visual = model.visual if isinstance(model, CLIP) else model
    cfg = visual.cfg
    if isinstance(model, HybridCNNTransformer):  # a CNN trunk + windowed attention: no patches or prefix tokens
        table = Table(title=f"{source}", show_header=False)
        table.add_row("kind", "hybrid CNN-Transformer (evidence maps)")
        table.add_row("parameters", f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f} M")
        table.add_row("input", f"{cfg.img_size[0]}×{cfg.img_size[1]}, stride {cfg.stride}")
        table.add_row("trunk", f"widths {list(cfg.trunk_widths)}, blocks {list(cfg.trunk_depths)}")
        table.add_row("width / depth / heads / window", f"{cfg.dim} / {cfg.depth} / {cfg.num_heads} / {cfg.window}")
        table.add_row("head", f"{cfg.num_classes} evidence maps" if cfg.num_classes else "none (features)")
        out.print(table)
        return
    n_params = sum(p.numel() for p in model.parameters())
    table = Table(title=f"{source}", show_header=False)
    table.add_row("kind", "CLIP (image + text)" if isinstance(model, CLIP) else f"vision ({cfg.family})")
    table.add_row("parameters", f"{n_params / 1e6:.2f} M")
    if isinstance(model, CLIP):
        table.add_row("  image tower", f"{sum(p.numel() for p in model.visual.parameters()) / 1e6:.2f} M")
        table.add_row("  text tower", f"{sum(p.numel() for p in model.text.parameters()) / 1e6:.2f} M")
    table.add_row("input", f"{cfg.img_size[0]}×{cfg.img_size[1]}, patch {cfg.patch_size}")
    table.add_row("tokens", f"{visual.num_prefix_tokens} prefix + {visual.grid_size[0] * visual.grid_size[1]} patches")
    table.add_row("width / depth / heads", f"{cfg.embed_dim} / {cfg.depth} / {cfg.num_heads}")
    table.add_row("GFLOPs (image, 2·MAC)", f"{_image_flops(model, cfg.img_size) / 1e9:.3f}")
    table.add_row("head", f"{cfg.num_classes} classes" if cfg.num_classes else "none (features)")
    _provenance_rows(table, model)
    out.print(table)


def _provenance_rows(table: Table, model) -> None:
    """Rows every model family shares: the methods applied, the preprocessing, the page pipeline."""
    from ..models.applied import describe

    for i, line in enumerate(describe(model)):
        table.add_row("applied" if i == 0 else "", line)
    if model.preprocess is not None:
        pp = model.preprocess
        table.add_row("preprocess", f"{pp.resize_mode} {pp.interpolation}, crop {pp.crop_pct:g}, "
                                    f"mean {tuple(round(m, 3) for m in pp.mean)}, std {tuple(round(s, 3) for s in pp.std)}")
    policy = getattr(model, "pipeline", None)
    if policy is not None:
        lo, hi = policy.text_height or (None, None)
        scale = "own scale" if lo is None else f"text core {lo:g} px" if lo == hi else f"text core {lo:g}–{hi:g} px"
        table.add_row("page pipeline", f"{policy.kind}: {policy.tile}-px tiles every {policy.stride} px, {scale}"
                                       f"{policy.readings_note()}")


def _gru_info_table(source: str, model) -> Table:
    cfg = model.cfg
    gh, gw = model.feature_grid(*cfg.img_size)
    table = Table(title=f"{source}", show_header=False)
    table.add_row("kind", f"vision ({cfg.family}, attention-free)")
    table.add_row("parameters", f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f} M")
    table.add_row("input", f"{cfg.img_size[0]}×{cfg.img_size[1]} (any size works), stem stride 4")
    table.add_row("dims / depths", f"{'/'.join(map(str, cfg.dims))} / {'/'.join(map(str, cfg.depths))}")
    table.add_row("tokens", f"{-(-cfg.img_size[0] // 4) * -(-cfg.img_size[1] // 4)} in stage 1, {gh * gw} in the last")
    table.add_row("GFLOPs (image, 2·MAC)", f"{_image_flops(model, cfg.img_size) / 1e9:.3f}")
    table.add_row("head", f"{cfg.num_classes} classes" if cfg.num_classes else "none (features)")
    _provenance_rows(table, model)
    return table


@app.command("predict")
def predict_cmd(
    source: Annotated[str, typer.Argument(help="Checkpoint dir/file, hf-hub:org/name, or a registry name.")],
    images: Annotated[list[Path], typer.Argument(help="Image files.")],
    topk: Annotated[int, typer.Option("--topk", "-k", min=1, help="How many classes to show per image.")] = 5,
    labels: Annotated[
        str | None, typer.Option(help="CLIP zero-shot: comma-separated class names (required for CLIP).")
    ] = None,
    template: Annotated[str, typer.Option(help="CLIP zero-shot prompt template with {}.")] = "a photo of a {}.",
) -> None:
    """Classify images: top-k classes with probabilities (CLIP: zero-shot over --labels).

    A model saved with a page pipeline (the font classifier of `vitkit demo`) reads each image as a
    whole page of any size, exactly as the demo scored the benchmark; other models use their
    preprocessing (resize, crop, normalise).
    """
    import torch

    from ..data import load_image, preprocess_batch
    from ..models.clip import CLIP, ZeroShotClassifier
    from ..predict import classify_images

    try:
        model = load_source(source)
        pictures = [load_image(p) for p in images]
        if isinstance(model, CLIP):
            if not labels:
                raise ValueError("a CLIP model needs --labels 'cat,dog,…' for zero-shot prediction")
            names = [s.strip() for s in labels.split(",") if s.strip()]
            with torch.inference_mode():
                probs = ZeroShotClassifier(model, names, [template])(
                    preprocess_batch(pictures, model.preprocess)).softmax(-1)
        else:
            if not model.cfg.num_classes:
                raise ValueError(f"{source} has no classification head (features only): nothing to predict")
            names = model.cfg.labels or [f"class {i}" for i in range(model.cfg.num_classes)]
            probs = classify_images(model, pictures)
    except USER_ERRORS as e:
        fail(e)
    k = min(topk, probs.shape[1])
    values, indices = probs.topk(k, dim=-1)
    for path, vals, idx in zip(images, values, indices, strict=True):
        table = Table(str(path), "p", title=None)
        for v, i in zip(vals.tolist(), idx.tolist(), strict=True):
            table.add_row(names[i], f"{v:.3f}")
        out.print(table)


@app.command("demo")
def demo_cmd(
    out_dir: Annotated[Path, typer.Option("--out", help="Where to write the demo's files.")] = Path("runs/demo"),
    quick: Annotated[bool, typer.Option(help="A ≤ 2-minute smoke run (figures not meaningful).")] = False,
    resume: Annotated[bool, typer.Option(help="Continue an interrupted run from its last checkpoint.")] = False,
    steps: Annotated[int | None, typer.Option(
        min=1, help="Training steps (default: the recipe's, vitkit.frb.recipe.DemoConfig.steps; --quick 40).")] = None,
    backbone: Annotated[str | None, typer.Option(
        help="Fine-tune a pretrained backbone instead of training the small ViT from scratch, e.g. dinov2-s14; "
             "fetch it once with `vitkit weights get NAME`. Uses DemoConfig.for_backbone: 98-px crops, lr 1e-4, "
             "batch 32, ≤ 300 steps, no robustness pass or method sections (≈ 25 CPU-minutes for dinov2-s14 "
             "at one thread).")] = None,
) -> None:
    """The main job: generate the Font Recognition Benchmark, train a small ViT from scratch, evaluate
    easy and hard with every protocol that applies, write OUT/report.html and OUT/metrics.json."""
    from dataclasses import replace

    from ..demo import run_demo
    from ..frb.recipe import DemoConfig

    kw = {"out_dir": str(out_dir)} | ({"steps": steps} if steps else {})
    cfg = DemoConfig.quick(**kw) if quick else DemoConfig(**kw)
    if backbone is not None:
        cfg = cfg.for_backbone(backbone)
        cfg = replace(cfg, steps=steps) if steps else cfg  # an explicit --steps is kept over the backbone's cap
    try:
        metrics = run_demo(cfg, resume=resume)
    except USER_ERRORS as e:
        fail(e)
    table = Table("FRB split", "classifier", "multiple choice (4)", "few-shot", title="vitkit demo")
    for split in ("easy", "hard"):
        m = metrics["frb"][split]
        table.add_row(split, f"{m['accuracy']:.1%}", f"{m['multiple_choice_accuracy']:.1%}",
                      f"{m['few_shot_accuracy']:.1%}")
    out.print(table)
    out.print(f"report: {out_dir / 'report.html'}   metrics: {out_dir / 'metrics.json'}   "
              f"time: {metrics['timing']['total_s']:.0f} s")


data_app = typer.Typer(help="Generate the embedded benchmark data.", no_args_is_help=True)
app.add_typer(data_app, name="data")


@data_app.command("frb")
def data_frb_cmd(
    out_dir: Annotated[Path, typer.Option("--out", help="Output folder (images + JSONL manifests).")],
    n_train: Annotated[int, typer.Option(min=0, help="Training images (text disjoint from easy/hard).")] = 6000,
    n_val: Annotated[int, typer.Option(min=0, help="Validation images.")] = 750,
    seed: Annotated[int, typer.Option(help="Seed of the train/val generators.")] = 0,
    layout: Annotated[str, typer.Option(help="Layout of easy/hard: 'paper' (the paper's generator, JPEG files) "
                                             "or 'canvas440' (vitkit's first 440×240 reading, PNG).")] = "paper",
) -> None:
    """Write the Font Recognition Benchmark: easy (150), hard (225), train and val splits."""
    from .. import frb

    try:
        manifests = frb.generate(out_dir, n_train=n_train, n_val=n_val, seed=seed, layout=layout)
    except USER_ERRORS as e:
        fail(e)
    for split, path in manifests.items():
        out.print(f"{split:>5}: {path}")



@data_app.command("scenes")
def data_scenes_cmd(
    out_dir: Annotated[Path, typer.Option("--out", help="Output folder (PNG images and maps + scenes.jsonl).")],
    n: Annotated[int, typer.Option("--n", min=1, help="How many scenes.")] = 1000,
    seed: Annotated[int, typer.Option(min=0, help="Seed; scene i of seed s depends only on (s, i).")] = 0,
    size: Annotated[int, typer.Option(min=16, help="Image side in pixels.")] = 224,
    style: Annotated[str, typer.Option(help="Domain style: textured | flat | outline.")] = "textured",
    weather: Annotated[str, typer.Option(help="clear | fog | night | rain (computed from depth).")] = "clear",
    fog_beta: Annotated[float, typer.Option(min=0.0, help="Fog density β (1/m), t = exp(−β·depth).")] = 0.05,
    target: Annotated[
        str | None, typer.Option(help="Context-dependent target: camouflaged | salient | defects | lesions.")
    ] = None,
) -> None:
    """Render scenes with exact ground truth: image, semantic, instance, part and depth maps."""
    from ..data.scenes import SceneConfig, write_scenes

    try:
        config = SceneConfig(style=style, weather=weather, fog_beta=fog_beta, target=target)
        manifest = write_scenes(out_dir, n, seed=seed, size=size, config=config)
    except USER_ERRORS as e:
        fail(e)
    out.print(f"{n} scenes: {manifest}")


# the method commands live next to their methods
app.command("adapt")(adapt_cmd)
app.command("explain")(explain_cmd)
app.add_typer(ood_app, name="ood")
app.add_typer(federated_app, name="federated")
app.add_typer(pretrain_app, name="pretrain")
app.command("quantize")(quantize_cmd)
app.command("reduce")(reduce_cmd)
app.add_typer(segment_app, name="segment")
app.add_typer(weights_app, name="weights")


def main() -> None:  # pragma: no cover - entry point
    try:
        app()
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":  # pragma: no cover
    main()
