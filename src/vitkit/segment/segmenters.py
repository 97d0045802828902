"""The segmenter protocol of the promptable evaluation and its adapters.

A segmenter takes one uint8 image (H, W, 3) and one prompt set::

    masks, scores = seg.predict(image, boxes=None, points=None, point_labels=None, multimask=True)
    # masks (M, H, W) bool (M = 3 candidates with multimask, else 1), scores (M,) predicted quality
    masks, scores = seg.generate(image)   # automatic masks (M, H, W) bool, (M,)

``boxes`` is one box (4,) or (1, 4) ``(x0, y0, x1, y1)`` in pixels, ``points`` (K, 2) ``(x, y)``,
``point_labels`` (K,) 1 positive / 0 negative (segment-anything's conventions). A segmenter may also
offer ``predict_boxes(image, boxes (K, 4)) → (K, H, W) bool``, the single-mask prediction of each box in
one call; the box protocol then decodes a frame's boxes as one batch (the same masks). In-context
prompting needs either ``track(frames, prompts)`` (a segmenter with memory) or
``features(image) → (h, w, C)``, the image embedding the prompts are decoded against.

Adapters: :class:`BuiltinSegmenter` (vitkit's :class:`~.promptable_model.PromptSegmenter`, with a
SAM-style automatic generator: a grid of single-point prompts, candidates kept by predicted IoU
and stability, greedy mask NMS) and :class:`SamSegmenter` around a ``segment_anything.SamPredictor``
or ``sam2.sam2_image_predictor.SAM2ImagePredictor`` (and their automatic generators), built from a
checkpoint by :func:`load_segmenter` (``sam:CKPT``, ``sam2:CKPT``; the packages are optional).
"""

from __future__ import annotations

import hashlib
import logging
from collections import OrderedDict
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F

from .promptable_model import PromptSegConfig, PromptSegmenter
from .prompting import mask_iou

log = logging.getLogger(__name__)


@runtime_checkable
class Segmenter(Protocol):
    """What the evaluation needs of a promptable segmenter (see the module docstring)."""

    def predict(self, image: np.ndarray, boxes: np.ndarray | None = None, points: np.ndarray | None = None,
                point_labels: np.ndarray | None = None, multimask: bool = True) -> tuple[np.ndarray, np.ndarray]: ...

    def generate(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...


def _one_box(boxes: np.ndarray | None) -> np.ndarray | None:
    if boxes is None:
        return None
    b = np.asarray(boxes, np.float32).reshape(-1, 4)
    if len(b) != 1:
        raise ValueError(f"predict takes one box per call (the evaluation unions per-box masks), got {len(b)}")
    return b[0]


def _points(points, labels) -> tuple[np.ndarray | None, np.ndarray | None]:
    if points is None:
        return None, None
    p = np.asarray(points, np.float32).reshape(-1, 2)
    lab = np.ones(len(p), np.int64) if labels is None else np.asarray(labels, np.int64).reshape(-1)
    if len(lab) != len(p):
        raise ValueError(f"{len(p)} points but {len(lab)} point labels")
    return p, lab


def mask_nms(masks: np.ndarray, scores: np.ndarray, threshold: float) -> list[int]:
    """Greedy NMS of (M, H, W) bool masks by ``scores``: indices kept (best first), dropping any mask
    whose IoU with a kept one exceeds ``threshold``."""
    keep: list[int] = []
    for i in np.argsort(-scores, kind="stable"):
        if all(mask_iou(masks[i], masks[j]) <= threshold for j in keep):
            keep.append(int(i))
    return keep


class BuiltinSegmenter:
    """:class:`PromptSegmenter` behind the :class:`Segmenter` protocol.

    Images of another size are resized to the model's side (prompts scaled alike) and the masks
    back. The embeddings of the last ``cache`` images are kept (least recently used dropped), so the
    clicker's calls re-run only the decoder, and the video protocol, which revisits a clip's frames
    for every prompt kind and prompted-frame count, embeds each frame once. Automatic generation
    follows SAM's: ``grid`` × ``grid`` point prompts, 3 candidates each, kept with predicted IoU ≥
    ``pred_iou_thresh`` and stability (IoU of the mask at logit thresholds ±1) ≥ ``stability_thresh``,
    then mask NMS at ``nms_thresh``; SAM's defaults are 32², 0.88, 0.95, 0.7 for a far better
    calibrated model; ours are looser.
    """

    def __init__(self, *, model: PromptSegmenter, grid: int = 8, pred_iou_thresh: float = 0.7,
                 stability_thresh: float = 0.85, nms_thresh: float = 0.7, min_area: int = 4,
                 cache: int = 16) -> None:
        self.model = model.eval()
        self.grid, self.pred_iou_thresh, self.stability_thresh = grid, pred_iou_thresh, stability_thresh
        self.nms_thresh, self.min_area = nms_thresh, min_area
        if cache < 1:
            raise ValueError(f"BuiltinSegmenter cache must keep at least 1 image embedding, got {cache}")
        self.cache = cache  # a default clip has 8 frames
        self._emb: OrderedDict[str, tuple[torch.Tensor, torch.Tensor]] = OrderedDict()

    @classmethod
    def from_checkpoint(cls, path: str | Path, **kwargs) -> BuiltinSegmenter:
        """A segmenter saved by :func:`save_builtin` (a dict with ``config`` and ``state_dict``)."""
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"{p} not found: train one with `vitkit segment evaluate --segmenter builtin`")
        ckpt = torch.load(p, map_location="cpu", weights_only=True)
        # a checkpoint from before ``fuse_skip`` existed was built without it: same weights, linear skip
        model = PromptSegmenter(config=PromptSegConfig(**{"fuse_skip": False, **ckpt["config"]}))
        model.load_state_dict(ckpt["state_dict"])
        return cls(model=model, **kwargs)

    def _embed(self, image: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, float, tuple[int, int]]:
        img = np.ascontiguousarray(image)
        if img.ndim != 3 or img.shape[2] != 3:
            raise ValueError(f"image must be (H, W, 3) uint8, got shape {img.shape}")
        h, w = img.shape[:2]
        key = hashlib.sha1(img.tobytes()).hexdigest() + str(img.shape)
        s = self.model.size
        if key in self._emb:
            self._emb.move_to_end(key)
        else:
            x = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255
            if (h, w) != (s, s):
                x = F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False, antialias=True)
            with torch.no_grad():
                self._emb[key] = self.model.embed(x)
            while len(self._emb) > self.cache:
                self._emb.popitem(last=False)
        return *self._emb[key], s, (h, w)

    @torch.no_grad()
    def _decode(self, image, boxes, points, labels) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits (K, 4, H, W) and IoU predictions (K, 4) for K boxes (K, 4) (or one point set (P, 2))."""
        emb, skip, s, (h, w) = self._embed(image)
        scale = np.array([s / w, s / h], np.float32)
        b = None if boxes is None else torch.from_numpy((boxes.reshape(-1, 2, 2) * scale).reshape(-1, 4))
        n = 1 if b is None else len(b)
        p = l_ = None
        if points is not None:
            p = torch.from_numpy(points * scale)[None]
            l_ = torch.from_numpy(labels)[None]
        logits, iou = self.model.decode(emb.expand(n, -1, -1), skip.expand(n, -1, -1, -1), p, l_, b)
        if (h, w) != (s, s):
            logits = F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)
        return logits, iou

    def predict(self, image, boxes=None, points=None, point_labels=None, multimask=True):
        pts, lab = _points(points, point_labels)
        logits, iou = self._decode(image, _one_box(boxes), pts, lab)
        sel = slice(1, None) if multimask else slice(0, 1)
        return (logits[0, sel] > 0).numpy(), iou[0, sel].numpy()

    def features(self, image) -> np.ndarray:
        """The image embedding as a (g, g, C) float32 grid (what the decoder attends to)."""
        emb, _, _, _ = self._embed(image)
        g = int(round(emb.shape[1] ** 0.5))
        return emb[0].reshape(g, g, -1).numpy()

    def predict_boxes(self, image, boxes):
        """Single-mask predictions (K, H, W) bool of K boxes (K, 4), decoded as one batch."""
        b = np.asarray(boxes, np.float32).reshape(-1, 4)
        if not len(b):
            return np.zeros((0, *np.shape(image)[:2]), bool)
        logits, _ = self._decode(image, b, None, None)
        return (logits[:, 0] > 0).numpy()

    @torch.no_grad()
    def generate(self, image):
        emb, skip, s, (h, w) = self._embed(image)
        g = self.grid
        gy, gx = np.meshgrid(np.arange(g), np.arange(g), indexing="ij")
        pts = np.stack([(gx.ravel() + 0.5) * s / g, (gy.ravel() + 0.5) * s / g], 1).astype(np.float32)
        n = len(pts)  # all grid prompts in one batch on the cached embedding
        logits, iou = self.model.decode(emb.expand(n, -1, -1), skip.expand(n, -1, -1, -1),
                                        torch.from_numpy(pts)[:, None], torch.ones(n, 1, dtype=torch.long))
        logits, iou = logits[:, 1:], iou[:, 1:]  # the multimask candidates
        stab = (logits > 1.0).sum((-2, -1)).float() / (logits > -1.0).sum((-2, -1)).float().clamp_min(1)
        if (h, w) != (s, s):
            logits = F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)
        masks = (logits > 0).reshape(-1, h, w).numpy()
        ok = ((iou >= self.pred_iou_thresh) & (stab >= self.stability_thresh)).reshape(-1).numpy()
        ok &= masks.reshape(len(masks), -1).sum(1) >= self.min_area
        if not ok.any():
            return np.zeros((0, h, w), bool), np.zeros(0, np.float32)
        ms, sc = masks[ok], iou.reshape(-1).numpy()[ok].astype(np.float32)
        keep = mask_nms(ms, sc, self.nms_thresh)
        return ms[keep], sc[keep]


def save_builtin(model: PromptSegmenter, path: str | Path) -> Path:
    """Save ``model`` for :meth:`BuiltinSegmenter.from_checkpoint`."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"config": model.config.to_dict(), "state_dict": model.state_dict()}, p)
    return p


class SamSegmenter:
    """A segment-anything ``SamPredictor`` or a sam2 ``SAM2ImagePredictor`` behind the protocol.

    Both take ``set_image(uint8 (H, W, 3) RGB)`` and ``predict(point_coords (K, 2) xy, point_labels
    (K,), box (4,) xyxy, multimask_output)`` → (masks (C, H, W), quality (C,), low-res logits).
    ``generator``: the package's automatic mask generator (``generate(image)`` → list of dicts with
    ``segmentation`` and ``predicted_iou``), or None.
    """

    def __init__(self, *, predictor, generator=None) -> None:
        self.predictor, self.generator = predictor, generator
        self._key: str | None = None

    def _set(self, image: np.ndarray) -> None:
        img = np.ascontiguousarray(image)
        key = hashlib.sha1(img.tobytes()).hexdigest() + str(img.shape)
        if key != self._key:
            self.predictor.set_image(img)
            self._key = key

    def predict(self, image, boxes=None, points=None, point_labels=None, multimask=True):
        self._set(image)
        pts, lab = _points(points, point_labels)
        masks, scores, _ = self.predictor.predict(point_coords=pts, point_labels=lab, box=_one_box(boxes),
                                                  multimask_output=multimask)
        return np.asarray(masks).astype(bool), np.asarray(scores, np.float32)

    def features(self, image) -> np.ndarray:
        """The predictor's image embedding (1, C, h, w) as an (h, w, C) float32 grid."""
        self._set(image)
        emb = self.predictor.get_image_embedding()
        emb = emb.detach().float().cpu().numpy() if hasattr(emb, "detach") else np.asarray(emb, np.float32)
        return np.ascontiguousarray(emb[0].transpose(1, 2, 0))

    def generate(self, image):
        if self.generator is None:
            raise ValueError("this SAM segmenter has no automatic mask generator: drop 'auto' from --prompts")
        anns = self.generator.generate(np.ascontiguousarray(image))
        h, w = np.asarray(image).shape[:2]
        if not anns:
            return np.zeros((0, h, w), bool), np.zeros(0, np.float32)
        return (np.stack([np.asarray(a["segmentation"], bool) for a in anns]),
                np.asarray([a.get("predicted_iou", 1.0) for a in anns], np.float32))


_SAM_TYPES = ("vit_h", "vit_l", "vit_b")
_SAM2_CFGS = {"tiny": "t", "small": "s", "base_plus": "b+", "large": "l"}


def load_segmenter(spec: str, *, device: str = "cpu"):
    """``sam:CKPT`` (segment-anything; model type from the file name, e.g. sam_vit_b_01ec64.pth) or
    ``sam2:CKPT`` (sam2; config from the name, e.g. sam2.1_hiera_tiny.pt) → :class:`SamSegmenter`."""
    kind, _, ckpt = spec.partition(":")
    if kind not in ("sam", "sam2") or not ckpt:
        raise ValueError(f"--segmenter must be builtin, sam:CKPT or sam2:CKPT, got {spec!r}")
    if not Path(ckpt).is_file():
        raise FileNotFoundError(f"{ckpt} not found: pass the path of a downloaded {kind} checkpoint")
    name = Path(ckpt).name
    if kind == "sam":
        try:
            from segment_anything import SamAutomaticMaskGenerator, SamPredictor, sam_model_registry
        except ImportError as e:
            raise ImportError("sam:CKPT needs segment-anything: pip install segment-anything") from e
        mtype = next((t for t in _SAM_TYPES if t in name), None)
        if mtype is None:
            raise ValueError(f"cannot tell the SAM model type of {name}: its name must contain vit_b, vit_l or vit_h")
        sam = sam_model_registry[mtype](checkpoint=ckpt).to(device)
        return SamSegmenter(predictor=SamPredictor(sam), generator=SamAutomaticMaskGenerator(sam))
    try:
        from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator
        from sam2.build_sam import build_sam2
        from sam2.sam2_image_predictor import SAM2ImagePredictor
    except ImportError as e:
        raise ImportError("sam2:CKPT needs sam2: pip install sam2") from e
    size = next((s for s in _SAM2_CFGS if f"hiera_{s}" in name), None)
    if size is None:
        raise ValueError(f"cannot tell the SAM 2 size of {name}: its name must contain hiera_tiny/small/base_plus/large")
    ver = "sam2.1" if name.startswith("sam2.1") else "sam2"
    model = build_sam2(f"configs/{ver}/{ver}_hiera_{_SAM2_CFGS[size]}.yaml", ckpt, device=device)
    return SamSegmenter(predictor=SAM2ImagePredictor(model), generator=SAM2AutomaticMaskGenerator(model))
