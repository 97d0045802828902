import pytest
import torch

from vitkit import quant
from vitkit.quant import psaq, spdfq
from vitkit.quant.calibrate import calibration_images


def test_unknown_source_and_missing_images(vit):
    with pytest.raises(ValueError, match="calib='imagenet'"):
        calibration_images(vit, "imagenet")
    with pytest.raises(ValueError, match="real.*images"):
        calibration_images(vit, "real")
    with pytest.raises(ValueError, match="calib"):
        quant.quantize(vit, source="bogus")


def test_real_and_noise_are_seeded(vit, images):
    a = calibration_images(vit, "real", 4, images=images, seed=3)
    assert a.shape == (4, 3, 32, 32) and all(any(torch.equal(x, y) for y in images) for x in a)
    n1, n2 = calibration_images(vit, "noise", 4, seed=1), calibration_images(vit, "noise", 4, seed=1)
    assert torch.equal(n1, n2) and not torch.equal(n1, calibration_images(vit, "noise", 4, seed=2))


def test_gaussian_mixture_priors():
    p = spdfq.gaussian_mixture_priors(5, 3, (4, 6), max_components=3, generator=torch.Generator().manual_seed(0))
    assert p.shape == (5, 3, 24)
    assert torch.allclose(p.sum(-1), torch.ones(5, 3)) and (p >= 0).all()
    assert not torch.allclose(p[0, 0], p[0, 1])  # one prior per head


def test_soft_targets():
    labels = torch.tensor([0, 3, 2])
    t = spdfq.soft_targets(labels, 5, (5.0, 10.0), torch.Generator().manual_seed(0))
    assert torch.equal(t.argmax(-1), labels) and torch.allclose(t.sum(-1), torch.ones(3))
    z = torch.log(t.max(-1).values * 4 / (1 - t.max(-1).values))  # back out the target logit
    assert ((z >= 5 - 1e-4) & (z <= 10 + 1e-4)).all()
    logits = torch.randn(3, 5)
    ref = -(t * torch.log_softmax(logits, -1)).sum(-1).mean()
    assert torch.allclose(spdfq.soft_cross_entropy(logits, t), ref)


def test_quadrant_boxes_do_not_overlap_and_msr_grads_stay_inside():
    boxes = spdfq.quadrant_boxes(20, (32, 32), 4, torch.Generator().manual_seed(0))
    assert {len(b) for b in boxes} <= {1, 2, 3, 4} and len({len(b) for b in boxes}) > 1
    for bxs in boxes:
        mask = torch.zeros(32, 32)
        for y0, x0, y1, x1 in bxs:
            assert 0 <= y0 < y1 <= 32 and 0 <= x0 < x1 <= 32
            mask[y0:y1, x0:x1] += 1
        assert mask.max() == 1
    x = torch.randn(2, 3, 32, 32, requires_grad=True)
    crops, owner = spdfq.crop_resize(x, boxes[:2])
    assert crops.shape[1:] == (3, 32, 32) and len(owner) == len(boxes[0]) + len(boxes[1])
    crops.sum().backward()
    inside = torch.zeros(2, 32, 32, dtype=torch.bool)
    for b, bxs in enumerate(boxes[:2]):
        for y0, x0, y1, x1 in bxs:
            inside[b, y0:y1, x0:x1] = True
    g = x.grad.abs().sum(1)
    assert (g[~inside] == 0).all() and (g[inside] > 0).any()


def test_apa_loss():
    prior = torch.rand(2, 3, 16).softmax(-1)
    cls = torch.cat([torch.full((2, 3, 1), 0.5), prior * 0.5], -1)  # CLS self-attention + patches
    assert spdfq.apa_loss({1: cls}, {1: prior}, depth=2, num_prefix=1).item() < 1e-12
    other = torch.rand(2, 3, 16).softmax(-1)
    l1 = spdfq.apa_loss({0: cls}, {0: other}, depth=2, num_prefix=1)
    l2 = spdfq.apa_loss({1: cls}, {1: other}, depth=2, num_prefix=1)
    assert torch.allclose(l2, 2 * l1)  # depth weighting l / L


def test_spdfq_synthesis_aligns_attention(vit):
    cfg = spdfq.SPDFQConfig(n_images=4, steps=0, progress=False, seed=0)
    x0 = spdfq.synthesize(vit, cfg)
    x1 = spdfq.synthesize(vit, spdfq.SPDFQConfig(n_images=4, steps=25, lr=0.05, progress=False, seed=0))
    assert x1.shape == (4, 3, 32, 32) and not x1.requires_grad

    def losses(x):
        gen = torch.Generator().manual_seed(0)  # the same priors/labels synthesize drew
        priors = {1: spdfq.gaussian_mixture_priors(4, 3, (4, 4), 3, gen)}
        labels = torch.randint(5, (4,), generator=gen)
        t = spdfq.soft_targets(labels, 5, (5.0, 10.0), gen)
        with torch.no_grad(), vit.attention_readout([1]) as maps:
            logits = vit(x)
            return spdfq.apa_loss(dict(maps), priors, 2, 1).item(), spdfq.soft_cross_entropy(logits, t).item()

    (a0, s0), (a1, s1) = losses(x0), losses(x1)
    assert s1 < s0 and a1 < a0
    assert all(not p.requires_grad or p.grad is None for p in vit.parameters())
    assert torch.equal(x1, spdfq.synthesize(vit, spdfq.SPDFQConfig(n_images=4, steps=25, lr=0.05, progress=False)))
    assert all(b.attn.readout is None for b in vit.blocks)


def test_similarity_entropy_and_psaq(vit):
    same = torch.ones(2, 10, 8) + 1e-3 * torch.randn(2, 10, 8)
    diverse = torch.randn(2, 10, 8)
    assert (psaq.similarity_entropy(diverse) > psaq.similarity_entropy(same) + 0.5).all()
    x = psaq.synthesize(vit, psaq.PSAQConfig(n_images=3, steps=5, progress=False))
    assert x.shape == (3, 3, 32, 32)
    assert torch.equal(x, psaq.synthesize(vit, psaq.PSAQConfig(n_images=3, steps=5, progress=False)))


def test_quantize_end_to_end(vit, images):
    ref = vit(images)
    info = quant.quantize(vit, quant.QuantConfig(w_bits=6, a_bits=6, recon_steps=3), "spdfq", n=4, steps=2)
    assert len(info["modules"]) == 10 and info["images"].shape == (4, 3, 32, 32)
    assert len(info["calibration"]["reconstruction"]) == 2
    out = vit(images)
    assert ((out - ref).norm() / ref.norm()) < 0.5 and not torch.equal(out, ref)


@pytest.mark.parametrize("source", ["noise", "psaq", "spdfq"])
def test_grey_synthesis_keeps_equal_channels_and_still_optimises(vit, source):
    """grey=True: one channel synthesised and repeated — the images stay grey through optimisation and
    clamping, and the synthesis still lowers its objective (the gradient of all three channels reaches it)."""
    x = calibration_images(vit, source, 4, steps=6, pixel_range=(-1.0, 1.0), grey=True)
    assert x.shape == (4, 3, 32, 32) and x.is_contiguous() and not x.requires_grad
    assert torch.equal(x[:, 0], x[:, 1]) and torch.equal(x[:, 0], x[:, 2])
    assert x.min() >= -1.0 and x.max() <= 1.0
    colour = calibration_images(vit, source, 4, steps=6, pixel_range=(-1.0, 1.0))
    assert not torch.equal(colour[:, 0], colour[:, 1])  # the default stays free RGB
    if source == "spdfq":
        start = spdfq.synthesize(vit, spdfq.SPDFQConfig(n_images=4, steps=0, grey=True, progress=False))
        done = spdfq.synthesize(vit, spdfq.SPDFQConfig(n_images=4, steps=25, lr=0.05, grey=True, progress=False))
        with torch.no_grad():
            gen = torch.Generator().manual_seed(0)  # the draws synthesize made: priors, then labels and targets
            spdfq.gaussian_mixture_priors(4, 3, (4, 4), 3, gen)
            labels = torch.randint(5, (4,), generator=gen)
            t = spdfq.soft_targets(labels, 5, (5.0, 10.0), gen)
            assert spdfq.soft_cross_entropy(vit(done), t) < spdfq.soft_cross_entropy(vit(start), t)
