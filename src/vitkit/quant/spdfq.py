"""SPDFQ: semantics-prompting data-free calibration images for low-bit ViTs (SYSTEMS.md §11).

Images are optimised from Gaussian noise with Adam against the float model:

    L = α · L_APA + L_SL + L_MSR + λ_TV · L_TV

* APA (attention-priors alignment): per image, block and head, a random Gaussian mixture over the
  patch grid is the target CLS→patch attention; MSE to the model's CLS row (renormalised over the
  patches), over the deeper half of the blocks, block l weighted by l / L. Read through
  ``model.attention_readout(kind="cls", keep_grad=True)``.
* SL (soft labels): per image a target class whose logit is drawn from U(5, 10) (others 0);
  soft cross-entropy against softmax of those logits.
* MSR (multi-semantic reinforcement): 1–4 non-overlapping boxes per image (one per quadrant), each
  cropped, resized to the input size and pushed towards its own soft label; gradients reach only
  the box's pixels.
* TV: total variation of the images.

Pure pieces (priors, losses, boxes) are separate functions; :func:`synthesize` wires them.
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
class SPDFQConfig:
    n_images: int = 32
    steps: int = 1000
    lr: float = 0.1
    alpha: float = 1e3  # APA weight (paper: tuned per model, 1 … 1e5)
    tv_weight: float = 0.05
    msr: bool = True
    msr_every: int = 1  # MSR crops every k-th step (each MSR step costs ~2.5× a plain one)
    max_boxes: int = 4
    max_components: int = 3
    logit_range: tuple[float, float] = (5.0, 10.0)
    pixel_range: tuple[float, float] | None = None  # clamp images after each step, e.g. (-1, 1)
    grey: bool = False  # one channel, repeated: for models whose inputs have equal channels (quant.synthetic)
    seed: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        if self.n_images < 1 or self.steps < 0 or self.lr <= 0:
            raise ValueError("n_images must be ≥ 1, steps ≥ 0 and lr > 0")
        if not 1 <= self.max_boxes <= 4:
            raise ValueError(f"max_boxes={self.max_boxes}: must be in 1–4 (one box per quadrant)")
        if self.msr_every < 1:
            raise ValueError(f"msr_every={self.msr_every}: must be ≥ 1")
        if self.max_components < 1:
            raise ValueError(f"max_components={self.max_components}: must be ≥ 1")


def gaussian_mixture_priors(n: int, heads: int, grid: tuple[int, int], max_components: int = 3,
                            generator: torch.Generator | None = None) -> Tensor:
    """Random attention priors (n, heads, gh·gw): a 1…``max_components`` Gaussian mixture per (image, head).

    Centres uniform on the grid, widths σ ∈ [0.5, max(gh, gw) / 3] patches, mixture weights uniform;
    each prior sums to 1 over the patches.
    """
    gh, gw = grid
    ys, xs = torch.meshgrid(torch.arange(gh, dtype=torch.float32), torch.arange(gw, dtype=torch.float32),
                            indexing="ij")
    pos = torch.stack([ys.flatten(), xs.flatten()], -1)  # (P, 2)
    K = max_components
    k = torch.randint(1, K + 1, (n, heads, 1), generator=generator)
    active = (torch.arange(K).view(1, 1, K) < k).float()  # (n, h, K)
    centres = torch.rand(n, heads, K, 2, generator=generator) * torch.tensor([gh - 1, gw - 1]).clamp_min(1)
    sigma = 0.5 + torch.rand(n, heads, K, generator=generator) * max(max(gh, gw) / 3 - 0.5, 0.0)
    weight = (0.2 + torch.rand(n, heads, K, generator=generator)) * active
    d2 = (pos.view(1, 1, 1, -1, 2) - centres.unsqueeze(-2)).pow(2).sum(-1)  # (n, h, K, P)
    dens = (weight.unsqueeze(-1) * torch.exp(-d2 / (2 * sigma.unsqueeze(-1) ** 2))).sum(2)
    return dens / dens.sum(-1, keepdim=True)


def soft_targets(labels: Tensor, num_classes: int, logit_range: tuple[float, float] = (5.0, 10.0),
                 generator: torch.Generator | None = None) -> Tensor:
    """Soft labels (B, K): softmax of logits that are 0 except the target's, drawn from U(lo, hi)."""
    lo, hi = logit_range
    z = torch.zeros(len(labels), num_classes, device=labels.device)
    u = torch.rand(len(labels), generator=generator).to(labels.device)  # drawn on the CPU, as ``generator`` is
    z[torch.arange(len(labels), device=labels.device), labels] = lo + (hi - lo) * u
    return z.softmax(-1)


def soft_cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean over the batch of −Σ_k t_k log softmax(logits)_k. logits, targets (B, K)."""
    return -(targets * logits.log_softmax(-1)).sum(-1).mean()


def total_variation(x: Tensor) -> Tensor:
    """Mean absolute difference of neighbouring pixels; x (B, C, H, W)."""
    return (x[..., 1:, :] - x[..., :-1, :]).abs().mean() + (x[..., :, 1:] - x[..., :, :-1]).abs().mean()


def apa_loss(cls_maps: dict[int, Tensor], priors: dict[int, Tensor], depth: int, num_prefix: int) -> Tensor:
    """Depth-weighted MSE between CLS→patch attention and priors.

    cls_maps[l]: (B, H, N) CLS rows (prefix tokens first); priors[l]: (B, H, N − num_prefix).
    The patch part of each row is renormalised to sum 1; block l (0-based) weighs (l + 1) / depth.
    """
    total = 0.0
    for layer, prior in priors.items():
        a = cls_maps[layer][:, :, num_prefix:]
        a = a / a.sum(-1, keepdim=True).clamp_min(1e-12)
        total = total + (layer + 1) / depth * F.mse_loss(a, prior, reduction="mean")
    return total


def quadrant_boxes(n: int, size: tuple[int, int], max_boxes: int = 4, generator: torch.Generator | None = None
                   ) -> list[list[tuple[int, int, int, int]]]:
    """Per image, 1…``max_boxes`` non-overlapping boxes (y0, x0, y1, x1), each inside a distinct quadrant.

    A box covers 50–100 % of its quadrant's side (at least 2 pixels).
    """
    H, W = size
    qh, qw = H // 2, W // 2
    out = []
    for _ in range(n):
        k = int(torch.randint(1, max_boxes + 1, (1,), generator=generator))
        quads = torch.randperm(4, generator=generator)[:k].tolist()
        boxes = []
        for q in quads:
            oy, ox = (q // 2) * qh, (q % 2) * qw
            frac = 0.5 + 0.5 * float(torch.rand(1, generator=generator))
            bh, bw = max(2, int(qh * frac)), max(2, int(qw * frac))
            y0 = oy + int(torch.randint(0, qh - bh + 1, (1,), generator=generator))
            x0 = ox + int(torch.randint(0, qw - bw + 1, (1,), generator=generator))
            boxes.append((y0, x0, y0 + bh, x0 + bw))
        out.append(boxes)
    return out


def crop_resize(x: Tensor, boxes: list[list[tuple[int, int, int, int]]]) -> tuple[Tensor, Tensor]:
    """Crops of every box resized to x's size (bilinear) → (M, C, H, W) and their image index (M,)."""
    H, W = x.shape[-2:]
    crops, owner = [], []
    for b, bxs in enumerate(boxes):
        for y0, x0, y1, x1 in bxs:
            crops.append(F.interpolate(x[b : b + 1, :, y0:y1, x0:x1], size=(H, W), mode="bilinear",
                                       align_corners=False))
            owner.append(b)
    return torch.cat(crops), torch.tensor(owner, device=x.device)


def synthesize(model: nn.Module, cfg: SPDFQConfig | None = None) -> Tensor:
    """SPDFQ calibration images (n_images, C, H, W), on the model's device, for a float ViT with a
    classification head."""
    from ..progress import progress_bar

    cfg = cfg or SPDFQConfig()
    if not isinstance(model, VisionTransformer):
        raise ValueError(f"SPDFQ synthesis shapes CLS attention and needs a VisionTransformer; {type(model).__name__} "
                         "has none: calibrate it with calib='real' (or 'noise')")
    vcfg = model.cfg
    if not vcfg.num_classes:
        raise ValueError("SPDFQ needs a classification head (num_classes > 0) for its soft labels")
    if not vcfg.class_token:
        raise ValueError("SPDFQ aligns CLS attention: the model needs a class token")
    gen = torch.Generator().manual_seed(cfg.seed)  # every draw on the CPU (the same stream on every device)
    dev = model_device(model)
    H, W = vcfg.img_size
    n, K, depth = cfg.n_images, vcfg.num_classes, model.depth
    grid = model.grid_size
    heads = vcfg.num_heads
    layers = list(range(depth // 2, depth))  # the deeper half
    priors = {i: gaussian_mixture_priors(n, heads, grid, cfg.max_components, gen) for i in layers}
    labels = torch.randint(K, (n,), generator=gen)
    targets = soft_targets(labels, K, cfg.logit_range, gen)
    boxes = quadrant_boxes(n, (H, W), cfg.max_boxes, gen) if cfg.msr else []
    n_boxes = sum(len(b) for b in boxes)
    box_targets = soft_targets(torch.randint(K, (n_boxes,), generator=gen), K, cfg.logit_range, gen)

    priors = {i: p.to(dev) for i, p in priors.items()}
    targets, box_targets = targets.to(dev), box_targets.to(dev)
    pixels = image_parameter(n, vcfg.in_chans, (H, W), gen, dev, cfg.grey)
    opt = torch.optim.Adam([pixels], lr=cfg.lr)
    with frozen(model, eval_mode=True), model.attention_readout(layers, kind="cls", keep_grad=True) as maps, \
            progress_bar(cfg.progress) as bar:
        task = bar.add_task("SPDFQ synthesis", total=cfg.steps)
        for step in range(cfg.steps):
            x = as_images(pixels, vcfg.in_chans)
            logits = model(x)
            l_apa = apa_loss(dict(maps), priors, depth, model.num_prefix_tokens)
            l_sl = soft_cross_entropy(logits, targets)
            loss = cfg.alpha * l_apa + l_sl + cfg.tv_weight * total_variation(x)
            if boxes and step % cfg.msr_every == 0:
                crops, _ = crop_resize(x, boxes)
                loss = loss + soft_cross_entropy(model(crops), box_targets)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if cfg.pixel_range is not None:
                with torch.no_grad():
                    pixels.clamp_(*cfg.pixel_range)
            bar.advance(task)
            if step % max(1, cfg.steps // 5) == 0 or step == cfg.steps - 1:
                log.info("SPDFQ step %d: apa %.4g, soft-label %.4g", step, l_apa.item(), l_sl.item())
    return as_images(pixels.detach(), vcfg.in_chans).contiguous()
