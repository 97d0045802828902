"""ONNX import: tiny HF ViT / DeiT / DINOv2 exported with torch.onnx inside the test, loaded by vitkit.load."""

from __future__ import annotations

import logging
import re
import warnings

import pytest
import torch
from torch import nn

import vitkit
from vitkit.weights import CheckpointError

T = pytest.importorskip("transformers")
onnx = pytest.importorskip("onnx")

TOL = 1e-5
torch.manual_seed(0)


def _kwargs(**kw):
    base = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                image_size=32, patch_size=8)
    return {**base, **kw}


def _randomise(model):
    """HF inits LayerNorm to (1, 0) and tokens to 0: perturb everything so parity means something."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model.eval()


def _export(model, path, size=32):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.randn(1, 3, size, size),), str(path), dynamo=False,
                          input_names=["pixel_values"])
    return path


def _close(a, b, tol=TOL):
    assert a.shape == b.shape, (a.shape, b.shape)
    err = (a - b).abs().max().item()
    assert err <= tol, f"max abs error {err:.2e} > {tol:.0e}"


def test_vit_classifier(tmp_path):
    hf = _randomise(T.ViTForImageClassification(T.ViTConfig(**_kwargs(num_labels=5))))
    model = vitkit.load(_export(hf, tmp_path / "vit.onnx"))
    assert model.cfg.num_classes == 5 and model.cfg.num_heads == 4 and model.cfg.norm_eps == 1e-12
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        _close(model(x), hf(pixel_values=x).logits)


def test_deit_distilled(tmp_path):
    hf = _randomise(T.DeiTForImageClassificationWithTeacher(T.DeiTConfig(**_kwargs(num_labels=3))))
    model = vitkit.load(_export(hf, tmp_path / "deit.onnx"))
    assert model.cfg.dist_token and model.cfg.family == "deit"
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        _close(model(x), hf(pixel_values=x).logits)


@pytest.mark.parametrize("randomise", [True, False], ids=["random", "init"])
def test_dinov2_backbone(tmp_path, randomise):
    """Unperturbed init has equal LayerNorm weights, which the exporter stores once behind Identity nodes."""
    hf = T.Dinov2Model(T.Dinov2Config(**_kwargs(patch_size=4, image_size=32, num_attention_heads=2))).eval()
    if randomise:
        _randomise(hf)
    model = vitkit.load(_export(hf, tmp_path / "dino.onnx"))
    assert model.cfg.layer_scale and model.cfg.num_heads == 2 and model.cfg.patch_size == 4
    assert model.cfg.norm_eps == 1e-6
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        _close(model.forward_features(x), hf(pixel_values=x).last_hidden_state)


class _WithDecoder(nn.Module):
    """A DINOv2 backbone with a small conv decoder on the patch grid, as a saliency model has."""

    def __init__(self, backbone) -> None:
        super().__init__()
        self.backbone = backbone
        self.decoder = nn.Sequential(nn.ConvTranspose2d(32, 8, 2, stride=2), nn.BatchNorm2d(8), nn.Conv2d(8, 1, 1))

    def forward(self, x):
        h = self.backbone(pixel_values=x).last_hidden_state[:, 1:]
        g = int(h.shape[1] ** 0.5)
        return self.decoder(h.transpose(1, 2).reshape(x.shape[0], -1, g, g))


def test_dinov2_with_decoder_logs_left_out_parts(tmp_path, caplog):
    hf = _randomise(T.Dinov2Model(T.Dinov2Config(**_kwargs(patch_size=4))))
    wrapped = _WithDecoder(hf).eval()
    path = _export(wrapped, tmp_path / "focus.onnx")
    with caplog.at_level(logging.INFO, logger="vitkit.weights.onnx"):
        model = vitkit.load(path)
    lines = [r.getMessage() for r in caplog.records if "left out" in r.getMessage()]
    assert len(lines) == 1 and "decoder.0.weight" in lines[0] and "decoder.1.running_var" in lines[0]
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        _close(model.forward_features(x), hf(pixel_values=x).last_hidden_state)


def test_not_a_vit_names_the_patch_embedding(tmp_path):
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.LazyLinear(2))
    net(torch.randn(1, 3, 8, 8))
    path = _export(net.eval(), tmp_path / "cnn.onnx", size=8)
    with pytest.raises(CheckpointError, match="patch_embeddings.projection.weight"):
        vitkit.load(path)


def test_missing_layer_weight_is_named(tmp_path):
    hf = _randomise(T.ViTModel(T.ViTConfig(**_kwargs()), add_pooling_layer=False))
    path = _export(hf, tmp_path / "vit.onnx")
    m = onnx.load(str(path))
    fc2 = next(n for n in m.graph.node if re.search(r"layers?\.1/(output/dense|mlp/fc2)/MatMul$", n.name))
    keep = [i for i in m.graph.initializer if i.name != fc2.input[1]]
    del m.graph.initializer[:]
    m.graph.initializer.extend(keep)
    onnx.save(m, str(path))
    with pytest.raises(CheckpointError, match=r"encoder\.layer\.1\.mlp fc2 weight"):
        vitkit.load(path)


def test_garbage_file(tmp_path):
    path = tmp_path / "bad.onnx"
    path.write_bytes(b"not a protobuf at all" * 3)
    with pytest.raises(CheckpointError, match="bad.onnx"):
        vitkit.load(path)
