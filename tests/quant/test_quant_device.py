"""Device handling of the quantization path: the CPU results are those of the code before the device
fixes (random draws stay on the CPU generator), and on CUDA every source, quantizer and reconstruction
runs on the model's device (``-m gpu``)."""

from __future__ import annotations

import copy

import pytest
import torch

from vitkit import quant
from vitkit.quant import psaq, ptq, spdfq
from vitkit.quant.calibrate import calibration_images

# logits of two images after W4A4 with SPDFQ images (4 steps) and 4 reconstruction steps, measured with the
# code before the device changes (same values after them; machine-independent to well under 1e-3)
EXPECTED = {
    "token": [-0.4084, 1.1072, 0.975, -0.38, -0.5038, 0.5049, 0.7046, 0.7456, -0.3287, 0.5977],
    "tensor": [-0.3752, 0.9909, 1.0465, -0.6321, -0.5709, 0.4583, 0.8545, 0.5904, -0.3893, 0.5545],
}
EXPECTED_CALIB = ([-1.0, -1.0, -0.22656, -0.78872], -0.014498)


def test_synthesis_draws_the_same_cpu_stream_as_before(vit):
    """steps=0 returns the starting noise: drawn after the priors, labels and boxes, as the old code did."""
    gen = torch.Generator().manual_seed(3)
    layers = [1]  # the deeper half of 2 blocks
    for _ in layers:
        spdfq.gaussian_mixture_priors(4, 3, (4, 4), 3, gen)
    labels = torch.randint(5, (4,), generator=gen)
    spdfq.soft_targets(labels, 5, (5.0, 10.0), gen)
    boxes = spdfq.quadrant_boxes(4, (32, 32), 4, gen)
    spdfq.soft_targets(torch.randint(5, (sum(map(len, boxes)),), generator=gen), 5, (5.0, 10.0), gen)
    ref = torch.randn(4, 3, 32, 32, generator=gen)
    assert torch.equal(spdfq.synthesize(vit, spdfq.SPDFQConfig(n_images=4, steps=0, seed=3, progress=False)), ref)
    gen = torch.Generator().manual_seed(3)
    torch.randint(5, (2,), generator=gen)
    ref = torch.randn(2, 3, 32, 32, generator=gen)
    assert torch.equal(psaq.synthesize(vit, psaq.PSAQConfig(n_images=2, steps=0, seed=3, progress=False)), ref)
    noise = calibration_images(vit, "noise", 3, seed=5)
    assert torch.equal(noise, torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(5)))
    assert noise.device == ptq.model_device(vit)


@pytest.mark.parametrize("granularity", ["token", "tensor"])
def test_cpu_w4a4_with_spdfq_and_reconstruction_is_unchanged(make_vit, granularity):
    vit = make_vit()
    images = torch.randn(16, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    calib = calibration_images(vit, "spdfq", 4, steps=4, seed=0, pixel_range=(-1, 1))
    assert torch.allclose(calib.flatten()[:4], torch.tensor(EXPECTED_CALIB[0]), atol=1e-4)
    assert abs(calib.mean().item() - EXPECTED_CALIB[1]) < 1e-5
    quant.apply(vit, quant.QuantConfig(w_bits=4, a_bits=4, act_granularity=granularity, recon_steps=4))
    quant.calibrate(vit, calib)
    with torch.no_grad():
        out = vit(images[:2]).flatten()
    assert torch.allclose(out, torch.tensor(EXPECTED[granularity]), atol=1e-3)


def test_soft_targets_follow_the_labels_device():
    t = spdfq.soft_targets(torch.tensor([1, 0]), 3, (5.0, 10.0), torch.Generator().manual_seed(0))
    assert t.device.type == "cpu" and torch.equal(t.argmax(-1), torch.tensor([1, 0]))


@pytest.fixture()
def ieee_fp32():
    """CUDA matmuls and convolutions in IEEE fp32 (convolutions default to TF32), restored afterwards;
    through the setters that keep torch's old and new precision flags consistent."""
    saved = (torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32)
    torch.set_float32_matmul_precision("highest")
    torch.backends.cudnn.allow_tf32 = False
    yield
    torch.set_float32_matmul_precision(saved[0])
    torch.backends.cudnn.allow_tf32 = saved[1]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_sources_quantizers_and_reconstruction_stay_on_the_device(make_vit, ieee_fp32):
    cpu = make_vit()
    gpu = copy.deepcopy(cpu).cuda()
    images = torch.randn(16, 3, 32, 32, generator=torch.Generator().manual_seed(1))  # CPU: moved by the library
    for src in ("real", "noise"):
        a = calibration_images(cpu, src, 4, images=images, seed=2)
        b = calibration_images(gpu, src, 4, images=images, seed=2)
        assert b.device.type == "cuda" and torch.equal(a, b.cpu())
    for src in ("psaq", "spdfq"):
        a0 = calibration_images(cpu, src, 4, steps=0, seed=2)
        b0 = calibration_images(gpu, src, 4, steps=0, seed=2)
        assert torch.equal(a0, b0.cpu())  # the same CPU random stream
        a = calibration_images(cpu, src, 4, steps=3, seed=2, pixel_range=(-1, 1))
        b = calibration_images(gpu, src, 4, steps=3, seed=2, pixel_range=(-1, 1))
        assert b.device.type == "cuda" and (a - b.cpu()).abs().mean() < 0.02
    for granularity in ("token", "tensor"):
        for method in ("minmax", "percentile", "mse"):
            cfg = quant.QuantConfig(w_bits=6, a_bits=6, act_granularity=granularity, calib_method=method,
                                    recon_steps=3)
            outs = []
            for m in (cpu, gpu):
                quant.apply(m, cfg)
                quant.calibrate(m, images)
                with torch.no_grad():
                    outs.append(m(images.to(ptq.model_device(m))).cpu())
                if m is gpu:
                    assert all(t.device.type == "cuda" for t in (*m.parameters(), *m.buffers()))
                quant.remove(m)
            rel = ((outs[0] - outs[1]).norm() / outs[0].norm()).item()
            assert rel < 0.1, (granularity, method, rel)
