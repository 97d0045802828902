"""Detector API and the baseline scores against naive references."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from vitkit.ood import scores
from vitkit.ood.detectors import DETECTOR_NAMES, collect, load_detector, make_detector
from vitkit.ood.metrics import auroc


def blobs(n=400, k=4, d=16, seed=0, shift=0.0):
    g = torch.Generator().manual_seed(seed)
    mu = torch.randn(k, d, generator=g) * 3 + shift
    y = torch.arange(n) % k
    return mu[y] + torch.randn(n, d, generator=g), y


def test_logit_scores_match_formulas():
    z = torch.randn(7, 5)
    p = np.exp(z.numpy()) / np.exp(z.numpy()).sum(1, keepdims=True)
    assert torch.allclose(scores.msp(z), torch.from_numpy(p.max(1)), atol=1e-6)
    assert torch.equal(scores.max_logit(z), z.max(1).values)
    t = 2.5
    ref = t * np.log(np.exp(z.numpy() / t).sum(1))
    assert torch.allclose(scores.energy(z, t), torch.from_numpy(ref), atol=1e-5)


@pytest.mark.parametrize("k", [1, 3, 10])
def test_knn_matches_brute_force(k):
    bank, q = torch.randn(300, 8), torch.randn(20, 8)
    bn, qn = bank / bank.norm(dim=1, keepdim=True), q / q.norm(dim=1, keepdim=True)
    ref = torch.tensor([sorted((qn[i] * bn).sum(1).tolist(), reverse=True)[k - 1] for i in range(len(q))])
    for chunk in (7, 64, 4096):  # chunked scan == one pass
        assert torch.allclose(scores.knn_score(q, bank, k, chunk=chunk), ref, atol=1e-6)


def test_mahalanobis_matches_naive():
    x, y = blobs(200, 3, 5)
    means, prec = scores.class_statistics(x, y, 3)
    xn, yn = x.double().numpy(), y.numpy()
    mu = np.stack([xn[yn == c].mean(0) for c in range(3)])
    cov = sum(np.outer(v - mu[c], v - mu[c]) for v, c in zip(xn, yn, strict=True)) / len(xn)
    P = np.linalg.inv(cov)
    q = torch.randn(6, 5)
    ref = [-min((qi - m) @ P @ (qi - m) for m in mu) for qi in q.double().numpy()]
    assert np.allclose(scores.mahalanobis_score(q, means, prec).numpy(), ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ["msp", "max_logit", "energy", "knn", "mahalanobis"])
def test_fit_score_save_load(name, tmp_path):
    x, y = blobs()
    xo, _ = blobs(100, 4, 16, seed=1)
    det = make_detector(name).fit(x, y)
    s = det.score(x[:50])
    assert s.shape == (50,)
    path = det.save(tmp_path / f"{name}.safetensors")
    again = load_detector(path)
    assert type(again) is type(det) and again.dim == 16 and again.cfg == det.cfg
    assert torch.allclose(again.score(xo), det.score(xo))
    with pytest.raises(ValueError, match="dimension 16"):
        det.score(torch.randn(3, 12))


def test_feature_detectors_separate_known_from_unknown():
    x, y = blobs(800, 4, 16)
    xi, _ = blobs(200, 4, 16, seed=0)  # same class means as training
    xo, _ = blobs(200, 4, 16, seed=7)  # other means: unknown classes
    for name in ("knn", "mahalanobis"):
        det = make_detector(name).fit(x, y)
        assert auroc(det.score(xi + 0.1 * torch.randn_like(xi)), det.score(xo)) > 0.95, name


def test_fit_from_loader_and_extractor_equals_tensor():
    x, y = blobs(120, 3, 6)
    loader = DataLoader(TensorDataset(x, y), batch_size=32)
    a = make_detector("mahalanobis").fit(x, y)
    b = make_detector("mahalanobis").fit(loader)
    assert torch.allclose(a.means, b.means) and torch.allclose(a.precision, b.precision)
    w = torch.randn(6, 4)
    c = make_detector("knn", k=2).fit(DataLoader(TensorDataset(x), batch_size=50), extractor=lambda t: t @ w)
    assert c.dim == 4 and torch.allclose(c.bank, torch.nn.functional.normalize(x @ w, dim=-1))
    xs, ys = collect([x[:10], x[10:20]])
    assert xs.shape == (20, 6) and ys is None


def test_bad_input(tmp_path):
    x, y = blobs(50, 2, 4)
    with pytest.raises(ValueError, match="not fitted"):
        make_detector("knn").score(x)
    with pytest.raises(ValueError, match="needs class labels"):
        make_detector("mahalanobis").fit(x)
    with pytest.raises(ValueError, match="k=100 is larger than the 50"):
        make_detector("knn", k=100).fit(x)
    with pytest.raises(ValueError, match="unknown detector 'foo'"):
        make_detector("foo")
    with pytest.raises(ValueError, match="unknown option"):
        make_detector("knn", kk=3)
    with pytest.raises(ValueError, match="labels has 3 entries"):
        make_detector("mahalanobis").fit(x, y[:3])
    with pytest.raises(ValueError, match="temperature"):
        make_detector("energy", temperature=0)
    bad = tmp_path / "x.safetensors"
    bad.write_bytes(b"not a file")
    with pytest.raises(ValueError, match="x.safetensors"):
        load_detector(bad)
    from safetensors.torch import save_file

    save_file({"a": torch.zeros(1)}, str(tmp_path / "w.safetensors"))
    with pytest.raises(ValueError, match="not a vitkit OOD detector"):
        load_detector(tmp_path / "w.safetensors")
    with pytest.raises(FileNotFoundError):
        load_detector(tmp_path / "missing.safetensors")


def test_names():
    assert set(DETECTOR_NAMES) == {"msp", "max_logit", "energy", "knn", "mahalanobis", "molar"}
