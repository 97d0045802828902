"""The WSSS run's HTML page: headline figures, per-class IoU and overlays, with the house report helpers."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image
from torch import Tensor

from ..report import Report, Section, escape, figure, summary_section, table

# background black, then 10 well separated colours (tab10)
PALETTE = np.array([(0, 0, 0), (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
                    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)], np.uint8)


def colourise(label: np.ndarray) -> np.ndarray:
    """(H, W) labels → (H, W, 3) uint8; the ignore label (255) is white."""
    lab = label.astype(np.int64)
    out = PALETTE[np.clip(lab, 0, len(PALETTE) - 1) % len(PALETTE)]
    out[lab == 255] = 255
    return out


def heat_overlay(image: np.ndarray, heat: np.ndarray) -> np.ndarray:
    """Image (H, W, 3) uint8 blended with a red-yellow heat map (H, W) in [0, 1]."""
    h = np.clip(heat, 0, 1)[:, :, None]
    colour = np.concatenate([np.ones_like(h), h, np.zeros_like(h)], -1) * 255
    return (0.45 * image + 0.55 * (h * colour + (1 - h) * image * 0.4)).astype(np.uint8)


def overlay_grid(rows: Sequence[Sequence[np.ndarray]], scale: int = 2) -> Image.Image:
    """Rows of equally sized (H, W, 3) uint8 tiles → one image, 2 px gaps."""
    h, w = rows[0][0].shape[:2]
    n = max(len(r) for r in rows)
    canvas = np.full((len(rows) * (h + 2), n * (w + 2), 3), 255, np.uint8)
    for i, r in enumerate(rows):
        for j, tile in enumerate(r):
            canvas[i * (h + 2) : i * (h + 2) + h, j * (w + 2) : j * (w + 2) + w] = tile
    img = Image.fromarray(canvas)
    return img.resize((img.width * scale, img.height * scale), Image.NEAREST)


def write_wsss_report(path: str | Path, metrics: dict, train: dict, maps: Tensor, cams: Tensor, pseudo: Tensor,
                      val: dict, pred: Tensor, class_names: Sequence[str], n: int = 6) -> Path:
    """OUT/report.html: summary, per-class IoU, train overlays (image, truth, CAM, method map,
    pseudo-label) and val overlays (image, truth, head prediction)."""
    method = metrics["method"]
    rep = Report(f"vitkit WSSS: {method} on {metrics['backbone']}, seed {metrics['seed']}")
    head = {k: metrics[k] for k in ("method", "backbone", "seed", "pseudo_miou", "pseudo_miou_best", "best_threshold",
                                    "cam_pseudo_miou", "val_miou", "val_cls_f1", "val_cls_exact_match")}
    head["time_s"] = metrics["timing"]["total_s"]
    rep.add(summary_section(head, notes=[
        "pseudo_miou: the method's maps on the training scenes, thresholded at bg_threshold, against the exact masks; "
        "pseudo_miou_best: the best background threshold of a sweep; cam_pseudo_miou: the same model's classifier CAM.",
        "val_miou: a light head trained on the pseudo-labels (uncertain band ignored), on unseen scenes.",
    ]))
    names = ["background", *class_names]
    rows = [(nm, metrics["pseudo_per_class_iou"].get(nm), metrics["per_class_iou"].get(nm)) for nm in names]
    rep.add(Section("per-class", "Per-class IoU", table(
        ["class", "pseudo-label IoU (train)", "head IoU (val)"],
        [(nm, "–" if a is None else f"{a:.3f}", "–" if b is None else f"{b:.3f}") for nm, a, b in rows])))
    mname = {"cam": "CAM", "more": "LAM (MoRe)", "vpl": "prototype map (VPL)"}[method]
    tiles = []
    for i in range(min(n, len(maps))):
        img = train["image"][i]
        present = train["multi_hot"][i] > 0
        tiles.append([img, colourise(train["semantic"][i]),
                      heat_overlay(img, cams[i].float().numpy()[present].max(0) if present.any() else 0 * img[..., 0]),
                      heat_overlay(img, maps[i].float().numpy()[present].max(0) if present.any() else 0 * img[..., 0]),
                      colourise(pseudo[i].numpy())])
    rep.add(Section("train-overlays", "Training scenes", figure(
        overlay_grid(tiles), caption=f"image · truth · CAM · {mname} · pseudo-label for the head (white = ignored)")))
    vt = [[val["image"][i], colourise(val["semantic"][i]), colourise(pred[i].numpy())] for i in range(min(n, len(pred)))]
    rep.add(Section("val-overlays", "Validation scenes", figure(overlay_grid(vt), caption="image · truth · head prediction")))
    legend = ", ".join(f"{nm} = rgb{tuple(int(v) for v in PALETTE[k % len(PALETTE)])}" for k, nm in enumerate(names))
    rep.add(Section("legend", "Colours", f"<p>{escape(legend)}</p>"))
    return rep.write(path)
