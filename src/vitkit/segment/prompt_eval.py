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
  what a memory-less image segmenter can do);
* :func:`in_context_segmenter`: k annotated prompt images (image + mask), no prompt on the target.
  A segmenter with memory (``track``) sees them as the first k frames of a clip whose last frame is
  the target (SAM 2's in-context protocol); a memory-less one is prompted on the target through
  its features (:func:`~.prompting.concept_prototype`, :func:`~.prompting.similarity_prompts`),
  keeping the candidate with the highest *predicted* score (no oracle here).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .prompting import (
    IOU_STOP,
    MAX_CLICKS,
    Click,
    boxes_from_mask,
    clicks_to_arrays,
    concept_prototype,
    mask_iou,
    next_click,
    perturb_boxes,
    perturb_points,
    select_auto_masks,
    similarity_prompts,
    video_prompt_frames,
)
from .segmenters import Segmenter

PROMPTS = ("box", "point", "auto", "context")


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


def in_context_segmenter(seg: Segmenter, images: np.ndarray, masks: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """The in-context protocol with prompt images (K, H, W, 3) and their masks (K, H, W) → a function
    target image (H, W, 3) → mask (H, W) bool (see the module docstring). The prompt images are
    embedded once here, not per target."""
    masks = np.asarray(masks, bool)
    if len(images) != len(masks) or not len(images):
        raise ValueError(f"in-context prompting needs K ≥ 1 prompt images with K masks, got {len(images)}, {len(masks)}")
    track = getattr(seg, "track", None)
    if callable(track):
        prompts = {t: {"boxes": boxes_from_mask(m)} for t, m in enumerate(masks)}

        def by_memory(image: np.ndarray) -> np.ndarray:
            frames = np.concatenate([np.asarray(images), np.asarray(image)[None]])
            return np.asarray(track(frames, prompts), bool)[-1]

        return by_memory
    features = getattr(seg, "features", None)
    if not callable(features):
        raise ValueError(f"{type(seg).__name__} has neither track() nor features(): drop 'context' from --prompts")
    proto = concept_prototype(np.stack([features(im) for im in images]), masks)

    def by_prototype(image: np.ndarray) -> np.ndarray:
        pts, labels, _ = similarity_prompts(features(image), proto, np.shape(image)[:2])
        cand, scores = seg.predict(image, points=pts, point_labels=labels, multimask=True)
        return np.asarray(cand[int(np.argmax(scores))], bool)

    return by_prototype
