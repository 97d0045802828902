"""Running a token-reduction method end to end: encode high-resolution images into a token set with
a method applied, score a consumer on it, and time it against dense (interleaved, median).

Devices: images may live anywhere; they are moved to the encoder's device (outside timed regions).
On CUDA every timed region is bracketed by ``torch.cuda.synchronize()`` and peak memory is the
allocator's ``max_memory_allocated`` above what was allocated before; on CPU it is the torch
profiler's allocation events. Precision: ``dtype=torch.bfloat16`` (or float16) runs encoder and
consumer under ``torch.autocast`` — weights stay fp32 as the engine trains them, matmuls run in
bf16, softmax/LayerNorm in fp32 — and accuracy and timing use that same path; ``None``/float32 = fp32.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping
from types import ModuleType

import torch
from torch import Tensor, nn

from ..engine import model_device
from .partitions import TokenSet
from .reducers import Reducer, reducer_for

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
    if method is None:
        return Reducer.encode(model, images, grid)
    return reducer_for(method[1]).encode(model, images, grid)


def synchronize(device: torch.device | str) -> None:
    """Wait for the queued work on ``device`` (CUDA); a no-op on CPU."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def precision(device: torch.device | str, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """``torch.autocast`` to ``dtype`` (bfloat16/float16) on ``device``; a null context for None/float32."""
    if dtype is None or dtype == torch.float32:
        return contextlib.nullcontext()
    if dtype not in (torch.bfloat16, torch.float16):
        raise ValueError(f"dtype must be None, torch.float32, torch.bfloat16 or torch.float16, got {dtype}")
    return torch.autocast(torch.device(device).type, dtype=dtype)


@torch.no_grad()
def page_correct(model: nn.Module, consumer: nn.Module, method: Method, images: Tensor, labels: Tensor,
                 grid: tuple[int, int], batch: int = 50, dtype: torch.dtype | None = None) -> tuple[Tensor, float]:
    """(correct (n,) bool on the CPU: the consumer's prediction on each image's token set is its label, mean
    tokens per image). images (n, C, H, W) and labels (n,) on any device; each batch runs on the encoder's
    device under ``precision(dtype)``. Per-image results allow paired comparisons between methods."""
    dev = model_device(model)
    correct, ntok = [], 0
    with applied(model, method), precision(dev, dtype):
        for i in range(0, len(images), batch):
            ts = encode(model, method, images[i : i + batch].to(dev), grid)
            correct.append(consumer.classify(ts).argmax(-1).cpu() == labels[i : i + batch].cpu())
            ntok += len(ts) * ts.tokens.shape[0]
    return torch.cat(correct), ntok / len(images)


def accuracy(model: nn.Module, consumer: nn.Module, method: Method, images: Tensor, labels: Tensor,
             grid: tuple[int, int], batch: int = 50, dtype: torch.dtype | None = None) -> tuple[float, float]:
    """(accuracy of ``consumer`` on the token sets, mean tokens per image); see :func:`page_correct`."""
    correct, ntok = page_correct(model, consumer, method, images, labels, grid, batch, dtype)
    return int(correct.sum()) / len(correct), ntok


def paired_delta(correct: Tensor, reference: Tensor) -> tuple[float, float]:
    """(accuracy difference, its standard error) of per-image results ``correct`` against ``reference``,
    both (n,) bool on the same images: mean and SE of the paired differences (in fractions, not points)."""
    if correct.shape != reference.shape or correct.ndim != 1:
        raise ValueError(f"paired_delta needs two (n,) results on the same images, got {tuple(correct.shape)} "
                         f"and {tuple(reference.shape)}")
    d = correct.float() - reference.float()
    se = d.std(unbiased=True).item() / len(d) ** 0.5 if len(d) > 1 else float("nan")
    return d.mean().item(), se


@torch.no_grad()
def throughput(model: nn.Module, consumer: nn.Module | None, methods: Mapping[str, Method], images: Tensor,
               grid: tuple[int, int], repeats: int = 5, dtype: torch.dtype | None = None) -> dict[str, dict[str, float]]:
    """Median images/s per method over ``repeats`` rounds, the methods interleaved within a round.

    ``e2e_ips``: partition + encoder (+ consumer); ``consumer_ips``: the consumer alone on the
    method's token set (only with a consumer); ``tokens``: tokens per image. ``images`` (n, C, H, W)
    are moved to the encoder's device first (untimed); on CUDA each timed region starts and ends with
    a synchronize; ``dtype`` as in :func:`precision` (the first round per method is an untimed warm-up).
    """
    if repeats < 1:
        raise ValueError(f"repeats must be ≥ 1, got {repeats}")
    dev = model_device(model)
    images = images.to(dev)
    n = len(images)
    sets = {}
    with precision(dev, dtype):
        for name, m in methods.items():  # warm-up, and the token sets for the consumer-side timing
            with applied(model, m):
                sets[name] = encode(model, m, images, grid)
            if consumer is not None:
                consumer.classify(sets[name])
        synchronize(dev)
        e2e: dict[str, list[float]] = {k: [] for k in methods}
        con: dict[str, list[float]] = {k: [] for k in methods}
        for _ in range(repeats):
            for name, m in methods.items():
                with applied(model, m):
                    synchronize(dev)
                    t = time.perf_counter()
                    ts = encode(model, m, images, grid)
                    if consumer is not None:
                        consumer.classify(ts)
                    synchronize(dev)
                    e2e[name].append(time.perf_counter() - t)
                if consumer is not None:
                    synchronize(dev)
                    t = time.perf_counter()
                    consumer.classify(sets[name])
                    synchronize(dev)
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


def peak_mib(fn: Callable[[], object], device: torch.device | str = "cpu") -> float:
    """Peak tensor memory allocated while ``fn()`` runs, in MiB: :func:`peak_cuda_mib` on a CUDA
    device, else :func:`peak_tensor_mib` (CPU profiler)."""
    device = torch.device(device)
    return peak_cuda_mib(fn, device) if device.type == "cuda" else peak_tensor_mib(fn)


def peak_cuda_mib(fn: Callable[[], object], device: torch.device | str = "cuda") -> float:
    """Peak CUDA memory allocated while ``fn()`` runs above what was allocated before it, in MiB
    (``reset_peak_memory_stats`` + ``max_memory_allocated``; the caching allocator's reserve is not counted)."""
    device = torch.device(device)
    synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    fn()
    synchronize(device)
    return (torch.cuda.max_memory_allocated(device) - base) / 2**20


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
