"""PSAQ-ViT-style data-free calibration images (the baseline SPDFQ compares with).

Images are optimised from Gaussian noise so that, in every block, the cosine similarities between
the patch tokens that self-attention outputs are diverse (maximise the differential entropy of
their kernel density estimate), while the model predicts a random hard label (cross-entropy).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..models.vit import VisionTransformer
from .ptq import frozen, model_device
from .synthetic import as_images, image_parameter

log = logging.getLogger(__name__)


@dataclass
class PSAQConfig:
    n_images: int = 32
    steps: int = 500
    lr: float = 0.1
    entropy_weight: float = 1.0
    bandwidth: float = 0.05  # Gaussian KDE bandwidth on cosine similarities in [-1, 1]
    grid_points: int = 64
    max_pairs: int = 1024  # token pairs per image in the density estimate (random subset each step)
    pixel_range: tuple[float, float] | None = None
    grey: bool = False  # one channel, repeated: for models whose inputs have equal channels (quant.synthetic)
    seed: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        if self.n_images < 1 or self.steps < 0 or self.lr <= 0 or self.bandwidth <= 0:
            raise ValueError("n_images must be ≥ 1, steps ≥ 0, lr > 0 and bandwidth > 0")


def similarity_entropy(tokens: Tensor, bandwidth: float = 0.05, grid_points: int = 64,
                       max_pairs: int | None = None, generator: torch.Generator | None = None) -> Tensor:
    """Entropy per image (B,) of the KDE of pairwise cosine similarities of tokens (B, P, C).

    The density of the P·(P−1) off-diagonal similarities (or a random subset of ``max_pairs`` of
    them) is evaluated on ``grid_points`` points in [-1, 1] with a Gaussian kernel, normalised to a
    distribution, and its entropy −Σ p log p returned.
    """
    B, P, _ = tokens.shape
    t = F.normalize(tokens, dim=-1)
    sim = t @ t.transpose(1, 2)  # (B, P, P)
    off = ~torch.eye(P, dtype=torch.bool, device=tokens.device)
    s = sim[:, off]  # (B, P·(P−1))
    if max_pairs is not None and s.shape[1] > max_pairs:
        s = s[:, torch.randperm(s.shape[1], generator=generator)[:max_pairs].to(s.device)]
    grid = torch.linspace(-1, 1, grid_points, device=tokens.device)
    dens = torch.exp(-0.5 * ((grid.view(1, -1, 1) - s.unsqueeze(1)) / bandwidth) ** 2).mean(-1)  # (B, G)
    p = dens / dens.sum(-1, keepdim=True).clamp_min(1e-12)
    return -(p * p.clamp_min(1e-12).log()).sum(-1)


def synthesize(model: nn.Module, cfg: PSAQConfig | None = None) -> Tensor:
    """PSAQ-style calibration images (n_images, C, H, W), on the model's device, for a float ViT with a
    classification head."""
    from ..progress import progress_bar

    cfg = cfg or PSAQConfig()
    if not isinstance(model, VisionTransformer):
        raise ValueError(f"PSAQ synthesis shapes attention outputs and needs a VisionTransformer; {type(model).__name__} "
                         "has none: calibrate it with calib='real' (or 'noise')")
    vcfg = model.cfg
    if not vcfg.num_classes:
        raise ValueError("PSAQ synthesis needs a classification head (num_classes > 0) for its labels")
    gen = torch.Generator().manual_seed(cfg.seed)  # drawn on the CPU (the same stream on every device), then moved
    dev = model_device(model)
    H, W = vcfg.img_size
    labels = torch.randint(vcfg.num_classes, (cfg.n_images,), generator=gen).to(dev)
    pixels = image_parameter(cfg.n_images, vcfg.in_chans, (H, W), gen, dev, cfg.grey)
    opt = torch.optim.Adam([pixels], lr=cfg.lr)
    outs: list[Tensor] = []
    hooks = [blk.attn.register_forward_hook(lambda _m, _i, o: outs.append(o)) for blk in model.blocks]
    npre = model.num_prefix_tokens
    try:
        with frozen(model, eval_mode=True), progress_bar(cfg.progress) as bar:
            task = bar.add_task("PSAQ synthesis", total=cfg.steps)
            for step in range(cfg.steps):
                outs.clear()
                x = as_images(pixels, vcfg.in_chans)
                logits = model(x)
                ent = torch.stack([similarity_entropy(o[:, npre:], cfg.bandwidth, cfg.grid_points, cfg.max_pairs,
                                                      gen).mean() for o in outs]).sum()
                ce = F.cross_entropy(logits, labels)
                loss = ce - cfg.entropy_weight * ent
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if cfg.pixel_range is not None:
                    with torch.no_grad():
                        pixels.clamp_(*cfg.pixel_range)
                bar.advance(task)
                if step % max(1, cfg.steps // 5) == 0 or step == cfg.steps - 1:
                    log.info("PSAQ step %d: ce %.4g, similarity entropy %.4g", step, ce.item(), ent.item())
    finally:
        for h in hooks:
            h.remove()
    return as_images(pixels.detach(), vcfg.in_chans).contiguous()
