"""MoLAR: k-means, exemplar choice, the soft nearest-neighbour head and the detector."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vitkit.ood.detectors import load_detector, make_detector
from vitkit.ood.metrics import auroc
from vitkit.ood.molar import group_partners, kmeans, kmeans_pp_init, select_exemplars, sharpen, soft_nn_probs


def blobs(n, means, noise=0.3, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % len(means)
    return means[y] + noise * torch.randn(n, means.shape[1], generator=g), y


def naive_lloyd(x, c, iters):
    for _ in range(iters):
        a = torch.cdist(x, c).argmin(1)
        c = torch.stack([x[a == j].mean(0) if (a == j).any() else c[j] for j in range(len(c))])
    return c


def test_kmeans_recovers_separated_clusters():
    means = torch.eye(5) * 10
    x, y = blobs(250, means)
    c, assign, inertia = kmeans(x, 5, n_init=3, seed=0)
    # every true cluster maps to exactly one k-means cluster
    pairs = {(int(a), int(b)) for a, b in zip(y, assign, strict=True)}
    assert len(pairs) == 5 and len({b for _, b in pairs}) == 5
    assert torch.allclose(torch.sort(c, 0).values, torch.sort(means, 0).values, atol=0.2)
    assert inertia == pytest.approx(float(((x - c[assign]) ** 2).sum()), rel=1e-5)


def test_kmeans_seeded_and_equals_naive_lloyd():
    x = torch.randn(300, 4)
    a = kmeans(x, 6, n_init=1, iters=30, tol=0.0, seed=3)
    b = kmeans(x, 6, n_init=1, iters=30, tol=0.0, seed=3)
    assert torch.equal(a[0], b[0])
    init = kmeans_pp_init(x, 6, torch.Generator().manual_seed(3))
    assert torch.allclose(a[0], naive_lloyd(x, init, 30), atol=1e-5)


def test_kmeans_pp_picks_distinct_points():
    x = torch.randn(50, 3)
    c = kmeans_pp_init(x, 10, torch.Generator().manual_seed(0))
    assert len({tuple(v.tolist()) for v in c}) == 10
    assert all((x == v).all(1).any() for v in c)  # real points


def test_select_exemplars_are_nearest_real_samples():
    x = torch.randn(200, 8)
    idx = select_exemplars(x, 12, n_init=2, seed=1)
    assert len(idx) == 12 and len(set(idx.tolist())) == 12
    xn = F.normalize(x, dim=-1)
    c, _, _ = kmeans(xn, 12, n_init=2, seed=1)
    sims = xn @ F.normalize(c, dim=-1).T
    # the first centroid always gets its true nearest sample
    assert int(idx[0]) == int(sims[:, 0].argmax())
    with pytest.raises(ValueError, match="budget=201 is larger than the 200"):
        select_exemplars(x, 201)


def test_soft_nn_and_sharpen():
    q, s = torch.randn(4, 6), torch.randn(5, 6)
    y = torch.softmax(torch.randn(5, 3), -1)
    sims = F.normalize(q, dim=-1) @ F.normalize(s, dim=-1).T
    ref = torch.stack([sum(torch.exp(sims[i, j] / 0.1) * y[j] for j in range(5)) / torch.exp(sims[i] / 0.1).sum()
                       for i in range(4)])
    assert torch.allclose(soft_nn_probs(q, s, y, 0.1), ref, atol=1e-5)
    p = torch.softmax(torch.randn(3, 4), -1)
    assert torch.allclose(sharpen(p, 1.0), p, atol=1e-6)
    sp = sharpen(p, 0.25)
    assert torch.allclose(sp.sum(-1), torch.ones(3)) and (sp.max(-1).values >= p.max(-1).values).all()


@pytest.fixture(scope="module")
def fitted():
    g = torch.Generator().manual_seed(0)
    means = torch.randn(8, 16, generator=g) * 2
    x, y = blobs(800, means[:4], noise=0.6)
    xi, _ = blobs(200, means[:4], noise=0.6, seed=1)
    xo, _ = blobs(200, means[4:], noise=0.6, seed=2)
    det = make_detector("molar", budget=16, steps=60, batch_size=64, n_init=2).fit(x, y)
    return det, x, y, xi, xo


def test_molar_scores_max_cosine_to_exemplars(fitted, one_thread):
    det, x, y, xi, xo = fitted
    assert det.exemplars.shape == (16, 16) and torch.equal(det.exemplars, x[det.exemplar_index])
    assert torch.equal(det.exemplar_labels, y[det.exemplar_index])
    with torch.no_grad():
        z = F.normalize(det.head(xi), dim=-1)
        s = F.normalize(det.head(det.exemplars), dim=-1)
    ref = torch.tensor([max(float(z[i] @ s[j]) for j in range(16)) for i in range(len(xi))])
    assert torch.allclose(det.score(xi), ref, atol=1e-5)
    assert det.history[-1] < det.history[0]  # the head learned
    assert auroc(det.score(xi), det.score(xo)) > 0.9
    acc = (det.predict(xi).argmax(-1) == torch.arange(len(xi)) % 4).float().mean()
    assert acc > 0.9


def test_molar_save_load(fitted, tmp_path):
    det, *_, xi, xo = fitted
    again = load_detector(det.save(tmp_path / "m.safetensors"))
    assert again.cfg == det.cfg and torch.allclose(again.score(xo), det.score(xo), atol=1e-6)


def test_molar_bad_input():
    x, y = torch.randn(30, 4), torch.arange(30) % 3
    with pytest.raises(ValueError, match="budget=31 is larger than the 30"):
        make_detector("molar", budget=31, steps=1).fit(x, y)
    with pytest.raises(ValueError, match="needs class labels"):
        make_detector("molar", budget=3).fit(x)
    with pytest.raises(ValueError, match="tau"):
        make_detector("molar", tau=0)


def test_molar_fit_is_seeded_and_leaves_global_rng_alone():
    x, y = torch.randn(60, 4), torch.arange(60) % 3
    state = torch.get_rng_state()
    a = make_detector("molar", budget=6, steps=3, n_init=1).fit(x, y)
    assert torch.equal(torch.get_rng_state(), state)
    b = make_detector("molar", budget=6, steps=3, n_init=1).fit(x, y)
    assert torch.equal(a.score(x), b.score(x))


def test_group_partners_stay_in_their_group():
    groups = torch.tensor([5, 2, 5, 9, 2, 5, 7])  # 7 is alone
    idx = torch.arange(7).repeat(50)
    p = group_partners(groups, idx, torch.Generator().manual_seed(0))
    assert torch.equal(groups[p], groups[idx])
    assert set(p[idx == 0].tolist()) == {0, 2, 5}  # every member of group 5 gets drawn
    assert set(p[idx == 6].tolist()) == {6}


def test_molar_crop_views():
    g = torch.Generator().manual_seed(0)
    means = torch.randn(3, 8, generator=g) * 2
    y = torch.arange(90) % 3
    x = means[y] + 0.5 * torch.randn(90, 8, generator=g)
    groups = torch.arange(90) % 30  # 30 "pages" of one class each (30 ≡ 0 mod 3)
    det = make_detector("molar", budget=9, steps=20, batch_size=32, n_init=1).fit(x, y, groups=groups)
    assert det.history[-1] < det.history[0]
    with pytest.raises(ValueError, match="groups has 5 entries"):
        make_detector("molar", budget=3, steps=1).fit(x, y, groups=groups[:5])
