"""``vitkit ood fit|score``: fit a detector on a model's FRB training crops (or a features file), score images.

A features file is safetensors with ``features`` (N, D) and optionally ``labels`` (N,) and
``logits`` (N, K) (logit detectors use ``logits``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

ood_app = typer.Typer(help="Out-of-distribution detection: fit a detector, score images.", no_args_is_help=True)

_DETECTOR_HELP = "msp, max_logit, energy, knn, mahalanobis or molar."


def parse_options(items: list[str] | None) -> dict:
    """``["k=10", "budget=50"]`` → ``{"k": 10, "budget": 50}`` (values parsed as JSON, else kept as text)."""
    opts = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--option {item!r} must look like key=value (e.g. -o k=10)")
        try:
            opts[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            opts[key.strip()] = value
    return opts


def read_features(path: Path) -> dict:
    """A features file → {'features': (N, D), 'labels': (N,) | None, 'logits': (N, K) | None}."""
    from safetensors.torch import load_file

    if not Path(path).is_file():
        raise FileNotFoundError(f"features file {path} does not exist")
    try:
        t = load_file(str(path))
    except Exception as e:  # noqa: BLE001 - any decode failure is the user's file
        raise ValueError(f"{path}: not a readable safetensors file ({e})") from e
    if "features" not in t and "logits" not in t:
        raise ValueError(f"{path}: needs a 'features' (N, D) and/or 'logits' (N, K) tensor; found {sorted(t)}")
    return {"features": t.get("features"), "labels": t.get("labels"), "logits": t.get("logits")}


def _pick(det, data: dict, path) -> object:
    key = "logits" if det.input == "logits" else "features"
    if data[key] is None:
        raise ValueError(f"detector {det.name!r} works on {key} but {path} has no {key!r} tensor")
    return data[key]


def _model_fonts(model) -> list[str]:
    from .. import frb

    labels = list(model.cfg.labels or [])
    unknown = [n for n in labels if n not in frb.FONT_NAMES]
    if not labels or unknown:
        raise ValueError(f"the model's class labels {labels[:5]} are not FRB font names: fitting from a model needs a "
                         "font classifier (e.g. from benchmarks/ood.py); otherwise pass --features FILE")
    return labels


@ood_app.command("fit")
def fit_cmd(
    out_file: Annotated[Path, typer.Option("--out", help="Detector file to write (.safetensors).")],
    detector: Annotated[str, typer.Option("--detector", "-d", help=_DETECTOR_HELP)] = "molar",
    model: Annotated[str | None, typer.Option(help="Font-classifier checkpoint: fit on crops of FRB training "
                                                   "pages in the fonts it knows.")] = None,
    features: Annotated[Path | None, typer.Option(help="Or: a features file (safetensors: features, labels, "
                                                       "logits).")] = None,
    option: Annotated[list[str] | None, typer.Option("--option", "-o", help="Detector option key=value "
                                                                           "(e.g. -o budget=100, -o k=10).")] = None,
    pages: Annotated[int, typer.Option(min=1, help="FRB training pages to draw (with --model).")] = 300,
    crops_per_page: Annotated[int, typer.Option(min=1, help="Ink crops per page (with --model).")] = 20,
    seed: Annotated[int, typer.Option(min=0, help="FRB training-page seed.")] = 0,
) -> None:
    """Fit an OOD detector and save it (one safetensors file)."""
    from ..cli.common import USER_ERRORS, fail, load_source, out
    from .detectors import make_detector

    try:
        if (model is None) == (features is None):
            raise ValueError("pass exactly one of --model CHECKPOINT or --features FILE")
        det = make_detector(detector, **parse_options(option))
        if features is not None:
            data = read_features(features)
            x, y = _pick(det, data, features), data["labels"]
        else:
            from .. import frb
            from ..frb.pages import frb_pages
            from .openset import crop_features

            m = load_source(model)
            fonts = _model_fonts(m)
            grey, labels = frb_pages(list(frb.train_split(pages, seed)), fonts=fonts)
            f = crop_features(m, grey, labels, crops_per_page=crops_per_page, size=m.cfg.img_size[0],
                                  progress=True)
            x, y = (f.logits if det.input == "logits" else f.features), f.labels
        det.fit(x, y)
        det.save(out_file)
    except USER_ERRORS as e:
        fail(e)
    out.print(f"{det.name}: fitted on {len(x)} × {det.dim} {det.input} → {out_file}")


@ood_app.command("score")
def score_cmd(
    detector_file: Annotated[Path, typer.Argument(help="A detector written by `vitkit ood fit`.")],
    images: Annotated[list[Path] | None, typer.Argument(help="Page images to score (with --model).")] = None,
    model: Annotated[str | None, typer.Option(help="The checkpoint the detector was fitted on.")] = None,
    features: Annotated[Path | None, typer.Option(help="Or: score the rows of a features file.")] = None,
    threshold: Annotated[float | None, typer.Option(help="Scores below it are reported 'unknown'.")] = None,
    json_out: Annotated[Path | None, typer.Option("--out", help="Also write the scores as JSON.")] = None,
) -> None:
    """Score images (mean over ink tiles) or feature rows: higher = more in-distribution."""
    import torch
    from rich.table import Table

    from ..cli.common import USER_ERRORS, fail, load_source, out
    from .detectors import load_detector

    try:
        det = load_detector(detector_file)
        if (model is None) == (features is None):
            raise ValueError("pass exactly one of --model CHECKPOINT (with IMAGES) or --features FILE")
        if features is not None:
            names = None
            s = det.score(_pick(det, read_features(features), features))
        else:
            if not images:
                raise ValueError("no IMAGES given: pass page images to score with --model")
            from ..data import load_image
            from ..frb.ink import pil_to_tensor
            from .openset import page_scores, tile_features, tile_scores

            m = load_source(model)
            size = m.cfg.img_size[0]
            s, names = [], [str(p) for p in images]
            for p in images:
                page = pil_to_tensor(load_image(p)).unsqueeze(0)
                f = tile_features(m, page, size=size, stride=size // 2)
                s.append(page_scores(tile_scores(det, f), f.owner, 1))
            s = torch.cat(s)
    except USER_ERRORS as e:
        fail(e)
    values = s.tolist()
    if names is not None:
        table = Table("image", "score", *(["verdict"] if threshold is not None else []), title=f"{det.name} scores")
        for n, v in zip(names, values, strict=True):
            table.add_row(n, f"{v:.4f}", *([("known" if v >= threshold else "unknown")] if threshold is not None else []))
        out.print(table)
    else:
        t = torch.tensor(values)
        msg = f"{det.name}: {len(values)} rows, score mean {t.mean():.4f}, min {t.min():.4f}, max {t.max():.4f}"
        if threshold is not None:
            msg += f", {int((t < threshold).sum())} below {threshold} (unknown)"
        out.print(msg)
    if json_out is not None:
        json_out.write_text(json.dumps({"detector": det.name, "images": names, "scores": values}, indent=2))
