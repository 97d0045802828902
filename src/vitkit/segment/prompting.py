"""Prompts for promptable segmenters: boxes, clicks, automatic-mask selection, seeded perturbations.

Pure numpy functions on (H, W) bool masks. Coordinates follow segment-anything: a point is
``(x, y)`` in pixels, a box is ``(x0, y0, x1, y1)`` with ``x1``/``y1`` the last covered column/row
(inclusive, as ``torchvision.ops.masks_to_boxes``).

* :func:`boxes_from_mask`: one box per 8-connected component of the truth (the evaluation then
  takes the union of the per-box masks);
* :func:`next_click`: the interactive clicker's next click, at the maximum of the L2 distance
  transform of the current false-negative or false-positive region (the image border counts as
  outside the region, as the reference clicker's padding does; already clicked pixels excluded),
  positive when the FN maximum is the larger;
* :func:`select_auto_masks`: the union of the generated masks with |m ∩ GT| / |m| > 0.9. This
  uses the truth: it is an oracle choice, as is the best-of-3 candidate in the clicker loop;
* :func:`perturb_boxes`, :func:`perturb_points`, :func:`perturb_mask`: seeded perturbations (the
  public evaluation code draws them unseeded): box edges ± U(0.1 × the box's shorter side), points
  ± U(10 px), masks eroded or dilated 1–5 times; all stay inside the image;
* :func:`video_prompt_frames`: the frames of a clip that get prompts (the first 1, 3 or 5);
* :func:`concept_prototype`, :func:`similarity_prompts`: in-context prompting for a segmenter
  without memory (PerSAM's training-free recipe): the mean feature under the prompt images' masks,
  located on the target image by cosine similarity → a positive point at the best match and a
  negative one at the worst.

The distance transform and the component labelling are our own (exact, vectorised numpy) so that
the core install needs no scipy/OpenCV; the tests compare them with scipy where it is installed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MAX_CLICKS = 6  # the paper's clicker budget
IOU_STOP = 0.9  # the clicker stops once the kept mask reaches this IoU


def _check_mask(mask: np.ndarray, name: str = "mask") -> np.ndarray:
    m = np.asarray(mask)
    if m.ndim != 2:
        raise ValueError(f"{name} must be a (H, W) array, got shape {m.shape}")
    return m.astype(bool, copy=False)


def distance_transform(mask: np.ndarray) -> np.ndarray:
    """Exact Euclidean distance (H, W) float64 of every True pixel to the nearest False pixel.

    Pixels outside the image count as False (so a region touching the border is measured to the
    border). Two separable passes: the vertical distance per column by running maxima of the last
    zero above / below, then the exact row minimum of g(x')² + (x − x')² over every column x'.
    O(H·W²) work, vectorised in row chunks.
    """
    m = _check_mask(mask)
    h, w = m.shape
    rows = np.arange(h)[:, None].repeat(w, 1)
    above = np.maximum.accumulate(np.where(m, -1, rows), axis=0)  # last zero at or above; -1 = the pad row
    below = h - 1 - np.maximum.accumulate(np.where(m, -1, h - 1 - rows)[::-1], axis=0)[::-1]  # h = the pad row
    g = np.minimum(rows - above, below - rows).astype(np.float64)  # 0 on False pixels
    xs = np.arange(w, dtype=np.float64)
    border = np.minimum(xs + 1, w - xs) ** 2  # the pad columns x' = −1 and x' = w
    diff2 = (xs[:, None] - xs[None, :]) ** 2  # (x, x')
    out = np.empty((h, w), np.float64)
    chunk = max(1, 2**22 // max(1, w * w))
    for r0 in range(0, h, chunk):
        gg = g[r0 : r0 + chunk] ** 2  # (r, x')
        out[r0 : r0 + chunk] = np.minimum((gg[:, None, :] + diff2[None]).min(-1), border[None])
    return np.sqrt(out) * m


def connected_components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """8-connected components: labels (H, W) int64 (0 = background, 1..K in raster order of each
    component's first pixel) and K.

    Union-find over the runs of True along each row: two runs on neighbouring rows join when they
    overlap or touch diagonally. A page of text has a few thousand runs, so this is ~60× faster than
    propagating labels pixel by pixel, and needs no image library.
    """
    m = _check_mask(mask)
    h, w = m.shape
    pad = np.zeros((h, w + 2), np.int8)
    pad[:, 1:-1] = m
    d = np.diff(pad, axis=1)
    rs, cs = np.nonzero(d == 1)  # run starts, row-major
    ce = np.nonzero(d == -1)[1]  # run ends (exclusive), same order
    n = len(rs)
    parent = list(range(n))

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    first = np.searchsorted(rs, np.arange(h + 1)).tolist()
    cs_l, ce_l = cs.tolist(), ce.tolist()
    for r in range(1, h):
        i, i1, j, j1 = first[r - 1], first[r], first[r], first[r + 1]
        while i < i1 and j < j1:
            if cs_l[i] <= ce_l[j] and cs_l[j] <= ce_l[i]:  # overlapping or diagonally touching
                a, b = find(i), find(j)
                if a != b:
                    parent[max(a, b)] = min(a, b)  # the root is a component's first run: raster order
            if ce_l[i] < ce_l[j]:
                i += 1
            else:
                j += 1
    roots = [find(k) for k in range(n)]
    ids = {r: k + 1 for k, r in enumerate(sorted(set(roots)))}
    labels = np.zeros((h, w), np.int64)
    for k in range(n):
        labels[rs[k], cs_l[k]:ce_l[k]] = ids[roots[k]]
    return labels, len(ids)


def boxes_from_mask(mask: np.ndarray, min_area: int = 1) -> np.ndarray:
    """(K, 4) float32 boxes ``(x0, y0, x1, y1)`` (inclusive) of the 8-connected components of ``mask``
    with at least ``min_area`` pixels, in raster order; (0, 4) for an empty mask."""
    lab, k = connected_components(mask)
    boxes = []
    for i in range(1, k + 1):
        ys, xs = np.nonzero(lab == i)
        if len(ys) >= min_area:
            boxes.append((xs.min(), ys.min(), xs.max(), ys.max()))
    return np.asarray(boxes, np.float32).reshape(-1, 4)


@dataclass(frozen=True)
class Click:
    """One click: pixel ``(x, y)``, positive (object) or negative (background)."""

    x: int
    y: int
    positive: bool


def next_click(truth: np.ndarray, pred: np.ndarray, clicked: np.ndarray | None = None) -> Click | None:
    """The clicker's next click for prediction ``pred`` against ``truth`` (both (H, W) bool).

    ``clicked`` (H, W) bool marks pixels already clicked (excluded). Positive when the FN region's
    distance maximum is larger than the FP region's; ties and the first of several maxima go as in
    the reference clicker (negative on a tie, raster order). None when there is no error left.
    """
    gt, pr = _check_mask(truth, "truth"), _check_mask(pred, "pred")
    if gt.shape != pr.shape:
        raise ValueError(f"truth {gt.shape} and prediction {pr.shape} differ in shape")
    free = np.ones_like(gt) if clicked is None else ~_check_mask(clicked, "clicked")
    fn_dt = distance_transform(gt & ~pr) * free
    fp_dt = distance_transform(~gt & pr) * free
    fn_max, fp_max = fn_dt.max(), fp_dt.max()
    if max(fn_max, fp_max) <= 0:
        return None
    positive = bool(fn_max > fp_max)
    dt = fn_dt if positive else fp_dt
    y, x = np.unravel_index(int(np.argmax(dt)), dt.shape)
    return Click(int(x), int(y), positive)


def clicks_to_arrays(clicks: list[Click]) -> tuple[np.ndarray, np.ndarray]:
    """Points (K, 2) float32 ``(x, y)`` and labels (K,) int64 (1 = positive, 0 = negative)."""
    pts = np.asarray([(c.x, c.y) for c in clicks], np.float32).reshape(-1, 2)
    return pts, np.asarray([int(c.positive) for c in clicks], np.int64)


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two (H, W) bool masks; 1.0 when both are empty."""
    a, b = _check_mask(a), _check_mask(b)
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def select_auto_masks(masks: np.ndarray, truth: np.ndarray, threshold: float = 0.9) -> np.ndarray:
    """Union (H, W) bool of the generated ``masks`` (M, H, W) with |m ∩ GT| / |m| > ``threshold``.

    Oracle selection (it reads the truth), as in the paper's automatic-prompt protocol.
    """
    gt = _check_mask(truth, "truth")
    ms = np.asarray(masks, bool).reshape(-1, *gt.shape)
    area = ms.reshape(len(ms), gt.size).sum(1)
    inside = (ms & gt).reshape(len(ms), gt.size).sum(1)
    keep = (area > 0) & (inside > threshold * np.maximum(area, 1))
    return ms[keep].any(0) if keep.any() else np.zeros_like(gt)


def perturb_boxes(boxes: np.ndarray, shape: tuple[int, int], rng: np.random.Generator,
                  scale: float = 0.1) -> np.ndarray:
    """Each edge of each box (K, 4) moved by U(−s, s), s = ``scale`` × the box's shorter side; clipped
    to the image ``shape`` (H, W) and kept ordered (x0 ≤ x1, y0 ≤ y1)."""
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    short = np.minimum(b[:, 2] - b[:, 0] + 1, b[:, 3] - b[:, 1] + 1)
    shift = rng.uniform(-1.0, 1.0, b.shape) * (scale * short)[:, None]
    out = b + shift
    h, w = shape
    out[:, [0, 2]] = np.clip(out[:, [0, 2]], 0, w - 1)
    out[:, [1, 3]] = np.clip(out[:, [1, 3]], 0, h - 1)
    x0, x1 = np.minimum(out[:, 0], out[:, 2]), np.maximum(out[:, 0], out[:, 2])
    y0, y1 = np.minimum(out[:, 1], out[:, 3]), np.maximum(out[:, 1], out[:, 3])
    return np.stack([x0, y0, x1, y1], 1).astype(np.float32)


def perturb_points(points: np.ndarray, shape: tuple[int, int], rng: np.random.Generator,
                   radius: float = 10.0) -> np.ndarray:
    """Each point (K, 2) ``(x, y)`` moved by U(±``radius``) px per axis, clipped to the image (H, W)."""
    p = np.asarray(points, np.float64).reshape(-1, 2) + rng.uniform(-radius, radius, (len(points), 2))
    h, w = shape
    return np.stack([np.clip(p[:, 0], 0, w - 1), np.clip(p[:, 1], 0, h - 1)], 1).astype(np.float32)


def _morph(mask: np.ndarray, dilate: bool) -> np.ndarray:
    h, w = mask.shape
    p = np.pad(mask, 1, constant_values=not dilate)  # outside never adds nor removes pixels
    views = [p[dy : dy + h, dx : dx + w] for dy in range(3) for dx in range(3)]
    return np.logical_or.reduce(views) if dilate else np.logical_and.reduce(views)


def perturb_mask(mask: np.ndarray, rng: np.random.Generator, max_iter: int = 5) -> tuple[np.ndarray, int]:
    """``mask`` eroded or dilated (fair coin) by a 3 × 3 element 1..``max_iter`` times (uniform).

    Returns the perturbed mask and the signed number of iterations (+ dilate, − erode).
    """
    m = _check_mask(mask).copy()
    n = int(rng.integers(1, max_iter + 1))
    dilate = bool(rng.random() < 0.5)
    for _ in range(n):
        m = _morph(m, dilate)
    return m, n if dilate else -n


def video_prompt_frames(n_frames: int, k: int) -> list[int]:
    """The frames of an ``n_frames`` clip that carry prompts: the first ``k`` (1, 3 or 5 in the paper)."""
    if not 1 <= k <= n_frames:
        raise ValueError(f"prompted frames must be in 1..{n_frames}, got {k}")
    return list(range(k))


def cell_shares(mask: np.ndarray, h: int, w: int) -> np.ndarray:
    """(h, w) share of each cell's pixels inside ``mask`` (H, W) when the image is cut into an h × w
    grid (pixel (y, x) belongs to cell (y·h // H, x·w // W): any H, W, not only multiples)."""
    m = _check_mask(mask)
    hh, ww = m.shape
    cell = ((np.arange(hh) * h // hh)[:, None] * w + (np.arange(ww) * w // ww)[None, :]).ravel()
    total = np.bincount(cell, minlength=h * w)
    inside = np.bincount(cell, weights=m.ravel().astype(np.float64), minlength=h * w)
    return (inside / np.maximum(total, 1)).reshape(h, w)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def concept_prototype(features: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Unit-norm (C,) mean of the unit-norm cell features (K, h, w, C) of K prompt images, each cell
    weighted by its share inside the image's mask (K, H, W)."""
    f = np.asarray(features, np.float64)
    if f.ndim != 4 or len(f) != len(masks) or not len(f):
        raise ValueError(f"features (K, h, w, C) and masks (K, H, W) of K ≥ 1 prompt images; got {f.shape}, "
                         f"{np.shape(masks)}")
    wts = np.stack([cell_shares(m, f.shape[1], f.shape[2]) for m in masks])  # (K, h, w)
    if wts.sum() <= 0:
        raise ValueError("the prompt images' masks are all empty: nothing to take the concept from")
    return _unit((wts[..., None] * _unit(f)).sum((0, 1, 2)) / wts.sum())


def similarity_prompts(features: np.ndarray, prototype: np.ndarray,
                       shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Points (2, 2) ``(x, y)`` in pixels of an image of ``shape`` (H, W) (the centres of the cells of
    features (h, w, C) most and least similar to ``prototype`` (C,)), their labels ``[1, 0]`` and the
    cosine-similarity map (h, w)."""
    f = np.asarray(features, np.float64)
    h, w = f.shape[:2]
    sim = _unit(f) @ np.asarray(prototype, np.float64)  # (h, w)
    pts = []
    for idx in (int(np.argmax(sim)), int(np.argmin(sim))):
        cy, cx = divmod(idx, w)
        pts.append(((cx + 0.5) * shape[1] / w - 0.5, (cy + 0.5) * shape[0] / h - 0.5))
    return np.asarray(pts, np.float32), np.array([1, 0], np.int64), sim
