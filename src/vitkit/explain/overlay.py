"""Explanation maps drawn over their images (PNG-ready PIL images), for the CLI and the report."""

from __future__ import annotations

import numpy as np
import torch
from matplotlib import colormaps
from PIL import Image
from torch import Tensor


def normalize(m: Tensor) -> Tensor:
    """Min-max to [0, 1] per map (B, h, w) or (h, w); a constant map becomes 0."""
    flat = m.float().reshape(-1, m.shape[-2] * m.shape[-1]) if m.dim() == 3 else m.float().reshape(1, -1)
    lo, hi = flat.min(1, keepdim=True).values, flat.max(1, keepdim=True).values
    return ((flat - lo) / (hi - lo).clamp_min(1e-12)).reshape(m.shape)


def overlay(image: np.ndarray | Image.Image, m: Tensor, *, alpha: float = 0.5, cmap: str = "inferno") -> Image.Image:
    """The image (H, W, 3) uint8 blended with the map (h, w) min-max normalised, upsampled
    bilinearly to the image size and coloured with ``cmap``."""
    img = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image, dtype=np.float32)
    H, W = img.shape[:2]
    up = torch.nn.functional.interpolate(m.detach().float().cpu()[None, None], size=(H, W), mode="bilinear",
                                         align_corners=False)[0, 0]
    heat = colormaps[cmap](normalize(up).numpy())[..., :3] * 255.0
    out = (1 - alpha) * img + alpha * heat
    return Image.fromarray(out.clip(0, 255).astype(np.uint8))


def denormalize(x: Tensor, mean, std) -> np.ndarray:
    """A preprocessed image (3, H, W) back to (H, W, 3) uint8 for drawing."""
    m = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
    return ((x.detach().float().cpu() * s + m).clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
