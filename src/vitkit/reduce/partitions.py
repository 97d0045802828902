"""High-resolution images as a thumbnail plus a grid of sub-images, and the token sets they give.

:func:`partition` cuts (B, C, H, W) into ``1 + rows·cols`` partitions at the encoder's native size
(partition 0 = the whole image resized; then the sub-images row by row). :func:`encode_partitions`
runs a vision tower over all partitions as one batch and returns a :class:`TokenSet`: the output
patch tokens with their partition id and 2-D patch position, whatever token reduction (EViT, ToMe)
is applied to the tower.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..models.vit import TokenState
from .wiring import vision_tower

NO_POS = -1  # position of a token that stands for no single patch (EViT's fused token)


@dataclass
class TokenSet:
    """Tokens for a downstream consumer. tokens (B, K, C); partition (B, K) partition id
    (0 = thumbnail); pos (B, K, 2) (row, col) in the partition's patch grid, −1 for a fused token;
    ``grid`` the patch grid of one partition; ``num_partitions`` P; ``state`` the TokenState of the
    encoder forward that made the set (e.g. ToMe's ``extras["tome_source"]``), None if unknown."""

    tokens: Tensor
    partition: Tensor
    pos: Tensor
    grid: tuple[int, int]
    num_partitions: int
    state: TokenState | None = field(default=None, compare=False, repr=False)  # the encoder forward's, if any

    @property
    def flat(self) -> Tensor:
        """(B, K) index into the P·gh·gw dense layout (−1 where pos is −1)."""
        gh, gw = self.grid
        f = self.partition * gh * gw + self.pos[..., 0] * gw + self.pos[..., 1]
        return torch.where(self.pos[..., 0] < 0, torch.full_like(f, -1), f)

    def __len__(self) -> int:
        return self.tokens.shape[1]


def check_grid(grid: tuple[int, int], height: int, width: int, patch: int) -> tuple[int, int]:
    """Validate a (rows, cols) sub-image grid for an image; returns it as ints."""
    if (
        len(grid) != 2
        or any(isinstance(g, bool) or not isinstance(g, int) for g in grid)
        or min(grid) < 1
    ):
        raise ValueError(f"grid must be two positive ints (rows, cols), got {grid!r}")
    R, C = grid
    if height % R or width % C:
        raise ValueError(
            f"grid {R}×{C} does not fit the image {height}×{width}: the height must be divisible by the rows "
            f"({R}) and the width by the columns ({C}); resize or pad the image, or pick another grid"
        )
    if height // R < patch or width // C < patch:
        raise ValueError(f"grid {R}×{C} makes sub-images of {height // R}×{width // C} px, smaller than the "
                         f"patch size {patch}; use fewer rows/columns (allowed: rows ≤ {height // patch}, "
                         f"cols ≤ {width // patch})")
    return int(R), int(C)


def partition(images: Tensor, grid: tuple[int, int], size: tuple[int, int], patch: int = 1) -> Tensor:
    """(B, C, H, W) → (B, 1 + rows·cols, C, h, w): thumbnail, then sub-images row-major, each at ``size``."""
    B, Ch, H, W = images.shape
    R, C = check_grid(grid, H, W, patch)
    h, w = size
    th, tw = H // R, W // C

    def resize(x: Tensor) -> Tensor:
        if tuple(x.shape[-2:]) == (h, w):
            return x
        return F.interpolate(x, size=(h, w), mode="bilinear", antialias=True, align_corners=False)

    thumb = resize(images).unsqueeze(1)
    tiles = images.reshape(B, Ch, R, th, C, tw).permute(0, 2, 4, 1, 3, 5).reshape(B * R * C, Ch, th, tw)
    tiles = resize(tiles).reshape(B, R * C, Ch, h, w)
    return torch.cat([thumb, tiles], dim=1)


def token_set_from_rows(tokens: Tensor, flat: Tensor, grid: tuple[int, int], num_partitions: int) -> TokenSet:
    """tokens (B, K, C) whose flat indices into the P·gh·gw layout are ``flat`` (B, K; −1 = no patch)."""
    gh, gw = grid
    T = gh * gw
    part = torch.where(flat >= 0, flat // T, torch.zeros_like(flat))
    t = flat % T
    pos = torch.stack([t // gw, t % gw], -1)
    pos = torch.where((flat < 0).unsqueeze(-1), torch.full_like(pos, NO_POS), pos)
    return TokenSet(tokens, part, pos, (gh, gw), num_partitions)


def encode_partitions(model: nn.Module, parts: Tensor) -> TokenSet:
    """Run the vision tower over partitions (B, P, C, h, w); all output patch tokens as a TokenSet.

    Works with EViT/ToMe applied (their ``TokenState.index`` gives each token's patch; EViT's fused
    token gets position −1 and the partition it came from).
    """
    vis = vision_tower(model)
    B, P = parts.shape[:2]
    x, st = vis.forward_features(parts.flatten(0, 1), return_state=True)  # (B·P, N, C)
    p = st.num_prefix
    gh, gw = st.grid
    T = gh * gw
    if st.index is None:
        idx = torch.arange(T, device=x.device).expand(B * P, -1)
    else:
        idx = st.index[:, p:] - vis.num_prefix_tokens
    toks = x[:, p:]
    K = toks.shape[1]
    part = torch.arange(P, device=x.device).repeat(B).view(B * P, 1).expand(-1, K)
    flat = torch.where(idx >= 0, part * T + idx, torch.full_like(idx, -1))
    ts = token_set_from_rows(toks.reshape(B, P * K, -1), flat.reshape(B, P * K), (gh, gw), P)
    ts.partition = part.reshape(B, P * K)  # fused tokens keep their partition
    ts.state = st
    return ts
