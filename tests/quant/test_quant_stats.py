"""Channel-spread statistics of the activations the quantizers see."""

from __future__ import annotations

import pytest
import torch

from vitkit.quant import stats
from vitkit.quant.ptq import DEFAULT_TARGETS


def test_channel_absmax_and_spread_on_a_known_tensor():
    x = torch.tensor([[[1.0, -2.0, 0.5], [-3.0, 1.0, 0.25]], [[0.5, 0.5, -0.5], [2.0, 4.0, 0.0]]])  # (2, 2, 3)
    r = stats.channel_absmax(x)
    assert r.tolist() == [3.0, 4.0, 0.5]
    assert stats.channel_spread(r) == pytest.approx(4.0 / 3.0)
    assert stats.channel_spread(torch.ones(7)) == 1.0
    assert stats.channel_spread(torch.tensor([0.0, 0.0, 1.0])) == float("inf")
    by_kind = stats.spread_by_kind({"blocks.0.attn.qkv": torch.tensor([1.0, 2.0, 8.0]),
                                    "blocks.0.mlp.fc1": torch.ones(4), "blocks.1.attn.qkv": torch.tensor([1.0, 1.0, 3.0])})
    assert by_kind == {"qkv": 4.0, "fc1": 1.0}


def test_linear_input_ranges_are_the_inputs_the_blocks_feed_their_linears(vit, images):
    ranges = stats.linear_input_ranges(vit, images, batch_size=5)  # several batches: ranges are maxima over all
    assert list(ranges) == [f"blocks.{i}.{n}" for i in range(2) for n in ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2")]
    with torch.no_grad():
        tokens, _ = vit.embed(images)
        want = vit.blocks[0].norm1(tokens).abs().amax((0, 1))
        x1 = vit.blocks[0](tokens)
        want_fc1_1 = vit.blocks[1].norm2(x1 + vit.blocks[1].attn(vit.blocks[1].norm1(x1))).abs().amax((0, 1))
    torch.testing.assert_close(ranges["blocks.0.attn.qkv"], want)
    torch.testing.assert_close(ranges["blocks.1.mlp.fc1"], want_fc1_1)
    assert ranges["blocks.0.mlp.fc1"].shape == (48,) and ranges["blocks.0.mlp.fc2"].shape == (vit.cfg.mlp_hidden_dim,)
    assert not any(m._forward_hooks for m in vit.modules())  # nothing left behind


def test_an_outlier_channel_after_layernorm_shows_in_the_spread(vit, images):
    before = stats.linear_input_ranges(vit, images)
    with torch.no_grad():
        vit.blocks[1].norm1.weight[7] *= 40  # what ImageNet ViTs learn: one post-LN channel tens of times wider
    after = stats.linear_input_ranges(vit, images)
    assert stats.channel_spread(after["blocks.1.attn.qkv"]) > 5 * stats.channel_spread(before["blocks.1.attn.qkv"])
    assert int(after["blocks.1.attn.qkv"].argmax()) == 7
    torch.testing.assert_close(after["blocks.0.attn.qkv"], before["blocks.0.attn.qkv"])  # upstream unchanged


def test_no_matching_linear_is_an_error(vit, images):
    with pytest.raises(ValueError, match="targets"):
        stats.linear_input_ranges(vit, images, targets=r"nothing_here$")
    assert stats.linear_input_ranges(vit, images[:2], targets=DEFAULT_TARGETS)  # the default matches
