from __future__ import annotations

import pytest
import torch
from reduce_models import make

from vitkit.bench import timing
from vitkit.models.vit import VisionTransformer
from vitkit.reduce import EViTConfig, HiREDConfig, ToMeConfig, evaluate, evit, hired, tome
from vitkit.reduce.consumer import ConsumerConfig, TokenSetConsumer

pytestmark = pytest.mark.usefixtures("one_thread")


def test_peak_tensor_memory_counts_live_tensors():
    def work():
        a = torch.ones(256, 1024)  # 1 MiB
        b = a * 2  # 2 MiB live
        del a
        return (b * 3).sum()  # a freed before this one: still 2 MiB at most

    peak = timing.peak_tensor_mib(work)
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


def test_precision_device_and_peak_helpers_on_cpu():
    lin = torch.nn.Linear(8, 8)
    x = torch.randn(2, 8)
    with timing.precision("cpu", None):
        assert lin(x).dtype == torch.float32
    with timing.precision("cpu", torch.float32):
        assert lin(x).dtype == torch.float32
    with timing.precision("cpu", torch.bfloat16):
        assert lin(x).dtype == torch.bfloat16
    with pytest.raises(ValueError, match="dtype"):
        timing.precision("cpu", torch.float64)
    assert evaluate.model_device(lin) == torch.device("cpu")
    timing.synchronize("cpu")  # a no-op

    def work():
        a = torch.ones(256, 1024)
        return (a * 2).sum()

    assert 1.99 < timing.peak_mib(work, "cpu") < 2.1  # the profiler path on CPU


def test_bf16_autocast_runs_every_method_with_the_same_token_counts():
    m = make("vit")
    cons = TokenSetConsumer(ConsumerConfig(in_dim=32, dim=16, depth=1, heads=2, num_classes=3, num_partitions=5,
                                           grid=(8, 8))).eval()
    x, y = torch.randn(3, 3, 64, 64), torch.tensor([0, 1, 2])
    methods = {"dense": None, "hired": (hired, HiREDConfig(grid=(2, 2), rate=0.2)),
               "hired-early": (hired, HiREDConfig(grid=(2, 2), rate=0.2, select_layer=1, early=True)),
               "evit": (evit, EViTConfig(layers=(1,), keep_rate=0.5)), "tome": (tome, ToMeConfig(r=8))}
    fp32 = evaluate.throughput(m, cons, methods, x, (2, 2), repeats=1)
    bf16 = evaluate.throughput(m, cons, methods, x, (2, 2), repeats=1, dtype=torch.bfloat16)
    assert {n: r["tokens"] for n, r in fp32.items()} == {n: r["tokens"] for n, r in bf16.items()}
    for name, meth in methods.items():
        acc, ntok = evaluate.accuracy(m, cons, meth, x, y, (2, 2), dtype=torch.bfloat16)
        assert 0 <= acc <= 1 and ntok == bf16[name]["tokens"]
    # dense under autocast is close to fp32 (the consumer's logits)
    ts32 = evaluate.encode(m, None, x, (2, 2))
    with timing.precision("cpu", torch.bfloat16):
        ts16 = evaluate.encode(m, None, x, (2, 2))
        logits16 = cons.classify(ts16).float()
    assert torch.allclose(cons.classify(ts32), logits16, atol=0.05)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_throughput_accuracy_and_peak_memory():
    m, dev = make("vit").cuda(), torch.device("cuda")
    cons = TokenSetConsumer(ConsumerConfig(in_dim=32, dim=16, depth=1, heads=2, num_classes=3, num_partitions=5,
                                           grid=(8, 8))).eval().cuda()
    x, y = torch.randn(4, 3, 64, 64), torch.tensor([0, 1, 2, 0])  # on the CPU: moved by the helpers
    methods = {"dense": None, "hired-early": (hired, HiREDConfig(grid=(2, 2), rate=0.2, select_layer=1, early=True)),
               "evit": (evit, EViTConfig(layers=(1,), keep_rate=0.5)), "tome": (tome, ToMeConfig(r=8))}
    res = evaluate.throughput(m, cons, methods, x, (2, 2), repeats=2, dtype=torch.bfloat16)
    assert all(r["e2e_ips"] > 0 for r in res.values())
    acc, _ = evaluate.accuracy(m, cons, methods["hired-early"], x, y, (2, 2), dtype=torch.bfloat16)
    assert 0 <= acc <= 1
    peak = timing.peak_mib(lambda: torch.ones(256, 1024, device=dev) * 2, dev)
    assert 1.99 < peak < 2.1


def test_paired_delta_mean_and_standard_error():
    ref = torch.tensor([True, True, False, False, True, False])
    new = torch.tensor([True, False, False, True, True, True])
    delta, se = evaluate.paired_delta(new, ref)
    d = torch.tensor([0.0, -1, 0, 1, 0, 1])
    assert delta == pytest.approx(d.mean().item())
    assert se == pytest.approx(float(d.std()) / 6**0.5)
    assert evaluate.paired_delta(ref, ref) == (0.0, 0.0)  # identical results: no difference, no error
    with pytest.raises(ValueError, match="same images"):
        evaluate.paired_delta(new[:3], ref)


def test_page_correct_matches_accuracy():
    torch.manual_seed(0)
    m = VisionTransformer(img_size=16, patch_size=4, embed_dim=16, depth=2, num_heads=2, num_classes=0).eval()
    cons = TokenSetConsumer(ConsumerConfig(in_dim=16, dim=16, depth=1, heads=2, num_classes=3, num_partitions=5,
                                           grid=(4, 4))).eval()
    x, y = torch.randn(7, 3, 32, 32), torch.randint(0, 3, (7,))
    correct, ntok = evaluate.page_correct(m, cons, None, x, y, (2, 2), batch=3)
    assert correct.shape == (7,) and correct.dtype == torch.bool and ntok == 80
    assert evaluate.accuracy(m, cons, None, x, y, (2, 2), batch=3) == (int(correct.sum()) / 7, 80)


def test_closest_throughput_picks_the_candidate_nearest_the_reference():
    m = make("vit")
    cons = TokenSetConsumer(ConsumerConfig(in_dim=32, dim=16, depth=1, heads=2, num_classes=3, num_partitions=5,
                                           grid=(8, 8))).eval()
    x = torch.randn(2, 3, 64, 64)
    cands = {"r=2": (tome, ToMeConfig(r=2)), "r=8": (tome, ToMeConfig(r=8))}
    probe, best = evaluate.closest_throughput(m, cons, ("hired", (hired, HiREDConfig(grid=(2, 2), rate=0.2))), cands,
                                              x, (2, 2), repeats=1)
    assert set(probe) == {"hired", "r=2", "r=8"} and probe["r=8"]["tokens"] < probe["r=2"]["tokens"]
    ratio = {n: abs(probe[n]["e2e_ips"] / probe["hired"]["e2e_ips"] - 1) for n in cands}
    assert best == min(ratio, key=ratio.get)
    assert all(b.token_hook is None for b in m.blocks)
    with pytest.raises(ValueError, match="at least one candidate"):
        evaluate.closest_throughput(m, cons, ("dense", None), {}, x, (2, 2))
