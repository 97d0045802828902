"""Masked autoencoder (MAE, He et al., CVPR 2022) on vitkit's own ViT.

The encoder is an unmodified :class:`~vitkit.models.vit.VisionTransformer`: :func:`encode_visible`
installs ``model.embed_hook`` for one forward, and the hook keeps the prefix tokens and the visible
patch tokens (after the position embedding, as MAE does) and records them in
``TokenState.index``; the model's own ``forward_features`` runs the blocks. No forward is copied.

Pure functions: :func:`patchify`, :func:`patch_targets` (per-patch normalised pixels),
:func:`masked_mse`, :func:`fill_masked`. Module: :class:`PixelDecoder` (vitkit Blocks on the full
grid with mask tokens) and :class:`MAE` (encoder + decoder + loss).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..models.vit import Block, TokenState, VisionTransformer
from .masking import mask_to_ids, random_mask


@dataclass
class MAEConfig:
    """Masked-autoencoder settings."""

    mask_ratio: float = 0.75  # fraction of patches hidden from the encoder (MAE's default)
    decoder_dim: int = 64  # pixel decoder width (MAE/FSFM: 512; scaled down for CPU-sized encoders)
    decoder_depth: int = 2  # pixel decoder blocks (MAE/FSFM: 8)
    decoder_heads: int = 4  # attention heads of the decoder blocks
    norm_pix_loss: bool = True  # per-patch normalised targets (MAE's better setting, FSFM's recipe)

    def __post_init__(self) -> None:
        if not 0.0 < self.mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must be in (0, 1), got {self.mask_ratio}")
        if self.decoder_dim % self.decoder_heads:
            raise ValueError(f"decoder_dim {self.decoder_dim} is not divisible by decoder_heads {self.decoder_heads}")
        if self.decoder_depth < 1:
            raise ValueError(f"decoder_depth must be ≥ 1, got {self.decoder_depth}")


# ---------------------------------------------------------------------------- pure functions
def patchify(images: Tensor, patch: int) -> Tensor:
    """(B, C, H, W) → (B, gh·gw, P·P·C), patches in row-major order, pixels (row, col, channel)."""
    B, C, H, W = images.shape
    gh, gw = H // patch, W // patch
    x = images[:, :, : gh * patch, : gw * patch].reshape(B, C, gh, patch, gw, patch)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(B, gh * gw, patch * patch * C)


def unpatchify(patches: Tensor, patch: int, grid: tuple[int, int], channels: int = 3) -> Tensor:
    """Inverse of :func:`patchify`: (B, gh·gw, P·P·C) → (B, C, gh·P, gw·P)."""
    B = patches.shape[0]
    gh, gw = grid
    x = patches.reshape(B, gh, gw, patch, patch, channels).permute(0, 5, 1, 3, 2, 4)
    return x.reshape(B, channels, gh * patch, gw * patch)


def patch_targets(images: Tensor, patch: int, norm_pix: bool = True, eps: float = 1e-6) -> Tensor:
    """Reconstruction targets (B, N, P·P·C): pixels, each patch normalised to zero mean, unit variance."""
    t = patchify(images, patch)
    if norm_pix:
        mean = t.mean(-1, keepdim=True)
        var = t.var(-1, keepdim=True)
        t = (t - mean) / (var + eps).sqrt()
    return t


def masked_mse(pred: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """Mean over the masked patches of each patch's mean squared error; pred/target (B, N, D), mask (B, N).

    Returns 0 (with a gradient path) when nothing is selected."""
    per_patch = (pred - target).pow(2).mean(-1)
    m = mask.to(per_patch.dtype)
    return (per_patch * m).sum() / m.sum().clamp_min(1.0)


def fill_masked(visible: Tensor, ids_restore: Tensor, mask_token: Tensor) -> Tensor:
    """Visible patch tokens (B, K, D) + a mask token (1, 1, D) → the full grid (B, N, D) in patch order."""
    B, K, D = visible.shape
    N = ids_restore.shape[1]
    x = torch.cat([visible, mask_token.to(visible.dtype).expand(B, N - K, D)], dim=1)
    return x.gather(1, ids_restore.unsqueeze(-1).expand(-1, -1, D))


def sincos_pos_embed(dim: int, grid: tuple[int, int]) -> Tensor:
    """Fixed 2-D sine-cosine position embedding (gh·gw, dim), half the channels per axis (as MAE's decoder)."""
    if dim % 4:
        raise ValueError(f"sin-cos position embedding needs dim divisible by 4, got {dim}")
    gh, gw = grid
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim / 4))
    ys, xs = torch.meshgrid(torch.arange(gh, dtype=torch.float64), torch.arange(gw, dtype=torch.float64), indexing="ij")
    parts = []
    for pos in (ys.flatten(), xs.flatten()):
        out = pos[:, None] * omega[None]
        parts += [out.sin(), out.cos()]
    return torch.cat(parts, dim=1).float()


# ---------------------------------------------------------------------------- encoder wiring
@contextmanager
def visible_only(encoder: VisionTransformer, ids_keep: Tensor) -> Iterator[None]:
    """Inside the ``with``, forwards of ``encoder`` see only the prefix tokens and patches ``ids_keep`` (B, K).

    The hook runs after the position embedding; ``TokenState.index`` holds each kept row's original
    token position (prefix first). The previous ``embed_hook`` is put back on exit.
    """
    if encoder.embed_hook is not None:
        raise ValueError("the encoder already has an embed_hook (prompts?); remove it before masked pretraining")

    def keep_visible(x: Tensor, state: TokenState) -> Tensor:
        p = state.num_prefix
        B = x.shape[0]
        if ids_keep.shape[0] != B:
            raise ValueError(f"ids_keep has {ids_keep.shape[0]} rows for a batch of {B}")
        prefix = torch.arange(p, device=x.device).expand(B, -1)
        rows = torch.cat([prefix, ids_keep.to(x.device) + p], dim=1)
        state.index = rows
        return x.gather(1, rows.unsqueeze(-1).expand(-1, -1, x.shape[-1]))

    encoder.embed_hook = keep_visible
    try:
        yield
    finally:
        encoder.embed_hook = None


def encode_visible(encoder: VisionTransformer, images: Tensor, ids_keep: Tensor) -> Tensor:
    """Encoder output (B, prefix + K, C) (final norm applied) for the visible patches ``ids_keep`` (B, K)."""
    with visible_only(encoder, ids_keep):
        return encoder.forward_features(images)


# ---------------------------------------------------------------------------- modules
def decoder_blocks(dim: int, depth: int, heads: int) -> nn.ModuleList:
    """``depth`` vitkit transformer blocks of width ``dim`` (pre-norm, GELU, MLP ×4)."""
    return nn.ModuleList([Block(dim, heads) for _ in range(depth)])


class PixelDecoder(nn.Module):
    """MAE decoder: encoder tokens (B, prefix + K, C) → pixel predictions (B, N, P·P·C) on the full grid.

    Visible tokens are projected to ``dim``, mask tokens fill the masked patches, a fixed sin-cos
    position embedding is added, then ``depth`` blocks and a linear head. Prefix tokens take part in
    attention (as MAE's class token) and are dropped before the head.
    """

    def __init__(self, *, encoder_dim: int, grid: tuple[int, int], patch: int, channels: int, num_prefix: int,
                 dim: int, depth: int, heads: int) -> None:
        super().__init__()
        self.num_prefix = num_prefix
        self.embed = nn.Linear(encoder_dim, dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.register_buffer("pos_embed", sincos_pos_embed(dim, grid).unsqueeze(0), persistent=False)
        self.blocks = decoder_blocks(dim, depth, heads)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, patch * patch * channels)
        nn.init.normal_(self.mask_token, std=0.02)

    def forward(self, tokens: Tensor, ids_restore: Tensor) -> Tensor:
        p = self.num_prefix
        x = self.embed(tokens)
        patches = fill_masked(x[:, p:], ids_restore, self.mask_token) + self.pos_embed
        x = torch.cat([x[:, :p], patches], dim=1)
        for blk in self.blocks:
            x = blk(x)
        return self.head(self.norm(x))[:, p:]


def check_encoder(encoder: VisionTransformer) -> tuple[int, int]:
    """The encoder's patch grid at its configured size; ValueError for what masked pretraining cannot use."""
    if not isinstance(encoder, VisionTransformer):
        raise ValueError(f"masked pretraining needs a vitkit VisionTransformer, got {type(encoder).__name__}")
    gh, gw = encoder.grid_size
    if gh * gw < 2:
        raise ValueError(f"the encoder's grid {gh}×{gw} has fewer than 2 patches: nothing to mask")
    return gh, gw


class MAE(nn.Module):
    """Masked autoencoder: ``forward(images)`` → {"loss", "pred" (B, N, P·P·C), "mask" (B, N)}.

    ``images`` (B, C, H, W) at the encoder's ``img_size``. ``mask`` (B, N) bool may be given
    (e.g. CRFR-P); by default a uniformly random ``cfg.mask_ratio`` of the patches is masked, drawn
    from the global torch RNG (saved and restored by the trainer, so resume is exact).
    """

    def __init__(self, encoder: VisionTransformer, *, cfg: MAEConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg or MAEConfig()
        self.grid = check_encoder(encoder)
        self.encoder = encoder
        self.patch = encoder.patch_size
        self.decoder = PixelDecoder(encoder_dim=encoder.embed_dim, grid=self.grid, patch=self.patch,
                                    channels=encoder.cfg.in_chans, num_prefix=encoder.num_prefix_tokens,
                                    dim=self.cfg.decoder_dim, depth=self.cfg.decoder_depth, heads=self.cfg.decoder_heads)

    @property
    def num_patches(self) -> int:
        return self.grid[0] * self.grid[1]

    def make_mask(self, images: Tensor) -> Tensor:
        return random_mask(images.shape[0], self.num_patches, self.cfg.mask_ratio, device=images.device)

    def reconstruct(self, images: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """(encoder tokens (B, prefix + K, C), pixel predictions (B, N, P·P·C)) for ``mask`` (B, N)."""
        ids_keep, _, ids_restore = mask_to_ids(mask)
        tokens = encode_visible(self.encoder, images, ids_keep)
        return tokens, self.decoder(tokens, ids_restore)

    def forward(self, images: Tensor, mask: Tensor | None = None) -> dict[str, Tensor]:
        mask = self.make_mask(images) if mask is None else mask
        _, pred = self.reconstruct(images, mask)
        target = patch_targets(images, self.patch, self.cfg.norm_pix_loss)
        loss = masked_mse(pred, target, mask)
        return {"loss": loss, "pred": pred, "mask": mask}

