"""Input checks and batched inference shared by the FRB protocols (:mod:`vitkit.frb.protocols`).

Batches of ``batch_size`` transformed images are stacked to ``(B, 3, H, W)``, moved to ``device``
when one is given, and passed to the callable under :func:`torch.inference_mode`; what it returns
(a tensor or an array) is brought back to the CPU as float ``(B, C)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..progress import progress_bar
from .render import FRBSample
from .results import as_int

__all__ = [
    "ArrayLike",
    "BatchFn",
    "Transform",
    "as_matrix",
    "batched_logits",
    "check_class_names",
    "check_samples",
    "embed_samples",
    "infer_split",
    "run_batches",
]

#: Above this many batches, progress is shown by default (``progress=None``).
_PROGRESS_MIN_BATCHES = 20

Transform = Callable[[Image.Image], torch.Tensor]
BatchFn = Callable[[torch.Tensor], Any]
ArrayLike = torch.Tensor | np.ndarray | Sequence[Sequence[float]]


def check_class_names(class_names: Sequence[str]) -> list[str]:
    """``class_names`` as a non-empty list of distinct strings."""
    names = [str(n) for n in class_names]
    if not names:
        raise ValueError("class_names is empty")
    if len(set(names)) != len(names):
        raise ValueError(f"class_names must be distinct, got {names}")
    return names


def check_samples(
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


def infer_split(samples: Sequence[FRBSample], split: str | None) -> str:
    """``split`` if given, else the samples' common split (``"mixed"`` if they differ)."""
    if split is not None:
        return str(split)
    splits = {str(getattr(s, "split", "")) for s in samples}
    return splits.pop() if len(splits) == 1 else "mixed"


def _check_batch_size(batch_size: int) -> int:
    b = as_int(batch_size, "batch_size")
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


def run_batches(
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
    return run_batches(fn, list(samples), transform, batch_size, device, progress, description, "fn")


def batched_logits(
    logits_fn: BatchFn,
    samples: Sequence[FRBSample],
    transform: Transform,
    batch_size: int,
    device: str | torch.device | None,
    progress: bool | None,
    num_classes: int,
    description: str,
) -> torch.Tensor:
    """:func:`run_batches` of ``logits_fn``, checked to give ``num_classes`` columns: ``(N, K)``."""
    logits = run_batches(logits_fn, samples, transform, batch_size, device, progress, description, "logits_fn")
    if logits.shape[1] != num_classes:
        raise ValueError(
            f"logits_fn returned logits over {logits.shape[1]} classes: expected {num_classes} "
            f"(one per class name), got {logits.shape[1]}"
        )
    return logits


def as_matrix(value: ArrayLike, what: str) -> torch.Tensor:
    """``value`` as a CPU float32 ``(rows, D)`` tensor without NaN; errors name ``what``."""
    t = torch.as_tensor(value).detach().to(device="cpu", dtype=torch.float32)
    if t.ndim != 2:
        raise ValueError(f"{what} must be a 2-D (rows, D) array, got shape {tuple(t.shape)}")
    if torch.isnan(t).any():
        raise ValueError(f"{what} contains NaN")
    return t
