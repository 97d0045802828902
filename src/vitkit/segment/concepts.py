"""Context-dependent concept sets for the promptable evaluation, rendered by :mod:`vitkit.data.scenes`.

Each concept is a scene ``target`` with its own exact ground truth (``scene.target``, every
labelled pixel): ``salient`` (one vivid object on a muted background), ``camouflaged`` (one object
painted with the background's texture), ``defects`` (scratches, spots, cracks on metal, wood or
fabric), ``lesions`` (low-contrast soft blobs on a tissue texture).

Video clips (:func:`render_clip`): a scene rendered at 1.5 × the frame side, seen through a
frame-sized window that pans along a straight line with a little jitter, so the objects move
across the frames (camera motion; objects do not move against their background). The path keeps
the target's centre inside the central 60 % of the window on the first frame; it may leave later.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..data.scenes import SceneConfig, render_scene

CONCEPTS = ("salient", "camouflaged", "defects", "lesions")
EVAL_SEED_OFFSET = 1000  # evaluation scenes come from scene seed ``seed + 1000``: never the training scenes'
SHOTS_FIRST = 100_000  # in-context prompt images: scene indices from here on, never an evaluated image or clip


@dataclass
class ConceptSet:
    """``n`` images of one concept: images (N, S, S, 3) uint8, truths (N, S, S) bool."""

    concept: str
    images: np.ndarray
    truths: np.ndarray


def check_concepts(concepts: list[str] | tuple[str, ...]) -> list[str]:
    """The concept names, validated (one-line error naming the bad one)."""
    bad = [c for c in concepts if c not in CONCEPTS]
    if bad or not concepts:
        raise ValueError(f"--concepts must be a comma list of {', '.join(CONCEPTS)}; got {','.join(concepts) or '∅'}")
    return list(concepts)


def render_concept(concept: str, n: int, *, seed: int = 0, size: int = 64, first: int = 0) -> ConceptSet:
    """``n`` images of ``concept`` (scene seed ``seed + EVAL_SEED_OFFSET``, scene indices from
    ``first`` on), skipping empty truths."""
    check_concepts([concept])
    cfg = SceneConfig(target=concept)
    images, truths = [], []
    i = first
    while len(images) < n:
        s = render_scene(seed + EVAL_SEED_OFFSET, i, size=size, config=cfg)
        i += 1
        if s.target.any():
            images.append(s.image)
            truths.append(s.target)
    return ConceptSet(concept, np.stack(images) if images else np.zeros((0, size, size, 3), np.uint8),
                      np.stack(truths) if truths else np.zeros((0, size, size), bool))


def render_clip(concept: str, index: int, *, seed: int = 0, size: int = 64, frames: int = 8,
                speed: float = 0.06) -> tuple[np.ndarray, np.ndarray]:
    """One clip: frames (T, S, S, 3) uint8 and truths (T, S, S) bool; the window moves ``speed`` × S
    per frame along a random direction (seeded by ``(seed, index)``)."""
    check_concepts([concept])
    big = int(round(1.5 * size))
    i = index
    while True:  # the first scene of this index onwards with a target
        s = render_scene(seed + EVAL_SEED_OFFSET, 50_000 + i, size=big, config=SceneConfig(target=concept))
        if s.target.any():
            break
        i += 1
    rng = np.random.default_rng([seed, index, 99])
    ys, xs = np.nonzero(s.target)
    centre = np.array([xs.mean(), ys.mean()])
    lo = np.clip(centre - 0.8 * size, 0, big - size)
    hi = np.clip(centre - 0.2 * size, 0, big - size)
    start = rng.uniform(lo, np.maximum(hi, lo))
    angle = rng.uniform(0, 2 * np.pi)
    step = speed * size * np.array([np.cos(angle), np.sin(angle)])
    imgs, truths = [], []
    for t in range(frames):
        off = np.clip(start + t * step + rng.normal(0, 0.5, 2), 0, big - size).round().astype(int)
        x0, y0 = int(off[0]), int(off[1])
        imgs.append(s.image[y0 : y0 + size, x0 : x0 + size])
        truths.append(s.target[y0 : y0 + size, x0 : x0 + size])
    return np.stack(imgs), np.stack(truths)
