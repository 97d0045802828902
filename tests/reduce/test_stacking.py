"""The methods on a model whose layers are wrapped by vitkit's LoRA and W8A8 quantization."""

from __future__ import annotations

import pytest
import torch
from reduce_models import make

from vitkit.adapt import lora
from vitkit.quant import ptq
from vitkit.reduce import EViTConfig, HiREDConfig, ToMeConfig, encode_partitions, evit, hired, partition, tome

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture()
def stacked():
    m = make("vit")
    lora.apply(m, lora.LoraConfig(rank=2, targets=("qkv", "attn.proj")))
    for p in m.parameters():  # a trained adapter: B ≠ 0
        if p.dim() == 2 and p.abs().sum() == 0:
            torch.nn.init.normal_(p, std=0.05)
    ptq.apply(m, ptq.QuantConfig())
    return m.eval()


def test_neutral_settings_equal_the_wrapped_model(stacked):
    x = torch.randn(2, 3, 32, 32)
    dense = stacked(x)
    for mod, cfg in ((evit, EViTConfig(layers=(0, 1), keep_rate=1.0)), (tome, ToMeConfig(r=0))):
        mod.apply(stacked, cfg)
        assert torch.equal(stacked(x), dense)
        mod.remove(stacked)
    hi = torch.randn(2, 3, 64, 64)
    ref = encode_partitions(stacked, partition(hi, (2, 2), (32, 32)))
    hired.apply(stacked, HiREDConfig(grid=(2, 2), rate=1.0))
    assert torch.equal(hired.encode(stacked, hi).tokens, ref.tokens)
    hired.remove(stacked)


def test_reductions_run_on_the_wrapped_model(stacked):
    hi = torch.randn(2, 3, 64, 64)
    for early in (False, True):
        hired.apply(stacked, HiREDConfig(grid=(2, 2), rate=0.25, select_layer=1, early=early))
        assert hired.encode(stacked, hi).tokens.shape == (2, 80, 32)
        hired.remove(stacked)
    tome.apply(stacked, ToMeConfig(r=8))
    assert stacked.forward_features(torch.randn(2, 3, 32, 32)).shape == (2, 1 + 64 - 24, 32)
    tome.remove(stacked)
