"""Rendering many pages in parallel: a pool of spawned processes, each rendering a range of page indices.

The pages a benchmark renders are pure functions of (split, index, settings) and normalised one by one,
so rendering them in chunks on any number of workers gives the same tensors as one pass (a test checks
it). Workers are *spawned*, not forked: forking a process that has initialised CUDA breaks the child.
The render function must be importable by the child (a module-level function; a script run as
``__main__`` counts, behind ``if __name__ == "__main__":``). The pool is a ``ProcessPoolExecutor``: a
worker that dies (e.g. an unguarded script re-running itself in the child) stops the render with an
error, where a ``multiprocessing.Pool`` would start new workers for ever.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import torch

__all__ = ["PagePool", "chunks"]

#: render(split, start, stop, *args) → (pages (stop − start, …), labels (stop − start,))
RenderFn = Callable[..., tuple[torch.Tensor, torch.Tensor]]


def chunks(splits: Mapping[str, int], workers: int) -> list[tuple[str, int, int]]:
    """(split, start, stop) ranges covering pages 0..n-1 of every split: about four per worker in all, so
    that a slow chunk does not leave the other workers idle."""
    step = max(1, -(-sum(splits.values()) // (4 * max(1, workers))))
    return [(split, a, min(n, a + step)) for split, n in splits.items() for a in range(0, n, step)]


class PagePool:
    """``workers`` spawned processes (started on first use, kept until :meth:`close` or the end of a
    ``with`` block); with one worker, or fewer than two pages per worker, everything renders in this process."""

    def __init__(self, workers: int = 1) -> None:
        self.workers = workers
        self._pool = None

    def render(self, fn: RenderFn, splits: Mapping[str, int], *args) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Pages 0..n-1 of each split (``{split: n}``) as ``{split: (pages, labels)}`` from
        ``fn(split, start, stop, *args)``."""
        if self.workers <= 1 or sum(splits.values()) < 2 * self.workers:
            return {split: fn(split, 0, n, *args) for split, n in splits.items()}
        if self._pool is None:
            import multiprocessing as mp

            self._pool = ProcessPoolExecutor(self.workers, mp_context=mp.get_context("spawn"))
        tasks = chunks(splits, self.workers)
        try:
            parts = list(self._pool.map(fn, *zip(*[(*t, *args) for t in tasks], strict=True)))
        except BrokenProcessPool as e:
            self.close()
            raise RuntimeError("a page-rendering worker process died: a script that renders with workers > 1 needs "
                               "`if __name__ == '__main__':` around its code (workers are spawned and import it), "
                               "or use one worker") from e
        return {split: (torch.cat([p[0] for t, p in zip(tasks, parts, strict=True) if t[0] == split]),
                        torch.cat([p[1] for t, p in zip(tasks, parts, strict=True) if t[0] == split]))
                for split in splits}

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    def __enter__(self) -> PagePool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
