"""What an FRB protocol returns: :class:`ProtocolResult`, the confusion matrix and per-font accuracy."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["ProtocolResult", "as_int", "confusion_matrix", "per_class_accuracy", "protocol_result"]


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


def as_int(value: Any, what: str) -> int:
    """``value`` as an int; a ``ValueError`` naming ``what`` for a bool or a non-integer."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ValueError(f"{what} must be an int, got {value!r}")
    return int(value)


def confusion_matrix(targets: Sequence[int], preds: Sequence[int], num_classes: int) -> np.ndarray:
    """``(K, K)`` int64 counts: ``[i, j]`` = number of samples of class ``i`` predicted as ``j``."""
    k = as_int(num_classes, "num_classes")
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


def protocol_result(
    protocol: str,
    split: str,
    targets: Sequence[int],
    preds: Sequence[int],
    class_names: Sequence[str],
    *,
    options: list[tuple[int, ...]] | None = None,
    params: dict[str, Any] | None = None,
) -> ProtocolResult:
    """A :class:`ProtocolResult` from the true and predicted labels (indices into ``class_names``)."""
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
