"""The promptable-segmentation protocol on one image or clip: box, clicker and automatic prompts.

* :func:`segment_with_boxes`: one box per 8-connected component of the truth (perturbed if an
  ``rng`` is given), one single-mask prediction per box, the union;
* :func:`segment_with_clicks`: the interactive clicker (:func:`~.prompting.next_click`), at most
  ``max_clicks`` clicks, stopping once the kept mask reaches IoU ``iou_stop``; with multimask
  output the candidate with the best IoU against the truth is kept. That choice reads the truth
  (an oracle, as in the paper's code). Perturbed: each click is moved once, when it is made, by
  U(±10 px) (the public code re-draws every point at every step, unseeded);
* :func:`segment_automatic`: the generator's masks, oracle-selected by
  :func:`~.prompting.select_auto_masks`;
* :func:`segment_clip`: prompts (box or clicks) on the first ``k`` frames; the later frames are
  left to the segmenter: its own ``track(frames, prompts)`` if it has one, else box propagation
  (each frame is prompted with the boxes of the previous frame's predicted components, which is
  what a memory-less image segmenter can do).
"""

from __future__ import annotations

import numpy as np

from .prompting import (
    IOU_STOP,
    MAX_CLICKS,
    Click,
    boxes_from_mask,
    clicks_to_arrays,
    mask_iou,
    next_click,
    perturb_boxes,
    perturb_points,
    select_auto_masks,
    video_prompt_frames,
)
from .segmenters import Segmenter

PROMPTS = ("box", "point", "auto")


def union_of_boxes(seg: Segmenter, image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """(H, W) bool union of the single-mask predictions of each box (K, 4); one batched call when the
    segmenter offers ``predict_boxes``."""
    out = np.zeros(image.shape[:2], bool)
    batched = getattr(seg, "predict_boxes", None)
    if callable(batched):
        masks = np.asarray(batched(image, boxes), bool)
        return masks.any(0) if len(masks) else out
    for b in boxes:
        masks, _ = seg.predict(image, boxes=b[None], multimask=False)
        out |= np.asarray(masks[0], bool)
    return out


def segment_with_boxes(seg: Segmenter, image: np.ndarray, truth: np.ndarray,
                       rng: np.random.Generator | None = None) -> np.ndarray:
    """Box protocol (see the module docstring); ``rng`` given = perturbed boxes."""
    boxes = boxes_from_mask(truth)
    if rng is not None:
        boxes = perturb_boxes(boxes, truth.shape, rng)
    return union_of_boxes(seg, image, boxes)


def segment_with_clicks(seg: Segmenter, image: np.ndarray, truth: np.ndarray,
                        rng: np.random.Generator | None = None, *, max_clicks: int = MAX_CLICKS,
                        iou_stop: float = IOU_STOP, multimask: bool = True) -> tuple[np.ndarray, int]:
    """Clicker protocol → (kept mask (H, W) bool, clicks used)."""
    gt = np.asarray(truth, bool)
    pred = np.zeros_like(gt)
    clicked = np.zeros_like(gt)
    clicks: list[Click] = []
    sent: list[np.ndarray] = []  # the (possibly perturbed) coordinates given to the segmenter, fixed per click
    for _ in range(max_clicks):
        c = next_click(gt, pred, clicked)
        if c is None:
            break
        clicks.append(c)
        clicked[c.y, c.x] = True
        xy = np.array([[c.x, c.y]], np.float32)
        sent.append(perturb_points(xy, gt.shape, rng) if rng is not None else xy)
        _, labels = clicks_to_arrays(clicks)
        masks, _ = seg.predict(image, points=np.concatenate(sent), point_labels=labels, multimask=multimask)
        ious = [mask_iou(m, gt) for m in masks]
        best = int(np.argmax(ious))  # oracle: the truth picks the candidate
        pred = np.asarray(masks[best], bool)
        if ious[best] >= iou_stop:
            break
    return pred, len(clicks)


def segment_automatic(seg: Segmenter, image: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Automatic protocol: the oracle union of generated masks (see :func:`select_auto_masks`)."""
    masks, _ = seg.generate(image)
    return select_auto_masks(masks, truth)


def segment_clip(seg: Segmenter, frames: np.ndarray, truths: np.ndarray, k: int, prompt: str,
                 rng: np.random.Generator | None = None) -> np.ndarray:
    """Masks (T, H, W) bool for a clip with ``prompt`` ("box" or "point") on its first ``k`` frames."""
    if prompt not in ("box", "point"):
        raise ValueError(f"video prompts are box or point, got {prompt!r}")
    prompted = video_prompt_frames(len(frames), k)
    track = getattr(seg, "track", None)
    if callable(track):
        prompts = {}
        for t in prompted:
            boxes = boxes_from_mask(truths[t])
            prompts[t] = {"boxes": perturb_boxes(boxes, truths[t].shape, rng) if rng is not None else boxes}
        return np.asarray(track(frames, prompts), bool)
    out = np.zeros(truths.shape, bool)
    for t in range(len(frames)):
        if t in prompted:
            if not truths[t].any():
                continue
            out[t] = (segment_with_boxes(seg, frames[t], truths[t], rng) if prompt == "box"
                      else segment_with_clicks(seg, frames[t], truths[t], rng)[0])
        elif out[t - 1].any():
            out[t] = union_of_boxes(seg, frames[t], boxes_from_mask(out[t - 1]))
    return out
