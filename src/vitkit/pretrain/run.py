"""Pretraining runs: MAE or FSFM on scenes, FRB pages or a folder, with vitkit's Trainer.

:func:`run_pretrain` builds a ViT encoder, wraps it in :class:`~.mae.MAE` or :class:`~.fsfm.FSFM`,
trains it with :class:`~vitkit.engine.trainer.Trainer` (progress bar, JSONL metrics, atomic
checkpoints, exact resume after a kill) and writes the encoder alone as a vitkit checkpoint
(``OUT/encoder``) that ``vitkit.load`` reads as a plain :class:`~vitkit.models.vit.VisionTransformer`.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ..engine.trainer import TrainConfig, Trainer
from ..models.vit import VisionTransformer, ViTConfig
from ..weights.load import save as save_model
from .data import pretrain_dataset
from .fsfm import FSFM, FSFMConfig, attach_ema
from .mae import MAE, MAEConfig

log = logging.getLogger(__name__)

METHODS = ("mae", "fsfm")


@dataclass
class PretrainConfig:
    """One pretraining run (defaults sized for a shared 2-core CPU)."""

    method: str = "fsfm"  # mae | fsfm
    data: str = "scenes"  # scenes | frb | frb-crops | a folder of images
    region_maps: str | None = None  # folder of PNG id maps for a folder of images
    level: str = "word"  # FRB regions: word or line boxes
    n_images: int = 2000  # scenes / pages generated (a folder uses all its images)
    size: int = 48  # image side in pixels
    patch: int = 8  # ViT patch size
    embed_dim: int = 64  # encoder width
    depth: int = 4  # encoder blocks
    num_heads: int = 4  # encoder heads
    steps: int = 1000  # optimiser steps
    batch_size: int = 32  # images per step
    lr: float = 1e-3  # AdamW peak learning rate (MAE's 1.5e-4 × batch/256 is far too low for a tiny run)
    warmup_steps: int = 50  # linear warm-up (MAE/FSFM warm up over 40 epochs)
    weight_decay: float = 0.05  # MAE/FSFM recipe
    mask_ratio: float = 0.75  # fraction of patches masked
    decoder_dim: int = 64  # pixel decoder width (512 in the papers)
    decoder_depth: int = 2  # pixel decoder blocks (8 in the papers)
    seed: int = 0  # data (scene/page seed), initialisation and data order
    out_dir: str = "runs/pretrain"  # checkpoints, metrics.jsonl, encoder/
    ckpt_every: int = 100  # steps between checkpoints
    progress: bool = True  # progress bar

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.size % self.patch:
            raise ValueError(f"size {self.size} is not a multiple of the patch size {self.patch}")
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError(f"steps and batch_size must be ≥ 1, got {self.steps}, {self.batch_size}")

    def encoder_config(self) -> ViTConfig:
        return ViTConfig(img_size=(self.size, self.size), patch_size=self.patch, embed_dim=self.embed_dim,
                         depth=self.depth, num_heads=self.num_heads, global_pool="avg")


def build_model(cfg: PretrainConfig) -> MAE | FSFM:
    encoder = VisionTransformer(cfg.encoder_config())
    common = dict(mask_ratio=cfg.mask_ratio, decoder_dim=cfg.decoder_dim, decoder_depth=cfg.decoder_depth,
                  decoder_heads=max(1, cfg.decoder_dim // 16))
    if cfg.method == "mae":
        return MAE(encoder, cfg=MAEConfig(**common))
    return FSFM(encoder, cfg=FSFMConfig(**common, total_steps=cfg.steps))


def loss_fn(method: str):
    """The trainer's ``loss_fn(model, batch)``: batches are (images, region maps)."""
    if method == "mae":
        return lambda net, batch: net(batch[0])["loss"]
    return lambda net, batch: net(batch[0], batch[1])["loss"]


def run_pretrain(cfg: PretrainConfig, *, resume: bool = False) -> dict:
    """Train, then write ``OUT/encoder`` (vitkit checkpoint) and ``OUT/pretrain.json``; returns the summary."""
    t0 = time.perf_counter()
    torch.manual_seed(cfg.seed)
    out = Path(cfg.out_dir)
    dataset = pretrain_dataset(cfg.data, n=cfg.n_images, seed=cfg.seed, size=cfg.size,
                               region_maps=cfg.region_maps, level=cfg.level)
    if len(dataset) < cfg.batch_size:
        raise ValueError(f"--data {cfg.data}: {len(dataset)} images, fewer than one batch ({cfg.batch_size})")
    model = build_model(cfg)
    per_epoch = len(dataset) // cfg.batch_size
    tcfg = TrainConfig(epochs=math.ceil(cfg.steps / per_epoch), batch_size=cfg.batch_size, lr=cfg.lr,
                       weight_decay=cfg.weight_decay, warmup_steps=cfg.warmup_steps, label_smoothing=0.0,
                       seed=cfg.seed, max_steps=cfg.steps, ckpt_every=cfg.ckpt_every, out_dir=str(out / "train"),
                       progress=cfg.progress, log_every=min(10, cfg.steps))
    trainer = Trainer(model, dataset, tcfg, loss_fn=loss_fn(cfg.method))
    if isinstance(model, FSFM):
        attach_ema(model, trainer.optimizer)
    result = trainer.fit(resume=resume)
    encoder = model.encoder
    encoder.embed_hook = None
    save_model(encoder, out / "encoder")
    summary = {"config": asdict(cfg), "steps": result.steps,
               "final_loss": result.history[-1]["loss"] if result.history else None,
               "encoder": str(out / "encoder"), "time_s": round(time.perf_counter() - t0, 1)}
    (out / "pretrain.json").write_text(json.dumps(summary, indent=2))
    log.info("pretrained %s for %d steps → %s", cfg.method, result.steps, out / "encoder")
    return summary

