"""The training engine: AdamW, warm-up + cosine, label smoothing, clipping, accumulation, AMP,
DDP, a progress bar, JSONL metrics, atomic checkpoints and exact resume.

Data order is a function of (seed, epoch) only and the data position is derived from the step, so
a run killed at any moment and resumed from its last checkpoint ends with exactly the weights of an
uninterrupted run (on CPU, for datasets whose samples depend only on their index, or with
``num_workers=0``). ``batch_size`` is the global batch of one optimiser step; it is split into
``accum_steps`` micro-batches and across processes, so changing either leaves the maths unchanged.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Sampler

from . import distributed as D
from .checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state

log = logging.getLogger(__name__)

LossFn = Callable[[nn.Module, Sequence[Tensor]], Tensor]
EvalFn = Callable[[nn.Module], dict]


@dataclass
class TrainConfig:
    epochs: int = 10
    batch_size: int = 64  # global batch per optimiser step
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_steps: int = 0
    min_lr_ratio: float = 0.01  # cosine floor as a fraction of lr
    label_smoothing: float = 0.1
    grad_clip: float | None = 1.0
    accum_steps: int = 1
    amp: str = "auto"  # auto (bf16 on CUDA, off on CPU) | bf16 | fp16 | off
    seed: int = 0
    max_steps: int | None = None  # stop early (counts optimiser steps)
    ckpt_every: int = 100  # optimiser steps between checkpoints (and at the end)
    log_every: int = 10
    eval_every: int | None = None  # steps between evaluations; None = once per epoch
    num_workers: int = 0
    out_dir: str = "runs/train"
    progress: bool = True

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "accum_steps", "ckpt_every", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"TrainConfig.{name} must be ≥ 1, got {getattr(self, name)}")
        if self.amp not in ("auto", "bf16", "fp16", "off"):
            raise ValueError(f"TrainConfig.amp must be auto|bf16|fp16|off, got {self.amp!r}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"TrainConfig.label_smoothing must be in [0, 1), got {self.label_smoothing}")


def cosine_with_warmup(step: int, total: int, warmup: int, min_ratio: float) -> float:
    """LR multiplier: linear warm-up over ``warmup`` steps, then cosine from 1 to ``min_ratio``."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def model_device(model: nn.Module) -> torch.device:
    """The device of ``model``'s first parameter (CPU for a model without parameters)."""
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


class StepBatchSampler(Sampler[list[int]]):
    """Index lists for this process, micro-batch by micro-batch, from optimiser step ``start`` on.

    Step s of epoch e uses ``perm_e[s·B : (s+1)·B]`` (perm_e seeded by (seed, e)); each of the
    ``accum`` micro-batches is a contiguous slice of it, split contiguously across ranks.
    """

    def __init__(self, n: int, cfg: TrainConfig, epoch: int, start: int, rank: int, world: int) -> None:
        self.n, self.cfg, self.epoch, self.start = n, cfg, epoch, start
        self.rank, self.world = rank, world
        self.steps = n // cfg.batch_size

    def __len__(self) -> int:
        return (self.steps - self.start) * self.cfg.accum_steps

    def __iter__(self) -> Iterator[list[int]]:
        g = torch.Generator().manual_seed(self.cfg.seed * 100_003 + self.epoch)
        perm = torch.randperm(self.n, generator=g).tolist()
        B, A = self.cfg.batch_size, self.cfg.accum_steps
        micro = B // A
        per_rank = micro // self.world
        for s in range(self.start, self.steps):
            for a in range(A):
                lo = s * B + a * micro + self.rank * per_rank
                yield perm[lo : lo + per_rank]


def default_loss(label_smoothing: float) -> LossFn:
    def loss(model: nn.Module, batch: Sequence[Tensor]) -> Tensor:
        x, y = batch[0], batch[1]
        return F.cross_entropy(model(x), y, label_smoothing=label_smoothing)

    return loss


@dataclass
class TrainResult:
    steps: int
    history: list[dict] = field(default_factory=list)
    checkpoint: Path | None = None


class Trainer:
    """Train ``model`` on ``dataset`` (items are tuples of tensors, e.g. (image, label)).

    ``loss_fn(model, batch) -> scalar`` defaults to cross-entropy with label smoothing;
    ``eval_fn(model) -> dict`` is called on the main process and its figures are logged.
    ``param_groups`` overrides the default (decay on ≥2-D weights, none on norms/biases/tokens).
    """

    def __init__(
        self,
        model: nn.Module,
        dataset: Dataset,
        cfg: TrainConfig,
        *,
        loss_fn: LossFn | None = None,
        eval_fn: EvalFn | None = None,
        param_groups: list[dict] | None = None,
        collate_fn: Callable | None = None,
    ) -> None:
        self.cfg = cfg
        self.rank, self.world = D.init_from_env()
        B, A = cfg.batch_size, cfg.accum_steps
        if B % (A * self.world):
            raise ValueError(
                f"batch_size {B} must be divisible by accum_steps ({A}) × processes ({self.world})"
            )
        if len(dataset) < B:
            raise ValueError(f"the dataset has {len(dataset)} samples, fewer than one batch ({B})")
        self.device = torch.device(f"cuda:{torch.cuda.current_device()}" if torch.cuda.is_available() else "cpu")
        self.model = model.to(self.device)
        self.dataset = dataset
        self.collate_fn = collate_fn
        self.loss_fn = loss_fn or default_loss(cfg.label_smoothing)
        self.eval_fn = eval_fn
        self.steps_per_epoch = len(dataset) // B
        total = cfg.epochs * self.steps_per_epoch
        self.total_steps = min(total, cfg.max_steps) if cfg.max_steps else total
        groups = param_groups or _decay_groups(model, cfg.weight_decay)
        # foreach: all tensors of a group in one kernel per operation (CUDA's default; on CPU the default
        # is a per-tensor loop, a few ms a step for a small model; the updates are the same numbers)
        self.optimizer = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay, foreach=True)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: cosine_with_warmup(s, self.total_steps, cfg.warmup_steps, cfg.min_lr_ratio)
        )
        self.ddp = None
        if self.world > 1:
            self.ddp = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
        amp = cfg.amp if cfg.amp != "auto" else ("bf16" if self.device.type == "cuda" else "off")
        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)
        self.scaler = torch.amp.GradScaler("cuda") if amp == "fp16" else None
        self.out_dir = Path(cfg.out_dir)
        self.ckpt_path = self.out_dir / "checkpoint.pt"
        self.metrics_path = self.out_dir / "metrics.jsonl"
        self.step = 0

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler else {},
            "step": self.step,
            "rng": rng_state(),
            "config": asdict(self.cfg),
        }

    def save(self) -> None:
        if D.is_main():
            save_checkpoint(self.state_dict(), self.ckpt_path)
            log.info("checkpoint at step %d → %s", self.step, self.ckpt_path)
        D.barrier()

    def resume(self) -> bool:
        """Restore the last checkpoint in ``out_dir`` if there is one. Returns whether it did."""
        if not self.ckpt_path.is_file():
            log.info("no checkpoint in %s: starting from scratch", self.out_dir)
            return False
        state = load_checkpoint(self.ckpt_path)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.step = int(state["step"])
        set_rng_state(state["rng"])
        if D.is_main() and self.metrics_path.is_file():  # drop records written after the checkpoint
            keep = [ln for ln in self.metrics_path.read_text().splitlines() if json.loads(ln).get("step", 0) <= self.step]
            self.metrics_path.write_text("".join(ln + "\n" for ln in keep))
        log.info("resumed from %s at step %d", self.ckpt_path, self.step)
        return True

    # ------------------------------------------------------------------ loop
    def _log(self, record: dict, history: list[dict]) -> None:
        history.append(record)
        if D.is_main():
            with open(self.metrics_path, "a") as f:
                f.write(json.dumps(record) + "\n")

    def fit(self, resume: bool = False) -> TrainResult:
        cfg = self.cfg
        if D.is_main():
            self.out_dir.mkdir(parents=True, exist_ok=True)
        if resume:
            self.resume()
        elif D.is_main() and self.metrics_path.exists():
            self.metrics_path.unlink()
        history: list[dict] = []
        net = self.ddp or self.model
        progress = _Progress(self.total_steps, self.step, enabled=cfg.progress and D.is_main())
        last_saved = self.step
        try:
            with progress:
                while self.step < self.total_steps:
                    epoch, start = divmod(self.step, self.steps_per_epoch)
                    sampler = StepBatchSampler(len(self.dataset), cfg, epoch, start, self.rank, self.world)
                    loader = DataLoader(self.dataset, batch_sampler=sampler, num_workers=cfg.num_workers,
                                        collate_fn=self.collate_fn,
                                        generator=torch.Generator().manual_seed(cfg.seed + epoch))
                    micro = 0
                    t0, seen, losses = time.perf_counter(), 0, []
                    self.model.train()
                    for batch in loader:
                        batch = [b.to(self.device, non_blocking=True) if torch.is_tensor(b) else b for b in batch]
                        last_micro = micro == cfg.accum_steps - 1
                        sync = last_micro or self.ddp is None
                        ctx = net.no_sync() if (self.ddp is not None and not sync) else nullcontext()
                        with ctx, torch.autocast(self.device.type, self.amp_dtype, enabled=self.amp_dtype is not None):
                            loss = self.loss_fn(net, batch) / cfg.accum_steps
                        (self.scaler.scale(loss) if self.scaler else loss).backward()
                        losses.append(loss.detach() * cfg.accum_steps)
                        seen += len(batch[0]) * self.world
                        micro += 1
                        if not last_micro:
                            continue
                        micro = 0
                        self._optimizer_step()
                        self.step += 1
                        if self.step % cfg.log_every == 0 or self.step == self.total_steps:
                            dt = time.perf_counter() - t0
                            mean_loss = D.all_reduce_mean(torch.stack(losses).mean()).item()
                            rec = {"step": self.step, "epoch": self.step / self.steps_per_epoch, "loss": mean_loss,
                                   "lr": self.scheduler.get_last_lr()[0], "images_per_s": seen / max(dt, 1e-9)}
                            self._log(rec, history)
                            progress.update(self.step, mean_loss, rec["images_per_s"])
                            t0, seen, losses = time.perf_counter(), 0, []
                        if self._eval_due():
                            self._evaluate(history)
                        if self.step % cfg.ckpt_every == 0 or self.step == self.total_steps:
                            self.save()
                            last_saved = self.step
                        if self.step >= self.total_steps:
                            break
        except KeyboardInterrupt:
            if self.step > last_saved:
                log.warning("interrupted at step %d: saving a checkpoint to resume from", self.step)
                self.save()
            raise
        return TrainResult(self.step, history, self.ckpt_path if self.ckpt_path.exists() else None)

    def _optimizer_step(self) -> None:
        cfg = self.cfg
        if self.scaler:
            self.scaler.unscale_(self.optimizer)
        if cfg.grad_clip:
            nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip, foreach=True)
        if self.scaler:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()

    def _eval_due(self) -> bool:
        if self.eval_fn is None:
            return False
        every = self.cfg.eval_every or self.steps_per_epoch
        return self.step % every == 0 or self.step == self.total_steps

    def _evaluate(self, history: list[dict]) -> None:
        if D.is_main():
            self.model.eval()
            # evaluation must not disturb the training RNG stream (exact resume)
            state = rng_state()
            with torch.no_grad():
                figures = self.eval_fn(self.model)
            set_rng_state(state)
            self._log({"step": self.step, "epoch": self.step / self.steps_per_epoch, **figures}, history)
            self.model.train()
        D.barrier()


def _decay_groups(model: nn.Module, wd: float) -> list[dict]:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or "token" in name or "pos_embed" in name else decay).append(p)
    return [{"params": decay, "weight_decay": wd}, {"params": no_decay, "weight_decay": 0.0}]


class _Progress:
    """A rich progress bar: step, loss, images/s, ETA."""

    def __init__(self, total: int, start: int, enabled: bool) -> None:
        self.enabled = enabled
        self.total, self.start = total, start
        self.bar = None

    def __enter__(self):
        if self.enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(
                TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]}"), TextColumn("{task.fields[ips]} img/s"),
                TextColumn("ETA"), TimeRemainingColumn(),
            )
            self.bar.__enter__()
            self.task = self.bar.add_task("train", total=self.total, completed=self.start, loss="-", ips="-")
        return self

    def update(self, step: int, loss: float, ips: float) -> None:
        if self.bar is not None:
            self.bar.update(self.task, completed=step, loss=f"{loss:.4f}", ips=f"{ips:.0f}")

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.__exit__(*exc)
        return False
