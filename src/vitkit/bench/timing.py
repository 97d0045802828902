"""Timing and memory that mean the same on a CPU and a GPU.

On CUDA every timed region starts and ends with ``torch.cuda.synchronize()`` (kernels are queued, so an
unsynchronised clock measures the launch, not the work). :func:`interleaved` runs several candidates in
rounds, rotating who goes first, so that a machine getting busier or a cache warming up hits all of them
alike; the median over rounds is robust to the odd slow round of a shared machine.

Peak memory: on CUDA the allocator's ``max_memory_allocated`` above what was allocated before; on the CPU
the torch profiler's allocation events (:func:`peak_tensor_mib`) or, for a whole process, the RSS
high-water mark (:func:`peak_rss_bytes`, Linux).
"""

from __future__ import annotations

import contextlib
import logging
import os
import resource
import statistics
import time
from collections.abc import Callable, Iterator, Mapping, Sequence

import torch

log = logging.getLogger(__name__)

__all__ = ["fp32_precision", "interleaved", "median", "peak_cuda_mib", "peak_mib", "peak_rss_bytes", "peak_tensor_mib",
           "precision", "reset_peak_rss", "round_orders", "rss_bytes", "rss_rise", "spread", "synchronize", "timed"]


def synchronize(device: torch.device | str | None) -> None:
    """Wait for the queued work on ``device`` (CUDA); a no-op on the CPU or for None."""
    if device is None:
        return
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


@contextlib.contextmanager
def fp32_precision(tf32: bool) -> Iterator[None]:
    """CUDA float32 matmuls and convolutions in TF32 (``tf32``) or IEEE fp32 inside; restored on exit
    (nothing changes without CUDA).

    Only the two setters torch keeps consistent with its newer per-backend flags are used
    (``torch.set_float32_matmul_precision`` and ``torch.backends.cudnn.allow_tf32``): mixing the old and new
    APIs makes torch ≥ 2.9 raise when a flag is read. A flag that cannot be set is logged, not fatal."""
    if not torch.cuda.is_available():
        yield
        return
    saved = None
    try:
        saved = (torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32)
        torch.set_float32_matmul_precision("high" if tf32 else "highest")
        torch.backends.cudnn.allow_tf32 = tf32
    except RuntimeError as e:  # a torch whose flags are in a mixed state: keep whatever is set
        log.warning("could not set %s precision (%s); running with torch's current setting",
                    "TF32" if tf32 else "IEEE fp32", e)
    try:
        yield
    finally:
        if saved is not None:
            try:
                torch.set_float32_matmul_precision(saved[0])
                torch.backends.cudnn.allow_tf32 = saved[1]
            except RuntimeError as e:
                log.warning("could not restore the float32 precision flags (%s)", e)


def timed(fn: Callable[[], object], device: torch.device | str | None = None, *, clock=time.perf_counter) -> float:
    """Seconds of one call of ``fn``, synchronised on ``device`` before and after."""
    synchronize(device)
    t = clock()
    fn()
    synchronize(device)
    return clock() - t


def median(xs: Sequence[float]) -> float:
    """The median (the mean of the middle two for an even count)."""
    return statistics.median(xs)


def spread(xs: Sequence[float]) -> float:
    """(max − min) / median over the middle 80 % of ``xs``: a noise note, not a statistic to compare."""
    s = sorted(xs)
    k = len(s) // 10
    mid = s[k : len(s) - k] or s
    return (mid[-1] - mid[0]) / median(s)


def round_orders(names: Sequence[str], rounds: int, rotate: bool = True) -> list[list[str]]:
    """The order of ``names`` in each of ``rounds`` rounds: round i starts at name i mod n (``rotate``), else
    always as given."""
    n = len(names)
    return [list(names[i % n :]) + list(names[: i % n]) if rotate and n else list(names) for i in range(rounds)]


def interleaved(fns: Mapping[str, Callable[[], object]], repeats: int, *, warmup: int = 1,
                device: torch.device | str | None = None, rotate: bool = True,
                clock=time.perf_counter) -> dict[str, list[float]]:
    """Seconds of each call per round: ``warmup`` untimed rounds, then ``repeats`` timed rounds in which
    every function runs once (the order rotated each round, see :func:`round_orders`). Take
    :func:`median` of each list for the figure, and of per-round ratios for a paired comparison."""
    if repeats < 1:
        raise ValueError(f"repeats must be ≥ 1, got {repeats}")
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for order in round_orders(list(fns), repeats, rotate):
        for k in order:
            times[k].append(timed(fns[k], device, clock=clock))
    return times


# ------------------------------------------------------------------------------------------ memory
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


def peak_tensor_mib(fn: Callable[[], object]) -> float:
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


def rss_bytes() -> int:
    """This process's resident set size now (Linux ``/proc/self/statm``)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def reset_peak_rss() -> bool:
    """Reset this process's RSS high-water mark (VmHWM) to its current RSS (Linux ≥ 4.0); False where the
    kernel does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_bytes() -> tuple[int, str]:
    """(peak RSS in bytes, source). VmHWM of this process where /proc has it, else ru_maxrss.

    ru_maxrss alone is not enough in a child: Linux carries the parent's high-water mark over fork +
    exec into the child's ru_maxrss (and clear_refs does not reset that part), so a probe started by a
    benchmark that once held 3 GiB would report 3 GiB before doing anything. VmHWM is the same counter
    for this address space only.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024, "VmHWM"
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "ru_maxrss"  # KiB on Linux


def rss_rise(fn: Callable[[], object]) -> dict:
    """How this process's RSS rises while ``fn()`` runs: ``peak_delta`` (high-water mark, reset just before
    where the kernel allows it, above the RSS before), ``kept_delta`` (RSS after − before), the baselines,
    the peak's source and whether the reset worked; ``result``: what ``fn`` returned. Run it in a fresh
    process (:func:`vitkit.bench.probe.run_probe`) so that earlier work does not hold the mark."""
    reset = reset_peak_rss()
    before_rss = rss_bytes()
    before_max, source = peak_rss_bytes()
    result = fn()
    after_max, _ = peak_rss_bytes()
    return {"peak_delta": after_max - max(before_max, before_rss), "kept_delta": rss_bytes() - before_rss,
            "baseline_rss": before_rss, "baseline_peak": before_max, "peak_source": source, "hwm_reset": reset,
            "result": result}
