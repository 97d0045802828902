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
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from vitkit.data import frb
from vitkit.data.frb import FONT_NAMES, FRBSample
from vitkit.progress import progress_bar

if TYPE_CHECKING:
    from vitkit.models.clip import CLIP

__all__ = [
    "FONT_TEMPLATES",
    "LETTERS",
    "PAPER_RESULTS",
    "ProtocolResult",
    "clip_zero_shot",
    "confusion_matrix",
    "embed_samples",
    "evaluate_classifier",
    "evaluate_few_shot",
    "evaluate_multiple_choice",
    "evaluate_zero_shot",
    "letter_exemplars",
    "multiple_choice_options",
    "per_class_accuracy",
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

#: Above this many batches, progress is shown by default (``progress=None``).
_PROGRESS_MIN_BATCHES = 20

Transform = Callable[[Image.Image], torch.Tensor]
BatchFn = Callable[[torch.Tensor], Any]
ArrayLike = torch.Tensor | np.ndarray | Sequence[Sequence[float]]


# --------------------------------------------------------------------------------------------
# Results and metrics
# --------------------------------------------------------------------------------------------


@dataclass
class ProtocolResult:
    """Outcome of one protocol on one split.

    ``per_class`` maps each font that occurs in ``targets`` to its accuracy (fonts without samples
    are left out). ``confusion[i, j]`` counts samples of font ``i`` predicted as font ``j``.
    ``options`` (multiple choice only) holds each sample's offered fonts, in offer order.
    ``params`` records the protocol's settings (``n_options``, ``seed``, ``k``, ``logit_scale``,
    ``templates`` ...).
    """

    protocol: str
    split: str
    accuracy: float
    per_class: dict[str, float]
    confusion: np.ndarray
    class_names: list[str]
    predictions: list[int]
    targets: list[int]
    options: list[tuple[int, ...]] | None = None
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def n(self) -> int:
        """Number of evaluated samples."""
        return len(self.targets)

    @property
    def correct(self) -> int:
        """Number of correctly classified samples."""
        return int(np.trace(self.confusion))

    @property
    def chance(self) -> float:
        """Accuracy of uniform guessing: ``1 / n_options`` for multiple choice, else ``1 / K``."""
        n_options = self.params.get("n_options")
        return 1.0 / (n_options if n_options else len(self.class_names))

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable summary (the confusion matrix as nested lists of ints)."""
        out: dict[str, Any] = {
            "protocol": self.protocol,
            "split": self.split,
            "n": self.n,
            "accuracy": float(self.accuracy),
            "chance": self.chance,
            "per_class": {k: float(v) for k, v in self.per_class.items()},
            "confusion": [[int(v) for v in row] for row in self.confusion.tolist()],
            "class_names": list(self.class_names),
            "predictions": [int(p) for p in self.predictions],
            "targets": [int(t) for t in self.targets],
            "params": _jsonable(self.params),
        }
        if self.options is not None:
            out["options"] = [[int(o) for o in opts] for opts in self.options]
        return out

    def __str__(self) -> str:
        return (
            f"{self.protocol} on {self.split}: {100 * self.accuracy:.2f}% "
            f"({self.correct}/{self.n}, chance {100 * self.chance:.2f}%)"
        )


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _as_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ValueError(f"{what} must be an int, got {value!r}")
    return int(value)


def confusion_matrix(targets: Sequence[int], preds: Sequence[int], num_classes: int) -> np.ndarray:
    """``(K, K)`` int64 counts: ``[i, j]`` = number of samples of class ``i`` predicted as ``j``."""
    k = _as_int(num_classes, "num_classes")
    if k < 1:
        raise ValueError(f"num_classes must be >= 1, got {k}")
    t = np.asarray(targets, dtype=np.int64).reshape(-1)
    p = np.asarray(preds, dtype=np.int64).reshape(-1)
    if t.shape != p.shape:
        raise ValueError(f"targets and preds differ in length: {t.size} vs {p.size}")
    for name, arr in (("targets", t), ("preds", p)):
        if arr.size and (arr.min() < 0 or arr.max() >= k):
            raise ValueError(f"{name} must lie in 0..{k - 1}, got values {arr.min()}..{arr.max()}")
    cm = np.zeros((k, k), dtype=np.int64)
    np.add.at(cm, (t, p), 1)
    return cm


def per_class_accuracy(confusion: np.ndarray, class_names: Sequence[str]) -> dict[str, float]:
    """Accuracy per class (diagonal / row sum) from a confusion matrix; empty rows are left out."""
    cm = np.asarray(confusion)
    k = len(class_names)
    if cm.shape != (k, k):
        raise ValueError(f"confusion must be {k}x{k} (one row per class name), got shape {cm.shape}")
    support = cm.sum(axis=1)
    return {str(class_names[i]): float(cm[i, i] / support[i]) for i in range(k) if support[i] > 0}


def _result(
    protocol: str,
    split: str,
    targets: Sequence[int],
    preds: Sequence[int],
    class_names: Sequence[str],
    *,
    options: list[tuple[int, ...]] | None = None,
    params: dict[str, Any] | None = None,
) -> ProtocolResult:
    cm = confusion_matrix(targets, preds, len(class_names))
    return ProtocolResult(
        protocol=protocol,
        split=split,
        accuracy=float(np.trace(cm) / max(len(targets), 1)),
        per_class=per_class_accuracy(cm, class_names),
        confusion=cm,
        class_names=list(class_names),
        predictions=[int(p) for p in preds],
        targets=[int(t) for t in targets],
        options=options,
        params=dict(params or {}),
    )


# --------------------------------------------------------------------------------------------
# Input checks and batched inference
# --------------------------------------------------------------------------------------------


def _check_class_names(class_names: Sequence[str]) -> list[str]:
    names = [str(n) for n in class_names]
    if not names:
        raise ValueError("class_names is empty")
    if len(set(names)) != len(names):
        raise ValueError(f"class_names must be distinct, got {names}")
    return names


def _check_samples(
    samples: Iterable[FRBSample], num_classes: int, what: str = "samples"
) -> tuple[list[FRBSample], list[int]]:
    """Validate ``samples`` (non-empty, each with an image and a label in range).

    Returns them as a list (any iterable is accepted) and their labels.
    """
    if samples is None or isinstance(samples, FRBSample | Image.Image | str):
        raise ValueError(f"{what} must be a sequence of FRBSample, got {type(samples).__name__}")
    samples = list(samples)
    if not samples:
        raise ValueError(f"{what} is empty: nothing to evaluate")
    labels = []
    for i, s in enumerate(samples):
        if not isinstance(getattr(s, "image", None), Image.Image):
            raise ValueError(f"{what}[{i}] has no PIL image (.image)")
        label = getattr(s, "label", None)
        if isinstance(label, bool) or not isinstance(label, int | np.integer) or not 0 <= label < num_classes:
            raise ValueError(f"{what}[{i}] has label {label!r}; expected an int in 0..{num_classes - 1}")
        labels.append(int(label))
    return samples, labels


def _infer_split(samples: Sequence[FRBSample], split: str | None) -> str:
    if split is not None:
        return str(split)
    splits = {str(getattr(s, "split", "")) for s in samples}
    return splits.pop() if len(splits) == 1 else "mixed"


def _check_batch_size(batch_size: int) -> int:
    b = _as_int(batch_size, "batch_size")
    if b < 1:
        raise ValueError(f"batch_size must be >= 1, got {b}")
    return b


def _to_cpu_2d(out: Any, rows: int, what: str) -> torch.Tensor:
    """A callable's output as a CPU float32 ``(rows, C)`` tensor."""
    if isinstance(out, tuple | list) and out and isinstance(out[0], torch.Tensor):
        raise ValueError(f"{what} returned a {type(out).__name__} of tensors; return a single (B, C) tensor")
    t = torch.as_tensor(out).detach()
    if t.ndim != 2 or t.shape[0] != rows:
        raise ValueError(
            f"{what} must return a ({rows}, C) array for a batch of {rows}, got shape {tuple(t.shape)}"
        )
    t = t.to(device="cpu", dtype=torch.float32)
    if torch.isnan(t).any():
        raise ValueError(f"{what} returned NaN")
    return t


def _run(
    fn: BatchFn,
    samples: Sequence[FRBSample],
    transform: Transform,
    batch_size: int,
    device: str | torch.device | None,
    progress: bool | None,
    description: str,
    what: str,
) -> torch.Tensor:
    """Batched inference shared by the protocols (see :func:`embed_samples`)."""
    if samples is None or len(samples) == 0:
        raise ValueError("samples is empty: nothing to evaluate")
    bs = _check_batch_size(batch_size)
    n = len(samples)
    n_batches = math.ceil(n / bs)
    enabled = n_batches > _PROGRESS_MIN_BATCHES if progress is None else bool(progress)
    outputs: list[torch.Tensor] = []
    width: int | None = None
    with progress_bar(enabled) as bar, torch.inference_mode():
        task = bar.add_task(description, total=n_batches)
        for start in range(0, n, bs):
            chunk = samples[start : start + bs]
            tensors = []
            for j, s in enumerate(chunk):
                x = transform(s.image)
                if not isinstance(x, torch.Tensor) or x.ndim != 3:
                    shape = tuple(x.shape) if hasattr(x, "shape") else type(x).__name__
                    raise ValueError(
                        f"transform must return a (3, H, W) tensor, got {shape} for sample {start + j}"
                    )
                tensors.append(x)
            try:
                batch = torch.stack(tensors)
            except RuntimeError as e:
                raise ValueError(
                    f"transform returned tensors of different shapes in one batch: {e}"
                ) from None
            if device is not None:
                batch = batch.to(device)
            out = _to_cpu_2d(fn(batch), len(chunk), what)
            if width is not None and out.shape[1] != width:
                raise ValueError(f"{what} returned {out.shape[1]} columns after {width} in earlier batches")
            width = out.shape[1]
            outputs.append(out)
            bar.advance(task)
    return torch.cat(outputs)


def embed_samples(
    fn: BatchFn,
    samples: Iterable[FRBSample],
    *,
    transform: Transform,
    batch_size: int = 32,
    device: str | torch.device | None = None,
    progress: bool | None = None,
    description: str = "embedding",
) -> torch.Tensor:
    """Run ``fn`` over ``samples`` in batches: returns the stacked outputs, CPU float32 ``(N, C)``.

    This is the batched inference every protocol uses; call it directly to precompute (and cache)
    exemplar embeddings for :func:`evaluate_few_shot`. ``progress=None`` shows a rich progress
    bar only when there are more than 20 batches.
    """
    if samples is None or isinstance(samples, FRBSample | Image.Image | str):
        raise ValueError(f"samples must be a sequence of FRBSample, got {type(samples).__name__}")
    return _run(fn, list(samples), transform, batch_size, device, progress, description, "fn")


def _logits(
    logits_fn: BatchFn,
    samples: Sequence[FRBSample],
    transform: Transform,
    batch_size: int,
    device: str | torch.device | None,
    progress: bool | None,
    num_classes: int,
    description: str,
) -> torch.Tensor:
    logits = _run(logits_fn, samples, transform, batch_size, device, progress, description, "logits_fn")
    if logits.shape[1] != num_classes:
        raise ValueError(
            f"logits_fn returned logits over {logits.shape[1]} classes: expected {num_classes} "
            f"(one per class name), got {logits.shape[1]}"
        )
    return logits


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
    names = _check_class_names(class_names)
    samples, targets = _check_samples(samples, len(names))
    logits = _logits(logits_fn, samples, transform, batch_size, device, progress, len(names), protocol)
    preds = logits.argmax(dim=1).tolist()
    return _result(protocol, _infer_split(samples, split), targets, preds, names)


def multiple_choice_options(
    labels: Sequence[int], n_options: int = 4, num_classes: int = len(FONT_NAMES), seed: int = 0
) -> list[tuple[int, ...]]:
    """The option sets of the multiple-choice protocol, one per label, in offer order.

    One ``random.Random(seed)`` stream is consumed in label order: for each label ``y`` it draws
    ``n_options - 1`` distinct distractors with ``rng.sample`` from the other classes (ascending),
    appends ``y`` and shuffles with ``rng.shuffle``. The result depends only on ``(labels,
    n_options, num_classes, seed)``, so every model sees the same questions.
    """
    k = _as_int(num_classes, "num_classes")
    n_opt = _as_int(n_options, "n_options")
    seed = _as_int(seed, "seed")
    if not 2 <= n_opt <= k:
        raise ValueError(f"n_options must be in [2, {k}] (the number of classes), got {n_opt}")
    rng = random.Random(seed)
    out = []
    for i, y in enumerate(labels):
        y = _as_int(y, f"labels[{i}]")
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
    names = _check_class_names(class_names)
    k = len(names)
    n_opt = _as_int(n_options, "n_options")
    if not 2 <= n_opt <= k:
        raise ValueError(f"n_options must be in [2, {k}] (the number of classes), got {n_opt}")
    samples, targets = _check_samples(samples, k)
    options = multiple_choice_options(targets, n_opt, k, seed)
    logits = _logits(logits_fn, samples, transform, batch_size, device, progress, k, protocol).numpy()
    preds = []
    for row, opts in zip(logits, options, strict=True):
        scores = row[list(opts)]
        preds.append(opts[int(np.argmax(scores))])  # np.argmax: first maximum
    return _result(
        protocol,
        _infer_split(samples, split),
        targets,
        preds,
        names,
        options=options,
        params={"n_options": n_opt, "seed": int(seed)},
    )


# --------------------------------------------------------------------------------------------
# Zero-shot
# --------------------------------------------------------------------------------------------


def _matrix(value: ArrayLike, what: str) -> torch.Tensor:
    t = torch.as_tensor(value).detach().to(device="cpu", dtype=torch.float32)
    if t.ndim != 2:
        raise ValueError(f"{what} must be a 2-D (rows, D) array, got shape {tuple(t.shape)}")
    if torch.isnan(t).any():
        raise ValueError(f"{what} contains NaN")
    return t


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
    names = _check_class_names(class_names)
    k = len(names)
    cls = _matrix(class_embeds, "class_embeds")
    if cls.shape[0] != k:
        raise ValueError(
            f"class_embeds must have one row per class name: expected {k} rows, got {cls.shape[0]}"
        )
    scale = float(logit_scale)
    if not math.isfinite(scale) or scale <= 0:
        raise ValueError(f"logit_scale must be a positive finite number, got {logit_scale!r}")
    samples, targets = _check_samples(samples, k)
    img = _run(image_embed_fn, samples, transform, batch_size, device, progress, protocol, "image_embed_fn")
    if img.shape[1] != cls.shape[1]:
        raise ValueError(
            f"image_embed_fn returned {img.shape[1]}-d embeddings but class_embeds are "
            f"{cls.shape[1]}-d: expected {cls.shape[1]}, got {img.shape[1]}"
        )
    logits = scale * F.normalize(img, dim=-1) @ F.normalize(cls, dim=-1).t()
    preds = logits.argmax(dim=1).tolist()
    return _result(
        protocol, _infer_split(samples, split), targets, preds, names, params={"logit_scale": scale}
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

    names = _check_class_names(class_names)
    samples, _ = _check_samples(samples, len(names))
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

    780 images, font-major (label order) then letter order (:func:`vitkit.data.frb.letter_split`):
    in the paper layout size 80 on a tight canvas, JPEG; ``label`` = font index, ``text`` = the
    letter, ``split`` = ``"letters"``. Deterministic.
    """
    return frb.letter_split(LETTERS, layout)


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
    names = _check_class_names(class_names)
    n_classes = len(names)
    samples, targets = _check_samples(samples, n_classes)
    exemplars, ex_labels = _check_samples(exemplars, n_classes, "exemplars")
    k = _as_int(k, "k")
    if not 1 <= k <= len(exemplars):
        raise ValueError(f"k must be in [1, {len(exemplars)}] (the number of exemplars), got {k}")
    if exemplar_embeds is None:
        ex = _run(embed_fn, exemplars, transform, batch_size, device, progress, "exemplars", "embed_fn")
    else:
        ex = _matrix(exemplar_embeds, "exemplar_embeds")
        if ex.shape[0] != len(exemplars):
            raise ValueError(
                f"exemplar_embeds must have one row per exemplar: expected {len(exemplars)} rows, got {ex.shape[0]}"
            )
    q = _run(embed_fn, samples, transform, batch_size, device, progress, protocol, "embed_fn")
    if q.shape[1] != ex.shape[1]:
        raise ValueError(
            f"query embeddings are {q.shape[1]}-d but exemplar embeddings are {ex.shape[1]}-d: "
            f"expected {ex.shape[1]}, got {q.shape[1]}"
        )
    sims = F.normalize(q, dim=-1) @ F.normalize(ex, dim=-1).t()
    preds = _vote(sims, torch.tensor(ex_labels), k, n_classes)
    return _result(
        protocol,
        _infer_split(samples, split),
        targets,
        preds,
        names,
        params={"k": k, "n_exemplars": len(exemplars)},
    )
