"""``vitkit adapt SOURCE --method lora|vpt|coop``: adapt a checkpoint to the font benchmark (FRB).

lora / vpt take a vitkit ViT checkpoint (a classifier, e.g. the demo's ``model`` folder, or a
backbone): the head becomes a classifier over the chosen fonts (rows of fonts it already knew are
kept), the adapter (LoRA or visual prompts) and the head are trained on ink crops of rendered FRB
training pages, and the adapter alone is written to ``OUT`` (``adapter.safetensors`` /
``prompts.safetensors``). coop takes a CLIP checkpoint with tokenizer files and learns a text
context over the font names from page embeddings (``coop.safetensors``). ``--eval`` reports page
accuracy on FRB easy and hard (fonts outside ``--fonts`` are skipped).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated

import typer

log = logging.getLogger(__name__)

METHODS = ("lora", "vpt", "coop")
FONT_SETS = ("all", "known")


def _fonts(which: str) -> list[str]:
    from .. import frb

    if which not in FONT_SETS:
        raise ValueError(f"--fonts must be one of {FONT_SETS}, got {which!r}")
    return list(frb.FONT_NAMES if which == "all" else frb.KNOWN_FONTS)


def _retarget_head(model, fonts: list[str]) -> None:
    """Give ``model`` a len(fonts)-way head; rows of fonts the old head knew (by label) are copied."""
    import torch
    from torch import nn

    old_labels = list(model.cfg.labels or [])
    if model.cfg.num_classes == len(fonts) and old_labels == fonts:
        return
    old = model.head
    model.reset_classifier(len(fonts), fonts)
    if isinstance(old, nn.Linear):
        with torch.no_grad():
            for i, f in enumerate(fonts):
                if f in old_labels and old_labels.index(f) < old.out_features:
                    model.head.weight[i] = old.weight[old_labels.index(f)]
                    model.head.bias[i] = old.bias[old_labels.index(f)]


def run_adapt(source: str, method: str, out: Path, *, steps: int, batch_size: int, lr: float | None, rank: int,
              alpha: float, targets: str, parts: str, tokens: int, deep: bool, pages: int, fonts: str, seed: int,
              evaluate: bool, progress: bool = True) -> dict:
    """The command's work; returns a summary dict (also written to ``OUT/adapt.json``)."""
    import torch
    from safetensors.torch import save_file

    from .. import frb
    from ..cli.common import load_source
    from ..engine import TrainConfig, Trainer
    from ..frb.classifier import TiledClassifier
    from ..frb.ink import InkCropDataset, pil_to_tensor
    from ..frb.pages import frb_pages
    from ..frb.protocols import evaluate_classifier
    from ..models.clip import CLIP
    from ..models.vit import VisionTransformer
    from . import lora, prompts

    if method not in METHODS:
        raise ValueError(f"--method must be one of {METHODS}, got {method!r}")
    names = _fonts(fonts)
    model = load_source(source)
    torch.manual_seed(seed)
    if method in ("lora", "vpt"):  # wire the method in first: a bad option fails before any work
        if not isinstance(model, VisionTransformer):
            raise ValueError(f"--method {method} needs a vitkit ViT checkpoint; {source} is a {type(model).__name__} "
                             "(use --method coop for CLIP)")
        _retarget_head(model, names)
        if method == "lora":
            cfg = lora.LoraConfig(rank=rank, alpha=alpha, targets=tuple(t.strip() for t in targets.split(",") if t.strip()),
                                  qkv_parts=parts, modules_to_save=("head",))
            touched = lora.apply(model, cfg)
            trainable = lora.mark_trainable(model)
        else:
            touched = prompts.apply_vpt(model, prompts.VPTConfig(num_tokens=tokens, deep=deep))
            trainable = prompts.mark_prompts_trainable(model, extra=("head",))
    elif not isinstance(model, CLIP):
        raise ValueError(f"--method coop needs a CLIP checkpoint; {source} is a {type(model).__name__}")
    elif model.tokenizer is None:
        raise ValueError(f"{source} has no tokenizer files: CoOp needs them to build the text prompts")
    samples = [s for s in frb.train_split(pages, seed) if s.font in names]
    if not samples:
        raise ValueError(f"--pages {pages}: no training page in the chosen fonts; use more pages")
    # a crop classifier saved with a page pipeline (the demo's) is adapted on pages at its text scale
    policy = getattr(model, "pipeline", None)
    th = policy.text_height if policy is not None else None
    grey, labels = frb_pages(samples, fonts=names, text_height=th, canvas=(240, 440) if th else None)
    out.mkdir(parents=True, exist_ok=True)
    summary: dict = {"source": source, "method": method, "fonts": names, "steps": steps, "pages": len(samples)}
    test = [s for s in frb.easy_split() + frb.hard_split() if s.font in names] if evaluate else []

    if method in ("lora", "vpt"):
        crop = model.cfg.img_size[0]
        ds = InkCropDataset(grey, labels, size=crop, crops_per_page=max(1, -(-steps * batch_size // len(grey))), seed=seed)
        tcfg = TrainConfig(epochs=1, max_steps=steps, batch_size=batch_size, lr=lr or 2e-3, warmup_steps=max(1, steps // 20),
                           label_smoothing=0.1, out_dir=str(out / "train"), progress=progress, ckpt_every=10**9,
                           log_every=max(1, steps // 20), seed=seed)
        Trainer(model, ds, tcfg).fit()
        model.eval()
        if method == "lora":
            path = lora.save_adapter(model, out / "adapter.safetensors")
        else:
            vit = model
            sd = {"vpt.tokens": vit.vpt.tokens.detach().contiguous(),
                  **{f"head.{k}": v.contiguous() for k, v in vit.head.state_dict().items()}}
            path = out / "prompts.safetensors"
            save_file(sd, str(path), metadata={"format": "vitkit-vpt/1", "num_tokens": str(tokens), "deep": str(deep),
                                               "labels": json.dumps(names)})
        summary.update(layers=touched, trainable=trainable, adapter=str(path))
        if test:
            clf = TiledClassifier(model, size=crop, stride=crop // 2, policy=policy).eval()
            for split in ("easy", "hard"):
                part = [s for s in test if s.split == split]
                for s in part:  # labels as indices into the chosen fonts
                    s.label = names.index(s.font)
                summary[f"{split}_accuracy"] = evaluate_classifier(  # pages differ in size: one per call
                    clf, part, transform=pil_to_tensor, batch_size=1, class_names=names, progress=False).accuracy
    else:
        from ..frb.clip import page_features

        model.requires_grad_(False)
        coop = prompts.CoOp(model, names, prompts.CoOpConfig(n_ctx=tokens))
        feats = page_features(model, grey)
        losses = prompts.train_prompts(lambda f, y: coop.logits(f), coop.parameters(), feats, labels, steps=steps,
                                       lr=lr or 2e-3, batch_size=batch_size, seed=seed)
        path = out / "coop.safetensors"
        save_file({"ctx": coop.ctx.detach().contiguous()}, str(path),
                  metadata={"format": "vitkit-coop/1", "classnames": json.dumps(names), "position": "end"})
        summary.update(trainable=coop.ctx.numel(), adapter=str(path), final_loss=losses[-1])
        if test:
            with torch.no_grad():
                tf = coop.text_features()
                for split in ("easy", "hard"):
                    part = [s for s in test if s.split == split]
                    p, y = frb_pages(part, fonts=names)
                    pred = coop.logits(page_features(model, p), tf).argmax(-1)
                    summary[f"{split}_accuracy"] = float((pred == y).float().mean())
    (out / "adapt.json").write_text(json.dumps(summary, indent=2))
    return summary


def adapt_cmd(
    source: Annotated[str, typer.Argument(help="Checkpoint dir/file (ViT for lora/vpt, CLIP for coop).")],
    method: Annotated[str, typer.Option("--method", "-m", help="lora | vpt | coop")] = "lora",
    out_dir: Annotated[Path, typer.Option("--out", help="Where the adapter file and adapt.json go.")] = Path("runs/adapt"),
    steps: Annotated[int, typer.Option(min=1, help="Training steps.")] = 300,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Crops (or pages, coop) per step.")] = 32,
    lr: Annotated[float | None, typer.Option(help="Learning rate (default 2e-3).")] = None,
    rank: Annotated[int, typer.Option(min=1, help="LoRA rank.")] = 8,
    alpha: Annotated[float, typer.Option(help="LoRA alpha (scaling = alpha / rank).")] = 16.0,
    targets: Annotated[str, typer.Option(help="LoRA targets: comma-separated module-name suffixes; 'qkv,fc1,fc2' "
                                              "with --parts qkv adapts the MLPs too (on DINOv2-S for fonts, at 480 steps, "
                                              "it matched full fine-tuning where q,v alone trailed it by 9 points: "
                                              "benchmarks/RESULTS.md).")] = "qkv",
    parts: Annotated[str, typer.Option(help="LoRA: which slices of a fused qkv (subset of 'qkv').")] = "qv",
    tokens: Annotated[int, typer.Option(min=1, help="VPT prompt tokens / CoOp context tokens.")] = 8,
    deep: Annotated[bool, typer.Option(help="VPT: deep prompts (one set per block).")] = False,
    pages: Annotated[int, typer.Option(min=1, help="Rendered FRB training pages.")] = 300,
    fonts: Annotated[str, typer.Option(help="all (15 fonts) | known (the 10 of the open-set split).")] = "all",
    seed: Annotated[int, typer.Option(help="Seed.")] = 0,
    evaluate: Annotated[bool, typer.Option("--eval", help="Report page accuracy on FRB easy and hard.")] = False,
) -> None:
    """Adapt a checkpoint to the font benchmark with LoRA, visual prompts (VPT) or CoOp; writes the adapter alone."""
    from ..cli.common import USER_ERRORS, fail, out

    try:
        summary = run_adapt(source, method, out_dir, steps=steps, batch_size=batch_size, lr=lr, rank=rank, alpha=alpha,
                            targets=targets, parts=parts, tokens=tokens, deep=deep, pages=pages, fonts=fonts, seed=seed,
                            evaluate=evaluate)
    except USER_ERRORS as e:
        fail(e)
    out.print(f"{method}: {summary['trainable']:,} trainable values → {summary['adapter']}", soft_wrap=True)
    for split in ("easy", "hard"):
        if f"{split}_accuracy" in summary:
            out.print(f"FRB {split}: {summary[f'{split}_accuracy']:.1%}")
