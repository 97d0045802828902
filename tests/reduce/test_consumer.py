from __future__ import annotations

import pytest
import torch

from vitkit.engine import TrainConfig
from vitkit.reduce.consumer import ConsumerConfig, TokenSetConsumer, random_subset, train_consumer
from vitkit.reduce.partitions import TokenSet

pytestmark = pytest.mark.usefixtures("one_thread")


def test_forward_shapes_and_order_invariance():
    cfg = ConsumerConfig(in_dim=8, dim=16, depth=2, heads=2, num_classes=3, num_partitions=5, grid=(4, 4))
    m = TokenSetConsumer(cfg).eval()
    x = torch.randn(2, 7, 8)
    part = torch.randint(0, 5, (2, 7))
    pos = torch.randint(0, 4, (2, 7, 2))
    pos[:, -1] = -1  # a fused token
    out = m(x, part, pos)
    assert out.shape == (2, 3)
    perm = torch.randperm(7)  # a set: the order of the tokens does not matter
    assert torch.allclose(m(x[:, perm], part[:, perm], pos[:, perm]), out, atol=1e-5)
    assert not torch.allclose(m(x[:, :3], part[:, :3], pos[:, :3]), out)


def test_random_subset():
    idx = random_subset(10, 4, 3)
    assert idx.shape == (3, 4) and (idx.diff(dim=1) > 0).all() and idx.max() < 10


@pytest.mark.parametrize("guided", [0.0, 1.0])
def test_train_learns_a_separable_task(tmp_path, guided):
    torch.manual_seed(0)
    K, C = 12, 8
    labels = torch.randint(0, 2, (64,))
    tokens = torch.randn(64, K, C) * 0.3
    tokens[:, :, 0] += labels.view(-1, 1) * 2 - 1  # the class is visible in every token
    part = torch.zeros(K, dtype=torch.long)
    pos = torch.stack([torch.arange(K) // 4, torch.arange(K) % 4], -1)
    cfg = ConsumerConfig(in_dim=C, dim=16, depth=1, heads=2, num_classes=2, num_partitions=1, grid=(3, 4))
    tcfg = TrainConfig(epochs=20, max_steps=40, batch_size=16, lr=5e-3, out_dir=str(tmp_path), progress=False,
                       eval_every=40, ckpt_every=1000)
    scores = torch.rand(64, K) if guided else None
    m, res = train_consumer(tokens, labels, part, pos, cfg, tcfg, min_keep=0.2, val=(tokens, labels),
                            scores=scores, guided_prob=guided)
    assert [h for h in res.history if "val_accuracy" in h][-1]["val_accuracy"] > 0.9


def test_guided_needs_scores():
    cfg = ConsumerConfig(in_dim=4, dim=8, depth=1, heads=2, num_classes=2, num_partitions=1, grid=(2, 2))
    with pytest.raises(ValueError, match="guided_prob"):
        train_consumer(torch.zeros(4, 4, 4), torch.zeros(4, dtype=torch.long), torch.zeros(4, dtype=torch.long),
                       torch.zeros(4, 2, dtype=torch.long), cfg, TrainConfig(), guided_prob=0.5)


def test_consumer_learns_from_reduced_token_sets(tmp_path):
    # the dense sets carry no signal; the reduced ones (per-page layout, like HiRED-early's) do
    torch.manual_seed(0)
    P, K, k, C = 64, 12, 5, 8
    labels = torch.randint(0, 2, (P,))
    dense = torch.randn(P, K, C) * 0.3
    rt = torch.randn(P, k, C) * 0.3
    rt[:, :, 0] += labels.view(-1, 1) * 2 - 1
    rp = torch.randint(0, 2, (P, k))
    rpos = torch.randint(0, 3, (P, k, 2))
    reduced = TokenSet(rt, rp, rpos, grid=(3, 4), num_partitions=2)
    part = torch.zeros(K, dtype=torch.long)
    pos = torch.stack([torch.arange(K) // 4, torch.arange(K) % 4], -1)
    cfg = ConsumerConfig(in_dim=C, dim=16, depth=1, heads=2, num_classes=2, num_partitions=2, grid=(3, 4))
    tcfg = TrainConfig(epochs=20, max_steps=40, batch_size=16, lr=5e-3, out_dir=str(tmp_path), progress=False,
                       eval_every=1000, ckpt_every=1000)
    m, _ = train_consumer(dense, labels, part, pos, cfg, tcfg, reduced=reduced, reduced_prob=1.0)
    with torch.no_grad():
        assert (m(rt, rp, rpos).argmax(-1) == labels).float().mean() > 0.9
    with pytest.raises(ValueError, match="reduced_prob"):
        train_consumer(dense, labels, part, pos, cfg, tcfg, reduced_prob=0.5)
    short = TokenSet(rt[:10], rp[:10], rpos[:10], grid=(3, 4), num_partitions=2)
    with pytest.raises(ValueError, match="same pages"):
        train_consumer(dense, labels, part, pos, cfg, tcfg, reduced=short, reduced_prob=0.5)


def test_consumer_learns_from_several_methods_token_sets(tmp_path):
    # two "methods" give sets of different sizes whose signal sits in different channels (0 and 1, the other
    # channel a decoy of the opposite sign): the consumer must have been trained on both to read both
    torch.manual_seed(0)
    P, K, C = 96, 12, 8
    labels = torch.randint(0, 2, (P,))
    sign = (labels.view(-1, 1) * 2 - 1).float()
    dense = torch.randn(P, K, C) * 0.3
    sets = []
    for k, ch in ((5, 0), (3, 1)):
        rt = torch.randn(P, k, C) * 0.3
        rt[:, :, ch] += 2 * sign
        rt[:, :, 1 - ch] -= 0.5 * sign
        sets.append(TokenSet(rt, torch.zeros(P, k, dtype=torch.long), torch.randint(0, 3, (P, k, 2)),
                             grid=(3, 4), num_partitions=1))
    part = torch.zeros(K, dtype=torch.long)
    pos = torch.stack([torch.arange(K) // 4, torch.arange(K) % 4], -1)
    cfg = ConsumerConfig(in_dim=C, dim=16, depth=1, heads=2, num_classes=2, num_partitions=1, grid=(3, 4))
    tcfg = TrainConfig(epochs=50, max_steps=80, batch_size=16, lr=5e-3, out_dir=str(tmp_path), progress=False,
                       eval_every=1000, ckpt_every=1000)
    m, _ = train_consumer(dense, labels, part, pos, cfg, tcfg, reduced=sets, reduced_prob=1.0)
    with torch.no_grad():
        for s in sets:
            assert (m.classify(s).argmax(-1) == labels).float().mean() > 0.9
    short = TokenSet(sets[1].tokens[:10], sets[1].partition[:10], sets[1].pos[:10], grid=(3, 4), num_partitions=1)
    with pytest.raises(ValueError, match=r"reduced\[1\].*same pages"):
        train_consumer(dense, labels, part, pos, cfg, tcfg, reduced=[sets[0], short], reduced_prob=0.5)
