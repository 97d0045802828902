import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from vitkit import quant
from vitkit.quant.int8 import (
    Int8Linear,
    int8_linear,
    linear_bytes,
    quantize_per_token,
    quantize_weight,
    reference_int8_linear,
)
from vitkit.weights import CheckpointError


@pytest.mark.parametrize("shape", [(1, 32, 96), (7, 48, 144), (130, 64, 17)])
def test_int8_linear_matches_reference(shape, one_thread):
    M, K, N = shape
    lin = nn.Linear(K, N)
    x = torch.randn(M, K) * torch.linspace(0.01, 10, M).unsqueeze(1)  # per-token scales matter
    m = Int8Linear.from_linear(lin)
    y = m(x)
    assert torch.allclose(y, reference_int8_linear(x, m.weight_int8, m.weight_scale, m.bias), atol=1e-5, rtol=1e-5)
    assert ((y - lin(x)).norm() / lin(x).norm()) < 0.02
    xq, xs = quantize_per_token(x)
    naive = torch.stack([torch.round(row / (row.abs().max() / 127)) for row in x])
    assert xq.dtype == torch.int8 and xq.abs().max() <= 127
    assert (xq.float() - naive).abs().max() <= 1 and (xq.float() == naive).float().mean() > 0.99
    assert torch.allclose(xs.flatten(), x.abs().amax(1) / 127)
    q, s = quantize_weight(lin.weight)
    assert q.dtype == torch.int8 and q.abs().max() <= 127 and s.shape == (N,)
    assert torch.equal(m.weight_int8, q)
    assert int8_linear(x.unsqueeze(0), m.weight_int8.t(), s, None).shape == (1, M, N)
    assert ((m.to_float().weight - lin.weight).abs() <= s[:, None] / 2 + 1e-7).all()


def test_to_int8_from_quantized_keeps_scales(vit, images):
    quant.apply(vit, quant.QuantConfig(w_bits=8, a_bits=8))
    quant.calibrate(vit, images)
    scale = vit.blocks[0].mlp.fc1.weight_quantizer.scale.detach().flatten().clone()
    names = quant.to_int8(vit)
    assert len(names) == 8 and isinstance(vit.blocks[0].mlp.fc1, Int8Linear)
    assert torch.equal(vit.blocks[0].mlp.fc1.weight_scale, scale)
    assert all(b.attn.attn_map_fn is None for b in vit.blocks)


def test_to_int8_errors(vit):
    with pytest.raises(ValueError, match="targets"):
        quant.to_int8(vit, targets="^none$")
    quant.apply(vit, quant.QuantConfig(w_bits=4, a_bits=4))
    with pytest.raises(ValueError, match="8-bit symmetric"):
        quant.to_int8(vit)


def test_int8_model_close_to_float_and_4x_smaller(make_vit, images):
    vit = make_vit(embed_dim=64, num_heads=4)
    ref = vit(images)
    fp32 = linear_bytes(vit)
    quant.to_int8(vit)
    assert ((vit(images) - ref).norm() / ref.norm()) < 0.05
    assert fp32 / linear_bytes(vit) > 3.5


def test_int8_save_load_roundtrip(vit, images, tmp_path):
    quant.to_int8(vit)
    y = vit(images)
    quant.save_quantized(vit, tmp_path / "q")
    sd = load_file(str(tmp_path / "q" / "model.safetensors"))
    assert sd["blocks.0.attn.qkv.weight_int8"].dtype == torch.int8
    assert "blocks.0.attn.qkv.weight" not in sd
    back = quant.load_quantized(tmp_path / "q")
    assert isinstance(back.blocks[1].mlp.fc2, Int8Linear)
    assert torch.equal(back(images), y)


@pytest.mark.parametrize("granularity", ["token", "tensor"])
def test_fake_quant_save_load_roundtrip(vit, images, tmp_path, granularity):
    quant.quantize(vit, quant.QuantConfig(w_bits=4, a_bits=4, act_granularity=granularity), "real", n=8,
                   images=images)
    y = vit(images)
    quant.save_quantized(vit, tmp_path / "q")
    sd = load_file(str(tmp_path / "q" / "model.safetensors"))
    codes = sd["blocks.0.mlp.fc1.weight_int"]
    assert codes.dtype == torch.int8 and codes.abs().max() <= 7
    back = quant.load_quantized(tmp_path / "q")
    assert back.applied["quant"].w_bits == 4
    assert torch.allclose(back(images), y, atol=1e-5)


def test_mismatched_scales_are_refused(vit, tmp_path):
    quant.to_int8(vit)
    quant.save_quantized(vit, tmp_path / "q")
    path = tmp_path / "q" / "model.safetensors"
    sd = load_file(str(path))
    sd["blocks.1.mlp.fc1.weight_scale"] = sd["blocks.1.mlp.fc1.weight_scale"][:-3]
    save_file(sd, str(path))
    with pytest.raises(CheckpointError, match=r"blocks\.1\.mlp\.fc1\.weight_scale.*do not match"):
        quant.load_quantized(tmp_path / "q")


def test_load_errors(vit, tmp_path):
    with pytest.raises(FileNotFoundError):
        quant.load_quantized(tmp_path / "nothing")
    import vitkit

    vitkit.save(vit, tmp_path / "plain")
    with pytest.raises(CheckpointError, match="vitkit_quant"):
        quant.load_quantized(tmp_path / "plain")
    with pytest.raises(ValueError, match="not quantized"):
        quant.save_quantized(vit, tmp_path / "x")
    quant.to_int8(vit)
    quant.save_quantized(vit, tmp_path / "q")
    meta = json.loads((tmp_path / "q" / "config.json").read_text())
    meta["vitkit_quant"]["format"] = "int3"
    (tmp_path / "q" / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="format"):
        quant.load_quantized(tmp_path / "q")
