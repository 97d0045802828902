"""Running a token-reduction method end to end: encode high-resolution images into a token set with
a method applied, score a consumer on it, and time it against dense (interleaved, median).

Devices: images may live anywhere; they are moved to the encoder's device (outside timed regions).
Timing and peak memory: :mod:`vitkit.bench.timing` (synchronised on CUDA). Precision:
``dtype=torch.bfloat16`` (or float16) runs encoder and consumer under ``torch.autocast`` — weights stay
fp32 as the engine trains them, matmuls run in bf16, softmax/LayerNorm in fp32 — and accuracy and
timing use that same path; ``None``/float32 = fp32.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import ModuleType

import torch
from torch import Tensor, nn

from ..bench.timing import median, peak_mib, precision, synchronize, timed
from ..engine import model_device
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


def _encode_classify(model: nn.Module, consumer: nn.Module | None, method: Method, images: Tensor,
                     grid: tuple[int, int]) -> None:
    ts = encode(model, method, images, grid)
    if consumer is not None:
        consumer.classify(ts)


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
                with applied(model, m):  # apply/remove outside the timed region
                    e2e[name].append(timed(lambda m=m: _encode_classify(model, consumer, m, images, grid), dev))
                if consumer is not None:
                    con[name].append(timed(lambda name=name: consumer.classify(sets[name]), dev))

    out = {}
    for name in methods:
        row = {"e2e_ips": n / median(e2e[name]), "tokens": float(len(sets[name]))}
        if consumer is not None:
            row["consumer_ips"] = n / median(con[name])
        out[name] = row
    return out


@torch.no_grad()
def dense_token_sets(model: nn.Module, images: Tensor, grid: tuple[int, int], layer: int, batch: int = 32,
                     dtype: torch.dtype | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Dense token sets of images (n, C, H, W): tokens (n, P·T, C) in fp32, their layout (partition (P·T,),
    pos (P·T, 2)) and each token's CLS attention at block ``layer`` summed over heads (n, P·T); on the
    encoder's device, under :func:`precision` ``(dtype)``."""
    dev = model_device(model)
    vis = vision_tower(model)
    sets, scores = [], []
    with vis.attention_readout([layer], "cls") as maps, precision(dev, dtype):
        for i in range(0, len(images), batch):
            sets.append(encode_partitions(model, partition(images[i : i + batch].to(dev), grid, vis.cfg.img_size,
                                                           vis.patch_size)))
            a = maps[layer][:, :, vis.num_prefix_tokens :].sum(1)  # (b·P, T)
            scores.append(a.reshape(len(sets[-1].tokens), -1).float())
    return (torch.cat([s.tokens.float() for s in sets]), sets[0].partition[0], sets[0].pos[0], torch.cat(scores))


@torch.no_grad()
def reduced_token_sets(model: nn.Module, method: Method, images: Tensor, grid: tuple[int, int], batch: int = 64,
                       dtype: torch.dtype | None = None) -> TokenSet:
    """The token sets ``method`` gives for images (n, C, H, W), all images stacked (tokens in fp32)."""
    dev = model_device(model)
    parts = []
    with applied(model, method), precision(dev, dtype):
        for i in range(0, len(images), batch):
            parts.append(encode(model, method, images[i : i + batch].to(dev), grid))
    return TokenSet(torch.cat([p.tokens.float() for p in parts]), torch.cat([p.partition for p in parts]),
                    torch.cat([p.pos for p in parts]), parts[0].grid, parts[0].num_partitions)


@torch.no_grad()
def peak_memory(model: nn.Module, consumer: nn.Module, method: Method, images: Tensor, grid: tuple[int, int],
                dtype: torch.dtype | None = None) -> tuple[float, float]:
    """Peak tensor memory (MiB, :func:`vitkit.bench.timing.peak_mib`) of one forward of images (n, C, H, W):
    end to end, and the consumer alone on the method's token set."""
    dev = model_device(model)
    images = images.to(dev)
    with applied(model, method), precision(dev, dtype):
        e2e = peak_mib(lambda: consumer.classify(encode(model, method, images, grid)), dev)
        ts = encode(model, method, images, grid)
        con = peak_mib(lambda: consumer.classify(ts), dev)
    return e2e, con


def bench_rows(model: nn.Module, consumer: nn.Module, methods: Mapping[str, Method], images: Tensor, labels: Tensor,
               grid: tuple[int, int], timings: Mapping[str, Mapping[str, float]], mem_batch: int,
               dtype: torch.dtype | None = None, on_row: Callable[[str, dict], None] | None = None) -> dict[str, dict]:
    """One row per method (``"dense"`` among them): its :func:`throughput` figures (``timings``), page accuracy,
    tokens per page, peak MiB end to end and consumer-side (on ``mem_batch`` images), the per-page results as a
    "0"/"1" string, and against dense: speed-ups, Δ accuracy in points and its paired standard error (the same
    pages for every method). ``on_row(name, rows)`` after each method (e.g. to save partial results)."""
    rows, correct = {}, {}
    for name, m in methods.items():
        correct[name], ntok = page_correct(model, consumer, m, images, labels, grid, dtype=dtype)
        e2e_mib, con_mib = peak_memory(model, consumer, m, images[:mem_batch], grid, dtype)
        rows[name] = {**timings[name], "accuracy": int(correct[name].sum()) / len(images), "tokens_per_page": ntok,
                      "peak_mib": e2e_mib, "consumer_peak_mib": con_mib,
                      "correct": "".join("1" if c else "0" for c in correct[name].tolist())}
        if on_row is not None:
            on_row(name, rows)
    d = rows["dense"]
    for name, r in rows.items():
        r["e2e_speedup"] = r["e2e_ips"] / d["e2e_ips"]
        r["consumer_speedup"] = r["consumer_ips"] / d["consumer_ips"]
        r["accuracy_delta_pts"] = 100 * (r["accuracy"] - d["accuracy"])
        r["accuracy_delta_se_pts"] = 100 * paired_delta(correct[name], correct["dense"])[1]
    return rows


def pooled_correct(benches: Mapping[str, Mapping[str, dict]]) -> tuple[list[str], dict[str, Tensor]]:
    """Rows present in every bench of the same test pages (``benches``: label → the "rows" of a bench JSON),
    and row → (benches, pages) 0/1 tensor of each page's result under each bench; ValueError when the
    benches scored different numbers of pages."""
    runs = list(benches.values())
    n = {len(r["dense"]["correct"]) for r in runs}
    if len(n) != 1:
        raise ValueError(f"the benches scored different numbers of test pages {sorted(n)}: pool benches of the same pages")
    names = [k for k in runs[0] if all(k in r for r in runs)]
    return names, {k: torch.tensor([[c == "1" for c in r[k]["correct"]] for r in runs], dtype=torch.float)
                   for k in names}
