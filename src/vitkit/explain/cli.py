"""``vitkit explain SOURCE IMAGE… --method … --class NAME --out DIR``: overlays (PNG) and scores (JSON)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer


def class_index(name: str | None, names: list[str]) -> int | None:
    """The class ``name`` (a label, or an index) among ``names``; None = explain the top class."""
    if name is None:
        return None
    if name in names:
        return names.index(name)
    if name.isdigit() and int(name) < len(names):
        return int(name)
    raise ValueError(f"--class {name!r} is not one of the model's classes: {', '.join(names[:20])}"
                     f"{' …' if len(names) > 20 else ''}")


def explain_cmd(
    source: Annotated[str, typer.Argument(help="Checkpoint dir/file, hf-hub:org/name, or a registry name.")],
    images: Annotated[list[Path], typer.Argument(help="Image files.")],
    method: Annotated[str, typer.Option(
        "--method", "-m", help="Comma-separated: rollout, gradcam, chefer, evidence (hybrid), lam (MoRe), or "
                               "auto (evidence for the hybrid, gradcam for VisionGRU, rollout otherwise).")] = "auto",
    class_name: Annotated[str | None, typer.Option(
        "--class", "-c", help="Class to explain (a label or an index); default: each image's top class.")] = None,
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Folder for the overlays and scores.json.")] = Path(
        "runs/explain"),
    labels: Annotated[str | None, typer.Option(help="CLIP zero-shot: comma-separated class names.")] = None,
    template: Annotated[str, typer.Option(help="CLIP zero-shot prompt template with {}.")] = "a photo of a {}.",
    alpha: Annotated[float, typer.Option(min=0.0, max=1.0, help="Opacity of the map over the image.")] = 0.5,
) -> None:
    """Explain a model's prediction: one overlay PNG per image and method, and OUT/scores.json with the
    explained class, its probability, the top classes and each method's passes and time."""
    from ..cli.common import USER_ERRORS, err, fail, load_source, out
    from ..data import load_image, preprocess_batch
    from ..models.clip import CLIP, ZeroShotClassifier
    from ..progress import progress_bar
    from . import METHODS, default_method
    from .metrics import explain_with_cost
    from .overlay import denormalize, overlay

    try:
        model = load_source(source)
        if isinstance(model, CLIP):
            if not labels:
                raise ValueError("a CLIP model needs --labels 'cat,dog,…' to have classes to explain")
            names = [s.strip() for s in labels.split(",") if s.strip()]
            target_model = ZeroShotClassifier(model, names, [template]).eval()
        else:
            k = model.cfg.num_classes
            if not k:
                raise ValueError(f"{source} has no classification head (features only): nothing to explain")
            names = model.cfg.labels or [f"class {i}" for i in range(k)]
            target_model = model
        methods = [m.strip() for m in method.split(",") if m.strip()]
        methods = [default_method(target_model) if m == "auto" else m for m in methods]
        bad = [m for m in methods if m not in METHODS]
        if bad:
            raise ValueError(f"unknown method(s) {bad}; available: {', '.join(METHODS)}, auto")
        target = class_index(class_name, names)
        pp = model.preprocess
        batch = preprocess_batch([load_image(p) for p in images], pp)
    except USER_ERRORS as e:
        fail(e)
    out_dir.mkdir(parents=True, exist_ok=True)
    records = []
    with progress_bar(len(images) * len(methods) > 1) as bar:
        task = bar.add_task("explaining", total=len(images) * len(methods))
        for path, x in zip(images, batch, strict=True):
            x = x.unsqueeze(0)
            shown = denormalize(x[0], pp.mean, pp.std)
            for m in methods:
                try:
                    e, cost = explain_with_cost(target_model, x, m, target=target)
                except USER_ERRORS as exc:
                    fail(exc)
                probs = e.logits.float().softmax(-1)[0]
                c = int(e.target[0])
                png = out_dir / f"{path.stem}_{m}_{names[c].replace('/', '_').replace(' ', '_')}.png"
                overlay(shown, e.maps[0], alpha=alpha).save(png)
                top = probs.topk(min(5, len(names)))
                records.append({
                    "image": str(path), "method": m, "class": names[c], "class_index": c,
                    "probability": float(probs[c]), "logit": float(e.logits[0, c]),
                    "top": [[names[i], float(v)] for v, i in zip(top.values.tolist(), top.indices.tolist(), strict=True)],
                    "forwards": cost.forwards, "backwards": cost.backwards, "seconds": cost.seconds,
                    "overlay": str(png), "map_grid": list(e.maps.shape[-2:]),
                })
                bar.advance(task)
    (out_dir / "scores.json").write_text(json.dumps(records, indent=1))
    for r in records:
        out.print(f"{Path(r['image']).name}  {r['method']:>8}  {r['class']} p={r['probability']:.3f}  → {r['overlay']}")
    err.print(f"scores: {out_dir / 'scores.json'}")
