"""The token-reduction experiment on high-resolution FRB pages, as steps cached in one work folder.

An encoder (the demo's crop classifier, trained on ink crops of FRB pages) reads each high-resolution
page as a thumbnail plus a :data:`GRID` of sub-images at its native size; a token-set consumer
(:mod:`vitkit.reduce.consumer`) classifies the page from the tokens a method keeps. A :class:`Preset`
says everything that differs between experiment sizes, a :class:`Run` where and how one invocation runs.

Steps, each reading what the earlier ones left in ``run.work``:

- pages: :func:`render_pages` renders pages 0..n-1 of a split in a pool of spawned processes (the same
  pages for any number of workers); :func:`bench_pages` caches the high-resolution ones as uint8 so that
  consumer training and bench read the same pixels;
- :func:`train_encoder` → ``work/encoder/model`` and its ``summary.json``;
- :func:`train_named_consumer` → ``work/NAME/consumer.pt`` and its ``summary.json``;
- :func:`plan_steps`: step counts that fit a time budget, measured on this machine.

The compared methods are :func:`methods` (rows of :func:`vitkit.reduce.evaluate.method_rows` at the
preset's layers) and, by name, :func:`method_by_name`.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from torch import Tensor, nn

from ..bench.pages import PagePool
from ..frb.ink import to_model_input
from ..frb.pages import PageConfig, page_sample, page_split, page_tensors
from ..frb.recipe import DemoConfig, build_model, train_crop_classifier
from ..weights import load, save
from . import evaluate as E
from .consumer import ConsumerConfig, save_consumer
from .tome import ToMeConfig

log = logging.getLogger(__name__)

__all__ = ["GRID", "Preset", "Run", "bench_pages", "consumer_config", "encoder_pages", "load_encoder", "method_by_name",
           "methods", "pages", "plan_steps", "render_pages", "render_range", "train_encoder", "train_named_consumer",
           "with_consumer_sizes", "write_summary"]

#: sub-images per high-resolution page (rows, columns), besides the thumbnail
GRID = (2, 2)


@dataclass(frozen=True)
class Preset:
    """Everything that differs between the benchmark sizes."""

    name: str
    enc: DemoConfig  # encoder: crop = native size, patch, width, depth, heads, steps, batch, lr
    pages: PageConfig  # the encoder's crops come from these pages
    bench_pages: PageConfig  # the high-resolution pages: 2×2 sub-images of enc.crop px
    n_train: int
    n_val: int
    n_test: int
    consumer: dict
    consumer_steps: int
    consumer_batch: int
    consumer_lr: float
    mem_batch: int  # pages in the peak-memory forward
    batch: int  # pages per timed batch
    repeats: int
    early_layer: int  # HiRED-early's select block
    evit_layers: tuple[int, ...]
    tome_candidates: dict[str, ToMeConfig] = field(default_factory=dict)
    enc_train_pages: int | None = None  # the encoder's training pages (None = n_train)


def with_consumer_sizes(preset: Preset, **sizes: int | None) -> Preset:
    """``preset`` whose consumer takes the given ``dim``/``depth``/``heads`` (None keeps the preset's);
    ValueError (from :class:`ConsumerConfig`) when the result is not a valid consumer."""
    consumer = {**preset.consumer, **{k: v for k, v in sizes.items() if v is not None}}
    ConsumerConfig(**consumer)
    return replace(preset, consumer=consumer)


@dataclass
class Run:
    """Where and how this invocation runs: cache folder (``work``), output folder (``out``), device, precision."""

    preset: Preset
    work: Path = Path("runs/token_reduction")
    out: Path | None = None  # None = work
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    dtype: torch.dtype | None = None  # None = fp32; torch.bfloat16 = autocast
    progress: bool = False
    workers: int = 1

    def __post_init__(self) -> None:
        self.work = Path(self.work)
        self.out = Path(self.out) if self.out is not None else self.work
        self.device = torch.device(self.device)
        self.pool = PagePool(self.workers)


# ------------------------------------------------------------------------------------------- pages
def render_range(split: str, start: int, stop: int, cfg: PageConfig) -> tuple[Tensor, Tensor]:
    """Pages start..stop-1 of ``split`` (seed 0): grey (n, 1, H, W) in [0, 1], labels (n,). Runs in a
    :class:`~vitkit.bench.pages.PagePool` worker on one thread (the caller's thread count is restored, as the
    pool renders small jobs in the calling process)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # workers share the cores: one thread each
    try:
        return page_tensors([page_sample(i, 0, split=split, cfg=cfg) for i in range(start, stop)])
    finally:
        torch.set_num_threads(threads)


def render_pages(split: str, n: int, cfg: PageConfig, pool: PagePool | None = None) -> tuple[Tensor, Tensor]:
    """Pages 0..n-1 of ``split`` as grey (n, 1, H, W) + labels, in ``pool``'s processes (the same pages for any
    number)."""
    if pool is None or pool.workers <= 1:
        return page_tensors(page_split(n, 0, split=split, cfg=cfg))
    return pool.render(render_range, {split: n}, cfg)[split]


def pages(run: Run, split: str, n: int, cfg: PageConfig | None = None) -> tuple[Tensor, Tensor]:
    """:func:`render_pages` in ``run``'s pool; ``cfg`` defaults to the encoder's pages."""
    return render_pages(split, n, cfg or run.preset.pages, run.pool)


def bench_pages(run: Run, split: str, n: int) -> tuple[Tensor, Tensor]:
    """High-resolution pages (cached as uint8 under ``run.work``, rendered again when their number or size
    differs) → model input (n, 3, H, W) in [-1, 1], labels (n,)."""
    path = run.work / f"pages_{split}.pt"
    d = torch.load(path, weights_only=True) if path.exists() else None
    if d is None or len(d["labels"]) != n or tuple(d["grey"].shape[-2:]) != run.preset.bench_pages.size:
        t = time.perf_counter()
        grey, labels = pages(run, split, n, run.preset.bench_pages)
        d = {"grey": (grey * 255).round().to(torch.uint8), "labels": labels}
        run.work.mkdir(parents=True, exist_ok=True)
        torch.save(d, path)
        log.info("%d %s pages %s rendered in %.1f s", n, split, run.preset.bench_pages.size, time.perf_counter() - t)
    return to_model_input(d["grey"].float() / 255), d["labels"]


def encoder_pages(run: Run) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
    """The encoder's training and validation pages (not cached: float pages, as the CPU figures used)."""
    p = run.preset
    return pages(run, "train", p.enc_train_pages or p.n_train), pages(run, "val", p.n_val)


# ------------------------------------------------------------------------------------------- training
def write_summary(run: Run, name: str, summary: dict, to_out: bool = False) -> None:
    """``work/NAME/summary.json`` (a consumer's is also copied into its bench JSON); with ``to_out`` and a
    separate ``run.out``, also ``out/NAME_summary.json``."""
    (run.work / name).mkdir(parents=True, exist_ok=True)
    text = json.dumps(summary, indent=2)
    (run.work / name / "summary.json").write_text(text)
    if to_out and run.out != run.work:
        run.out.mkdir(parents=True, exist_ok=True)
        (run.out / f"{name}_summary.json").write_text(text)


def _last(history: list[dict], key: str) -> float | None:
    """The last logged value of ``key`` in a training history, None if never logged."""
    values = [h[key] for h in history if key in h]
    return values[-1] if values else None


def train_encoder(run: Run, steps: int | None = None,
                  rendered: tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]] | None = None) -> dict:
    """Train the crop-classifier encoder with the engine (CUDA + bf16 autocast when available) for ``steps``
    (default: the preset's) and save it under ``work/encoder``; ``rendered`` = :func:`encoder_pages` output if
    already rendered. Returns the summary (also in ``work/encoder/summary.json`` and, with a separate ``out``,
    ``out/encoder_summary.json``, there with the history)."""
    t = time.perf_counter()
    p = run.preset
    (tr, trl), (va, val) = rendered or encoder_pages(run)
    t_pages = time.perf_counter() - t
    log.info("encoder pages %s rendered in %.1f s", tuple(tr.shape), t_pages)
    cfg = replace(p.enc, out_dir=str(run.work / "encoder"), progress=run.progress, steps=steps or p.enc.steps)
    model, result = train_crop_classifier(cfg, tr, trl, va, val)
    save(model.cpu(), run.work / "encoder" / "model")
    acc = _last(result.history, "val_crop_accuracy")
    summary = {"config": asdict(cfg), "train_s": time.perf_counter() - t, "pages_s": t_pages, "steps": result.steps,
               "val_crop_accuracy": acc, "history": result.history if run.out != run.work else None}
    write_summary(run, "encoder", summary, to_out=True)
    log.info("encoder: %d steps in %.0f s, val crop accuracy %s", result.steps, time.perf_counter() - t, acc)
    return summary


def load_encoder(run: Run) -> nn.Module:
    """The encoder :func:`train_encoder` saved, on ``run.device`` in eval mode."""
    return load(run.work / "encoder" / "model").to(run.device).eval()


def methods(preset: Preset, tome_r: dict[str, ToMeConfig]) -> dict[str, E.Method]:
    """name → (module, config) or None for dense (:func:`vitkit.reduce.evaluate.method_rows` at the preset's
    layers), then the ToMe rows ``tome_r``."""
    return E.method_rows(preset.enc.depth, preset.early_layer, preset.evit_layers, GRID, tome_r)


def method_by_name(run: Run, method_name: str, option: str = "--reduced-from") -> E.Method:
    """(module, config) of the row ``method_name``: a row of :func:`methods`, a ToMe candidate of the preset,
    "ToMe r=<json int or list>" or "EViT keep <rate>" at the preset's EViT layers (ValueError naming ``option``)."""
    rows = methods(run.preset, dict(run.preset.tome_candidates))
    return E.method_by_name(rows, method_name, run.preset.evit_layers, option)


def consumer_config(run: Run, enc: nn.Module) -> ConsumerConfig:
    """The preset's consumer for the tokens of encoder ``enc``: thumbnail + :data:`GRID` partitions, 15 fonts."""
    return ConsumerConfig(in_dim=enc.embed_dim, num_partitions=1 + GRID[0] * GRID[1], grid=enc.grid_size,
                          num_classes=15, **run.preset.consumer)


def train_named_consumer(run: Run, guided: float, name: str, steps: int | None = None,
                         reduced_from: list[str] | None = None, seed: int = 0) -> dict:
    """Train consumer ``name`` on the saved encoder's dense token sets of the high-resolution training pages
    (:func:`vitkit.reduce.evaluate.train_consumer_on_images`); ``guided``: the share of attention-guided batches;
    with ``reduced_from`` (method names) half the batches are those methods' token sets of the training pages
    (one method per batch, uniformly). Saves ``work/NAME/consumer.pt``; returns the summary (also in
    ``work/NAME/summary.json``)."""
    t = time.perf_counter()
    p = run.preset
    steps = steps or p.consumer_steps
    enc = load_encoder(run)
    ccfg = consumer_config(run, enc)
    model, result = E.train_consumer_on_images(
        enc, bench_pages(run, "train", p.n_train), bench_pages(run, "val", p.n_val), GRID, ccfg, steps=steps,
        batch=p.consumer_batch, lr=p.consumer_lr, out_dir=run.work / name, seed=seed, guided=guided,
        reduced=[method_by_name(run, r) for r in reduced_from or []], dtype=run.dtype, progress=run.progress)
    save_consumer(model, run.work / name / "consumer.pt")
    acc = _last(result.history, "val_accuracy")
    summary = {"config": asdict(ccfg), "guided_prob": guided, "reduced_from": reduced_from, "seed": seed,
               "steps": result.steps, "train_s": time.perf_counter() - t, "val_accuracy_dense": acc,
               "history": result.history if run.out != run.work else None}
    write_summary(run, name, summary)
    log.info("%s: %d steps in %.0f s, dense val accuracy %s", name, result.steps, time.perf_counter() - t, acc)
    return summary


# ------------------------------------------------------------------------------------------ time budget
def plan_steps(run: Run, seconds_left: float, enc_steps: int, con_steps: int, n_test: int,
               safety: float = 1.3, pages: tuple[Tensor, Tensor] | None = None) -> dict:
    """Encoder and consumer step counts that fit ``seconds_left`` (:func:`vitkit.reduce.evaluate.training_plan`):
    the encoder's crop batches are built from ``pages``; the bench runs every row on the ``n_test`` test pages."""
    p = run.preset
    torch.manual_seed(0)
    enc = build_model(p.enc).to(run.device)
    n_rows = 10 + len(p.tome_candidates)
    plan = E.training_plan(enc, consumer_config(run, enc), seconds_left, enc_steps, con_steps, pages=pages,
                           enc_batch=p.enc.batch_size, con_batch=p.consumer_batch, safety=safety,
                           bench_pages=1.2 * (p.n_train + p.n_val) + 0.7 * n_rows * n_test
                           + 1.5 * n_rows * p.batch * (p.repeats + 4))
    log.info("time budget: %.0f s left; measured %.3f s/encoder step (compute %.3f, crops %.3f, copy %.3f), %.3f "
             "s/consumer step; bench and token sets ≈ %.0f s → encoder %d steps (asked %d), consumer %d (asked %d), "
             "≈ %.0f s", seconds_left, plan["encoder_s_per_step"], plan["encoder_compute_s"], plan["encoder_data_s"],
             plan["encoder_copy_s"],
             plan["consumer_s_per_step"], plan["reserve_s"], plan["encoder_steps"], enc_steps, plan["consumer_steps"],
             con_steps, plan["estimated_s"])
    return plan
