"""Training of :class:`~.promptable_model.PromptSegmenter` on rendered scenes (instance masks).

The training scenes are the plain object scenes of :mod:`vitkit.data.scenes` (no context-dependent
target: the camouflaged, salient, defect and lesion concepts stay unseen, as SAM never trained on
them); a share of them is rendered larger and cropped back (scale jitter,
:func:`render_training_scenes`), so that objects of a salient object's size are not rare. Each image
gives ``prompts_per_image`` instances; each step is either a box step (the instance's box with SAM's
training noise: every coordinate ± N(0, ``box_noise`` × side), capped at 2 × that) or a point step
(1–3 positive points in the instance, 0–2 negative points in its box outside it). The loss, SAM's: BCE + Dice on the single-mask output, plus the minimum over the 3
multimask candidates (only the best candidate learns, which lets them specialise), plus the MSE of
the predicted IoUs against the actual IoU of each thresholded candidate.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..data.scenes import SceneConfig, render_scene
from ..progress import progress_bar
from .promptable_model import PromptSegConfig, PromptSegmenter

log = logging.getLogger(__name__)
MAX_POINTS = 5  # prompt tokens per point set (3 positive + 2 negative; shorter sets are padded)


@dataclass
class PromptTrainConfig:
    """One training run. Defaults: 760 s of training at 2 threads on a 2-core CPU (≈ 0.15 s a step), and the
    whole default ``vitkit segment evaluate`` in 13 min 34 s there (benchmarks/RESULTS.md); fewer steps
    lose salient box IoU (4,500: 0.842 against 0.861)."""

    model: PromptSegConfig = field(default_factory=PromptSegConfig)
    scenes: int = 5000  # training scenes (≈ 20 s to render; 32 epochs at the default steps, as 3,000 at 3,000 steps)
    # optimiser steps (≈ 0.15–0.22 CPU-s each at batch 32 on one core): the loss was still falling at 3,000;
    # 5,000 with 5,000 scenes took salient box IoU 0.831 → 0.869 on seed 1 (benchmarks/RESULTS.md)
    steps: int = 5000
    batch_size: int = 32  # images per step
    prompts_per_image: int = 2  # instances (prompt sets) per image and step
    lr: float = 2e-3  # AdamW, linear warm-up then cosine (1e-3 learnt slower: validation box IoU 0.42 vs 0.49 at 250 steps)
    warmup: int = 100
    weight_decay: float = 0.01
    box_noise: float = 0.1  # SAM's box jitter (× box side)
    # scale jitter: this share of the scenes is rendered at z × the side, z ~ U(1, zoom), and cropped
    # back to a random side × side window, so the segmenter also sees objects up to zoom × larger
    # than the plain scenes' (their median object covers ≈ 110 px of 64², too few patches to learn
    # an object's extent from)
    zoom: float = 2.0
    zoom_share: float = 0.5
    min_pixels: int = 8  # instances cut by the crop to fewer pixels are not prompted
    seed: int = 0  # scenes (seed of the scene renderer), initialisation, sampling

    def to_dict(self) -> dict:
        return asdict(self)


def crop_window(image: np.ndarray, instance: np.ndarray, size: int, rng: np.random.Generator,
                min_pixels: int) -> tuple[np.ndarray, np.ndarray]:
    """A random ``size`` × ``size`` window of image (H, W, 3) and instance map (H, W) (H, W ≥ size);
    instances left with fewer than ``min_pixels`` pixels in it are set to 0 (never prompted)."""
    h, w = instance.shape
    y0, x0 = int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))
    img, ins = image[y0 : y0 + size, x0 : x0 + size], instance[y0 : y0 + size, x0 : x0 + size].copy()
    ks, counts = np.unique(ins, return_counts=True)
    for k, c in zip(ks, counts, strict=True):
        if k > 0 and c < min_pixels:
            ins[ins == k] = 0
    return img, ins


def render_training_scenes(cfg: PromptTrainConfig, *, progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The training scenes: images (N, S, S, 3) uint8 and instance maps (N, S, S) uint8, S =
    ``cfg.model.size``; a share ``cfg.zoom_share`` of them rendered larger and cropped (scale jitter)."""
    size, n = cfg.model.size, cfg.scenes
    rng = np.random.default_rng([cfg.seed, 23])
    images = np.zeros((n, size, size, 3), np.uint8)
    inst = np.zeros((n, size, size), np.uint8)
    scene_cfg = SceneConfig()
    with progress_bar(progress) as bar:
        task = bar.add_task("rendering scenes", total=n)
        for i in range(n):
            z = float(rng.uniform(1.0, cfg.zoom)) if cfg.zoom > 1 and rng.random() < cfg.zoom_share else 1.0
            side = max(size, int(round(size * z)))
            s = render_scene(cfg.seed, i, size=side, config=scene_cfg)
            if side == size:
                images[i], inst[i] = s.image, s.instance
            else:
                images[i], inst[i] = crop_window(s.image, s.instance, size, rng, cfg.min_pixels)
            bar.advance(task)
    return images, inst


class InstancePixels(NamedTuple):
    """Where one instance of an (S, S) instance map lies, row-major: its pixels (ys, xs), the pixels of
    its bounding box that are not its own (ny, nx), absolute coordinates, and the box (x0, y0, x1, y1)."""

    ys: np.ndarray
    xs: np.ndarray
    ny: np.ndarray
    nx: np.ndarray
    box: tuple[int, int, int, int]


def instance_pixels(instance: np.ndarray, k: int) -> InstancePixels:
    """The :class:`InstancePixels` of instance ``k`` (present) in an (S, S) instance map."""
    m = instance == k
    ys, xs = np.nonzero(m)
    x0, y0, x1, y1 = int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())
    ny, nx = np.nonzero(~m[y0 : y1 + 1, x0 : x1 + 1])
    # int16: a training run keeps these for every instance of every scene (coordinates < 2¹⁵)
    small = np.int16 if max(instance.shape) <= np.iinfo(np.int16).max else np.int64
    return InstancePixels(ys.astype(small), xs.astype(small), (ny + y0).astype(small), (nx + x0).astype(small),
                          (x0, y0, x1, y1))


class InstanceIndex:
    """Instance ids and :class:`InstancePixels` of a stack of (N, S, S) instance maps, found on first
    use and kept: training draws every scene about ``steps × batch / N`` (≈ 30) times, and finding an
    instance's pixels is most of what drawing its prompt costs."""

    def __init__(self, instances: np.ndarray) -> None:
        self.instances = instances
        self._ids: dict[int, np.ndarray] = {}
        self._pixels: dict[tuple[int, int], InstancePixels] = {}

    def ids(self, i: int) -> np.ndarray:
        """The instance ids (> 0, ascending) of scene ``i``."""
        if i not in self._ids:
            ks = np.unique(self.instances[i])
            self._ids[i] = ks[ks > 0]
        return self._ids[i]

    def pixels(self, i: int, k: int) -> InstancePixels:
        """Instance ``k`` of scene ``i``."""
        if (i, k) not in self._pixels:
            self._pixels[i, k] = instance_pixels(self.instances[i], k)
        return self._pixels[i, k]


def sample_prompt(px: InstancePixels, size: int, rng: np.random.Generator, box: bool, box_noise: float):
    """Prompt for the instance at ``px`` in an (S, S) image, S = ``size``: a jittered box (4,) float, or
    points (MAX_POINTS, 2) ``(x, y)`` with labels (MAX_POINTS,) (−1 = padding). Returns (box, pts, labels)
    (box None for points)."""
    x0, y0, x1, y1 = px.box
    pts = np.zeros((MAX_POINTS, 2), np.float32)
    labels = np.full(MAX_POINTS, -1, np.int64)
    if box:
        # four numbers: Python floats (float64, as numpy would compute them) cost far less than arrays
        cap, w, h = 2 * box_noise, x1 - x0 + 1, y1 - y0 + 1
        nx0, ny0, nx1, ny1 = (min(max(v, -cap), cap) for v in rng.normal(0, box_noise, 4).tolist())
        ax, ay = min(max(x0 + nx0 * w, 0), size - 1), min(max(y0 + ny0 * h, 0), size - 1)
        bx_, by_ = min(max(x1 + nx1 * w, 0), size - 1), min(max(y1 + ny1 * h, 0), size - 1)
        return np.array([min(ax, bx_), min(ay, by_), max(ax, bx_), max(ay, by_)], np.float32), pts, labels
    n_pos = int(rng.integers(1, 4))
    idx = rng.integers(0, len(px.ys), n_pos)
    pts[:n_pos, 0], pts[:n_pos, 1] = px.xs[idx], px.ys[idx]
    labels[:n_pos] = 1
    n_neg = int(rng.integers(0, 3)) if len(px.ny) else 0
    if n_neg:
        j = rng.integers(0, len(px.ny), n_neg)
        pts[n_pos : n_pos + n_neg, 0], pts[n_pos : n_pos + n_neg, 1] = px.nx[j], px.ny[j]
        labels[n_pos : n_pos + n_neg] = 0
    return None, pts, labels


def mask_loss(logits: Tensor, target: Tensor) -> Tensor:
    """Per-sample BCE + soft Dice: logits (..., S, S), target (..., S, S) float → (...)."""
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none").mean((-2, -1))
    p = logits.sigmoid()
    dice = 1 - (2 * (p * target).sum((-2, -1)) + 1) / (p.sum((-2, -1)) + target.sum((-2, -1)) + 1)
    return bce + dice


def segmenter_loss(masks: Tensor, iou_pred: Tensor, target: Tensor) -> Tensor:
    """SAM's loss for mask logits (B, 4, S, S), IoU predictions (B, 4), target (B, S, S) bool."""
    t = target.float().unsqueeze(1).expand_as(masks)
    per = mask_loss(masks, t)  # (B, 4)
    with torch.no_grad():
        hard = masks > 0
        inter = (hard & t.bool()).sum((-2, -1)).float()
        union = (hard | t.bool()).sum((-2, -1)).float().clamp_min(1)
        iou = inter / union
    return per[:, 0].mean() + per[:, 1:].min(1).values.mean() + F.mse_loss(iou_pred, iou)


def train_prompt_segmenter(cfg: PromptTrainConfig, *, progress: bool = True, checkpoint: str | Path | None = None,
                           time_budget_s: float | None = None,
                           callback: Callable[[int, PromptSegmenter], None] | None = None,
                           ) -> tuple[PromptSegmenter, dict]:
    """Train a :class:`PromptSegmenter`; returns it (eval mode) and {losses, seconds, steps done, config}.

    ``checkpoint``: a file that holds the training state (model, optimiser, schedule, sampler); an
    existing one is resumed, and it is rewritten every 50 steps and at the end, so an interrupted
    run continues where it stopped (the same steps as an uninterrupted one, up to the sampler's
    position). ``time_budget_s``: stop after this many seconds of training (``info["done"]`` says
    whether all ``cfg.steps`` ran); resume with the same checkpoint. ``callback(steps_done, model)``:
    called every 50 steps (a learning curve; the model is back in training mode afterwards).
    """
    t0, c0 = time.perf_counter(), time.process_time()
    images_u8, inst = render_training_scenes(cfg, progress=progress)
    t_render = time.perf_counter() - t0
    images = torch.from_numpy(images_u8).permute(0, 3, 1, 2).float() / 255
    valid = [i for i in range(len(inst)) if inst[i].max() > 0]
    index = InstanceIndex(inst)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng([cfg.seed, 17])
    model = PromptSegmenter(config=cfg.model)
    # foreach: one kernel per step for all ~150 tensors instead of a loop (the same numbers, a checked
    # equality; ≈ 3 ms a step less at this model size, where the per-tensor loop is a visible share)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, foreach=True)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / cfg.warmup) * 0.5 * (
        1 + np.cos(np.pi * min(s, cfg.steps) / cfg.steps)))
    history: list[float] = []
    start = 0
    ck = Path(checkpoint) if checkpoint is not None else None
    if ck is not None and ck.is_file():
        state = torch.load(ck, map_location="cpu", weights_only=False)
        if state["config"] != cfg.to_dict():
            raise ValueError(f"{ck} was written by another training config: delete it or use the same settings")
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        rng.bit_generator.state = state["rng"]
        torch.set_rng_state(state["torch_rng"])
        start, history = state["step"], state["history"]
        log.info("resuming the promptable segmenter's training at step %d from %s", start, ck)

    def save(step: int) -> None:
        if ck is not None:
            ck.parent.mkdir(parents=True, exist_ok=True)
            torch.save({"config": cfg.to_dict(), "model": model.state_dict(), "opt": opt.state_dict(),
                        "sched": sched.state_dict(), "rng": rng.bit_generator.state,
                        "torch_rng": torch.get_rng_state(), "step": step, "history": history}, ck)

    model.train()
    t_train = time.perf_counter()
    step = start
    with progress_bar(progress) as bar:
        task = bar.add_task("training the promptable segmenter", total=cfg.steps, completed=start)
        for step in range(start, cfg.steps):
            if time_budget_s is not None and time.perf_counter() - t_train > time_budget_s:
                break
            idx = rng.choice(valid, cfg.batch_size, replace=len(valid) < cfg.batch_size)
            box = step % 2 == 0
            targets, boxes, pts, labels, owner = [], [], [], [], []
            for j, i in enumerate(idx):
                ks = index.ids(int(i))
                for k in rng.choice(ks, min(cfg.prompts_per_image, len(ks)), replace=False):
                    b, p, lab = sample_prompt(index.pixels(int(i), int(k)), cfg.model.size, rng, box, cfg.box_noise)
                    targets.append(inst[i] == k)
                    boxes.append(b)
                    pts.append(p)
                    labels.append(lab)
                    owner.append(j)
            emb, skip = model.embed(images[torch.as_tensor(idx)])
            own = torch.as_tensor(owner)
            if box:
                masks, iou = model.decode(emb[own], skip[own], boxes=torch.as_tensor(np.stack(boxes)))
            else:
                masks, iou = model.decode(emb[own], skip[own], torch.as_tensor(np.stack(pts)),
                                          torch.as_tensor(np.stack(labels)))
            loss = segmenter_loss(masks, iou, torch.as_tensor(np.stack(targets)))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0, foreach=True)
            opt.step()
            sched.step()
            history.append(float(loss.detach()))
            bar.advance(task)
            if (step + 1) % 50 == 0:
                save(step + 1)
                if callback is not None:
                    model.eval()
                    callback(step + 1, model)
                    model.train()
        else:
            step = cfg.steps
    save(step)
    model.eval()
    info = {"steps_done": step, "done": step >= cfg.steps, "loss_first50": float(np.mean(history[:50])),
            "loss_last50": float(np.mean(history[-50:])),
            "render_s": round(t_render, 1), "train_s": round(time.perf_counter() - t0 - t_render, 1),
            "cpu_s": round(time.process_time() - c0, 1),  # this call's CPU time (rendering included)
            "config": cfg.to_dict()}
    log.info("promptable segmenter: loss %.3f → %.3f in %.0f s", info["loss_first50"], info["loss_last50"],
             info["train_s"])
    return model, info
