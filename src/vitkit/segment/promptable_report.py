"""The promptable evaluation's HTML page: tables concept × prompt × metric (clean, perturbed), video, examples."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..report import Report, Section, escape, figure, summary_section, table
from .mask_metrics import METRICS
from .report import overlay_grid

_NAMES = {"iou": "IoU", "dice": "Dice", "mae": "MAE ↓", "sm": "S-measure", "em": "mean E", "wfm": "wF"}


def _cell(v) -> str:
    return "–" if v is None else f"{v:.3f}"


def image_table(results: dict) -> tuple[list[str], list[list[str]]]:
    """Rows (concept, prompt, condition, n, metrics…, clicks) of the image results."""
    metrics = [m for m in METRICS if any(m in r for r in results["images"].values())]
    head = ["concept", "prompt", "condition", "n", *[_NAMES[m] for m in metrics], "clicks"]
    rows = []
    for key, r in results["images"].items():
        concept, prompt, cond = key.split("|")
        rows.append([concept, prompt, cond, str(r["n"]), *[_cell(r.get(m)) for m in metrics],
                     _cell(r.get("clicks")) if "clicks" in r else "–"])
    return head, rows


def video_table(results: dict) -> tuple[list[str], list[list[str]]]:
    metrics = [m for m in METRICS if any(m in r for r in results["video"].values())]
    head = ["concept", "prompt", "prompted frames", "condition", "clips", *[_NAMES[m] for m in metrics]]
    rows = []
    for key, r in results["video"].items():
        concept, prompt, k, cond = key.split("|")
        rows.append([concept, prompt, k, cond, str(r["n"]), *[_cell(r.get(m)) for m in metrics]])
    return head, rows


def _tile(mask: np.ndarray, image: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Prediction over the dimmed image: green = true positive, red = false positive, blue = missed."""
    out = (image * 0.45).astype(np.uint8)
    out[mask & truth] = (40, 200, 60)
    out[mask & ~truth] = (220, 40, 40)
    out[~mask & truth] = (40, 90, 230)
    return out


def write_promptable_report(path: str | Path, results: dict, examples: dict) -> Path:
    """OUT/report.html from the results of :func:`~.promptable.run_promptable` and example masks."""
    seg = results["segmenter"]
    rep = Report(f"vitkit promptable segmentation: {seg['segmenter']}, seed {results['config']['seed']}")
    head = {"segmenter": seg["segmenter"], "seed": results["config"]["seed"],
            "images per concept": results["config"]["images"], "clips per concept": results["config"]["clips"],
            "time_s": results["timing"]["total_s"]}
    notes = [*results["oracle_notes"], "perturbed: box edges ± U(0.1 × shorter side), clicks ± U(10 px), seeded; "
             "the automatic and in-context protocols have no prompt of their own to perturb."]
    if not results["saliency_metrics"]:
        notes.append("pysodmetrics not installed: IoU and Dice only.")
    rep.add(summary_section(head, notes=notes))
    h, rows = image_table(results)
    rep.add(Section("images", "Images: concept × prompt × metric", table(h, rows, numeric=False)))
    if results["video"]:
        h, rows = video_table(results)
        rep.add(Section("video", "Video: prompts on the first k frames, then propagation",
                        table(h, rows, numeric=False)))
    for concept, ex in examples.items():
        keys = [k for k in ex if "|" in k]
        grid = [[img, np.repeat(t[:, :, None].astype(np.uint8) * 255, 3, 2),
                 *[_tile(ex[k][i], img, t) for k in keys]] for i, (img, t) in enumerate(zip(ex["image"], ex["truth"],
                                                                                             strict=True))]
        rep.add(Section(f"ex-{concept}", f"Examples: {concept}", figure(
            overlay_grid(grid), caption="image · truth · " + " · ".join(escape(k.replace("|", " ")) for k in keys)
            + " (green = correct, red = false positive, blue = missed)")))
    return rep.write(path)
