"""Preprocessing: RGB ``PIL.Image`` -> normalised ``(3, H, W)`` float32 tensor (PIL + numpy, no torchvision)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from vitkit.data.images import to_rgb

__all__ = ["INTERPOLATIONS", "RESIZE_MODES", "PreprocessConfig", "preprocess", "preprocess_batch"]

#: Interpolation names accepted by :class:`PreprocessConfig` and the PIL filters they use.
INTERPOLATIONS: dict[str, Image.Resampling] = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}
#: ``shortest``: scale so the image covers ``input_size / crop_pct`` keeping aspect, then
#: center-crop ``input_size``. ``squash``: resize straight to ``input_size``, ignoring aspect.
RESIZE_MODES: tuple[str, ...] = ("shortest", "squash")


@dataclass
class PreprocessConfig:
    """How a model expects its input; ``input_size`` is ``(height, width)``."""

    input_size: tuple[int, int] = (224, 224)
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    interpolation: str = "bicubic"
    crop_pct: float = 1.0
    resize_mode: str = "shortest"

    def __post_init__(self) -> None:
        size = tuple(self.input_size)
        if len(size) != 2 or not all(_is_int(v) and v > 0 for v in size):
            raise ValueError(
                f"PreprocessConfig.input_size must be two positive ints (height, width), got {self.input_size!r}"
            )
        self.input_size = (int(size[0]), int(size[1]))
        self.mean = _three_floats("mean", self.mean)
        self.std = _three_floats("std", self.std)
        if not all(s > 0 for s in self.std):
            raise ValueError(f"PreprocessConfig.std must be positive, got {self.std!r}")
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(
                f"PreprocessConfig.interpolation must be one of {sorted(INTERPOLATIONS)}, got {self.interpolation!r}"
            )
        if (
            isinstance(self.crop_pct, bool)
            or not isinstance(self.crop_pct, int | float)
            or not 0 < self.crop_pct <= 1
        ):
            raise ValueError(f"PreprocessConfig.crop_pct must be a number in (0, 1], got {self.crop_pct!r}")
        self.crop_pct = float(self.crop_pct)
        if self.resize_mode not in RESIZE_MODES:
            raise ValueError(
                f"PreprocessConfig.resize_mode must be one of {list(RESIZE_MODES)}, got {self.resize_mode!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PreprocessConfig:
        """Build from a dict such as :meth:`to_dict` returns; missing keys take defaults."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(
                f"PreprocessConfig.from_dict: unknown keys {unknown}; known keys are {sorted(known)}"
            )
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


def _is_int(v: object) -> bool:
    return isinstance(v, int | np.integer) and not isinstance(v, bool)


def _three_floats(field: str, value: Sequence[float]) -> tuple[float, float, float]:
    try:
        out = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        out = ()
    if len(out) != 3 or not all(math.isfinite(v) for v in out):
        raise ValueError(f"PreprocessConfig.{field} must be three finite numbers (R, G, B), got {value!r}")
    return out  # type: ignore[return-value]


def _resize(img: Image.Image, cfg: PreprocessConfig) -> Image.Image:
    """Resize (and for ``shortest``, center-crop) to ``cfg.input_size``."""
    out_h, out_w = cfg.input_size
    resample = INTERPOLATIONS[cfg.interpolation]
    if cfg.resize_mode == "squash":
        return img.resize((out_w, out_h), resample=resample)
    # Scale so the image covers (out / crop_pct) on both axes, keeping the aspect ratio.
    target_h = math.floor(out_h / cfg.crop_pct)
    target_w = math.floor(out_w / cfg.crop_pct)
    w, h = img.size
    scale = max(target_h / h, target_w / w)
    new_w = max(target_w, round(w * scale))
    new_h = max(target_h, round(h * scale))
    if (new_w, new_h) != (w, h):
        img = img.resize((new_w, new_h), resample=resample)
    left = (new_w - out_w) // 2
    top = (new_h - out_h) // 2
    return img.crop((left, top, left + out_w, top + out_h))


def preprocess(img: Image.Image, cfg: PreprocessConfig) -> torch.Tensor:
    """Resize/crop ``img`` per ``cfg`` and normalise: returns float32 ``(3, H, W)``.

    Non-RGB images are converted with :func:`vitkit.data.images.to_rgb` (alpha over white).
    """
    if img.mode != "RGB":
        img = to_rgb(img)
    pixels = np.asarray(_resize(img, cfg), dtype=np.float32) / np.float32(255.0)  # (H, W, 3)
    mean = np.asarray(cfg.mean, dtype=np.float32)
    std = np.asarray(cfg.std, dtype=np.float32)
    normalised = (pixels - mean) / std
    return torch.from_numpy(np.ascontiguousarray(normalised.transpose(2, 0, 1)))


def preprocess_batch(images: Sequence[Image.Image], cfg: PreprocessConfig) -> torch.Tensor:
    """Preprocess each image and stack: returns float32 ``(B, 3, H, W)``."""
    if len(images) == 0:
        raise ValueError("preprocess_batch needs at least one image")
    return torch.stack([preprocess(img, cfg) for img in images])
