"""Surface targets of :mod:`vitkit.data.scenes`: defects on a material, lesions on tissue.

``defects``: a metal (brushed), wood (grain) or fabric (weave) surface with 1–4 defects, each a
scratch (long thin bar), a spot (small ellipse) or a crack (a jagged thin strip), darker or lighter
than the surface. Class "defect" (semantic id 1); the part map holds the defect kind
(``PART_NAMES`` "defect/scratch", "defect/spot", "defect/crack").

``lesions``: a smooth tissue-like texture with 1–3 blob-like lesions (irregular star-shaped
polygons) that differ from the tissue by only 11–33 grey levels and fade towards their edge
(the exact mask is the polygon; the fade is appearance only). Class "lesion" (id 1), no parts.

The surface is a plane facing the camera at 0.5 m (depth constant), so weather and styles still
apply. Same random streams and determinism rules as the object scenes.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter

from . import scene_paint as paint
from .scene_core import Scene, SceneConfig, SceneObject, draw_polygons, scene_classes, streams
from .scene_shapes import CIRCLE, DEFECT_KINDS, DEFECT_PART_OFFSET, place, rotation

SURFACE_DEPTH = 0.5  # metres
_SURFACES = {"metal": (150, 152, 158), "wood": (150, 105, 60), "fabric": (90, 100, 130)}


def _defect_polys(rng: np.random.Generator, size: int, kind: str) -> list:
    cx, cy = rng.uniform(0.1, 0.9, 2) * size
    cs = rotation(float(rng.uniform(-1.0, 1.0)))
    if kind == "scratch":
        length, width = float(rng.uniform(0.12, 0.35)) * size, max(2.0, float(rng.uniform(0.008, 0.016)) * size)
        return [place(((0, 0), (1, 0), (1, 1), (0, 1)), cx, cy, length, width, cs)]
    if kind == "spot":
        r = float(rng.uniform(0.015, 0.045)) * size
        return [[(cx + r * c, cy + r * s * float(rng.uniform(0.7, 1.0))) for c, s in CIRCLE]]
    # crack: a zig-zag strip of 4-6 segments
    n = int(rng.integers(4, 7))
    step = float(rng.uniform(0.03, 0.06)) * size
    width = max(1.5, 0.008 * size)
    pts, x, y = [(cx, cy)], cx, cy
    for _ in range(n):
        x += step * cs[0] + float(rng.uniform(-0.5, 0.5)) * step * cs[1] * -1
        y += step * cs[1] + float(rng.uniform(-0.5, 0.5)) * step * cs[0]
        pts.append((x, y))
    upper = [(px - width * cs[1], py + width * cs[0]) for px, py in pts]
    lower = [(px + width * cs[1], py - width * cs[0]) for px, py in pts]
    return [upper + lower[::-1]]


def _lesion_poly(rng: np.random.Generator, size: int) -> list:
    cx, cy = rng.uniform(0.15, 0.85, 2) * size
    r = float(rng.uniform(0.05, 0.13)) * size
    wobble = rng.uniform(0.75, 1.25, len(CIRCLE))
    # smooth the radii (circular 3-tap mean) so the blob has no spikes
    wobble = (np.roll(wobble, 1) + wobble + np.roll(wobble, -1)) / 3.0
    asp = float(rng.uniform(0.7, 1.0))
    return [(cx + r * k * c, cy + r * k * s * asp) for (c, s), k in zip(CIRCLE, wobble.tolist(), strict=True)]


def render_surface(seed: int, index: int, *, size: int, config: SceneConfig) -> Scene:
    """Render a ``defects`` or ``lesions`` scene (see the module docstring)."""
    rl, ra, rw = streams(seed, index)
    cfg = config
    defects = cfg.target == "defects"
    n = int(rl.integers(1, 5 if defects else 4))
    kinds = [DEFECT_KINDS[int(rl.integers(3))] for _ in range(n)] if defects else ["lesion"] * n
    shapes = [_defect_polys(rl, size, k) if defects else [_lesion_poly(rl, size)] for k in kinds]
    surface = list(_SURFACES)[int(rl.integers(3))]

    semantic = np.zeros((size, size), np.uint8)
    instance = np.zeros((size, size), np.uint8)
    parts = np.zeros((size, size), np.uint8)
    depth = np.full((size, size), SURFACE_DEPTH, np.float32)
    objects, regions = [], []
    for kind, polys in zip(kinds, shapes, strict=True):
        drawn = draw_polygons([(1, p) for p in polys], size)
        if drawn is None:
            continue
        m, (x0, y0, x1, y1) = drawn
        full = np.zeros((size, size), bool)
        full[y0:y1, x0:x1] = m > 0
        vis = full & (instance == 0)  # an earlier defect stays on top: it is the same plane
        if int(vis.sum()) < 3:
            continue
        k = len(objects) + 1
        instance[vis], semantic[vis] = k, 1
        if defects:
            parts[vis] = DEFECT_PART_OFFSET + DEFECT_KINDS.index(kind)
        ys, xs = np.nonzero(vis)
        bbox = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
        objects.append(SceneObject(k, 1, "defect" if defects else "lesion", SURFACE_DEPTH, bbox, int(vis.sum()),
                                   (x0, y0, x1, y1), m > 0))
        regions.append(vis)

    coarse, fine = paint.value_noise(ra, size, size, 4), paint.value_noise(ra, size, size, 40)
    if defects:
        base = paint.jitter(ra, _SURFACES[surface], 20)
        ys = np.arange(size, dtype=np.float32)[:, None]
        xs = np.arange(size, dtype=np.float32)[None, :]
        if surface == "metal":  # brushed: fine noise stretched along x
            streak = paint.value_noise(ra, size, size // 8, 60)
            tex = 0.06 * coarse + 0.08 * np.asarray(Image.fromarray(streak, mode="F").resize((size, size)))
        elif surface == "wood":
            a = ys / (0.03 * size) + 3.0 * coarse
            tex = 0.1 * np.where(a - np.floor(a) < 0.35, 1.0, -1.0) + 0.05 * fine
        else:
            tex = 0.1 * paint.pattern("checks", ys, xs, 0.015 * size, (1.0, 0.0)) + 0.06 * fine
        img = base * (1 + tex[:, :, None])
        if cfg.style == "flat":
            img = np.broadcast_to(base, img.shape).copy()
        for vis in regions:
            shift = float(ra.uniform(30, 60)) * (1.0 if ra.random() < 0.3 else -1.0)
            img[vis] = img[vis] + shift
    else:
        base = paint.jitter(ra, (205, 140, 130), 20)
        img = base * (1 + (0.08 * coarse + 0.04 * fine)[:, :, None])
        if cfg.style == "flat":
            img = np.broadcast_to(base, img.shape).copy()
        for vis in regions:
            soft = Image.fromarray(vis.astype(np.uint8) * 255).filter(ImageFilter.BoxBlur(max(1, size // 40)))
            w = np.asarray(soft, np.float32)[:, :, None] / 255.0 * vis[:, :, None]
            # darker and a little browner than the tissue; not paint.jitter, which clips to [0, 255]
            delta = np.array([-22.0, -30.0, -18.0], np.float32) * float(ra.uniform(0.6, 1.1))
            img = img + w * delta
    if cfg.style == "outline":
        edge = paint.outlines([instance], max(1, size // 160))
        img = np.where(edge[:, :, None], paint.jitter(ra, (40, 40, 50), 20), paint.jitter(ra, (240, 236, 226), 10))
    elif cfg.style == "textured" and cfg.pixel_noise > 0:
        a = int(cfg.pixel_noise)
        img = img + ra.integers(-a, a + 1, size=(size, size, 1)).astype(np.float32)
    img = paint.weather(rw, img.astype(np.float32), depth, cfg.weather, cfg.fog_beta)
    labels = (1,) if objects else ()
    return Scene(paint.to_uint8(img), labels, semantic, instance, parts, depth, tuple(objects),
                 scene_classes(cfg), seed, index, cfg)
