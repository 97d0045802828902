"""vitkit's own promptable segmenter: SAM's design scaled down to train on a CPU in minutes.

* image encoder: a vitkit :class:`~vitkit.models.vit.VisionTransformer` (patch tokens → a
  (C, gh, gw) embedding through a linear neck);
* prompt encoder: random-Fourier positional encodings of point and box-corner coordinates plus a
  learned embedding per kind (negative point, positive point, box top-left, box bottom-right,
  padding), as SAM's ``PromptEncoder`` without mask prompts;
* mask decoder: an IoU token and 4 mask tokens (token 0 = the single-mask output, 1–3 = the
  multimask candidates, as in SAM) prepended to the prompt tokens; ``dec_depth`` two-way attention
  blocks (tokens ↔ image); the image embedding upsampled ×4 by two transposed convolutions (to
  S/2 at patch 8) plus a small convolutional skip from the RGB image at S/2 (SAM 2 adds
  high-resolution features for the same reason: an 8 × 8 token grid cannot place an object's
  edge); per mask token a hypernetwork MLP gives the weights of a dot product with those
  features, the logits bilinearly upsampled to S; an MLP on the IoU token predicts each
  candidate's IoU.

Shapes: images (B, 3, S, S) float in [0, 1]; points (B, P, 2) ``(x, y)`` pixels with labels (B, P)
(1 positive, 0 negative, −1 padding); boxes (B, 4) or None → masks (B, 4, S, S) logits and
IoU predictions (B, 4). Several prompt sets on one image: pass the image embedding repeated.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..models.vit import VisionTransformer


@dataclass
class PromptSegConfig:
    """Architecture of :class:`PromptSegmenter` (defaults: ≈0.4 M parameters, 64 px, 8 × 8 patches)."""

    size: int = 64  # input side in pixels (images are resized to it)
    patch: int = 8  # encoder patch size: an 8 × 8 grid at 64 px
    dim: int = 64  # encoder width
    depth: int = 4  # encoder blocks
    heads: int = 4  # attention heads (encoder and decoder)
    dec_dim: int = 64  # decoder / prompt-embedding width
    dec_depth: int = 2  # two-way attention blocks
    num_multimask: int = 3  # candidate masks for ambiguous prompts (SAM: 3)
    # the RGB skip joins the upsampled embedding before its last activation (SAM 2's fusion), so the
    # prompt-dependent features can gate colour edges; False: added after it (a linear read-out, the
    # design of checkpoints saved before this field existed)
    fuse_skip: bool = True

    def to_dict(self) -> dict:
        return asdict(self)


class FourierPositions(nn.Module):
    """Random Fourier features of coordinates in [0, 1]²: (..., 2) → (..., C) (SAM's PositionEmbeddingRandom)."""

    def __init__(self, *, dim: int, scale: float = 1.0) -> None:
        super().__init__()
        self.register_buffer("gauss", scale * torch.randn(2, dim // 2))

    def forward(self, coords: Tensor) -> Tensor:
        proj = 2 * math.pi * (2 * coords - 1) @ self.gauss
        return torch.cat([proj.sin(), proj.cos()], -1)

    def grid(self, h: int, w: int) -> Tensor:
        """(h·w, C) encodings of the cell centres of an h × w grid (row-major)."""
        ys = (torch.arange(h, dtype=torch.float32) + 0.5) / h
        xs = (torch.arange(w, dtype=torch.float32) + 0.5) / w
        yy, xx = torch.meshgrid(ys, xs, indexing="ij")
        return self(torch.stack([xx, yy], -1).reshape(-1, 2))


class TwoWayBlock(nn.Module):
    """Tokens self-attend, attend to the image, MLP; then the image attends to the tokens (SAM)."""

    def __init__(self, *, dim: int, heads: int) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.t2i = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.i2t = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))
        self.norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(4))

    def forward(self, tok: Tensor, img: Tensor, tok_pe: Tensor, img_pe: Tensor) -> tuple[Tensor, Tensor]:
        q = tok + tok_pe
        tok = self.norms[0](tok + self.self_attn(q, q, tok, need_weights=False)[0])
        tok = self.norms[1](tok + self.t2i(tok + tok_pe, img + img_pe, img, need_weights=False)[0])
        tok = self.norms[2](tok + self.mlp(tok))
        img = self.norms[3](img + self.i2t(img + img_pe, tok + tok_pe, tok, need_weights=False)[0])
        return tok, img


def _mlp(dim: int, out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, out))


class PromptSegmenter(nn.Module):
    """A small SAM: ``embed(images)`` once, then ``decode(embedding, points, labels, boxes)`` per prompt set."""

    def __init__(self, *, config: PromptSegConfig | None = None) -> None:
        super().__init__()
        cfg = self.config = config or PromptSegConfig()
        if cfg.size % cfg.patch:
            raise ValueError(f"PromptSegConfig.size {cfg.size} must be a multiple of patch {cfg.patch}")
        c = cfg.dec_dim
        self.encoder = VisionTransformer(img_size=(cfg.size, cfg.size), patch_size=cfg.patch, embed_dim=cfg.dim,
                                         depth=cfg.depth, num_heads=cfg.heads, num_classes=0)
        self.neck = nn.Sequential(nn.Linear(cfg.dim, c), nn.LayerNorm(c))
        self.pe = FourierPositions(dim=c)
        self.kind = nn.Embedding(5, c)  # 0 negative, 1 positive, 2 box top-left, 3 box bottom-right, 4 padding
        self.n_masks = cfg.num_multimask + 1
        self.out_tokens = nn.Parameter(torch.randn(1 + self.n_masks, c) * 0.02)  # IoU token, mask tokens
        self.blocks = nn.ModuleList(TwoWayBlock(dim=c, heads=cfg.heads) for _ in range(cfg.dec_depth))
        self.final = nn.MultiheadAttention(c, cfg.heads, batch_first=True)
        self.final_norm = nn.LayerNorm(c)
        q = c // 4
        self.up = nn.Sequential(nn.ConvTranspose2d(c, c // 2, 2, 2), nn.GroupNorm(1, c // 2), nn.GELU(),
                                nn.ConvTranspose2d(c // 2, q, 2, 2), nn.Identity() if cfg.fuse_skip else nn.GELU())
        # RGB at half resolution (the upsampled grid's): edges the 8 × 8 token grid cannot place
        self.skip = nn.Sequential(nn.Conv2d(3, q, 3, padding=1), nn.GELU(), nn.Conv2d(q, q, 3, padding=1))
        self.hyper = nn.ModuleList(_mlp(c, q) for _ in range(self.n_masks))
        self.iou_head = _mlp(c, self.n_masks)

    @property
    def size(self) -> int:
        return self.config.size

    def embed(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """Images (B, 3, S, S) in [0, 1] → (image embedding (B, gh·gw, C), skip (B, C/4, S/2, S/2))."""
        _, inter, state = self.encoder.forward_intermediates((images - 0.5) / 0.5, 1, norm=True, return_state=True)
        half = F.avg_pool2d(images, 2) if images.shape[-1] >= 2 * self.config.patch else images
        return self.neck(inter[0][:, state.num_prefix :]), self.skip(half)

    def prompt_tokens(self, points: Tensor | None, labels: Tensor | None, boxes: Tensor | None,
                      batch: int) -> Tensor:
        """Sparse prompt embeddings (B, P', C): points, then the box's two corners."""
        s = float(self.size)
        toks = []
        if points is not None and points.shape[1] > 0:
            lab = labels.long()
            kind = torch.where(lab < 0, torch.full_like(lab, 4), lab)
            pe = self.pe((points.float() + 0.5) / s) * (lab >= 0).unsqueeze(-1)
            toks.append(pe + self.kind(kind))
        if boxes is not None:
            corners = (boxes.float().reshape(-1, 2, 2) + 0.5) / s
            toks.append(self.pe(corners) + self.kind.weight[2:4])
        if not toks:  # no prompt at all: one padding token
            toks.append(self.kind.weight[4].expand(batch, 1, -1))
        return torch.cat(toks, 1)

    def decode(self, embedding: Tensor, skip: Tensor, points: Tensor | None = None, labels: Tensor | None = None,
               boxes: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Mask logits (B, 4, S, S) and IoU predictions (B, 4) for B prompt sets on B embeddings."""
        b, n, c = embedding.shape
        g = int(round(math.sqrt(n)))
        sparse = self.prompt_tokens(points, labels, boxes, b)
        out = self.out_tokens.unsqueeze(0).expand(b, -1, -1)
        tok_pe = torch.cat([out, sparse], 1)
        tok = tok_pe
        img = embedding
        img_pe = self.pe.grid(g, g).to(embedding).unsqueeze(0).expand(b, -1, -1)
        for blk in self.blocks:
            tok, img = blk(tok, img, tok_pe, img_pe)
        tok = self.final_norm(tok + self.final(tok + tok_pe, img + img_pe, img, need_weights=False)[0])
        feat = self.up(img.transpose(1, 2).reshape(b, c, g, g))
        feat = F.interpolate(feat, size=skip.shape[-2:], mode="bilinear", align_corners=False) + skip
        if self.config.fuse_skip:
            feat = F.gelu(feat)
        w = torch.stack([h(tok[:, 1 + i]) for i, h in enumerate(self.hyper)], 1)  # (B, 4, C/4)
        masks = torch.einsum("bkc,bchw->bkhw", w, feat)
        masks = F.interpolate(masks, size=(self.size, self.size), mode="bilinear", align_corners=False)
        return masks, self.iou_head(tok[:, 0])

    def forward(self, images: Tensor, points: Tensor | None = None, labels: Tensor | None = None,
                boxes: Tensor | None = None) -> tuple[Tensor, Tensor]:
        emb, skip = self.embed(images)
        return self.decode(emb, skip, points, labels, boxes)
