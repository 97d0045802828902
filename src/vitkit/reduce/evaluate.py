"""Running a token-reduction method end to end: encode high-resolution images into a token set with
a method applied, score a consumer on it, and time it against dense (interleaved, median)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from types import ModuleType

import torch
from torch import Tensor, nn

from . import hired
from .partitions import TokenSet, encode_partitions, partition
from .wiring import vision_tower

#: a method: None (dense) or (module with apply/remove, its config)
Method = tuple[ModuleType, object] | None


class applied:
    """``with applied(model, method):`` the method is applied inside the block, removed after."""

    def __init__(self, model: nn.Module, method: Method) -> None:
        self.model, self.method = model, method

    def __enter__(self) -> nn.Module:
        if self.method is not None:
            self.method[0].apply(self.model, self.method[1])
        return self.model

    def __exit__(self, *exc) -> None:
        if self.method is not None:
            self.method[0].remove(self.model)


def encode(model: nn.Module, method: Method, images: Tensor, grid: tuple[int, int]) -> TokenSet:
    """Images (B, C, H, W) → token set with ``method`` (already applied; None = dense)."""
    if method is not None and method[0] is hired:
        return hired.encode(model, images)
    vis = vision_tower(model)
    return encode_partitions(model, partition(images, grid, vis.cfg.img_size, vis.patch_size))


@torch.no_grad()
def accuracy(model: nn.Module, consumer: nn.Module, method: Method, images: Tensor, labels: Tensor,
             grid: tuple[int, int], batch: int = 50) -> tuple[float, float]:
    """(accuracy of ``consumer`` on the token sets, mean tokens per image)."""
    correct, ntok = 0, 0
    with applied(model, method):
        for i in range(0, len(images), batch):
            ts = encode(model, method, images[i : i + batch], grid)
            correct += int((consumer.classify(ts).argmax(-1) == labels[i : i + batch]).sum())
            ntok += len(ts) * ts.tokens.shape[0]
    return correct / len(images), ntok / len(images)


@torch.no_grad()
def throughput(model: nn.Module, consumer: nn.Module | None, methods: Mapping[str, Method], images: Tensor,
               grid: tuple[int, int], repeats: int = 5) -> dict[str, dict[str, float]]:
    """Median images/s per method over ``repeats`` rounds, the methods interleaved within a round.

    ``e2e_ips``: partition + encoder (+ consumer); ``consumer_ips``: the consumer alone on the
    method's token set (only with a consumer); ``tokens``: tokens per image.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be ≥ 1, got {repeats}")
    n = len(images)
    sets = {}
    for name, m in methods.items():  # warm-up, and the token sets for the consumer-side timing
        with applied(model, m):
            sets[name] = encode(model, m, images, grid)
        if consumer is not None:
            consumer.classify(sets[name])
    e2e: dict[str, list[float]] = {k: [] for k in methods}
    con: dict[str, list[float]] = {k: [] for k in methods}
    for _ in range(repeats):
        for name, m in methods.items():
            with applied(model, m):
                t = time.perf_counter()
                ts = encode(model, m, images, grid)
                if consumer is not None:
                    consumer.classify(ts)
                e2e[name].append(time.perf_counter() - t)
            if consumer is not None:
                t = time.perf_counter()
                consumer.classify(sets[name])
                con[name].append(time.perf_counter() - t)

    def med(v: list[float]) -> float:
        return sorted(v)[len(v) // 2]

    out = {}
    for name in methods:
        row = {"e2e_ips": n / med(e2e[name]), "tokens": float(len(sets[name]))}
        if consumer is not None:
            row["consumer_ips"] = n / med(con[name])
        out[name] = row
    return out


def peak_tensor_mib(fn) -> float:
    """Peak of the CPU tensor memory allocated while ``fn()`` runs, in MiB (torch profiler's allocation
    events summed in time order; allocator- and RSS-independent)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    live = peak = 0
    for e in sorted(prof.events(), key=lambda e: e.time_range.start):
        live += e.self_cpu_memory_usage
        peak = max(peak, live)
    return peak / 2**20
