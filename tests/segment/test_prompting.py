"""Prompt generators, the clicker, perturbations and the distance transform."""

from __future__ import annotations

import numpy as np
import pytest

from vitkit.segment.prompting import (
    boxes_from_mask,
    cell_shares,
    concept_prototype,
    connected_components,
    distance_transform,
    next_click,
    perturb_boxes,
    perturb_mask,
    perturb_points,
    select_auto_masks,
    similarity_prompts,
    video_prompt_frames,
)


def three_components() -> np.ndarray:
    m = np.zeros((20, 24), bool)
    m[1:4, 2:7] = True  # a 3 × 5 rectangle
    m[8, 10] = m[9, 11] = m[10, 12] = True  # a diagonal: one 8-connected component (three 4-connected ones)
    m[14:19, 18:23] = True
    m[16, 20] = False  # a hole does not split it
    return m


def test_boxes_from_mask_three_components():
    boxes = boxes_from_mask(three_components())
    np.testing.assert_array_equal(boxes, [[2, 1, 6, 3], [10, 8, 12, 10], [18, 14, 22, 18]])
    assert boxes_from_mask(np.zeros((5, 5), bool)).shape == (0, 4)


def test_components_match_scipy_8_connectivity():
    ndimage = pytest.importorskip("scipy.ndimage")
    rng = np.random.default_rng(0)
    for _ in range(5):
        m = rng.random((40, 33)) < 0.45
        lab, k = connected_components(m)
        ref, kr = ndimage.label(m, structure=np.ones((3, 3)))
        assert k == kr
        # same partition: a bijection between our labels and scipy's
        pairs = {(a, b) for a, b in zip(lab[m], ref[m], strict=True)}
        assert len(pairs) == k


def test_distance_transform_exact_against_brute_force_and_scipy():
    rng = np.random.default_rng(1)
    m = rng.random((17, 23)) < 0.8
    dt = distance_transform(m)
    # brute force with the outside of the image as background (a 1-px zero pad)
    p = np.pad(m, 1)
    zy, zx = np.nonzero(~p)
    for y, x in zip(*np.nonzero(m), strict=True):
        want = np.sqrt(((zy - (y + 1)) ** 2 + (zx - (x + 1)) ** 2).min())
        assert dt[y, x] == pytest.approx(want)
    assert (dt[~m] == 0).all()
    ndimage = pytest.importorskip("scipy.ndimage")
    np.testing.assert_allclose(dt, ndimage.distance_transform_edt(np.pad(m, 1))[1:-1, 1:-1])


def test_first_click_at_distance_transform_maximum():
    gt = np.zeros((30, 30), bool)
    gt[5:25, 3:12] = True  # a 20 × 9 bar: its centre column is 7, maximum distance 5 on rows 9..20
    gt[20:28, 20:28] = True  # an 8 × 8 square: maximum distance 4
    c = next_click(gt, np.zeros_like(gt))
    dt = distance_transform(gt)
    assert c.positive and dt[c.y, c.x] == dt.max() == 5
    assert c.x == 7 and (c.y, c.x) == np.unravel_index(np.argmax(dt), dt.shape)
    # the clicked pixel is excluded: the next click on the same prediction moves
    clicked = np.zeros_like(gt)
    clicked[c.y, c.x] = True
    c2 = next_click(gt, np.zeros_like(gt), clicked)
    assert (c2.x, c2.y) != (c.x, c.y) and dt[c2.y, c2.x] == 5


def test_click_is_negative_when_false_positive_region_is_larger():
    gt = np.zeros((30, 30), bool)
    gt[2:6, 2:6] = True
    pred = gt.copy()
    pred[10:26, 10:26] = True  # a big false positive
    c = next_click(gt, pred)
    assert not c.positive and 10 <= c.x < 26 and 10 <= c.y < 26
    assert next_click(gt, gt) is None


def test_perturbations_seeded_and_inside_image():
    shape = (40, 50)
    boxes = np.array([[0, 0, 49, 39], [10, 12, 20, 30], [45, 35, 49, 39]], np.float32)
    a = perturb_boxes(boxes, shape, np.random.default_rng(3))
    b = perturb_boxes(boxes, shape, np.random.default_rng(3))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, perturb_boxes(boxes, shape, np.random.default_rng(4)))
    assert (a[:, [0, 2]] >= 0).all() and (a[:, [0, 2]] <= 49).all() and (a[:, [1, 3]] <= 39).all()
    assert (a[:, 0] <= a[:, 2]).all() and (a[:, 1] <= a[:, 3]).all()
    # the middle box (10 × 18 px inclusive → shorter side 11): each edge moves at most 1.1 px
    assert np.abs(a[1] - boxes[1]).max() <= 1.1 + 1e-5
    pts = np.array([[0, 0], [25, 20], [49, 39]], np.float32)
    p = perturb_points(pts, shape, np.random.default_rng(5))
    np.testing.assert_array_equal(p, perturb_points(pts, shape, np.random.default_rng(5)))
    assert (p >= 0).all() and (p[:, 0] <= 49).all() and (p[:, 1] <= 39).all()
    assert np.abs(p[1] - pts[1]).max() <= 10 and np.abs(p - pts).max() > 0


def test_perturb_mask_erodes_or_dilates():
    m = np.zeros((30, 30), bool)
    m[10:20, 10:20] = True
    seen = set()
    for s in range(12):
        out, n = perturb_mask(m, np.random.default_rng(s))
        out2, n2 = perturb_mask(m, np.random.default_rng(s))
        assert n == n2 and np.array_equal(out, out2) and 1 <= abs(n) <= 5
        side = 10 + 2 * n  # a 3 × 3 element grows/shrinks a square by one pixel per side per iteration
        assert out.sum() == side * side
        seen.add(n > 0)
    assert seen == {True, False}


def test_auto_selection_is_the_union_of_masks_mostly_inside_the_truth():
    gt = np.zeros((10, 10), bool)
    gt[2:8, 2:8] = True
    inside = np.zeros_like(gt)
    inside[3:5, 3:5] = True
    straddle = np.zeros_like(gt)
    straddle[0:4, 0:4] = True  # 4 of 16 pixels inside
    mostly = gt.copy()
    mostly[2:8, 8] = True  # 36 of 42 inside: 0.857 ≤ 0.9, dropped
    out = select_auto_masks(np.stack([inside, straddle, mostly, np.zeros_like(gt)]), gt)
    np.testing.assert_array_equal(out, inside)
    assert video_prompt_frames(8, 3) == [0, 1, 2]
    with pytest.raises(ValueError):
        video_prompt_frames(4, 5)


def test_cell_shares_on_exact_and_uneven_grids():
    m = np.zeros((4, 4), bool)
    m[:2, :2] = True
    m[3, 3] = True
    np.testing.assert_allclose(cell_shares(m, 2, 2), [[1, 0], [0, 0.25]])
    m5 = np.zeros((5, 5), bool)
    m5[0, :] = True  # rows 0–2 fall in cell row 0 (y·2 // 5), rows 3–4 in cell row 1
    np.testing.assert_allclose(cell_shares(m5, 2, 2), [[1 / 3, 1 / 3], [0, 0]])


def test_prototype_is_the_masked_feature_and_prompts_land_on_best_and_worst_match():
    e1, e2, e3 = np.eye(3)
    feats = np.tile(e2, (2, 4, 4, 1))  # (K=2, 4, 4, C=3): background feature e2
    feats[0, 1, 2] = 3 * e1  # the concept's cells (scale does not matter: cosine)
    feats[1, 3, 0] = e1
    masks = np.zeros((2, 32, 32), bool)
    masks[0, 8:16, 16:24] = True  # exactly cell (1, 2) of an 8-px grid
    masks[1, 24:32, 0:8] = True  # cell (3, 0)
    np.testing.assert_allclose(concept_prototype(feats, masks), e1, atol=1e-12)
    target = np.tile(e2, (4, 4, 1))
    target[2, 1] = e1 + 0.1 * e2  # the best match
    target[0, 3] = -e1  # the worst
    pts, labels, sim = similarity_prompts(target, e1, (64, 64))  # a 64-px image: 16-px cells
    np.testing.assert_allclose(pts, [[1.5 * 16 - 0.5, 2.5 * 16 - 0.5], [3.5 * 16 - 0.5, 0.5 * 16 - 0.5]])
    np.testing.assert_array_equal(labels, [1, 0])
    assert sim.shape == (4, 4) and sim[2, 1] == sim.max() and sim[0, 3] == -1
    feats[:, :, :] = e3
    with pytest.raises(ValueError, match="empty"):
        concept_prototype(feats, np.zeros((2, 32, 32), bool))
