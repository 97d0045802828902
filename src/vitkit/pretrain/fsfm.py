"""FSFM (Wang et al., CVPR 2025): masked image modelling + instance discrimination with region masking.

Online branch: the encoder sees the visible patches of a CRFR-P mask (:mod:`.masking`); a pixel
decoder reconstructs the masked patches (as :class:`~.mae.MAE`); a representation decoder (blocks at
the encoder's width) fills the masked patches with a mask token and decodes a full-grid
representation, mean-pooled → projector → predictor. Target branch: an exponential moving average
of the encoder and projector sees the full image and never receives gradients.

Loss = rec(all masked patches) + ``region_weight`` · rec(masked patches of the chosen region)
+ ``cl_weight`` · (−cosine(predictor output, target projection)).

The EMA update runs after each optimiser step (:func:`attach_ema` registers it on the trainer's
optimiser); its momentum follows :func:`ema_momentum` (0.996 → 1, cosine) over ``total_steps``. The
step count is a buffer, so a checkpoint resumes the schedule exactly.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..models.vit import VisionTransformer
from .mae import (
    MAEConfig,
    PixelDecoder,
    check_encoder,
    decoder_blocks,
    encode_visible,
    fill_masked,
    masked_mse,
)
from .mae import patch_targets as pixel_targets
from .masking import crfr_p_mask, mask_to_ids


@dataclass
class FSFMConfig(MAEConfig):
    """FSFM settings (the MAE fields plus the representation branch)."""

    region_weight: float = 0.007  # weight of the chosen region's reconstruction (FSFM)
    cl_weight: float = 0.1  # weight of the negative-cosine term (FSFM)
    rep_depth: int = 2  # representation decoder blocks (FSFM: 2, at the encoder's width)
    proj_dim: int = 64  # projector output width (FSFM: 256; scaled down with the encoder)
    proj_hidden: int = 128  # projector / predictor hidden width (FSFM: 4096)
    momentum: float = 0.996  # EMA momentum at step 0; it rises to 1 on a cosine schedule
    total_steps: int = 1000  # length of the momentum schedule (the run's optimiser steps)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 <= self.momentum <= 1.0:
            raise ValueError(f"momentum must be in [0, 1], got {self.momentum}")
        if self.total_steps < 1:
            raise ValueError(f"total_steps must be ≥ 1, got {self.total_steps}")


def ema_momentum(step: int, total: int, base: float = 0.996) -> float:
    """BYOL's schedule: ``1 − (1 − base) · (cos(π · step / total) + 1) / 2`` (base at 0, 1 at ``total``)."""
    t = min(max(step, 0), total) / total
    return 1.0 - (1.0 - base) * (math.cos(math.pi * t) + 1.0) / 2.0


def negative_cosine(p: Tensor, z: Tensor) -> Tensor:
    """−mean cosine similarity of rows of ``p`` (B, D) and the stop-gradient target ``z`` (B, D)."""
    return -F.cosine_similarity(p, z.detach(), dim=-1).mean()


def mlp(dim_in: int, hidden: int, dim_out: int) -> nn.Sequential:
    """Projector / predictor: Linear → BatchNorm → ReLU → Linear (SimSiam/BYOL)."""
    return nn.Sequential(nn.Linear(dim_in, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
                         nn.Linear(hidden, dim_out))


class FSFM(nn.Module):
    """``forward(images, regions)`` → {"loss", "rec", "rec_region", "cl", "mask", "region"}.

    ``images`` (B, C, H, W) at the encoder's size; ``regions`` (B, H, W) int region ids (any map:
    parts, word boxes, a segmentation). ``mask``/``region`` may be given instead of the map.
    """

    def __init__(self, encoder: VisionTransformer, *, cfg: FSFMConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg = cfg or FSFMConfig()
        self.grid = check_encoder(encoder)
        self.encoder = encoder
        self.patch = encoder.patch_size
        C = encoder.embed_dim
        self.decoder = PixelDecoder(encoder_dim=C, grid=self.grid, patch=self.patch, channels=encoder.cfg.in_chans,
                                    num_prefix=encoder.num_prefix_tokens, dim=cfg.decoder_dim,
                                    depth=cfg.decoder_depth, heads=cfg.decoder_heads)
        self.rep_mask_token = nn.Parameter(torch.zeros(1, 1, C))
        self.rep_pos_embed = nn.Parameter(torch.zeros(1, self.grid[0] * self.grid[1], C))
        self.rep_decoder = decoder_blocks(C, cfg.rep_depth, encoder.cfg.num_heads)
        self.rep_norm = nn.LayerNorm(C, eps=1e-6)
        self.projector = mlp(C, cfg.proj_hidden, cfg.proj_dim)
        self.predictor = mlp(cfg.proj_dim, cfg.proj_hidden, cfg.proj_dim)
        nn.init.normal_(self.rep_mask_token, std=0.02)
        nn.init.trunc_normal_(self.rep_pos_embed, std=0.02)
        self.target_encoder = copy.deepcopy(encoder)
        self.target_projector = copy.deepcopy(self.projector)
        for p in self.target_parameters():
            p.requires_grad_(False)
        self.register_buffer("ema_step", torch.zeros((), dtype=torch.long))

    # ------------------------------------------------------------------ EMA target
    def online_target_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return [(self.encoder, self.target_encoder), (self.projector, self.target_projector)]

    def target_parameters(self):
        for _, tgt in self.online_target_pairs():
            yield from tgt.parameters()

    @torch.no_grad()
    def update_target(self) -> float:
        """One EMA step of the target towards the online weights; returns the momentum used."""
        m = ema_momentum(int(self.ema_step), self.cfg.total_steps, self.cfg.momentum)
        for online, tgt in self.online_target_pairs():
            for po, pt in zip(online.parameters(), tgt.parameters(), strict=True):
                pt.mul_(m).add_(po.detach(), alpha=1.0 - m)
            for bo, bt in zip(online.buffers(), tgt.buffers(), strict=True):
                bt.copy_(bo)
        self.ema_step += 1
        return m

    def train(self, mode: bool = True) -> FSFM:
        super().train(mode)
        self.target_encoder.eval()  # the target is a fixed function of its weights (no dropout, BN stats)
        self.target_projector.eval()
        return self

    # ------------------------------------------------------------------ forward
    def make_mask(self, regions: Tensor) -> tuple[Tensor, Tensor]:
        return crfr_p_mask(regions, self.patch, self.cfg.mask_ratio)

    def forward(self, images: Tensor, regions: Tensor | None = None, *, mask: Tensor | None = None,
                region: Tensor | None = None) -> dict[str, Tensor]:
        if mask is None:
            if regions is None:
                raise ValueError("FSFM needs region maps (B, H, W) or a precomputed mask")
            mask, region = self.make_mask(regions)
        elif region is None:
            region = torch.zeros_like(mask)
        ids_keep, _, ids_restore = mask_to_ids(mask)
        tokens = encode_visible(self.encoder, images, ids_keep)  # (B, prefix + K, C)
        pred = self.decoder(tokens, ids_restore)
        target = pixel_targets(images, self.patch, self.cfg.norm_pix_loss)
        rec = masked_mse(pred, target, mask)
        rec_region = masked_mse(pred, target, mask & region)

        p = self.encoder.num_prefix_tokens
        x = fill_masked(tokens[:, p:], ids_restore, self.rep_mask_token) + self.rep_pos_embed
        for blk in self.rep_decoder:
            x = blk(x)
        online = self.predictor(self.projector(self.rep_norm(x).mean(1)))
        with torch.no_grad():
            full = self.target_encoder.forward_features(images)[:, self.target_encoder.num_prefix_tokens:]
            tgt = self.target_projector(full.mean(1))
        cl = negative_cosine(online, tgt)
        loss = rec + self.cfg.region_weight * rec_region + self.cfg.cl_weight * cl
        return {"loss": loss, "rec": rec.detach(), "rec_region": rec_region.detach(), "cl": cl.detach(),
                "pred": pred, "mask": mask, "region": region}


def attach_ema(model: FSFM, optimizer: torch.optim.Optimizer):
    """Run ``model.update_target()`` after every ``optimizer.step()``; returns the removable handle."""
    return optimizer.register_step_post_hook(lambda opt, args, kwargs: model.update_target())
