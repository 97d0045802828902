"""One detector API over the OOD scores: ``fit`` on training data, ``score`` new inputs, ``save``/``load``.

Every detector scores so that a higher value means "more in-distribution". Logit detectors (MSP,
max-logit, energy) take classifier logits (B, K); feature detectors (KNN, Mahalanobis, MoLAR) take
pooled backbone features (B, D). ``fit`` accepts a tensor (with ``labels`` where needed) or an
iterable of batches ``x`` or ``(x, y)`` (a DataLoader), optionally mapped through ``extractor``
(e.g. a backbone's feature function). A fitted detector remembers its input dimension and refuses
inputs of another one. ``save`` writes one safetensors file whose metadata holds the detector's
name and JSON config; :func:`load_detector` rebuilds it.

    det = make_detector("knn", k=10).fit(train_features)
    scores = det.score(test_features)          # (B,), higher = known
    det.save("knn.safetensors"); det = load_detector("knn.safetensors")
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor

from ..registry import Registry
from . import scores

log = logging.getLogger(__name__)

__all__ = [
    "DETECTORS",
    "DETECTOR_NAMES",
    "Detector",
    "EnergyDetector",
    "KNNDetector",
    "MSPDetector",
    "MahalanobisDetector",
    "MaxLogitDetector",
    "collect",
    "load_detector",
    "make_detector",
    "register_detector",
]

FORMAT = "vitkit-ood-detector/1"


def collect(data: Tensor | Iterable, labels: Tensor | None = None,
            extractor: Callable[[Tensor], Tensor] | None = None) -> tuple[Tensor, Tensor | None]:
    """A tensor, or batches ``x`` / ``(x, y, …)`` of an iterable → (inputs (N, D), labels (N,) or None).

    ``extractor`` (applied without gradients) maps each batch, e.g. images to features.
    """
    if isinstance(data, Tensor):
        xs, ys = [data], None
        if extractor is not None:
            with torch.no_grad():
                xs = [extractor(data)]
    else:
        xs, ys = [], []
        for batch in data:
            if isinstance(batch, list | tuple):
                xb, yb = batch[0], (batch[1] if len(batch) > 1 else None)
            else:
                xb, yb = batch, None
            if extractor is not None:
                with torch.no_grad():
                    xb = extractor(xb)
            xs.append(torch.as_tensor(xb))
            if yb is not None:
                ys.append(torch.as_tensor(yb))
        if not xs:
            raise ValueError("data is an empty iterable: pass at least one batch of training inputs")
        ys = torch.cat(ys) if ys else None
    x = torch.cat(xs).detach().float()
    if labels is not None:
        if ys is not None:
            raise ValueError("labels given twice: as `labels` and inside the batches of `data`; pass one")
        ys = torch.as_tensor(labels)
    if x.dim() != 2:
        raise ValueError(f"data must be (N, D) features or logits, got shape {tuple(x.shape)}")
    if ys is not None:
        ys = ys.reshape(-1).long()
        if len(ys) != len(x):
            raise ValueError(f"labels has {len(ys)} entries but data has {len(x)} rows: they must match")
    return x, ys


@dataclass
class NoConfig:
    pass


#: name → detector class, filled by :func:`register_detector` where each is defined (vitkit.ood imports them all)
DETECTORS: Registry[type] = Registry("detector")
#: the same registry: iterating it gives the detector names
DETECTOR_NAMES = DETECTORS


def register_detector(name: str):
    """Class decorator: file a :class:`Detector` subclass under ``name`` (and set its ``name``)."""

    def add(cls: type) -> type:
        cls.name = name
        return DETECTORS.register(name)(cls)

    return add


class Detector:
    """Base class: subclasses are decorated with :func:`register_detector`, set ``input`` ('logits' |
    'features') and ``Config``, and implement ``_fit(x, y)``, ``_score(x)``, ``_tensors()`` and
    ``_restore(tensors)``."""

    name: ClassVar[str] = ""
    input: ClassVar[str] = "features"
    needs_labels: ClassVar[bool] = False
    Config: ClassVar[type] = NoConfig

    def __init__(self, cfg: Any | None = None, **kwargs) -> None:
        if cfg is None:
            allowed = {f.name for f in fields(self.Config)}
            bad = sorted(set(kwargs) - allowed)
            if bad:
                raise ValueError(f"unknown option(s) {bad} for detector {self.name!r}; allowed: {sorted(allowed)}")
            cfg = self.Config(**kwargs)
        elif kwargs:
            raise ValueError("pass either a config object or keyword options, not both")
        self.cfg = cfg
        self.dim: int | None = None

    # -- public API -------------------------------------------------------------------------
    def fit(self, data: Tensor | Iterable, labels: Tensor | None = None, *,
            extractor: Callable[[Tensor], Tensor] | None = None) -> Detector:
        """Fit on training inputs (N, D) (see :func:`collect`); returns self."""
        x, y = collect(data, labels, extractor)
        if self.needs_labels and y is None:
            raise ValueError(f"detector {self.name!r} needs class labels: pass labels= or (x, y) batches")
        if len(x) == 0:
            raise ValueError("no training inputs: data has 0 rows")
        self.dim = int(x.shape[1])
        self._fit(x, y)
        log.info("fitted %s on %d × %d %s", self.name, len(x), self.dim, self.input)
        return self

    @torch.no_grad()
    def score(self, x: Tensor) -> Tensor:
        """Inputs (B, D) → scores (B,), higher = more in-distribution."""
        if self.dim is None:
            raise ValueError(f"detector {self.name!r} is not fitted: call fit() or load_detector() first")
        x = torch.as_tensor(x)
        if x.dim() != 2 or x.shape[1] != self.dim:
            raise ValueError(
                f"detector {self.name!r} was fitted on {self.input} of dimension {self.dim} but got shape "
                f"{tuple(x.shape)}: score {self.input} of the same model/layer it was fitted on, or refit")
        return self._score(x.float())

    def save(self, path: str | Path) -> Path:
        """Write the fitted state to one safetensors file (config and name in its metadata)."""
        from safetensors.torch import save_file

        if self.dim is None:
            raise ValueError(f"detector {self.name!r} is not fitted: nothing to save")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().contiguous().clone() for k, v in self._tensors().items()}
        meta = {"format": FORMAT, "detector": self.name, "dim": str(self.dim), "config": json.dumps(asdict(self.cfg))}
        save_file(tensors, str(path), metadata=meta)
        return path

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.cfg}, dim={self.dim})"

    # -- subclass hooks -----------------------------------------------------------------------
    def _fit(self, x: Tensor, y: Tensor | None) -> None:
        pass

    def _score(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def _tensors(self) -> dict[str, Tensor]:
        return {"dim": torch.tensor([self.dim])}

    def _restore(self, tensors: dict[str, Tensor]) -> None:
        pass


@register_detector("msp")
class MSPDetector(Detector):
    """Maximum softmax probability of the classifier's logits."""

    input = "logits"

    def _score(self, x: Tensor) -> Tensor:
        return scores.msp(x)


@register_detector("max_logit")
class MaxLogitDetector(Detector):
    """Maximum logit."""

    input = "logits"

    def _score(self, x: Tensor) -> Tensor:
        return scores.max_logit(x)


@dataclass
class EnergyConfig:
    temperature: float = 1.0

    def __post_init__(self) -> None:
        if not self.temperature > 0:
            raise ValueError(f"temperature={self.temperature} must be > 0")


@register_detector("energy")
class EnergyDetector(Detector):
    """Negative free energy T·logsumexp(logits / T)."""

    input, Config = "logits", EnergyConfig

    def _score(self, x: Tensor) -> Tensor:
        return scores.energy(x, self.cfg.temperature)


@dataclass
class KNNConfig:
    k: int = 10

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ValueError(f"k={self.k} must be >= 1")


@register_detector("knn")
class KNNDetector(Detector):
    """Cosine similarity to the k-th nearest of ALL normalised training features (Sun et al. 2022)."""

    input, Config = "features", KNNConfig

    def _fit(self, x: Tensor, y: Tensor | None) -> None:
        if self.cfg.k > len(x):
            raise ValueError(f"k={self.cfg.k} is larger than the {len(x)} training features: use k <= {len(x)}")
        self.bank = torch.nn.functional.normalize(x, dim=-1)

    def _score(self, x: Tensor) -> Tensor:
        return scores.knn_score(x, self.bank, self.cfg.k, bank_normalized=True)

    def _tensors(self) -> dict[str, Tensor]:
        return {"bank": self.bank}

    def _restore(self, t: dict[str, Tensor]) -> None:
        self.bank = t["bank"]


@register_detector("mahalanobis")
class MahalanobisDetector(Detector):
    """Negative minimum Mahalanobis distance to the class means under a shared covariance."""

    input, needs_labels = "features", True

    def _fit(self, x: Tensor, y: Tensor | None) -> None:
        k = int(y.max()) + 1
        missing = sorted(set(range(k)) - set(y.unique().tolist()))
        if missing:
            raise ValueError(f"labels must cover 0..{k - 1}; classes {missing} have no training sample")
        self.means, self.precision = scores.class_statistics(x, y, k)

    def _score(self, x: Tensor) -> Tensor:
        out = []
        for i in range(0, len(x), 1024):
            out.append(scores.mahalanobis_score(x[i : i + 1024], self.means, self.precision))
        return torch.cat(out) if out else x.new_zeros(0)

    def _tensors(self) -> dict[str, Tensor]:
        return {"means": self.means, "precision": self.precision}

    def _restore(self, t: dict[str, Tensor]) -> None:
        self.means, self.precision = t["means"], t["precision"]


def make_detector(name: str, **options) -> Detector:
    """A detector by name (one of :data:`DETECTORS`) with its config options."""
    return DETECTORS.lookup(name)(**options)


def load_detector(path: str | Path) -> Detector:
    """Rebuild a detector written by :meth:`Detector.save`."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file, safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"detector file {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise ValueError(f"{path}: not a readable safetensors file ({e})") from e
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path}: not a vitkit OOD detector (metadata 'format' is {meta.get('format')!r}, "
                         f"expected {FORMAT!r}); write it with Detector.save or `vitkit ood fit`")
    name = meta.get("detector")
    if name not in DETECTORS:
        raise ValueError(f"{path}: unknown detector {name!r}; known: {list(DETECTORS)}")
    cls = DETECTORS[name]
    try:
        det = cls(cls.Config(**json.loads(meta.get("config", "{}"))))
    except TypeError as e:
        raise ValueError(f"{path}: config does not fit detector {name!r} ({e})") from e
    det.dim = int(meta["dim"])
    det._restore(tensors)
    return det
