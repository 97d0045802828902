"""The evidence-map hybrid CNN-Transformer."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

import vitkit
from vitkit.engine.trainer import TrainConfig, Trainer
from vitkit.explain import explain
from vitkit.models.hybrid import (
    HybridCNNTransformer,
    HybridConfig,
    WindowAttention,
    evidence_loss,
    hybrid_loss,
)


def tiny(**kw) -> HybridCNNTransformer:
    cfg = dict(img_size=32, trunk_widths=(8, 16), trunk_depths=(1, 1), dim=16, depth=2, num_heads=2, window=4,
               num_classes=5)
    return HybridCNNTransformer(HybridConfig(**{**cfg, **kw})).eval()


def test_logits_equal_the_mean_of_the_evidence_maps() -> None:
    m = tiny()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        logits, maps = m.evidence(x)
        assert maps.shape == (3, 5, 8, 8)
        assert torch.allclose(logits, maps.mean(dim=(2, 3)), atol=1e-6)
        assert torch.allclose(m(x), logits, atol=1e-5)
        e = explain(m, x, "evidence", target=2)
    assert torch.allclose(e.maps, maps[:, 2]) and torch.allclose(e.maps.mean(dim=(1, 2)), logits[:, 2], atol=1e-6)


def test_feature_api_matches_the_vit() -> None:
    m = tiny()
    x = torch.randn(2, 3, 40, 24)  # non-square, 10×6 grid: windows of 4 over 60 positions, 15 windows
    with torch.no_grad():
        tokens = m.forward_features(x)
        assert tokens.shape == (2, 60, 16)
        assert m.forward_head(tokens, pre_logits=True).shape == (2, 16)
        final, inter = m.forward_intermediates(x, indices=[0, -1], output_fmt="NCHW")
        assert torch.allclose(final, tokens) and [t.shape for t in inter] == [(2, 16, 10, 6)] * 2
        _, early = m.forward_intermediates(x, indices=1, stop_early=True)
        assert torch.allclose(early[0], tokens)
    with pytest.raises(ValueError, match="stride"):
        m(torch.randn(1, 3, 30, 32))


def test_window_attention_is_windowed_and_masks_padding() -> None:
    torch.manual_seed(0)
    att = WindowAttention(dim=8, num_heads=2, window=3, temperature_init=10.0)
    x = torch.randn(1, 8, 2, 4)  # 8 positions: windows [0,1,2] [3,4,5] [6,7,pad]
    y = att(x)
    x2 = x.clone()
    x2.view(1, 8, 8)[:, :, 7] += 5.0  # change the last position only
    y2 = att(x2)
    same = (y - y2).abs().flatten(2).amax(1)[0] < 1e-6
    assert same[:6].all() and not same[6:].any()  # only its own window moves
    # the padded window equals attention over the two real positions alone
    alone = att(x.view(1, 8, 8)[:, :, 6:8].reshape(1, 8, 1, 2))
    assert torch.allclose(y.view(1, 8, 8)[:, :, 6:8], alone.view(1, 8, 2), atol=1e-5)


@pytest.mark.parametrize("trunk", ["resnet", "bagnet"])
def test_trunk_receptive_field_is_what_the_config_says(trunk: str) -> None:
    torch.manual_seed(0)
    m = HybridCNNTransformer(HybridConfig(img_size=64, trunk_widths=(4, 8, 8), trunk_depths=(1, 2, 1), dim=8,
                                          num_heads=2, num_classes=3, trunk=trunk)).eval()
    x = torch.randn(1, 3, 64, 64, requires_grad=True)
    m.trunk(x)[0, :, 4, 4].sum().backward()  # one cell in the middle of the 8×8 grid
    rows, cols = (x.grad.abs().sum(1)[0] > 0).nonzero(as_tuple=True)
    seen = (int(rows.max() - rows.min()) + 1, int(cols.max() - cols.min()) + 1)
    rf = m.cfg.trunk_receptive_field
    assert seen == (rf, rf)
    assert rf == (19 if trunk == "bagnet" else 63)  # the extra 1×1 (BagNet) or 3×3 (ResNet) block of stage 2


def test_unknown_trunk_is_refused() -> None:
    with pytest.raises(ValueError, match="trunk must be one of"):
        HybridConfig(trunk="vgg")


def test_loss_is_ce_plus_l1_over_the_batch() -> None:
    """Multi-label: BCE summed over the classes (as cross-entropy is), averaged over the batch."""
    torch.manual_seed(0)
    logits, maps = torch.randn(4, 5), torch.randn(4, 5, 3, 3)
    y = torch.tensor([0, 1, 2, 3])
    want = F.cross_entropy(logits, y) + 8e-6 * maps.abs().sum()
    assert torch.allclose(evidence_loss(logits, maps, y), want)
    mh = torch.zeros(4, 5)
    mh[0, 1] = 1
    assert torch.allclose(evidence_loss(logits, maps, mh, multilabel=True),
                          5 * F.binary_cross_entropy_with_logits(logits, mh) + 8e-6 * maps.abs().sum())


def test_registry_save_load_and_trainer(tmp_path) -> None:
    torch.manual_seed(0)
    m = vitkit.create_model("hybrid_test")
    assert "hybrid_test" in vitkit.list_models() and isinstance(m, HybridCNNTransformer)
    data = TensorDataset(torch.randn(16, 3, 32, 32), torch.randint(0, 10, (16,)))
    cfg = TrainConfig(epochs=1, batch_size=8, max_steps=2, out_dir=str(tmp_path / "run"), progress=False)
    before = [p.detach().clone() for p in m.parameters()]
    Trainer(m, data, cfg, loss_fn=hybrid_loss()).fit()
    assert any(not torch.equal(a, b) for a, b in zip(before, m.parameters(), strict=True))
    m.eval()
    x = torch.randn(2, 3, 32, 32)
    vitkit.save(m, tmp_path / "ckpt")
    m2 = vitkit.load(tmp_path / "ckpt")
    assert isinstance(m2, HybridCNNTransformer) and m2.cfg == m.cfg
    with torch.no_grad():
        assert torch.equal(m(x), m2(x))


def test_bagnet_hybrid_survives_save_and_load(tmp_path) -> None:
    torch.manual_seed(0)
    m = vitkit.create_model("hybrid_bagnet_small_224", num_classes=3, dim=16, num_heads=2,
                            trunk_widths=(4, 8, 8), trunk_depths=(1, 1, 1)).eval()
    assert m.cfg.trunk == "bagnet" and m.cfg.trunk_receptive_field == 19
    vitkit.save(m, tmp_path / "ckpt")
    m2 = vitkit.load(tmp_path / "ckpt")
    assert m2.cfg.trunk == "bagnet" and m2.cfg == m.cfg
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(m(x), m2(x))
