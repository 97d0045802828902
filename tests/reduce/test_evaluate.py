from __future__ import annotations

import pytest
import torch
from reduce_models import make

from vitkit.reduce import EViTConfig, HiREDConfig, evaluate, evit, hired
from vitkit.reduce.consumer import ConsumerConfig, TokenSetConsumer

pytestmark = pytest.mark.usefixtures("one_thread")


def test_peak_tensor_memory_counts_live_tensors():
    def work():
        a = torch.ones(256, 1024)  # 1 MiB
        b = a * 2  # 2 MiB live
        del a
        return (b * 3).sum()  # a freed before this one: still 2 MiB at most

    peak = evaluate.peak_tensor_mib(work)
    assert 1.99 < peak < 2.1


def test_throughput_and_accuracy_with_methods_interleaved():
    m = make("vit")  # 32 px input, 64 tokens per partition
    cons = TokenSetConsumer(ConsumerConfig(in_dim=32, dim=16, depth=1, heads=2, num_classes=3, num_partitions=5,
                                           grid=(8, 8))).eval()
    x, y = torch.randn(4, 3, 64, 64), torch.tensor([0, 1, 2, 0])
    methods = {"dense": None, "hired": (hired, HiREDConfig(grid=(2, 2), rate=0.2)),
               "evit": (evit, EViTConfig(layers=(1,), keep_rate=0.5, fuse=False))}
    res = evaluate.throughput(m, cons, methods, x, (2, 2), repeats=2)
    assert res["dense"]["tokens"] == 320 and res["hired"]["tokens"] == 64 and res["evit"]["tokens"] == 160
    assert all(r["e2e_ips"] > 0 and r["consumer_ips"] > 0 for r in res.values())
    assert all(b.token_hook is None and b.attn.readout is None for b in m.blocks)  # every method removed
    acc, ntok = evaluate.accuracy(m, cons, methods["hired"], x, y, (2, 2), batch=3)
    assert 0 <= acc <= 1 and ntok == 64
    with pytest.raises(ValueError, match="repeats"):
        evaluate.throughput(m, None, methods, x, (2, 2), repeats=0)
