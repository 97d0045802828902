import pytest
import torch

from vitkit.quant.quantizers import (
    ActQuantizer,
    WeightQuantizer,
    channel_ranges,
    check_bits,
    fake_quant,
    log2_quant,
    parse_bits,
    qrange,
)


def naive_channel_quant(w, bits, symmetric):
    out = torch.empty_like(w)
    for c in range(w.shape[0]):
        row = w[c]
        if symmetric:
            qmax = 2 ** (bits - 1) - 1
            s = row.abs().max().item() / qmax
            out[c] = torch.tensor([max(-qmax, min(qmax, round(v / s))) * s for v in row.tolist()])
        else:
            lo, hi = min(row.min().item(), 0.0), max(row.max().item(), 0.0)
            s = (hi - lo) / (2**bits - 1)
            z = round(-lo / s)
            out[c] = torch.tensor([(max(0, min(2**bits - 1, round(v / s) + z)) - z) * s for v in row.tolist()])
    return out


@pytest.mark.parametrize("bits", [2, 4, 8])
@pytest.mark.parametrize("symmetric", [True, False])
def test_weight_quantizer_matches_naive_minmax(bits, symmetric):
    w = torch.randn(6, 10)
    q = WeightQuantizer(bits, symmetric, method="minmax")
    q.calibrate(w)
    got = q(w)
    assert torch.allclose(got, naive_channel_quant(w, bits, symmetric), atol=1e-5)
    for c in range(6):  # at most 2^bits levels per channel
        assert got[c].unique().numel() <= 2**bits


def test_mse_search_never_worse_than_minmax():
    w = torch.randn(8, 256)
    w[:, 0] = 12.0  # outliers: min-max wastes the grid
    errs = {}
    for method in ("minmax", "mse", "percentile"):
        s, z = channel_ranges(w, method, 4, True)
        errs[method] = (fake_quant(w, s, z, *qrange(4, True)) - w).pow(2).sum(1)
    assert (errs["mse"] <= errs["minmax"] + 1e-6).all()
    assert errs["mse"].sum() < 0.8 * errs["minmax"].sum()


def test_per_token_scales_are_per_row():
    x = torch.randn(3, 5, 16) * torch.tensor([0.01, 1.0, 100.0]).view(3, 1, 1)
    q = ActQuantizer(8, "token", symmetric=True, method="minmax")
    y = q(x)
    rel = (y - x).abs().amax(-1) / x.abs().amax(-1)
    assert rel.max() < 1 / 127  # each token quantized on its own grid: tiny and large rows alike
    # per tensor, the small rows collapse
    qt = ActQuantizer(8, "tensor", symmetric=True, method="minmax")
    qt.observing = True
    qt(x)
    qt.observing = False
    qt.finish()
    assert (qt(x[0]) == 0).float().mean() > 0.5


def test_log2_quant_matches_naive():
    p = torch.rand(4, 50).softmax(-1) ** 2
    p = p / p.sum(-1, keepdim=True)
    got = log2_quant(p, 1.0, 4)
    ref = torch.tensor([0.0 if round(-torch.log2(v).item()) > 15 else 2.0 ** -round(-torch.log2(v).item())
                        for v in p.flatten()]).view_as(p)
    assert torch.allclose(got, ref)
    twos = torch.tensor([1.0, 0.5, 0.25, 2.0**-7])
    assert torch.equal(log2_quant(twos, 1.0, 3), twos)  # powers of two within range are exact
    assert log2_quant(torch.tensor([2.0**-9]), 1.0, 3).item() == 0.0  # past the last level → 0


def test_log2_finer_exponent_at_wider_bits():
    p = torch.rand(2000) * 0.999 + 1e-3
    k = 16  # 8 bits: 256 levels over 16 octaves
    ref = torch.exp2(-torch.clamp(torch.round(-k * torch.log2(p)), 0, 255) / k)
    got = log2_quant(p, 1.0, 8)
    assert torch.allclose(got, ref)
    assert ((got - p).abs() / p).max() < 2 ** (1 / 32) - 1 + 1e-6
    assert ((log2_quant(p, 1.0, 4) - p).abs() / p).max() > 0.1  # plain log2 is coarse
    assert torch.allclose(log2_quant(p, 1.0, 16), p, rtol=1e-3)


def test_straight_through_gradients():
    x = torch.randn(4, 8, requires_grad=True)
    ActQuantizer(4, "token")(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


@pytest.mark.parametrize("bad", [1, 9, 12, 17, 0, -4, 4.0, True, "8"])
def test_bad_bits(bad):
    with pytest.raises(ValueError, match="w_bits"):
        check_bits(bad, "w_bits")
    with pytest.raises(ValueError, match="a_bits"):
        ActQuantizer(bad)


def test_parse_bits():
    assert parse_bits("w4a4") == (4, 4)
    assert parse_bits("W8A6") == (8, 6)
    for bad in ("w9a8", "w4", "int8", "w4a1", ""):
        with pytest.raises(ValueError, match="bits"):
            parse_bits(bad)


def test_unknown_method_and_granularity():
    with pytest.raises(ValueError, match="calib_method"):
        WeightQuantizer(4, method="kl")
    with pytest.raises(ValueError, match="act_granularity"):
        ActQuantizer(4, granularity="channel")
