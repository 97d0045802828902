"""Manipulation detection downstream: fine-tune a (pretrained) ViT as a real/manipulated classifier on
one manipulation type and measure AUC on each type it never saw.

:func:`finetune_detector` trains with vitkit's Trainer; :func:`detection_scores` returns P(manipulated)
per image; :func:`cross_manipulation_auc` scores the real test images once and every type's fakes. The images
are rendered scenes or FRB page crops (``source``, see :data:`~.manip.KINDS_BY_SOURCE` for each one's types).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.utils.data import Dataset, Subset

from ..engine.trainer import TrainConfig, Trainer
from ..models.vit import VisionTransformer, ViTConfig
from ..ood.metrics import auroc
from .manip import KINDS_BY_SOURCE, ManipulationDataset, check_source_kinds

log = logging.getLogger(__name__)


@dataclass
class DetectorConfig:
    """Fine-tuning and evaluation of a manipulation detector."""

    train_kind: str = "copy"  # the one manipulation type seen in training
    n_train: int = 1024  # training images (half real, half manipulated)
    n_test: int = 256  # test images per type (half real, half manipulated; the real half is shared)
    steps: int = 300  # fine-tuning optimiser steps
    batch_size: int = 32  # images per step
    lr: float = 5e-4  # AdamW peak learning rate (whole network fine-tuned)
    warmup_steps: int = 20  # linear warm-up
    seed: int = 0  # training images and data order; test images use seed + 500
    out_dir: str = "runs/detector"  # trainer checkpoints
    progress: bool = False  # progress bar
    source: str = "scenes"  # "scenes" or "frb" (FRB page crops)

    def __post_init__(self) -> None:
        try:
            check_source_kinds(self.source, [self.train_kind])
        except ValueError as e:  # name the field the user set
            raise ValueError(f"DetectorConfig(train_kind={self.train_kind!r}, source={self.source!r}): {e}") from None


def detector_from(encoder: VisionTransformer | None, encoder_cfg: ViTConfig) -> VisionTransformer:
    """A 2-class ViT initialised from ``encoder``'s weights (the head is new), or from scratch if None."""
    cfg = ViTConfig.from_dict({**(encoder.cfg if encoder is not None else encoder_cfg).to_dict(), "num_classes": 2})
    model = VisionTransformer(cfg)
    if encoder is not None:
        sd = {k: v for k, v in encoder.state_dict().items() if not k.startswith("head")}
        missing, unexpected = model.load_state_dict(sd, strict=False)
        assert not unexpected and all(k.startswith("head") for k in missing), (missing, unexpected)
    return model


def finetune_detector(model: VisionTransformer, cfg: DetectorConfig, *, resume: bool = False) -> VisionTransformer:
    """Fine-tune ``model`` (2 classes) on real vs ``cfg.train_kind`` images of ``cfg.source`` at the model's input
    size; ``resume`` continues from the checkpoint in ``cfg.out_dir`` if there is one."""
    size = model.cfg.img_size[0]
    train = ManipulationDataset(cfg.n_train, kinds=[cfg.train_kind], seed=cfg.seed, size=size, source=cfg.source)
    tcfg = TrainConfig(epochs=math.ceil(cfg.steps / (cfg.n_train // cfg.batch_size)), batch_size=cfg.batch_size,
                       lr=cfg.lr, warmup_steps=cfg.warmup_steps, label_smoothing=0.0, seed=cfg.seed,
                       max_steps=cfg.steps, ckpt_every=max(1, min(50, cfg.steps)), out_dir=cfg.out_dir, progress=cfg.progress,
                       log_every=min(50, cfg.steps))
    Trainer(model, train, tcfg).fit(resume=resume)
    return model.eval()


@torch.no_grad()
def detection_scores(model: VisionTransformer, data: Dataset, batch: int = 64) -> Tensor:
    """P(manipulated) (N,) for every item of ``data``."""
    model.eval()
    device = next(model.parameters()).device
    out = []
    for lo in range(0, len(data), batch):
        x = torch.stack([data[i][0] for i in range(lo, min(lo + batch, len(data)))]).to(device)
        out.append(model(x).float().softmax(-1)[:, 1].cpu())
    return torch.cat(out) if out else torch.zeros(0)


def cross_manipulation_auc(model: VisionTransformer, kinds: Sequence[str] | None = None, *, n_test: int = 256,
                           seed: int = 500, source: str = "scenes") -> dict[str, float]:
    """AUC of the real test images (even items) vs the same images manipulated (odd items), per type;
    ``kinds`` default to all of ``source``'s types."""
    kinds = check_source_kinds(source, KINDS_BY_SOURCE.get(source, ()) if kinds is None else kinds)
    size = model.cfg.img_size[0]
    real = None
    aucs = {}
    for k in kinds:
        ds = ManipulationDataset(n_test, kinds=[k], seed=seed, size=size, cache=False, source=source)
        if real is None:
            real = detection_scores(model, Subset(ds, range(0, n_test, 2)))
        fake = detection_scores(model, Subset(ds, range(1, n_test, 2)))
        aucs[k] = float(auroc(fake.numpy(), real.numpy()))
    return aucs
