"""Types shared by the scene renderers (:mod:`vitkit.data.scenes`): config, scene, object, streams."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
from PIL import Image, ImageDraw

from . import scene_paint as paint
from .scene_shapes import CLASS_NAMES, CLASSES

TARGETS = ("camouflaged", "salient", "defects", "lesions")
SKY_DEPTH = 100.0  # metres: the sky and the wall behind everything


@dataclass(frozen=True)
class SceneConfig:
    """What to render. Every field has a default that gives the plain textured scene."""

    style: str = "textured"  # domain: textured | flat | outline
    weather: str = "clear"  # clear | fog | night | rain (computed from depth)
    fog_beta: float = 0.05  # 1/m; t = exp(−β·depth): 0.05 leaves t ≈ 0.9 at 2 m and 0.37 at 20 m
    target: str | None = None  # None | camouflaged | salient | defects | lesions
    max_classes: int = 3  # classes per image (1..10)
    max_objects: int = 4  # objects per image (≥ max_classes is not required; classes are capped by it)
    max_distractors: int = 8  # background shapes per image
    pixel_noise: float = 4.0  # ± grey levels of sensor noise (textured style)
    min_visible: float = 0.3  # drop an object with less of its in-frame area visible

    def __post_init__(self) -> None:
        if self.style not in paint.STYLES:
            raise ValueError(f"SceneConfig.style must be one of {paint.STYLES}, got {self.style!r}")
        if self.weather not in paint.WEATHERS:
            raise ValueError(f"SceneConfig.weather must be one of {paint.WEATHERS}, got {self.weather!r}")
        if self.target is not None and self.target not in TARGETS:
            raise ValueError(f"SceneConfig.target must be None or one of {TARGETS}, got {self.target!r}")
        if not 1 <= self.max_classes <= len(CLASSES):
            raise ValueError(f"SceneConfig.max_classes must be in 1..{len(CLASSES)}, got {self.max_classes}")
        if self.max_objects < 1 or self.max_distractors < 0 or self.fog_beta < 0 or self.pixel_noise < 0:
            raise ValueError("SceneConfig: max_objects ≥ 1, max_distractors ≥ 0, fog_beta ≥ 0, pixel_noise ≥ 0")
        if not 0.0 <= self.min_visible <= 1.0:
            raise ValueError(f"SceneConfig.min_visible must be in [0, 1], got {self.min_visible}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class SceneObject:
    """One visible instance. ``bbox`` = (x0, y0, x1, y1) of its visible pixels (x1, y1 exclusive);
    ``amodal`` (h, w) bool is its whole in-frame shape, occluded parts included, at ``amodal_box``."""

    instance: int
    label: int  # semantic id (1-based)
    name: str
    depth: float
    bbox: tuple[int, int, int, int]
    area: int
    amodal_box: tuple[int, int, int, int] | None = None
    amodal: np.ndarray | None = field(default=None, repr=False)

    def to_dict(self) -> dict:
        return {"instance": self.instance, "label": self.label, "name": self.name, "depth": self.depth,
                "bbox": list(self.bbox), "area": self.area}


@dataclass
class Scene:
    """One rendered image and its exact ground truth (see the module docstring for the fields)."""

    image: np.ndarray
    labels: tuple[int, ...]
    semantic: np.ndarray
    instance: np.ndarray
    parts: np.ndarray
    depth: np.ndarray
    objects: tuple[SceneObject, ...]
    class_names: tuple[str, ...]
    seed: int
    index: int
    config: SceneConfig

    @property
    def target(self) -> np.ndarray:
        """(H, W) bool foreground: every labelled pixel (the target of the context-dependent variants)."""
        return self.semantic > 0

    def multi_hot(self) -> np.ndarray:
        """(C,) float32 with 1 at every present class (C = ``len(class_names)``)."""
        v = np.zeros(len(self.class_names), np.float32)
        v[[k - 1 for k in self.labels]] = 1.0
        return v

    def amodal_mask(self, instance: int) -> np.ndarray:
        """(H, W) bool: the whole in-frame shape of ``instance``, occluded parts included."""
        obj = self.objects[instance - 1]
        if obj.amodal is None or obj.amodal_box is None:
            raise ValueError(f"instance {instance} has no amodal mask (scenes read from disk do not keep it)")
        m = np.zeros(self.semantic.shape, bool)
        x0, y0, x1, y1 = obj.amodal_box
        m[y0:y1, x0:x1] = obj.amodal
        return m


def scene_classes(config: SceneConfig = SceneConfig()) -> tuple[str, ...]:
    """Class names of ``config``'s scenes; semantic id k is ``names[k - 1]``."""
    if config.target == "defects":
        return ("defect",)
    if config.target == "lesions":
        return ("lesion",)
    return CLASS_NAMES


def streams(seed: int, index: int) -> tuple[np.random.Generator, np.random.Generator, np.random.Generator]:
    """The layout, appearance and weather random streams of sample ``(seed, index)``."""
    if seed < 0 or index < 0:
        raise ValueError(f"seed and index must be ≥ 0, got seed={seed}, index={index}")
    return tuple(np.random.default_rng([seed, index, k]) for k in range(3))  # type: ignore[return-value]


def draw_polygons(polys: list[tuple[int, list]], size: int) -> tuple[np.ndarray, tuple[int, int, int, int]] | None:
    """Rasterise ``(value, pixel polygon)`` pairs in order over their clipped bounding box.

    Returns the (h, w) uint8 crop and its box (x0, y0, x1, y1), or None when nothing is in frame.
    """
    xs = [x for _, p in polys for x, _ in p]
    ys = [y for _, p in polys for _, y in p]
    x0, y0 = max(int(np.floor(min(xs))), 0), max(int(np.floor(min(ys))), 0)
    x1, y1 = min(int(np.ceil(max(xs))) + 1, size), min(int(np.ceil(max(ys))) + 1, size)
    if x1 <= x0 or y1 <= y0:
        return None
    img = Image.new("L", (x1 - x0, y1 - y0), 0)
    draw = ImageDraw.Draw(img)
    for value, poly in polys:
        draw.polygon([(x - x0, y - y0) for x, y in poly], fill=value)
    return np.asarray(img), (x0, y0, x1, y1)


