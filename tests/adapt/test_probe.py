"""Linear probe and weighted k-NN on frozen features."""

from __future__ import annotations

import pytest
import torch

from vitkit.adapt.probe import ProbeConfig, fit_linear_probe, knn_scores


def _blobs(n=300, d=8, k=3, seed=0, scale=10.0, offset=50.0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(k, d, generator=g) * 3
    y = torch.arange(n) % k
    x = centres[y] + torch.randn(n, d, generator=g) * 0.5
    return x * scale + offset, y  # badly scaled features: standardisation has something to do


def test_probe_separates_blobs_and_folds_standardisation():
    x, y = _blobs()
    head = fit_linear_probe(x, y, 3, ProbeConfig(steps=200, batch_size=32))
    assert (head(x).argmax(1) == y).float().mean() > 0.98
    xt, yt = _blobs(seed=0)  # same centres, fresh noise below
    assert (head(xt).argmax(1) == yt).float().mean() > 0.95


def test_probe_is_deterministic_and_validates():
    x, y = _blobs(n=60)
    a = fit_linear_probe(x, y, 3, ProbeConfig(steps=20))
    b = fit_linear_probe(x, y, 3, ProbeConfig(steps=20))
    assert torch.equal(a.weight, b.weight)
    with pytest.raises(ValueError, match="steps"):
        ProbeConfig(steps=0)
    with pytest.raises(ValueError, match="features must be"):
        fit_linear_probe(x[:10], y, 3)


def test_knn_hand_computed():
    bank = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.1]])
    labels = torch.tensor([0, 1, 1])
    q = torch.tensor([[1.0, 0.0]])
    s = knn_scores(bank, labels, q, 2, k=2, temperature=1.0)
    sims = torch.tensor([1.0, 1.0 / torch.tensor([1.0, 0.1]).norm().item()])  # neighbours 0 and 2
    w = sims.exp()
    assert torch.allclose(s, torch.tensor([[w[0] / w.sum(), w[1] / w.sum()]]), atol=1e-6)
    with pytest.raises(ValueError, match="k=4"):
        knn_scores(bank, labels, q, 2, k=4)
