"""The pixels that data-free calibration optimises, shared by the noise, PSAQ-style and SPDFQ sources.

``grey``: synthesise one channel and repeat it over the model's input channels. For a model whose inputs
always have equal channels (every FRB classifier: pages are normalised to grey, then repeated to RGB) that is
the model's own input space; free RGB pixels let synthesis wander into colours the model never sees, which
shifts the activation ranges the quantizer calibrates on. It is knowledge of the model's input format, not of
its data: no image is used.
"""

from __future__ import annotations

import torch
from torch import Tensor


def image_parameter(n: int, in_chans: int, size: tuple[int, int], gen: torch.Generator, device: torch.device,
                    grey: bool = False) -> Tensor:
    """n images' worth of N(0, 1) pixels to optimise, drawn from ``gen`` on the CPU: (n, C, H, W), or (n, 1, H, W)
    when ``grey``; a leaf tensor on ``device`` that requires grad. :func:`as_images` turns it into model inputs."""
    return torch.randn(n, 1 if grey else in_chans, *size, generator=gen).to(device).requires_grad_(True)


def as_images(pixels: Tensor, in_chans: int) -> Tensor:
    """Model inputs (n, in_chans, H, W) from :func:`image_parameter`'s pixels (a one-channel tensor is repeated,
    as a view, so gradients of every channel reach the one channel)."""
    return pixels.expand(-1, in_chans, -1, -1) if pixels.shape[1] == 1 else pixels
