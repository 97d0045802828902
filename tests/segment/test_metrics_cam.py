"""mIoU against a hand-computed case; CAM normalisation and pseudo-labels."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vitkit.segment.cam import maps_to_label, multi_scale_maps, normalize_maps, pseudo_label
from vitkit.segment.metrics import IGNORE, IoUMeter, confusion_matrix, iou_per_class, mean_iou


def test_miou_hand_computed():
    truth = np.array([[0, 0, 1, 1],
                      [0, 0, 1, IGNORE],
                      [2, 2, 0, 0]])
    pred = np.array([[0, 1, 1, 1],
                     [0, 0, 0, 3],
                     [2, 0, 0, 0]])
    conf = confusion_matrix(pred, truth, 5)
    # class 0: TP 4 (0,0)(1,0)(1,1)... count: truth 0 at (0,0)(0,1)(1,0)(1,1)(2,2)(2,3) = 6, pred 0 there at 5 of them
    # pred 0 elsewhere: (1,2) [truth 1], (2,1) [truth 2] → FP 2; FN 1 (0,1 predicted 1) → IoU 5 / 8
    # class 1: truth at (0,2)(0,3)(1,2); pred 1 at (0,1)(0,2)(0,3) → TP 2, FP 1, FN 1 → 2/4
    # class 2: truth (2,0)(2,1); pred 2 at (2,0) → TP 1, FN 1 → 1/2
    # class 3: predicted only on an ignored pixel → not counted; class 4 absent → left out
    iou = iou_per_class(conf)
    np.testing.assert_allclose(iou[:3], [5 / 8, 2 / 4, 1 / 2])
    assert math.isnan(iou[3]) and math.isnan(iou[4])
    assert mean_iou(conf) == pytest.approx((5 / 8 + 2 / 4 + 1 / 2) / 3)
    meter = IoUMeter(5)
    meter.update(torch.from_numpy(pred[:2]), torch.from_numpy(truth[:2]))
    meter.update(pred[2:], truth[2:])
    np.testing.assert_array_equal(meter.conf, conf)
    assert meter.per_class(["bg", "a", "b", "c", "d"])["d"] is None
    with pytest.raises(ValueError, match="labels must be in"):
        confusion_matrix(np.array([7]), np.array([0]), 5)


def test_normalize_and_labels():
    maps = torch.tensor([[[[1.0, 3.0], [-2.0, 0.0]], [[0.0, 0.5], [1.0, 0.25]]]])  # (1, 2, 2, 2)
    labels = torch.tensor([[1.0, 1.0]])
    n = normalize_maps(maps, labels)
    np.testing.assert_allclose(n[0, 0].numpy(), [[1 / 3, 1.0], [0.0, 0.0]], atol=1e-4)
    np.testing.assert_allclose(n[0, 1].numpy(), [[0.0, 0.5], [1.0, 0.25]], atol=1e-4)
    assert normalize_maps(maps, torch.tensor([[0.0, 1.0]]))[0, 0].abs().sum() == 0
    np.testing.assert_array_equal(maps_to_label(n, labels, 0.4)[0].numpy(), [[0, 1], [2, 0]])
    pl = pseudo_label(n, labels, high=0.7, low=0.3)[0].numpy()
    np.testing.assert_array_equal(pl, [[IGNORE, 1], [2, 0]])  # 1/3 and 0.5 → band; 0.25 → background
    with pytest.raises(ValueError, match="low ≤ high"):
        pseudo_label(n, labels, high=0.2, low=0.3)


def test_multi_scale_takes_max_over_flip_and_sums_scales():
    def fn(x):  # a map that is the input's first channel averaged to 2×2 patches
        return torch.nn.functional.avg_pool2d(x[:, :1], 2)

    x = torch.arange(16.0).view(1, 1, 4, 4).expand(1, 3, 4, 4)
    one = multi_scale_maps(fn, x, (1.0,), flip=False, patch=2)
    np.testing.assert_allclose(one[0, 0].numpy(), fn(x)[0, 0].numpy())
    flipped = multi_scale_maps(fn, x, (1.0,), flip=True, patch=2)
    assert torch.all(flipped >= one) and torch.equal(flipped, torch.maximum(one, fn(x.flip(-1)).flip(-1)))
    two = multi_scale_maps(fn, x, (1.0, 1.0), flip=False, patch=2)
    np.testing.assert_allclose(two.numpy(), 2 * one.numpy())
    assert multi_scale_maps(fn, x, (1.0, 2.0), patch=2).shape == (1, 1, 2, 2)
