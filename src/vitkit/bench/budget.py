"""Fitting a run into a time budget: a clock that knows the deadline, measured step costs, step counts.

A benchmark with ``--time-budget S`` measures a few training steps first and lowers its step counts
(never raises them) so that the run ends in S seconds; work that would still not fit is skipped and
listed rather than killed half-way. The arithmetic is pure (:func:`fit_steps`); the measurements
(:func:`train_step_seconds`, :func:`batch_seconds`) are synchronised on the device.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import nn

from .timing import median, synchronize, timed

__all__ = ["Budget", "batch_seconds", "fit_steps", "train_step_seconds"]


class Budget:
    """``seconds`` from now (by ``clock``); None = no limit. ``left()`` is infinite without a limit."""

    def __init__(self, seconds: float | None, clock: Callable[[], float] = time.perf_counter) -> None:
        if seconds is not None and seconds <= 0:
            raise ValueError(f"a time budget must be > 0 seconds, got {seconds}")
        self.seconds, self.clock = seconds, clock
        self.start = clock()

    def elapsed(self) -> float:
        return self.clock() - self.start

    def left(self) -> float:
        return math.inf if self.seconds is None else self.seconds - self.elapsed()

    def allows(self, seconds: float) -> bool:
        """Whether work estimated at ``seconds`` ends before the deadline."""
        return seconds <= self.left()


def fit_steps(seconds: float, costs: Mapping[str, float], asked: Mapping[str, int],
              order: Sequence[tuple[str, float]]) -> dict[str, int]:
    """Step counts whose cost (``costs[k]`` seconds a step × steps) fits ``seconds``.

    Goes through ``order``: each (item, floor) lowers that item just enough to fit, but not below
    floor × its asked count; stops as soon as the total fits. Never raises a count above ``asked``.
    """
    steps = dict(asked)
    for name, floor in order:
        others = sum(costs[k] * steps[k] for k in steps if k != name)
        if others + costs[name] * steps[name] <= seconds:
            break
        fit = int((seconds - others) / costs[name]) if costs[name] > 0 else steps[name]
        steps[name] = min(steps[name], max(int(floor * asked[name]), fit))
    return steps


def train_step_seconds(model: nn.Module, make_batch: Callable[[], object], loss_fn: Callable[[nn.Module, object], torch.Tensor],
                       device: torch.device | str, *, warmup: int = 3, steps: int = 5,
                       clip_norm: float | None = None) -> float:
    """Median seconds of an optimiser step (forward, backward, AdamW) on ``make_batch()`` (made outside the
    timed region), under the autocast the engine picks (bf16 on CUDA, none on the CPU); the model is left in
    eval mode."""
    device = torch.device(device)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-6)
    amp = torch.bfloat16 if device.type == "cuda" else None  # what the engine's amp="auto" picks
    times = []
    for i in range(warmup + steps):
        batch = make_batch()

        def step(batch=batch):
            with torch.autocast(device.type, amp, enabled=amp is not None):
                loss = loss_fn(model, batch)
            loss.backward()
            if clip_norm is not None:
                nn.utils.clip_grad_norm_(model.parameters(), clip_norm)
            opt.step()
            opt.zero_grad(set_to_none=True)

        s = timed(step, device)
        if i >= warmup:
            times.append(s)
    model.eval()
    return median(times)


def batch_seconds(make_batch: Callable[[], torch.Tensor], device: torch.device | str | None = None,
                  repeats: int = 3) -> tuple[float, float]:
    """(median seconds to build a batch on the CPU, median seconds to copy it to ``device``; 0 without one)."""
    make, copy, box = [], [], []
    for _ in range(repeats):
        make.append(timed(lambda: box.append(make_batch())))
        if device is not None:
            copy.append(timed(lambda: box[-1].to(device), device))
    synchronize(device)
    return median(make), median(copy) if copy else 0.0
