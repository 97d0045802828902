"""minGRU scan and VisionGRU: scan == recurrence, raster directions, any input size, and the model API
(registry, save/load, quantization, Trainer, CLI) with explicit refusals from attention-only methods."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

import vitkit
from vitkit import quant
from vitkit.cli import app
from vitkit.engine import TrainConfig, Trainer
from vitkit.models.attention import Attention
from vitkit.models.mingru import (
    MinGRU,
    chrono_bias,
    g,
    linear_scan,
    log_g,
    scan,
    scan_linear,
    scan_log,
    scan_sequential,
)
from vitkit.models.visiongru import Block2DGRU, VisionGRU, VisionGRUConfig, conv_rows, stem_pieces
from vitkit.quant import QuantConfig
from vitkit.reduce import EViTConfig, HiREDConfig, ToMeConfig, evit, hired, tome

TINY = dict(dims=(16, 24, 32, 40), depths=(1, 1, 1, 1), num_classes=5)


def make(seed: int = 0, **kw) -> VisionGRU:
    torch.manual_seed(seed)
    model = VisionGRU(VisionGRUConfig(**{**TINY, **kw}))
    with torch.no_grad():  # move norms and biases off their (1, 0) init so that equalities mean something
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model.eval()


# ------------------------------------------------------------------ scan


def test_g_and_log_g():
    v = torch.tensor([-30.0, -2.0, -1e-3, 0.0, 1e-3, 3.0], dtype=torch.float64)
    expect = torch.tensor([torch.sigmoid(torch.tensor(-30.0)).item(), torch.sigmoid(torch.tensor(-2.0)).item(),
                           torch.sigmoid(torch.tensor(-1e-3)).item(), 0.5, 0.501, 3.5], dtype=torch.float64)
    assert torch.allclose(g(v), expect)
    assert torch.allclose(log_g(v), expect.log())


def test_scan_matches_recurrence_on_a_long_sequence():
    """65,537 tokens (chunks and a padded tail), fp32 against the fp64 one-token-at-a-time recurrence."""
    gen = torch.Generator().manual_seed(0)
    gate = torch.randn(1, 65_537, 4, generator=gen) * 2
    hidden = torch.randn(1, 65_537, 4, generator=gen) * 2
    ref = scan_sequential(gate.double(), hidden.double())
    ref_b = scan_sequential(gate.bfloat16().double(), hidden.bfloat16().double())
    for fn in (scan, scan_log, scan_linear):
        h = fn(gate, hidden)
        assert h.dtype == torch.float32
        assert ((h.double() - ref).abs() / ref).max() < 2e-4
        hb = fn(gate.bfloat16(), hidden.bfloat16())  # computed in fp32 inside: only the output is rounded
        assert hb.dtype == torch.bfloat16
        assert ((hb.double() - ref_b).abs() / ref_b).max() < 8e-3  # bf16 has 8 bits of mantissa


@pytest.mark.parametrize("L, chunk, block", [(1, 8, 4), (7, 8, 4), (8, 8, 8), (9, 8, 4), (50, 8, 4), (50, 7, 3),
                                            (200, 16, 5)])
def test_scan_exact_in_fp64_for_every_chunking(L, chunk, block):
    gen = torch.Generator().manual_seed(L + chunk)
    gate = torch.randn(2, L, 3, generator=gen, dtype=torch.float64) * 3
    hidden = torch.randn(2, L, 3, generator=gen, dtype=torch.float64) * 3
    ref = scan_sequential(gate, hidden)
    assert torch.allclose(scan_log(gate, hidden, chunk), ref, rtol=1e-10, atol=0)
    assert torch.allclose(scan(gate, hidden, chunk, block), ref, rtol=1e-10, atol=0)
    assert torch.allclose(scan_linear(gate, hidden, max(block, 2)), ref, rtol=1e-10, atol=0)


def test_scan_saturated_gates_take_the_log_space_path():
    """Gates of ±40: blocks that decay by more than e^-120 are redone in log space, and g(h̃) spans 1e-17…40."""
    gen = torch.Generator().manual_seed(3)
    gate = torch.randn(1, 300, 4, generator=gen, dtype=torch.float64) * 40
    hidden = torch.randn(1, 300, 4, generator=gen, dtype=torch.float64) * 40
    ref = scan_sequential(gate, hidden)
    assert torch.allclose(scan(gate, hidden, 64, 32), ref, rtol=1e-7, atol=0)  # values span 1e-20 … 1e2
    h32 = scan(gate.float(), hidden.float(), 64, 32).double()
    assert ((h32 - ref).abs() / ref).max() < 2e-4
    assert torch.allclose(scan_linear(gate, hidden, 16), ref, rtol=1e-7, atol=0)  # linear space: no path switch
    # in fp32 the linear-space scan is as good as the fp32 recurrence itself: 3.6e-4 off at h ≈ 2e-36, where
    # σ(h̃ ≈ −80) in fp32 is that far from fp64 (the log-space scans never form σ there, only its log)
    lin32 = scan_linear(gate.float(), hidden.float(), 16).double()
    seq32 = scan_sequential(gate.float(), hidden.float()).double()
    assert ((lin32 - seq32).abs() / seq32).max() < 1e-5 and ((lin32 - ref).abs() / ref).max() < 5e-4


def test_scan_gradients_match_recurrence():
    gen = torch.Generator().manual_seed(1)
    gate = (torch.randn(2, 45, 3, generator=gen, dtype=torch.float64) * 2).requires_grad_(True)
    hidden = (torch.randn(2, 45, 3, generator=gen, dtype=torch.float64) * 2).requires_grad_(True)
    w = torch.randn(2, 45, 3, generator=gen, dtype=torch.float64)
    grads = []
    for fn in (lambda a, b: scan(a, b, chunk=8, block=4), lambda a, b: scan_log(a, b, chunk=8),
               lambda a, b: scan_linear(a, b, block=4), scan_sequential):
        (fn(gate, hidden) * w).sum().backward()
        grads.append((gate.grad.clone(), hidden.grad.clone()))
        gate.grad = hidden.grad = None
    for got in grads[:3]:  # each scan against the sequential recurrence, the last
        for a, b in zip(got, grads[3], strict=True):
            assert torch.isfinite(a).all() and torch.allclose(a, b, rtol=1e-8, atol=1e-12)


def test_scan_rejects_bad_shapes():
    with pytest.raises(ValueError, match="gate and hidden"):
        scan(torch.zeros(1, 4, 2), torch.zeros(1, 4, 3))


def test_linear_scan_gradcheck_and_pieces_with_a_carried_state():
    gen = torch.Generator().manual_seed(5)
    a = torch.rand(2, 37, 3, generator=gen, dtype=torch.float64).requires_grad_(True)
    b = torch.rand(2, 37, 3, generator=gen, dtype=torch.float64).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: linear_scan(a, b, 4), (a, b))
    with torch.no_grad():
        whole = linear_scan(a, b, 4)
        state, parts = None, []
        for s in range(0, 37, 10):  # pieces of 10, 10, 10, 7: each continues from the last state
            parts.append(linear_scan(a[:, s : s + 10], b[:, s : s + 10], 4, state))
            state = parts[-1][:, -1]
        assert torch.allclose(torch.cat(parts, 1), whole, rtol=1e-12, atol=0)
    with pytest.raises(ValueError, match="no backward"):
        linear_scan(a, b, 4, torch.zeros(2, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="block"):
        linear_scan(a, b, 1)


def test_mingru_resume_piece_by_piece_equals_forward():
    torch.manual_seed(0)
    gru = MinGRU(dim=6, expansion=2.0, block=4).double()
    x = torch.randn(2, 53, 6, dtype=torch.float64)
    with torch.no_grad():
        state, parts = None, []
        for s in range(0, 53, 16):
            out, state = gru.resume(x[:, s : s + 16], state)
            parts.append(out)
    assert state.shape == (2, 12)
    assert torch.allclose(torch.cat(parts, 1), gru(x), rtol=1e-10, atol=1e-14)


def test_chrono_gate_bias_spreads_the_initial_memory():
    """With a zero input the update gate is z = σ(bias): memories 1/z spread over [2, gate_memory] tokens."""
    b = chrono_bias(4096, 64.0, torch.Generator().manual_seed(0))
    memory = 1 / torch.sigmoid(b)
    assert memory.min() >= 2 - 1e-4 and memory.max() <= 64 + 1e-3
    assert memory.min() < 2.1 and memory.max() > 63 and 30 < memory.median() < 35  # uniform over [2, 64]
    gru = MinGRU(dim=8, gate_memory=64.0)
    assert gru.gate_bias.shape == (16,) and (gru.gate_bias <= 0).all()
    assert MinGRU(dim=8).gate_bias is None
    with pytest.raises(ValueError, match="gate_memory"):
        MinGRU(dim=8, gate_memory=1.5)
    with pytest.raises(ValueError, match="gate_memory"):
        VisionGRUConfig(gate_memory=1.0)


def test_gate_bias_enters_the_gate_before_the_scan():
    torch.manual_seed(0)
    gru = MinGRU(dim=6, expansion=2.0, block=4, gate_memory=32.0).double()
    x = torch.randn(2, 37, 6, dtype=torch.float64)
    hidden, gate = gru.proj_in(x).chunk(2, dim=-1)
    ref = gru.proj_out(scan_sequential(gate + gru.gate_bias, hidden))
    assert torch.allclose(gru(x), ref, rtol=1e-10, atol=1e-12)
    with torch.no_grad():  # the piece-by-piece inference path sees the bias too
        state, parts = None, []
        for s in range(0, 37, 10):
            out, state = gru.resume(x[:, s : s + 10], state)
            parts.append(out)
        assert torch.allclose(torch.cat(parts, 1), ref, rtol=1e-10, atol=1e-12)
        gru.gate_bias.zero_()
        plain = MinGRU(dim=6, expansion=2.0, block=4).double()
        plain.load_state_dict({k: v for k, v in gru.state_dict().items() if k != "gate_bias"})
        assert torch.allclose(gru(x), plain(x), rtol=1e-12, atol=1e-15)  # a contiguous copy may round differently


def test_checkpoint_without_gate_bias_loads_neutral(tmp_path):
    """A model saved before the gate bias existed (no ``gate_bias`` keys) loaded into one that has it: the bias
    is zero and the logits are the old model's, through torch's strict load_state_dict."""
    old = make(gate_memory=0.0)
    new = make(seed=1, gate_memory=48.0)
    assert new.stages[0].blocks[0].gru_fwd.gate_bias.abs().sum() > 0
    new.load_state_dict(old.state_dict())
    assert all(m.gate_bias.abs().sum() == 0 for m in new.modules() if isinstance(m, MinGRU))
    x = torch.randn(2, 3, 29, 35)
    with torch.no_grad():
        assert torch.allclose(new(x), old(x), rtol=1e-5, atol=1e-6)
    with torch.no_grad():  # and a model with the bias round-trips through vitkit.save / vitkit.load
        vitkit.save(make(gate_memory=48.0), tmp_path / "gm")
        loaded, again = vitkit.load(tmp_path / "gm"), make(gate_memory=48.0)
        assert loaded.cfg.gate_memory == 48.0 and torch.equal(loaded(x), again(x))


def test_checkpoint_written_before_the_gate_bias_loads_as_saved(tmp_path):
    """A checkpoint whose config has no ``gate_memory`` (written before the field existed) describes a model
    without the gate bias: vitkit.load builds it so and its logits are the saved model's."""
    from safetensors.torch import load_file

    from vitkit.weights.io import save_state_dict

    old = make(gate_memory=0.0)
    d = vitkit.save(old, tmp_path / "old")
    meta = json.loads((d / "config.json").read_text())["vitkit"]
    for key in ("gate_memory", "linear_init"):
        del meta["config"][key]
    sd = load_file(str(d / "model.safetensors"))
    assert not any("gate_bias" in k for k in sd)
    save_state_dict(sd, d / "model.safetensors", metadata={"vitkit": json.dumps(meta)})
    (d / "config.json").write_text(json.dumps({"vitkit": meta}))
    loaded = vitkit.load(d)
    assert loaded.cfg.gate_memory == 0 and all(m.gate_bias is None for m in loaded.modules() if isinstance(m, MinGRU))
    x = torch.randn(1, 3, 40, 36)
    with torch.no_grad():
        assert torch.equal(loaded(x), old(x))
    assert VisionGRUConfig().gate_memory == 64 and VisionGRUConfig.from_dict({"dims": [8], "depths": [1]}).gate_memory == 0


def test_linear_init_choices():
    torch.manual_seed(0)
    ref = VisionGRU(VisionGRUConfig(**TINY, linear_init="torch"))
    w = ref.stages[0].blocks[0].gru_fwd.proj_in.weight  # torch's default: U(±1/√fan_in), fan_in 16
    assert w.abs().max() <= 0.25 and w.std() > 0.1
    vit_like = VisionGRU(VisionGRUConfig(**TINY, linear_init="trunc_normal"))
    w = vit_like.stages[0].blocks[0].gru_fwd.proj_in.weight
    assert w.abs().max() < 0.1 and 0.015 < w.std() < 0.025  # std 0.02 (torch truncates at ±2 absolute)
    assert (vit_like.stages[0].blocks[0].mlp.fc1.bias == 0).all()
    with pytest.raises(ValueError, match="linear_init"):
        VisionGRUConfig(linear_init="xavier")


# ------------------------------------------------------------------ block directions


def test_reversed_branch_equals_scanning_the_flipped_image():
    torch.manual_seed(0)
    blk = Block2DGRU(dim=8, expansion=2.0, mlp_ratio=4.0, norm_eps=1e-6, chunk=4).double()
    twin = Block2DGRU(dim=8, expansion=2.0, mlp_ratio=4.0, norm_eps=1e-6, chunk=4).double()
    with torch.no_grad():
        for p in blk.parameters():
            p.add_(torch.randn_like(p) * 0.1)
        twin.norm1.load_state_dict(blk.norm1.state_dict())
        twin.gru_fwd.load_state_dict(blk.gru_rev.state_dict())
        twin.dwconv.bias.copy_(blk.dwconv.bias)
        twin.dwconv.weight.copy_(blk.dwconv.weight.flip(2, 3))  # conv(flip(x), flip(k)) = flip(conv(x, k))
    x = torch.randn(2, 5, 7, 8, dtype=torch.float64)  # (B, H, W, C), non-square
    _, rev = blk.branches(x)
    fwd_of_flipped, _ = twin.branches(x.flip(1, 2))
    assert torch.allclose(rev, fwd_of_flipped.flip(1, 2), atol=1e-12)


def test_branches_scan_row_by_row():
    """Forward raster: an input change at (i, j) reaches no output before (i−1, j−1) in row-major order
    (the 3×3 conv spreads it one cell); the reversed raster: none after (i+1, j+1)."""
    torch.manual_seed(0)
    blk = Block2DGRU(dim=4, expansion=2.0, mlp_ratio=4.0, norm_eps=1e-6, chunk=4).double()
    H, W, i, j = 6, 5, 3, 2
    x = torch.randn(1, H, W, 4, dtype=torch.float64)
    y = x.clone()
    y[0, i, j] += torch.randn(4, dtype=torch.float64)  # not a constant: LayerNorm would cancel it
    (f0, r0), (f1, r1) = blk.branches(x), blk.branches(y)
    # "unchanged" up to rounding: a block's scan is causal in exact arithmetic, not bit for bit
    changed_f = ((f0 - f1).abs().amax(-1) > 1e-12).flatten()
    changed_r = ((r0 - r1).abs().amax(-1) > 1e-12).flatten()
    first, last = (i - 1) * W + (j - 1), (i + 1) * W + (j + 1)
    assert not changed_f[:first].any() and changed_f[first:].all()
    assert not changed_r[last + 1 :].any() and changed_r[: last + 1].all()


@pytest.mark.parametrize("H, W, piece", [(5, 7, 8), (9, 4, 20), (1, 13, 8), (6, 6, 10_000)])
def test_block_pieces_equal_the_whole_sequence_path(H, W, piece):
    """The no-grad path (bands, pieces with carried states, in place) = the autograd path, eval mode."""
    torch.manual_seed(1)
    blk = Block2DGRU(dim=4, expansion=2.0, mlp_ratio=4.0, norm_eps=1e-6, chunk=4, infer_piece=piece).double().eval()
    with torch.no_grad():
        for p in blk.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    x = torch.randn(2, H, W, 4, dtype=torch.float64)
    ref = blk(x)  # autograd on: the whole-sequence path
    assert not blk.streams() and ref.requires_grad
    with torch.no_grad():
        assert blk.streams()
        out = blk(x)
        assert torch.allclose(out, ref, rtol=1e-10, atol=1e-12) and not torch.equal(x, out)
        y = x.clone()
        inplace = blk(y, inplace=True)
        assert torch.allclose(inplace, ref, rtol=1e-10, atol=1e-12) and torch.equal(y, inplace)  # written into y


@pytest.mark.parametrize("stride", [1, 2])
def test_conv_rows_equals_the_full_convolution(stride):
    torch.manual_seed(2)
    conv = torch.nn.Conv2d(3, 5, 3, stride=stride, padding=1).double()
    x = torch.randn(2, 3, 11, 6, dtype=torch.float64)
    full = conv(x)
    for r0, r1 in [(0, 1), (0, full.shape[2]), (2, 4), (full.shape[2] - 1, full.shape[2])]:
        got = conv_rows(conv, x, 0, 11, r0, r1)
        assert torch.allclose(got, full[:, :, r0:r1], atol=1e-12)
        lo, hi = max(stride * r0 - 1, 0), min(stride * (r1 - 1) + 2, 11)  # only the rows it needs
        assert torch.allclose(conv_rows(conv, x[:, :, lo:hi], lo, 11, r0, r1), got, atol=0)
    with pytest.raises(ValueError, match="3×3 conv with padding 1"):
        conv_rows(torch.nn.Conv2d(3, 5, 5, padding=2), x, 0, 11, 0, 1)


@pytest.mark.parametrize("size", [(37, 51), (1, 1), (64, 33), (18, 7)])
def test_no_grad_inference_equals_the_autograd_path(size):
    """Model level: the stem in bands and the blocks in pieces (tiny pieces: many bands and pieces)
    give the logits and intermediates of the autograd path."""
    model = make(infer_piece=24)
    x = torch.randn(2, 3, *size)
    ref, (ref_final, ref_maps) = model(x), model.forward_intermediates(x)
    with torch.no_grad():
        # not bitwise: a band may get another conv kernel than the whole image (7e-7 on values of 3, seen on
        # an Intel Xeon; equal on an AMD EPYC)
        assert torch.allclose(stem_pieces(model.stem, x, 24), model.stem(x), atol=1e-5)
        out, (final, maps) = model(x), model.forward_intermediates(x)
    assert torch.allclose(out, ref, atol=1e-5)
    assert torch.allclose(final, ref_final, atol=1e-5)
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(maps, ref_maps, strict=True))
    with torch.no_grad():
        assert torch.allclose(make()(x), out, atol=1e-5)  # the default piece size: one piece here


# ------------------------------------------------------------------ model


@pytest.mark.parametrize("size", [(37, 51), (1, 1), (64, 33), (17, 17)])
def test_any_input_size(size):
    model = make()
    x = torch.randn(2, 3, *size)
    assert model(x).shape == (2, 5)
    gh, gw = model.feature_grid(*size)
    assert model.forward_features(x).shape == (2, gh * gw, 40)
    final, maps = model.forward_intermediates(x)
    assert [m.shape[1] for m in maps] == [16, 24, 32, 40]
    assert maps[-1].shape[-2:] == (gh, gw)
    assert torch.allclose(final, model.forward_features(x), atol=1e-6)
    assert torch.allclose(model.forward_head(final), model(x), atol=1e-6)


def test_forward_intermediates_selection_and_formats():
    model = make()
    x = torch.randn(1, 3, 48, 40)
    final, maps = model.forward_intermediates(x, [1, -1], output_fmt="NLC", norm=True)
    assert [m.shape for m in maps] == [(1, 6 * 5, 24), (1, 2 * 2, 40)]
    assert torch.allclose(maps[-1], final, atol=1e-6)  # the last stage, normed = forward_features
    final, maps = model.forward_intermediates(x, 2, stop_early=True)
    assert final is not None and len(maps) == 2
    final, maps = model.forward_intermediates(x, [0], stop_early=True)
    assert final is None and maps[0].shape == (1, 16, 12, 10)
    with pytest.raises(ValueError, match="outside"):
        model.forward_intermediates(x, [4])
    with pytest.raises(ValueError, match="output_fmt"):
        model.forward_intermediates(x, output_fmt="NHWC")


def test_config_errors_and_bad_input():
    with pytest.raises(ValueError, match="equal length"):
        VisionGRUConfig(dims=(8, 16), depths=(1,))
    with pytest.raises(ValueError, match="unknown VisionGRUConfig keys"):
        VisionGRUConfig.from_dict({"dims": [8], "depths": [1], "heads": 3})
    with pytest.raises(ValueError, match=r"expects \(B, 3, H, W\)"):
        make()(torch.zeros(1, 1, 16, 16))


def test_registry_sizes():
    n = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert {"visiongru_test", "visiongru_nano", "visiongru_micro", "visiongru_tiny"} <= set(vitkit.list_models())
    assert 29e6 < n(vitkit.create_model("visiongru_tiny")) < 31e6  # the paper's Ti: ≈ 30 M
    micro, vit = n(vitkit.create_model("visiongru_micro")), n(vitkit.create_model("vit_tiny_patch16_224"))
    assert abs(micro / vit - 1) < 0.01
    m = vitkit.create_model("visiongru_test")
    assert m.preprocess.input_size == (32, 32) and m(torch.zeros(1, 3, 32, 32)).shape == (1, 10)


def test_save_load_identical_logits(tmp_path):
    model = make(labels=[f"c{i}" for i in range(5)])
    model.preprocess = vitkit.create_model("visiongru_test").preprocess
    vitkit.save(model, tmp_path / "gru")
    loaded = vitkit.load(tmp_path / "gru")
    assert isinstance(loaded, VisionGRU) and loaded.cfg == model.cfg and loaded.preprocess == model.preprocess
    x = torch.randn(2, 3, 29, 35)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    with pytest.raises(ValueError, match="unknown config overrides"):
        vitkit.load(tmp_path / "gru", num_heads=3)
    assert vitkit.load(tmp_path / "gru", scan_chunk=3).cfg.scan_chunk == 3


def test_quantize_reaches_the_gru_linears_and_is_neutral_at_16_bits():
    model = make()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        ref = model(x)
    touched = quant.apply(model, QuantConfig(w_bits=16, a_bits=16))
    assert not model.stages[0].blocks[0].streams()  # quantizers see whole tensors, as in calibration
    n_blocks = sum(model.cfg.depths)
    assert len(touched) == 6 * n_blocks  # gru_fwd/gru_rev proj_in/proj_out + mlp fc1/fc2 per block
    assert "stages.2.blocks.0.gru_rev.proj_in" in touched and "stages.0.blocks.0.mlp.fc2" in touched
    quant.calibrate(model, x)
    with torch.no_grad():
        out = model(x)
    assert torch.allclose(out, ref, atol=1e-3 * ref.abs().max().item(), rtol=0)
    quant.remove(model)
    quant.apply(model, QuantConfig(w_bits=4, a_bits=4))
    quant.calibrate(model, x)
    with torch.no_grad():
        assert (model(x) - ref).abs().max() > 1e-2 * ref.abs().max()  # 4 bits do change it: the wrappers are live


@pytest.mark.parametrize("fmt", ["int8", "fake"])
def test_quantized_checkpoint_round_trip(tmp_path, fmt):
    model = make()
    x = torch.randn(3, 3, 32, 32)
    quant.apply(model, QuantConfig(w_bits=8, a_bits=8))
    quant.calibrate(model, x)
    if fmt == "int8":
        quant.to_int8(model)
    with torch.no_grad():
        ref = model(x)
    quant.save_quantized(model, tmp_path / "q")
    loaded = quant.load_quantized(tmp_path / "q")
    assert isinstance(loaded, VisionGRU)
    with torch.no_grad():
        assert torch.allclose(loaded(x), ref, atol=1e-5, rtol=0)


def test_attention_methods_refuse_with_one_line():
    model = make()
    for mod, cfg in ((hired, HiREDConfig()), (tome, ToMeConfig()), (evit, EViTConfig())):
        with pytest.raises(ValueError, match="reads attention.*VisionGRU has no attention blocks"):
            mod.apply(model, cfg)
    with pytest.raises(ValueError, match="VisionGRU has no attention"):
        with model.attention_readout([0]):
            pass
    for source in ("psaq", "spdfq"):
        with pytest.raises(ValueError, match="needs a VisionTransformer; VisionGRU has none"):
            quant.calibration_images(model, source, n=2, steps=1)


# ------------------------------------------------------------------ explanations


def test_gradcam_maps_the_last_stage_grid_without_changing_the_prediction():
    from vitkit.explain import explain

    model = make(dims=(8, 16), depths=(1, 1))  # two stages: stride 8, a 6×5 grid at 48×40
    x = torch.randn(2, 3, 48, 40, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        before = model(x)
    e = explain(model, x, "gradcam")
    with torch.no_grad():
        assert torch.equal(model(x), before)
    assert e.method == "gradcam" and (e.forwards, e.backwards) == (1, 1)
    assert torch.allclose(e.logits, before, atol=1e-5) and e.target.tolist() == before.argmax(-1).tolist()
    assert e.maps.shape == (2, *model.feature_grid(48, 40)) == (2, 6, 5)
    assert torch.isfinite(e.maps).all() and (e.maps >= 0).all()
    assert (e.maps.flatten(1).std(1) > 0).all()  # a real map, not a constant
    assert all(p.grad is None for p in model.parameters())
    with torch.no_grad():  # the caller's no-grad mode (VisionGRU's no-graph route) must not matter
        assert torch.allclose(explain(model, x, "gradcam").maps, e.maps, atol=1e-6)


def test_gradcam_equals_a_hand_grad_cam_of_the_final_feature_map():
    """By hand: the final-normed last-stage map (forward_intermediates, NCHW) as a leaf, the head on its
    spatial mean, autograd; weights = spatial mean of the gradient. Before the ReLU the map's mean is
    (logit − bias) / (h·w), whatever the implementation (a mean-pool + linear head: Grad-CAM is CAM)."""
    from vitkit.explain import explain

    model = make(dims=(8, 16), depths=(1, 1))
    x = torch.randn(2, 3, 48, 40, generator=torch.Generator().manual_seed(4))
    target = torch.tensor([1, 3])
    with torch.no_grad():
        _, (fmap,) = model.forward_intermediates(x, [-1], norm=True)
    a = fmap.clone().requires_grad_(True)
    logits = model.head(a.mean(dim=(2, 3)))
    (g,) = torch.autograd.grad(logits.gather(1, target.view(-1, 1)).sum(), a)
    hand = (g.mean(dim=(2, 3), keepdim=True) * a.detach()).sum(1)
    e = explain(model, x, "gradcam", target=target)
    assert e.target.tolist() == [1, 3]
    assert (hand > 0).any() and (hand < 0).any()  # so the ReLU matters
    assert torch.allclose(e.maps, hand.clamp_min(0), atol=1e-5)
    raw = explain(model, x, "gradcam", target=target, relu=False).maps
    assert torch.allclose(raw, hand, atol=1e-5)
    want = (e.logits.gather(1, target.view(-1, 1))[:, 0] - model.head.bias[target]) / (6 * 5)
    assert torch.allclose(raw.mean(dim=(1, 2)), want.detach(), atol=1e-5)


def test_attention_explanations_refuse_it_naming_the_model():
    from vitkit.explain import default_method, explain

    model = make()
    x = torch.randn(1, 3, 32, 32)
    for method in ("rollout", "chefer"):
        with pytest.raises(ValueError, match="^VisionGRU contains no vitkit VisionTransformer.*'gradcam'") as info:
            explain(model, x, method=method)
        assert "\n" not in str(info.value) and "evidence" not in str(info.value)
    with pytest.raises(ValueError, match="VisionGRU is not a MoRe model"):
        explain(model, x, method="lam")
    with pytest.raises(ValueError, match="layer=0: Grad-CAM of VisionGRU reads the final feature map"):
        explain(model, x, method="gradcam", layer=0)
    assert default_method(model) == "gradcam"


def test_cli_explains_it_with_gradcam(tmp_path):
    import numpy as np
    from PIL import Image

    runner = CliRunner()
    d = vitkit.save(vitkit.create_model("visiongru_test"), tmp_path / "gru")
    img = tmp_path / "a.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(img)
    for method in ("gradcam", "auto"):
        out = tmp_path / method
        r = runner.invoke(app, ["explain", str(d), str(img), "--method", method, "--out", str(out)])
        assert r.exit_code == 0, r.output
        (rec,) = json.loads((out / "scores.json").read_text())
        assert rec["method"] == "gradcam" and (rec["forwards"], rec["backwards"]) == (1, 1)
        assert rec["map_grid"] == [1, 1]  # 32 px (visiongru_test's input size) / stride 32
    r = runner.invoke(app, ["explain", str(d), str(img), "--method", "rollout", "--out", str(tmp_path / "r")])
    assert r.exit_code == 2 and "VisionGRU contains no" in r.output


def test_trainer_trains_it(tmp_path):
    model = make().train()
    gen = torch.Generator().manual_seed(0)
    ds = torch.utils.data.TensorDataset(torch.randn(16, 3, 24, 24, generator=gen), torch.randint(5, (16,), generator=gen))
    before = [p.detach().clone() for p in model.parameters()]
    cfg = TrainConfig(epochs=1, batch_size=8, max_steps=2, out_dir=str(tmp_path), progress=False, ckpt_every=2)
    res = Trainer(model, ds, cfg).fit()
    assert res.steps == 2
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert sum(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True)) > 0.9 * len(before)


def test_cli_info_and_models(tmp_path):
    runner = CliRunner()
    d = vitkit.save(vitkit.create_model("visiongru_test"), tmp_path / "gru")
    r = runner.invoke(app, ["info", str(d)])
    assert r.exit_code == 0, r.output
    assert "GFLOPs" in r.output and "16/32/48/64" in r.output and "10 classes" in r.output
    r = runner.invoke(app, ["models"])
    assert r.exit_code == 0 and "visiongru" in r.output


def test_cli_quantize(tmp_path):
    runner = CliRunner()
    d = vitkit.save(vitkit.create_model("visiongru_test"), tmp_path / "gru")
    r = runner.invoke(app, ["quantize", str(d), "--calib", "noise", "--n", "4", "--out", str(tmp_path / "q")])
    assert r.exit_code == 2 and "--recon-steps 0" in r.output
    r = runner.invoke(app, ["quantize", str(d), "--calib", "noise", "--n", "4", "--recon-steps", "0",
                            "--out", str(tmp_path / "q")])
    assert r.exit_code == 0, r.output
    assert isinstance(quant.load_quantized(tmp_path / "q"), VisionGRU)


def test_benchmark_eager_vit_is_the_same_model_with_the_map_materialised(vgb):
    """The cost stage's two ViT baselines differ only in how attention is computed: same logits."""
    torch.manual_seed(0)
    fused = vgb.build("vit", "micro")
    eager = vgb.build("vit_eager", "micro")
    eager.load_state_dict(fused.state_dict())
    x = torch.randn(1, 3, 64, 48)
    with torch.no_grad():
        assert torch.allclose(eager.eval()(x), fused.eval()(x), atol=1e-5)
    assert all(m.attn_map_fn is not None for m in eager.modules() if isinstance(m, Attention))
    assert all(m.attn_map_fn is None for m in fused.modules() if isinstance(m, Attention))


def test_flop_count_is_the_same_on_every_path():
    """The no-grad pieces (in-place projection at batch 1), batch 2 and the training path count the same FLOPs."""
    from vitkit.models.flops import count_flops

    model = make()
    x = torch.randn(2, 3, 40, 48)
    one = count_flops(model, x[:1])
    assert one > 0 and count_flops(model, x) == 2 * one
    model.train()
    assert count_flops(model, x[:1]) == one
