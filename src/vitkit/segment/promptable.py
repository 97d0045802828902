"""``vitkit segment evaluate``: a promptable segmenter over concept sets, prompt kinds, clean and perturbed.

:func:`run_promptable` (1) gets the segmenter: ``builtin`` trains vitkit's
:class:`~.promptable_model.PromptSegmenter` on plain scenes (or loads ``OUT/builtin.pt`` when it
exists; an interrupted training resumes from ``OUT/builtin_train.pt``), ``sam:CKPT`` /
``sam2:CKPT`` load the user's weights; (2) renders each concept set
(:mod:`.concepts`, scene seed ``seed + 1000``); (3) runs each prompt kind (box, point, auto,
context) on every image, clean and, with ``perturb``, perturbed (seeded by ``(seed, concept, image,
prompt)``; the automatic and in-context protocols have no prompt of their own to perturb; in-context
takes k = ``context_k`` annotated prompt images of the concept, rendered apart from the evaluated
ones, and scores as prompt "in-context k"); (4) the video protocol on clips: box and point
prompts on the first 1, 3, 5 frames; (5) writes ``OUT/results.json`` (per-image scores, means,
config, timing) and ``OUT/report.html`` (tables concept × prompt × metric, examples).
"""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import os
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path

import numpy as np
import torch

from ..progress import progress_bar
from .concepts import CONCEPTS, SHOTS_FIRST, check_concepts, render_clip, render_concept
from .mask_metrics import METRICS, saliency_available, score_mask
from .prompt_eval import (
    PROMPTS,
    in_context_segmenter,
    segment_automatic,
    segment_clip,
    segment_with_boxes,
    segment_with_clicks,
)
from .promptable_train import PromptTrainConfig, train_prompt_segmenter
from .segmenters import BuiltinSegmenter, load_segmenter, save_builtin

log = logging.getLogger(__name__)


@dataclass
class PromptableConfig:
    """One evaluation. Defaults: the default ``vitkit segment evaluate`` run."""

    segmenter: str = "builtin"  # builtin | sam:CKPT | sam2:CKPT
    concepts: tuple[str, ...] = CONCEPTS
    prompts: tuple[str, ...] = PROMPTS
    perturb: bool = True  # also run perturbed boxes / points
    seed: int = 0  # evaluation scenes (scene seed + 1000), perturbations, builtin training
    images: int = 40  # images per concept
    clips: int = 8  # video clips per concept (0 = no video protocol)
    frames: int = 8  # frames per clip
    video_k: tuple[int, ...] = (1, 3, 5)  # prompted first frames
    context_k: tuple[int, ...] = (1, 5, 20)  # annotated prompt images for in-context prompting (the paper: 20)
    size: int = 64  # image side (the builtin model's input side)
    train: PromptTrainConfig = field(default_factory=PromptTrainConfig)
    out_dir: str = "runs/promptable"
    progress: bool = True
    # processes for the evaluation after training, each with its own copy of the segmenter: a segmenter
    # call is many small operations that a second thread barely speeds up, a second process nearly halves
    # the evaluation on 2 cores
    workers: int = field(default_factory=lambda: min(2, os.cpu_count() or 1))

    def __post_init__(self) -> None:
        check_concepts(list(self.concepts))
        bad = [p for p in self.prompts if p not in PROMPTS]
        if bad or not self.prompts:
            raise ValueError(f"--prompts must be a comma list of {', '.join(PROMPTS)}; got {','.join(self.prompts)}")
        if self.images < 1 or self.clips < 0 or self.frames < 1 or self.seed < 0 or self.workers < 1:
            raise ValueError("--images ≥ 1, --clips ≥ 0, --frames ≥ 1, --seed ≥ 0 and --workers ≥ 1 are required")
        if not self.context_k or any(k < 1 for k in self.context_k):
            raise ValueError(f"in-context prompt image counts must be ≥ 1, got {self.context_k}")
        if any(not 1 <= k <= self.frames for k in self.video_k):
            raise ValueError(f"video prompted frames {self.video_k} must be within 1..{self.frames}")

    def to_dict(self) -> dict:
        return asdict(self)


def get_segmenter(cfg: PromptableConfig) -> tuple[object, dict]:
    """The segmenter of ``cfg`` and what it cost (training info for the builtin one)."""
    if cfg.segmenter != "builtin":
        return load_segmenter(cfg.segmenter), {"segmenter": cfg.segmenter}
    ckpt = Path(cfg.out_dir) / "builtin.pt"
    if ckpt.is_file():
        log.info("loading the trained builtin segmenter from %s", ckpt)
        return BuiltinSegmenter.from_checkpoint(ckpt), {"segmenter": "builtin", "loaded": str(ckpt)}
    # the evaluation's seed and image side win over the training config's
    train = replace(cfg.train, seed=cfg.seed, model=replace(cfg.train.model, size=cfg.size))
    # the training state is kept beside the results, so an interrupted run resumes its training
    model, info = train_prompt_segmenter(train, progress=cfg.progress, checkpoint=Path(cfg.out_dir) / "builtin_train.pt")
    save_builtin(model, ckpt)
    return BuiltinSegmenter(model=model), {"segmenter": "builtin", **{k: v for k, v in info.items() if k != "config"}}


def finite_mean(values: list[float]) -> float:
    """Mean over the finite values (NaN if none): pysodmetrics' S-measure is undefined (NaN) on some maps,
    e.g. a frame whose object touches the border so that one of its quadrants is empty."""
    a = np.asarray(values, np.float64)
    a = a[np.isfinite(a)]
    return float(a.mean()) if a.size else float("nan")


def _mean(rows: list[dict]) -> dict:
    keys = [k for k in (*METRICS, "clicks") if rows and k in rows[0]]
    return {"n": len(rows), **{k: finite_mean([r[k] for r in rows]) for k in keys}}


def _protocols(seg, img: np.ndarray, gt: np.ndarray, cfg: PromptableConfig, where: tuple[int, int],
               in_context: dict):
    """Yield (prompt name, condition, predicted mask (H, W) bool, extra scores) of every protocol of
    ``cfg`` on one image; ``where`` = (concept index, image index) seeds the perturbations;
    ``in_context``: {k: target → mask} from :func:`~.prompt_eval.in_context_segmenter`."""
    conditions = ("clean", "perturbed") if cfg.perturb else ("clean",)
    for pi, prompt in enumerate(cfg.prompts):
        if prompt == "context":
            for k, predict in in_context.items():
                yield f"in-context {k}", "clean", predict(img), {}
            continue
        for cond in conditions:
            if prompt == "auto" and cond == "perturbed":
                continue
            rng = np.random.default_rng([cfg.seed, *where, pi]) if cond == "perturbed" else None
            if prompt == "box":
                yield prompt, cond, segment_with_boxes(seg, img, gt, rng), {}
            elif prompt == "point":
                pred, clicks = segment_with_clicks(seg, img, gt, rng)
                yield prompt, cond, pred, {"clicks": clicks}
            else:
                yield prompt, cond, segment_automatic(seg, img, gt), {}


def _evaluate_images(seg, cfg: PromptableConfig, ci: int,
                     tick: Callable[[], None] | None = None) -> tuple[dict[str, list[dict]], dict]:
    """Every image protocol on concept ``cfg.concepts[ci]``: ({"concept|prompt|condition": per-image
    scores}, examples: the first 4 images, truths and predictions)."""
    concept, sal = cfg.concepts[ci], saliency_available()
    data = render_concept(concept, cfg.images, seed=cfg.seed, size=cfg.size)
    in_context = {}
    if "context" in cfg.prompts:
        shots = render_concept(concept, max(cfg.context_k), seed=cfg.seed, size=cfg.size, first=SHOTS_FIRST)
        in_context = {k: in_context_segmenter(seg, shots.images[:k], shots.truths[:k]) for k in cfg.context_k}
    per_image: dict[str, list[dict]] = {}
    examples: dict[str, list] = {"image": [], "truth": []}
    for i, (img, gt) in enumerate(zip(data.images, data.truths, strict=True)):
        for prompt, cond, pred, extra in _protocols(seg, img, gt, cfg, (ci, i), in_context):
            per_image.setdefault(f"{concept}|{prompt}|{cond}", []).append({**score_mask(pred, gt, sal), **extra})
            if i < 4:
                examples.setdefault(f"{prompt}|{cond}", []).append(pred)
        if i < 4:
            examples["image"].append(img)
            examples["truth"].append(gt)
        if tick is not None:
            tick()
    return per_image, examples


def _evaluate_clips(seg, cfg: PromptableConfig, ci: int,
                    tick: Callable[[], None] | None = None) -> dict[str, list[dict]]:
    """The video protocol on concept ``cfg.concepts[ci]``'s clips: {"concept|prompt|k|condition": per-clip
    mean scores}."""
    concept, sal = cfg.concepts[ci], saliency_available()
    conditions = ("clean", "perturbed") if cfg.perturb else ("clean",)
    video: dict[str, list[dict]] = {}
    for j in range(cfg.clips):
        frames, truths = render_clip(concept, j, seed=cfg.seed, size=cfg.size, frames=cfg.frames)
        for prompt in [p for p in cfg.prompts if p in ("box", "point")]:
            for k in cfg.video_k:
                for cond in conditions:
                    rng = np.random.default_rng([cfg.seed, ci, j, k, 7]) if cond == "perturbed" else None
                    preds = segment_clip(seg, frames, truths, k, prompt, rng)
                    scores = [score_mask(p, t, sal) for p, t in zip(preds, truths, strict=True)]
                    row = {m: finite_mean([s[m] for s in scores]) for m in scores[0]}
                    video.setdefault(f"{concept}|{prompt}|{k}|{cond}", []).append(row)
        if tick is not None:
            tick()
    return video


# the segmenter of a worker process of the evaluation pool, loaded once per process
_worker_segmenter: object | None = None


def _init_worker(segmenter: str, builtin_checkpoint: str) -> None:
    global _worker_segmenter
    torch.set_num_threads(1)  # the pool's processes are the parallelism
    _worker_segmenter = (BuiltinSegmenter.from_checkpoint(builtin_checkpoint) if segmenter == "builtin"
                         else load_segmenter(segmenter))


def _run_task(cfg: PromptableConfig, task: tuple[str, int]):
    kind, ci = task
    return (_evaluate_images if kind == "images" else _evaluate_clips)(_worker_segmenter, cfg, ci)


def _children_cpu_s() -> float:
    t = os.times()
    return t.children_user + t.children_system


def run_promptable(cfg: PromptableConfig) -> dict:
    """Run the evaluation of ``cfg``; returns the results dict also written to OUT/results.json.

    With ``cfg.workers`` > 1 the concepts' image and clip protocols run as tasks in that many spawned
    processes of one thread each (the same seeded scores as in one process)."""
    t0, c0, k0 = time.perf_counter(), time.process_time(), _children_cpu_s()
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    seg, seg_info = get_segmenter(cfg)
    t_seg = time.perf_counter() - t0
    if not saliency_available():
        log.warning("pysodmetrics is not installed: only IoU and Dice (pip install 'vitkit[promptable]')")
    n_img = len(cfg.concepts) * cfg.images
    n_vid = len(cfg.concepts) * cfg.clips
    # clips first: they are the longer tasks, so the pool does not end on one of them
    tasks = [("clips", ci) for ci in range(len(cfg.concepts)) if cfg.clips] + [
        ("images", ci) for ci in range(len(cfg.concepts))]
    done: dict[tuple[str, int], object] = {}
    with progress_bar(cfg.progress) as bar:
        task = bar.add_task("evaluating images", total=n_img)
        vtask = bar.add_task("evaluating clips", total=n_vid)
        if cfg.workers > 1 and len(tasks) > 1:
            # spawned, not forked: a fork of a process whose OpenMP pool is running can hang; an executor,
            # not a multiprocessing Pool, because a worker that cannot start breaks it instead of being
            # respawned for ever
            with ProcessPoolExecutor(min(cfg.workers, len(tasks)), mp_context=mp.get_context("spawn"),
                                     initializer=_init_worker,
                                     initargs=(cfg.segmenter, str(out / "builtin.pt"))) as pool:
                try:
                    for t, res in zip(tasks, pool.map(partial(_run_task, cfg), tasks), strict=True):
                        done[t] = res
                        bar.advance(task if t[0] == "images" else vtask,
                                    cfg.images if t[0] == "images" else cfg.clips)
                except BrokenProcessPool as e:
                    raise RuntimeError(
                        "the evaluation's worker processes died: a script that calls run_promptable needs "
                        "`if __name__ == '__main__':` around it (workers are spawned and import the script), "
                        "or use workers=1 (--workers 1)") from e
        else:
            for t in tasks:
                done[t] = (_evaluate_images(seg, cfg, t[1], lambda: bar.advance(task)) if t[0] == "images"
                           else _evaluate_clips(seg, cfg, t[1], lambda: bar.advance(vtask)))
    per_image: dict[str, list[dict]] = {}
    examples: dict[str, dict] = {}
    video: dict[str, list[dict]] = {}
    for ci, concept in enumerate(cfg.concepts):
        rows, examples[concept] = done["images", ci]
        per_image.update(rows)
        video.update(done.get(("clips", ci), {}))
    sal = saliency_available()
    results = {
        "config": cfg.to_dict(), "segmenter": seg_info, "saliency_metrics": sal,
        "oracle_notes": ["point: the best of the multimask candidates is chosen with the truth",
                         "auto: generated masks are kept by their overlap with the truth",
                         "in-context k: k annotated prompt images, no prompt on the target; a segmenter without "
                         "memory is prompted through its features (a point at the best and one at the worst match "
                         "of the concept's mean feature, PerSAM's recipe) and keeps its best-scored candidate "
                         "(no oracle)"],
        "images": {k: _mean(v) for k, v in per_image.items()},
        "video": {k: _mean(v) for k, v in video.items()},
        "per_image": per_image,
        # cpu_s: the CPU time of this process and its evaluation workers, what the wall time would be on
        # an idle core at 1 thread
        "timing": {"segmenter_s": round(t_seg, 1), "total_s": round(time.perf_counter() - t0, 1),
                   "cpu_s": round(time.process_time() - c0 + _children_cpu_s() - k0, 1)},
    }
    (out / "results.json").write_text(json.dumps(results, indent=1), encoding="utf-8")
    from .promptable_report import write_promptable_report

    write_promptable_report(out / "report.html", results, examples)
    log.info("promptable evaluation written to %s in %.0f s", out, results["timing"]["total_s"])
    return results
