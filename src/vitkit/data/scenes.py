"""Rendered scenes with exact per-pixel ground truth (the dense-task data of vitkit).

Public API (stable: later additions extend it, nothing is renamed)::

    from vitkit.data.scenes import SceneConfig, render_scene, SceneDataset, render_many, write_scenes

    scene = render_scene(seed=0, index=7, size=224, config=SceneConfig(style="textured", weather="fog"))
    scene.image      # (H, W, 3) uint8
    scene.labels     # tuple of semantic ids present (1-based; 0 = background), sorted
    scene.semantic   # (H, W) uint8, 0 = background, k = scene.class_names[k - 1]
    scene.instance   # (H, W) uint8, 0 = none, 1..K = scene.objects[k - 1]
    scene.parts      # (H, W) uint8, 0 = none, p = PART_NAMES[p - 1] ("house/roof", …)
    scene.depth      # (H, W) float32, metres (sky 100 m)
    scene.target     # (H, W) bool, the foreground (the target of the context-dependent variants)
    scene.objects    # SceneObject per instance: label, name, depth, visible bbox/area, amodal mask
    scene.multi_hot()  # (C,) float32 image-level labels

    ds = SceneDataset(1000, seed=0, size=224)      # torch Dataset → (image (3, H, W) in [0, 1], multi-hot)
    arrays = render_many(64, seed=1, size=64)      # stacked numpy arrays for dense training/eval

Sample ``index`` of ``seed`` depends only on ``(seed, index, size, config)``. The layout (classes,
positions, depth, masks) comes from its own random stream seeded by ``(seed, index)``; colours and
textures from a second, weather from a third. So the same ``(seed, index)`` rendered in another
``style`` or ``weather`` has identical masks and depth: paired domains for adaptation and depth.

Scenes (:class:`SceneConfig`):

* 10 composite classes (:data:`CLASS_NAMES`), 2–4 named parts each (:data:`PART_NAMES`), varying in
  colour, texture, scale, aspect, rotation and mirror; 1–``max_objects`` objects of
  1–``max_classes`` classes stand on a ground plane under a horizon; nearer objects (lower base,
  bigger) occlude farther ones; each object's depth is the ground depth at its base. An object
  left with < ``min_visible`` of its in-frame area visible is dropped (so every label has pixels).
* Textured, cluttered backgrounds: sky or wall above the horizon; grass, sand, water, road or
  tiles below, correlated with the classes (boats and fish are usually on water, cars on roads:
  the context leakage that makes weakly supervised segmentation hard); distractor shapes, some
  cut from the parts of the real classes, which are background (0).
* ``style``: textured | flat | outline (:mod:`vitkit.data.scene_paint`); ``weather``: clear | fog |
  night | rain, computed from the depth map.
* ``target`` (context-dependent concepts, :mod:`vitkit.data.scene_targets`): ``camouflaged`` (one
  object painted with the background's own texture), ``salient`` (one vivid object on a muted
  background), ``defects`` (scratches, spots, cracks on a metal/wood/fabric surface; one class
  "defect", parts = defect kind), ``lesions`` (low-contrast, soft-edged blobs on a tissue-like
  texture; one class "lesion").

Determinism: numpy's PCG64 streams, PIL polygon rasterisation, and elementwise float32 arithmetic
(see :mod:`vitkit.data.scene_paint`); the same numpy/Pillow versions give byte-identical scenes.

``vitkit data scenes --out DIR --n N --seed S`` writes PNGs + a JSON-lines manifest
(:func:`write_scenes`); :func:`read_scenes` reads them back.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch.utils.data import Dataset

from ..progress import progress_bar
from . import scene_paint as paint
from .scene_core import (
    SKY_DEPTH,
    TARGETS,
    Scene,
    SceneConfig,
    SceneObject,
    draw_polygons,
    scene_classes,
    streams,
)
from .scene_shapes import CLASS_NAMES, CLASSES, PART_NAMES, PART_OFFSET, place, rotation
from .scene_targets import render_surface

__all__ = [
    "CLASS_NAMES",
    "PART_NAMES",
    "SKY_DEPTH",
    "TARGETS",
    "Scene",
    "SceneConfig",
    "SceneDataset",
    "SceneObject",
    "read_scenes",
    "render_many",
    "render_scene",
    "scene_classes",
    "write_scenes",
]

logger = logging.getLogger(__name__)
_NEAR = 2.0  # metres: ground depth at the bottom row

def ground_depth(rows: np.ndarray, horizon: int, size: int) -> np.ndarray:
    """Depth (m) of the ground at pixel ``rows`` below ``horizon``: a flat ground seen in perspective,
    ``_NEAR`` at the bottom row, growing as 1/(row − horizon), capped at the sky's depth."""
    h = (size - horizon) / (rows - horizon + 0.5)
    return np.minimum(_NEAR * h, SKY_DEPTH).astype(np.float32)


@dataclass
class _Placed:
    cls: int
    depth: float
    polys: list  # (local part id, pixel polygon)


def _sample_objects(rng: np.random.Generator, cfg: SceneConfig, size: int, horizon: int, *,
                    n_objects: int | None = None, height: tuple[float, float] | None = None) -> list[_Placed]:
    n_cls = int(rng.integers(1, min(cfg.max_classes, cfg.max_objects) + 1))
    classes = rng.choice(len(CLASSES), n_cls, replace=False).tolist()
    n_obj = n_objects or int(rng.integers(n_cls, max(cfg.max_objects, n_cls) + 1))
    chosen = classes[:n_obj] + rng.choice(classes, n_obj - len(classes[:n_obj])).tolist()
    placed = []
    for i, c in enumerate(chosen):
        spec = CLASSES[c]
        base = float(rng.uniform(horizon + 0.15 * (size - horizon), size))
        near = (base - horizon) / (size - horizon)  # 0 at the horizon, 1 at the bottom
        if height is None:
            h = max(spec.scale * (0.16 + 0.34 * near), 0.1) * float(rng.uniform(0.8, 1.2)) * size
        else:
            h = spec.scale * float(rng.uniform(*height)) * size
        w = h * spec.aspect * float(rng.uniform(0.8, 1.25))
        cx = float(rng.uniform(0.3 * w, size - 0.3 * w))
        cs = rotation(float(rng.uniform(-0.15, 0.15)))
        flip = bool(rng.random() < 0.5)
        # depth of the ground under the base, split ties so that the occlusion order is total
        depth = float(ground_depth(np.array([min(base, size - 1.0)]), horizon, size)[0]) + 1e-3 * i
        polys = [(j + 1, place(poly, cx, base - h / 2, w, h, cs, flip))
                 for j, part in enumerate(spec.parts) for poly in part.polygons]
        placed.append(_Placed(c, depth, polys))
    return placed


def composite(placed: list[_Placed], size: int, min_visible: float, ground: np.ndarray) -> dict:
    """Front-to-back composition of ``placed`` objects into label maps (nearest first).

    Returns semantic, instance, parts (H, W) uint8, depth (H, W) float32 (``ground`` where empty),
    the kept objects (far → near instance ids), and per object its (local part map, box, visible mask).
    """
    semantic = np.zeros((size, size), np.uint8)
    instance = np.zeros((size, size), np.uint8)
    parts = np.zeros((size, size), np.uint8)
    depth = ground.copy()
    occupied = np.zeros((size, size), bool)
    min_px = max(4, int(0.002 * size * size))
    kept = []
    for o in sorted(placed, key=lambda p: p.depth):
        drawn = draw_polygons(o.polys, size)
        if drawn is None:
            continue
        pm, (x0, y0, x1, y1) = drawn
        amodal = pm > 0
        vis = amodal & ~occupied[y0:y1, x0:x1]
        n_vis = int(vis.sum())
        if n_vis < max(min_px, min_visible * int(amodal.sum())) and (kept or n_vis == 0):
            continue
        occupied[y0:y1, x0:x1] |= amodal
        kept.append((o, pm, (x0, y0, x1, y1), vis, amodal))
    objects, painted = [], []
    for k, (o, pm, box, vis, amodal) in enumerate(reversed(kept), start=1):  # far → near ids
        x0, y0, x1, y1 = box
        semantic[y0:y1, x0:x1][vis] = o.cls + 1
        instance[y0:y1, x0:x1][vis] = k
        parts[y0:y1, x0:x1][vis] = PART_OFFSET[o.cls] - 1 + pm[vis]
        depth[y0:y1, x0:x1][vis] = o.depth
        ys, xs = np.nonzero(vis)
        bbox = (x0 + int(xs.min()), y0 + int(ys.min()), x0 + int(xs.max()) + 1, y0 + int(ys.max()) + 1)
        objects.append(SceneObject(k, o.cls + 1, CLASS_NAMES[o.cls], round(o.depth, 4), bbox, int(vis.sum()),
                                   box, amodal))
        painted.append((o, pm, box, vis))
    return {"semantic": semantic, "instance": instance, "parts": parts, "depth": depth,
            "objects": tuple(objects), "painted": painted}


def _distractors(rng: np.random.Generator, size: int, count: int) -> tuple[np.ndarray, list]:
    """Background shapes: (H, W) uint8 map (k = k-th shape) and their colours."""
    dmap = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(dmap)
    colours = []
    for k in range(count):
        spec = CLASSES[int(rng.integers(len(CLASSES)))]
        part = spec.parts[int(rng.integers(len(spec.parts)))]
        s = float(rng.uniform(0.04, 0.14)) * size
        cx, cy = rng.uniform(0, size, 2).tolist()
        cs = rotation(float(rng.uniform(-1, 1)))
        kind = int(rng.integers(3))
        if kind == 0:  # a lone part of a real class: looks like evidence, is background
            polys = part.polygons
        elif kind == 1:
            polys = ((( 0.0, 0.0), (1.0, 0.0), (1.0, 1.0), (0.0, 1.0)),)
        else:
            polys = (((0.5, 0.0), (1.0, 1.0), (0.0, 1.0)),)
        asp = float(rng.uniform(0.5, 2.0))
        for poly in polys:
            draw.polygon(place(poly, cx, cy, s * asp, s, cs), fill=k + 1)
        colours.append(part.palette[int(rng.integers(len(part.palette)))])
    return np.asarray(dmap), colours


def render_scene(seed: int, index: int, *, size: int = 224, config: SceneConfig = SceneConfig()) -> Scene:
    """Render sample ``index`` of ``seed`` at ``size × size`` pixels (see the module docstring)."""
    if size < 16:
        raise ValueError(f"scene size must be ≥ 16 px, got {size}")
    if config.target in ("defects", "lesions"):
        return render_surface(seed, index, size=size, config=config)
    rl, ra, rw = streams(seed, index)
    cfg = config
    horizon = int(round(float(rl.uniform(0.25, 0.5)) * size))
    single = cfg.target in ("camouflaged", "salient")
    placed = _sample_objects(rl, cfg, size, horizon, n_objects=1 if single else None,
                             height=(0.35, 0.6) if cfg.target == "salient" else None)
    names = {CLASS_NAMES[p.cls] for p in placed}
    if names & {"boat", "fish"} and rl.random() < 0.8:
        ground = "water"
    elif "car" in names and rl.random() < 0.7:
        ground = "road"
    else:
        ground = paint.GROUNDS[int(rl.choice(5, p=[0.3, 0.25, 0.1, 0.15, 0.2]))]
    sky = int(rl.integers(4))
    n_distract = int(rl.integers(0, cfg.max_distractors + 1)) if cfg.target != "camouflaged" else 0
    dmap, dcols = _distractors(rl, size, n_distract)
    rows = np.arange(size, dtype=np.float32)
    gdepth = np.where(rows < horizon, SKY_DEPTH, ground_depth(np.maximum(rows, horizon + 1), horizon, size))
    scene = composite(placed, size, cfg.min_visible, np.repeat(gdepth[:, None], size, 1).astype(np.float32))

    noise = (paint.value_noise(ra, size, size, 5), paint.value_noise(ra, size, size, 28))
    img = paint.background(ra, size, horizon, ground, sky, cfg.style, noise)
    if cfg.target == "salient":  # mute the background so that the one object pops out
        img = 0.35 * img + 0.65 * img.mean(axis=2, keepdims=True) * 0.9 + 10.0
    for k, col in enumerate(dcols, start=1):
        m = dmap == k
        base = paint.jitter(ra, col, 30) * (0.7 if cfg.target == "salient" else 1.0)
        img[m] = base * (1 + 0.12 * noise[1][m, None]) if cfg.style == "textured" else base
    for o, pm, (x0, y0, x1, y1), vis in scene["painted"]:
        crop = img[y0:y1, x0:x1]
        if cfg.target == "camouflaged":  # the background's own texture, shifted and barely tinted
            dx, dy = (int(v) for v in ra.integers(-size // 6, size // 6 + 1, 2))
            src = np.roll(img, (dy, dx), axis=(0, 1))[y0:y1, x0:x1]
            crop[vis] = src[vis] * paint.jitter(ra, (1.0, 1.0, 1.0), 0.06)
            continue
        ys = np.arange(y0, y1, dtype=np.float32)[:, None]
        xs = np.arange(x0, x1, dtype=np.float32)[None, :]
        nz = (noise[0][y0:y1, x0:x1], noise[1][y0:y1, x0:x1])
        for j, part in enumerate(CLASSES[o.cls].parts, start=1):
            region = vis & (pm == j)
            base = paint.jitter(ra, part.palette[int(ra.integers(len(part.palette)))])
            if cfg.target == "salient":
                base = np.clip((base - base.mean()) * 1.4 + base.mean(), 0, 255)
            crop[region] = paint.shade(ra, base, ys, xs, nz, cfg.style, size)[region]
    if cfg.style == "outline":
        paper = paint.jitter(ra, (240, 236, 226), 10)
        ink = paint.jitter(ra, (40, 40, 50), 20)
        horizon_map = (rows >= horizon)[:, None] & np.ones((1, size), bool)
        edge = paint.outlines([scene["parts"], scene["instance"], dmap, horizon_map.astype(np.uint8)],
                              max(1, size // 160))
        img = np.where(edge[:, :, None], ink, paper).astype(np.float32)
    elif cfg.style == "textured" and cfg.pixel_noise > 0:
        a = int(cfg.pixel_noise)
        img = img + ra.integers(-a, a + 1, size=(size, size, 1)).astype(np.float32)
    lights = scene["parts"] == PART_NAMES.index("lamp/light") + 1
    img = paint.weather(rw, img, scene["depth"], cfg.weather, cfg.fog_beta, lights)
    labels = tuple(sorted({o.label for o in scene["objects"]}))
    return Scene(paint.to_uint8(img), labels, scene["semantic"], scene["instance"], scene["parts"],
                 scene["depth"], scene["objects"], CLASS_NAMES, seed, index, cfg)


def render_many(n: int, *, seed: int = 0, size: int = 224, config: SceneConfig = SceneConfig(), start: int = 0,
                progress: bool = False) -> dict[str, np.ndarray]:
    """Samples ``start … start+n−1`` stacked: image (N, H, W, 3) uint8, semantic/instance/parts
    (N, H, W) uint8, depth (N, H, W) float32, multi_hot (N, C) float32, index (N,) int64."""
    keys = ("image", "semantic", "instance", "parts", "depth")
    out: dict[str, list] = {k: [] for k in (*keys, "multi_hot")}
    with progress_bar(progress) as bar:
        task = bar.add_task("rendering scenes", total=n)
        for i in range(start, start + n):
            s = render_scene(seed, i, size=size, config=config)
            for k in keys:
                out[k].append(getattr(s, k))
            out["multi_hot"].append(s.multi_hot())
            bar.advance(task)
    arrays = {k: np.stack(v) if v else np.zeros((0,)) for k, v in out.items()}
    arrays["index"] = np.arange(start, start + n, dtype=np.int64)
    return arrays


class SceneDataset(Dataset):
    """Multi-label classification over scenes: item i → (image (3, H, W) float32 in [0, 1], multi-hot (C,)).

    A map-style ``torch.utils.data.Dataset``. ``transform`` replaces the default uint8 → float conversion (it receives the (H, W, 3)
    uint8 array). ``cache=True`` keeps rendered images in memory (N·H·W·3 bytes).
    """

    def __init__(self, n: int, *, seed: int = 0, size: int = 224, config: SceneConfig = SceneConfig(),
                 start: int = 0, transform=None, cache: bool = False) -> None:
        if n < 0 or start < 0:
            raise ValueError(f"SceneDataset needs n ≥ 0 and start ≥ 0, got n={n}, start={start}")
        self.n, self.seed, self.size, self.config, self.start = n, seed, size, config, start
        self.transform = transform
        self.class_names = scene_classes(config)
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] | None = {} if cache else None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return self.n

    def scene(self, i: int) -> Scene:
        """The full :class:`Scene` of item ``i``."""
        if not 0 <= i < self.n:
            raise IndexError(f"index {i} out of range for {self.n} scenes")
        return render_scene(self.seed, self.start + i, size=self.size, config=self.config)

    def __getitem__(self, i: int):
        if self._cache is not None and i in self._cache:
            image, target = self._cache[i]
        else:
            s = self.scene(i)
            image, target = s.image, s.multi_hot()
            if self._cache is not None:
                self._cache[i] = (image, target)
        if self.transform is not None:
            x = self.transform(image)
        else:
            x = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float().div_(255.0)
        return x, torch.from_numpy(target)


def write_scenes(out_dir: str | os.PathLike[str], n: int, *, seed: int = 0, size: int = 224,
                 config: SceneConfig = SceneConfig(), progress: bool = True) -> Path:
    """Write ``n`` scenes under ``out_dir``: ``images/``, ``semantic/``, ``instance/``, ``parts/`` (PNG,
    uint8), ``depth/`` (16-bit PNG, centimetres), ``scenes.jsonl`` (one record per image: paths,
    labels, objects) and ``meta.json`` (config, size, seed, class and part names). Returns the manifest."""
    out = Path(out_dir)
    for sub in ("images", "semantic", "instance", "parts", "depth"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    classes = scene_classes(config)
    meta = {"seed": seed, "size": size, "n": n, "config": config.to_dict(), "class_names": list(classes),
            "part_names": list(PART_NAMES), "depth_unit": "cm"}
    (out / "meta.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
    records = []
    with progress_bar(progress) as bar:
        task = bar.add_task("writing scenes", total=n)
        for i in range(n):
            s = render_scene(seed, i, size=size, config=config)
            name = f"{i:06d}.png"
            Image.fromarray(s.image).save(out / "images" / name)
            for key in ("semantic", "instance", "parts"):
                Image.fromarray(getattr(s, key)).save(out / key / name)
            cm = np.clip(np.rint(s.depth * 100.0), 0, 65535).astype(np.uint16)
            Image.fromarray(cm).save(out / "depth" / name)
            records.append({"index": i, "image": f"images/{name}", "labels": list(s.labels),
                            "names": [classes[k - 1] for k in s.labels],
                            "objects": [o.to_dict() for o in s.objects]})
            bar.advance(task)
    manifest = out / "scenes.jsonl"
    tmp = manifest.with_name(manifest.name + ".tmp")
    with tmp.open("w", encoding="utf-8", newline="\n") as fh:
        for r in records:
            fh.write(json.dumps(r) + "\n")
    os.replace(tmp, manifest)
    logger.info("wrote %d scenes (seed %d, %d px) to %s", n, seed, size, out)
    return manifest


def read_scenes(out_dir: str | os.PathLike[str]) -> list[Scene]:
    """Read scenes written by :func:`write_scenes` (no amodal masks; depth to the centimetre)."""
    out = Path(out_dir)
    meta_path = out / "meta.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"{meta_path} not found: write scenes with `vitkit data scenes --out {out}`")
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    config = SceneConfig(**meta["config"])
    scenes = []
    with (out / "scenes.jsonl").open(encoding="utf-8") as fh:
        for line in fh:
            if not line.strip():
                continue
            r = json.loads(line)
            name = Path(r["image"]).name
            maps = {k: np.asarray(Image.open(out / k / name)) for k in ("semantic", "instance", "parts")}
            depth = np.asarray(Image.open(out / "depth" / name), dtype=np.float32) / 100.0
            objects = tuple(SceneObject(o["instance"], o["label"], o["name"], o["depth"], tuple(o["bbox"]), o["area"])
                            for o in r["objects"])
            scenes.append(Scene(np.asarray(Image.open(out / r["image"]).convert("RGB")), tuple(r["labels"]),
                                maps["semantic"], maps["instance"], maps["parts"], depth, objects,
                                tuple(meta["class_names"]), int(meta["seed"]), int(r["index"]), config))
    return scenes
