"""FRB evaluation protocols: classifier, multiple choice, zero-shot and few-shot (retrieval).

The protocols take plain callables, so any model that maps a batch of images to logits or to
embeddings can be evaluated, not only vitkit's:

* :func:`evaluate_classifier` -- ``logits_fn(batch) -> (B, K)``, prediction = argmax over all
  ``K`` fonts;
* :func:`evaluate_multiple_choice` -- the same ``logits_fn``, but each sample offers only
  ``n_options`` fonts (the true one and ``n_options - 1`` distractors drawn reproducibly with
  ``random.Random(seed)``, see :func:`multiple_choice_options`); prediction = the offered font with
  the highest logit;
* :func:`evaluate_zero_shot` -- ``image_embed_fn(batch) -> (B, D)`` and one embedding per class
  ``(K, D)``; prediction = the class of highest cosine similarity. :func:`clip_zero_shot` wires up
  a vitkit :class:`~vitkit.models.clip.CLIP` with the prompt templates :data:`FONT_TEMPLATES`;
* :func:`evaluate_few_shot` -- ``embed_fn(batch) -> (B, D)``; each query is classified by a
  similarity-weighted vote of its ``k`` nearest exemplars (by default the 52 single-letter images
  per font of :func:`letter_exemplars`, as in the paper).

Every protocol needs ``transform(PIL.Image) -> (3, H, W) float tensor`` (how the caller's model
preprocesses, e.g. ``functools.partial(vitkit.data.preprocess, cfg=model.preprocess)``). Batches of
``batch_size`` transformed images are stacked to ``(B, 3, H, W)``, moved to ``device`` when one is
given, and passed to the callable under :func:`torch.inference_mode`; what it returns (a tensor or
an array) is brought back to the CPU as float. The callables are used as given: put a model in
eval mode first (:func:`clip_zero_shot` does that itself and restores the mode).

Every protocol returns a :class:`ProtocolResult` with the accuracy, per-font accuracy, the
confusion matrix (rows = true font, columns = predicted font) and the raw predictions.
"""

from __future__ import annotations

import math
import random
import string
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .batching import (
    ArrayLike,
    BatchFn,
    Transform,
    as_matrix,
    batched_logits,
    check_class_names,
    check_samples,
    infer_split,
    run_batches,
)
from .fontset import FONT_NAMES
from .render import FRBSample
from .results import ProtocolResult, as_int, protocol_result
from .splits import letter_split

if TYPE_CHECKING:
    from vitkit.models.clip import CLIP

__all__ = [
    "FONT_TEMPLATES",
    "LETTERS",
    "PAPER_RESULTS",
    "clip_zero_shot",
    "evaluate_classifier",
    "evaluate_few_shot",
    "evaluate_multiple_choice",
    "evaluate_zero_shot",
    "letter_exemplars",
    "multiple_choice_options",
]

#: Prompt templates for CLIP zero-shot font recognition (``{}`` = the font's name).
FONT_TEMPLATES: tuple[str, ...] = (
    "text written in the {} font.",
    "a sample of the {} typeface.",
    "the font of this text is {}.",
)
#: The 52 letters of the few-shot exemplars, in exemplar order: a-z, then A-Z.
LETTERS: str = string.ascii_lowercase + string.ascii_uppercase

#: The paper's published accuracies (fractions) on its own FRB images: model → split → protocol.
#: Protocols: "zero_shot", "zero_shot_cot" (chain of thought), "multiple_choice" (4 options).
PAPER_RESULTS: dict[str, dict[str, dict[str, float]]] = {
    "GPT-4o": {"easy": {"zero_shot": 0.2467, "zero_shot_cot": 0.3067, "multiple_choice": 0.6667},
               "hard": {"zero_shot": 0.1244, "zero_shot_cot": 0.1511, "multiple_choice": 0.2711}},
    "Claude-3.5-Sonnet": {"easy": {"zero_shot": 0.3133}, "hard": {"zero_shot": 0.0844}},
    "Llama-3.2-11B": {"easy": {"zero_shot": 0.1867}, "hard": {"zero_shot": 0.1333}},
}


# --------------------------------------------------------------------------------------------
# Classifier and multiple choice
# --------------------------------------------------------------------------------------------


def evaluate_classifier(
    logits_fn: BatchFn,
    samples: Sequence[FRBSample],
    *,
    transform: Transform,
    batch_size: int = 32,
    split: str | None = None,
    class_names: Sequence[str] = FONT_NAMES,
    protocol: str = "classifier",
    device: str | torch.device | None = None,
    progress: bool | None = None,
) -> ProtocolResult:
    """K-way classification: prediction = argmax of ``logits_fn(batch)`` ``(B, K)`` (first on ties).

    ``K = len(class_names)``; sample labels index ``class_names``. ``split`` defaults to the
    samples' common ``split`` (``"mixed"`` if they differ).
    """
    names = check_class_names(class_names)
    samples, targets = check_samples(samples, len(names))
    logits = batched_logits(logits_fn, samples, transform, batch_size, device, progress, len(names), protocol)
    preds = logits.argmax(dim=1).tolist()
    return protocol_result(protocol, infer_split(samples, split), targets, preds, names)


def multiple_choice_options(
    labels: Sequence[int], n_options: int = 4, num_classes: int = len(FONT_NAMES), seed: int = 0
) -> list[tuple[int, ...]]:
    """The option sets of the multiple-choice protocol, one per label, in offer order.

    One ``random.Random(seed)`` stream is consumed in label order: for each label ``y`` it draws
    ``n_options - 1`` distinct distractors with ``rng.sample`` from the other classes (ascending),
    appends ``y`` and shuffles with ``rng.shuffle``. The result depends only on ``(labels,
    n_options, num_classes, seed)``, so every model sees the same questions.
    """
    k = as_int(num_classes, "num_classes")
    n_opt = as_int(n_options, "n_options")
    seed = as_int(seed, "seed")
    if not 2 <= n_opt <= k:
        raise ValueError(f"n_options must be in [2, {k}] (the number of classes), got {n_opt}")
    rng = random.Random(seed)
    out = []
    for i, y in enumerate(labels):
        y = as_int(y, f"labels[{i}]")
        if not 0 <= y < k:
            raise ValueError(f"labels[{i}] = {y} is outside 0..{k - 1}")
        opts = rng.sample([c for c in range(k) if c != y], n_opt - 1) + [y]
        rng.shuffle(opts)
        out.append(tuple(opts))
    return out


def evaluate_multiple_choice(
    logits_fn: BatchFn,
    samples: Sequence[FRBSample],
    *,
    transform: Transform,
    n_options: int = 4,
    seed: int = 0,
    batch_size: int = 32,
    split: str | None = None,
    class_names: Sequence[str] = FONT_NAMES,
    protocol: str = "multiple_choice",
    device: str | torch.device | None = None,
    progress: bool | None = None,
) -> ProtocolResult:
    """Multiple choice: each sample offers its true font and ``n_options - 1`` distractors.

    Option sets come from :func:`multiple_choice_options` (seeded, identical for every model) and
    are stored in ``result.options``. ``logits_fn`` scores all ``K`` classes; the prediction is the
    offered class with the highest logit (ties go to the one offered first). Chance = 1/n_options.
    """
    names = check_class_names(class_names)
    k = len(names)
    n_opt = as_int(n_options, "n_options")
    if not 2 <= n_opt <= k:
        raise ValueError(f"n_options must be in [2, {k}] (the number of classes), got {n_opt}")
    samples, targets = check_samples(samples, k)
    options = multiple_choice_options(targets, n_opt, k, seed)
    logits = batched_logits(logits_fn, samples, transform, batch_size, device, progress, k, protocol).numpy()
    preds = []
    for row, opts in zip(logits, options, strict=True):
        scores = row[list(opts)]
        preds.append(opts[int(np.argmax(scores))])  # np.argmax: first maximum
    return protocol_result(
        protocol,
        infer_split(samples, split),
        targets,
        preds,
        names,
        options=options,
        params={"n_options": n_opt, "seed": int(seed)},
    )


# --------------------------------------------------------------------------------------------
# Zero-shot
# --------------------------------------------------------------------------------------------


def evaluate_zero_shot(
    image_embed_fn: BatchFn,
    class_embeds: ArrayLike,
    samples: Sequence[FRBSample],
    *,
    transform: Transform,
    logit_scale: float = 100.0,
    batch_size: int = 32,
    split: str | None = None,
    class_names: Sequence[str] = FONT_NAMES,
    protocol: str = "zero_shot",
    device: str | torch.device | None = None,
    progress: bool | None = None,
) -> ProtocolResult:
    """Zero-shot: prediction = the class whose embedding is most cosine-similar to the image's.

    ``image_embed_fn(batch) -> (B, D)``; ``class_embeds`` ``(K, D)``, one row per class name (e.g.
    text embeddings of prompts). Both sides are L2-normalised; logits = ``logit_scale * cos`` (the
    scale does not change the argmax and is recorded in ``params``).
    """
    names = check_class_names(class_names)
    k = len(names)
    cls = as_matrix(class_embeds, "class_embeds")
    if cls.shape[0] != k:
        raise ValueError(
            f"class_embeds must have one row per class name: expected {k} rows, got {cls.shape[0]}"
        )
    scale = float(logit_scale)
    if not math.isfinite(scale) or scale <= 0:
        raise ValueError(f"logit_scale must be a positive finite number, got {logit_scale!r}")
    samples, targets = check_samples(samples, k)
    img = run_batches(image_embed_fn, samples, transform, batch_size, device, progress, protocol, "image_embed_fn")
    if img.shape[1] != cls.shape[1]:
        raise ValueError(
            f"image_embed_fn returned {img.shape[1]}-d embeddings but class_embeds are "
            f"{cls.shape[1]}-d: expected {cls.shape[1]}, got {img.shape[1]}"
        )
    logits = scale * F.normalize(img, dim=-1) @ F.normalize(cls, dim=-1).t()
    preds = logits.argmax(dim=1).tolist()
    return protocol_result(
        protocol, infer_split(samples, split), targets, preds, names, params={"logit_scale": scale}
    )


def clip_zero_shot(
    model: CLIP,
    samples: Sequence[FRBSample],
    templates: Sequence[str] = FONT_TEMPLATES,
    *,
    class_names: Sequence[str] = FONT_NAMES,
    batch_size: int = 32,
    split: str | None = None,
    transform: Transform | None = None,
    protocol: str = "zero_shot",
    progress: bool | None = None,
) -> ProtocolResult:
    """Zero-shot FRB with a vitkit CLIP: class embeddings from prompt ``templates``.

    Class embeddings are :func:`~vitkit.models.clip.text_classifier_weights` (the renormalised
    mean over templates); images go through ``model.preprocess`` (via
    :func:`vitkit.data.transforms.preprocess`, unless ``transform`` is given) and
    ``model.encode_image`` on the model's device and dtype; logit scale = ``model.logit_scale.exp()``.
    The model needs a tokenizer. It is put in eval mode for the run and its mode is restored after.
    """
    from vitkit.data.transforms import preprocess
    from vitkit.models.clip import text_classifier_weights

    names = check_class_names(class_names)
    samples, _ = check_samples(samples, len(names))
    if transform is None:
        cfg = getattr(model, "preprocess", None)
        if cfg is None:
            raise ValueError(
                "model.preprocess is None: pass transform=..., or load the model with its preprocess config"
            )

        def transform(img: Image.Image) -> torch.Tensor:
            return preprocess(img, cfg)

    param = model.logit_scale
    dtype = next(model.visual.parameters()).dtype

    def encode(batch: torch.Tensor) -> torch.Tensor:
        return model.encode_image(batch.to(dtype))

    was_training = model.training
    model.eval()
    try:
        class_embeds = text_classifier_weights(model, names, list(templates))
        result = evaluate_zero_shot(
            encode,
            class_embeds,
            samples,
            transform=transform,
            logit_scale=float(param.detach().exp()),
            batch_size=batch_size,
            split=split,
            class_names=names,
            protocol=protocol,
            device=param.device,
            progress=progress,
        )
    finally:
        model.train(was_training)
    result.params["templates"] = list(templates)
    return result


# --------------------------------------------------------------------------------------------
# Few-shot retrieval over single-letter exemplars
# --------------------------------------------------------------------------------------------


def letter_exemplars(layout: str = "paper") -> list[FRBSample]:
    """The few-shot exemplars: each of the 52 :data:`LETTERS` (a-z, A-Z) alone, in every font.

    780 images, font-major (label order) then letter order (:func:`vitkit.frb.splits.letter_split`):
    in the paper layout size 80 on a tight canvas, JPEG; ``label`` = font index, ``text`` = the
    letter, ``split`` = ``"letters"``. Deterministic.
    """
    return letter_split(LETTERS, layout)


def _vote(sims: torch.Tensor, labels: torch.Tensor, k: int, num_classes: int) -> list[int]:
    """Similarity-weighted k-NN vote (see :func:`evaluate_few_shot`)."""
    order = torch.sort(sims, dim=1, descending=True, stable=True).indices[:, :k]  # ties: lower index first
    preds = []
    for row, idx in zip(sims.double(), order, strict=True):
        top_labels = labels[idx].tolist()
        weights = ((1.0 + row[idx]) / 2.0).clamp(min=0.0).tolist()
        scores = [0.0] * num_classes
        for c, w in zip(top_labels, weights, strict=True):
            scores[c] += w
        best = max(scores[c] for c in top_labels)
        preds.append(next(c for c in top_labels if scores[c] == best))  # tie: the nearer neighbour's class
    return preds


def evaluate_few_shot(
    embed_fn: BatchFn,
    samples: Sequence[FRBSample],
    exemplars: Sequence[FRBSample],
    *,
    transform: Transform,
    k: int = 5,
    exemplar_embeds: ArrayLike | None = None,
    batch_size: int = 32,
    split: str | None = None,
    class_names: Sequence[str] = FONT_NAMES,
    protocol: str = "few_shot",
    device: str | torch.device | None = None,
    progress: bool | None = None,
) -> ProtocolResult:
    """Few-shot by retrieval: classify each query by its ``k`` most similar exemplars.

    Queries (``samples``) and ``exemplars`` (e.g. :func:`letter_exemplars`) are embedded with
    ``embed_fn(batch) -> (B, D)`` and L2-normalised. Pass ``exemplar_embeds`` (``(len(exemplars),
    D)``, e.g. from :func:`embed_samples`) to skip embedding the exemplars; their labels still come
    from ``exemplars``.

    Vote rule: take the ``k`` exemplars of highest cosine similarity ``s`` (equal similarities:
    the earlier exemplar first). Each votes for its label with weight ``(1 + s) / 2`` in [0, 1]
    (cosine mapped to be non-negative, so an extra neighbour never lowers its class's score). The
    class with the largest total weight wins; among tied classes, the one of the nearest
    neighbour wins. ``k=1`` is nearest-neighbour classification.
    """
    names = check_class_names(class_names)
    n_classes = len(names)
    samples, targets = check_samples(samples, n_classes)
    exemplars, ex_labels = check_samples(exemplars, n_classes, "exemplars")
    k = as_int(k, "k")
    if not 1 <= k <= len(exemplars):
        raise ValueError(f"k must be in [1, {len(exemplars)}] (the number of exemplars), got {k}")
    if exemplar_embeds is None:
        ex = run_batches(embed_fn, exemplars, transform, batch_size, device, progress, "exemplars", "embed_fn")
    else:
        ex = as_matrix(exemplar_embeds, "exemplar_embeds")
        if ex.shape[0] != len(exemplars):
            raise ValueError(
                f"exemplar_embeds must have one row per exemplar: expected {len(exemplars)} rows, got {ex.shape[0]}"
            )
    q = run_batches(embed_fn, samples, transform, batch_size, device, progress, protocol, "embed_fn")
    if q.shape[1] != ex.shape[1]:
        raise ValueError(
            f"query embeddings are {q.shape[1]}-d but exemplar embeddings are {ex.shape[1]}-d: "
            f"expected {ex.shape[1]}, got {q.shape[1]}"
        )
    sims = F.normalize(q, dim=-1) @ F.normalize(ex, dim=-1).t()
    preds = _vote(sims, torch.tensor(ex_labels), k, n_classes)
    return protocol_result(
        protocol,
        infer_split(samples, split),
        targets,
        preds,
        names,
        params={"k": k, "n_exemplars": len(exemplars)},
    )
