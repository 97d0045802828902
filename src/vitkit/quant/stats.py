"""Inter-channel spread of the activations that low-bit activation quantizers must cover.

A per-tensor (or per-token) activation scale is set by the widest channel, so when a few channels
are tens of times wider than the rest (the post-LayerNorm outliers of ImageNet-trained ViTs that
data-free W4A4 methods fight), most channels are left with one or two levels. These functions
measure that spread, so a quantization result can be read against it.

    ranges = linear_input_ranges(model, images)       # {"blocks.0.attn.qkv": (C_in,), ...}
    spread_by_kind(ranges)                            # {"qkv": 2.1, "proj": 2.0, "fc1": 2.2, "fc2": 20.6}
"""

from __future__ import annotations

import re

import torch
from torch import Tensor, nn

from ..engine import model_device
from .ptq import DEFAULT_TARGETS, image_batches

__all__ = ["channel_absmax", "channel_spread", "linear_input_ranges", "spread_by_kind"]


def channel_absmax(x: Tensor) -> Tensor:
    """Largest |value| of each channel (last dim) over all other dims: (..., C) → (C,)."""
    return x.detach().abs().reshape(-1, x.shape[-1]).amax(0)


def channel_spread(ranges: Tensor) -> float:
    """Widest channel range over the median one, for per-channel ranges (C,): 1.0 = all channels alike."""
    med = ranges.float().median()
    return float(ranges.float().max() / med) if med > 0 else float("inf")


@torch.no_grad()
def linear_input_ranges(model: nn.Module, images: Tensor, *, targets: str = DEFAULT_TARGETS,
                        batch_size: int = 32) -> dict[str, Tensor]:
    """Per-channel |max| of the input of every Linear whose name matches ``targets`` (default: the ones
    :func:`vitkit.quant.apply` quantizes), over all tokens of ``images`` (B, 3, H, W). Returns
    ``{name: (C_in,)}`` on the CPU, in module order; the model is left without hooks."""
    pattern = re.compile(targets)
    layers = [(n, m) for n, m in model.named_modules() if n and pattern.search(n) and isinstance(m, nn.Linear)]
    if not layers:
        raise ValueError(f"no Linear of {type(model).__name__} matches targets={targets!r}")
    ranges: dict[str, Tensor] = {}

    def hook(name: str):
        def record(_mod, inputs, _out):
            r = channel_absmax(inputs[0]).float().cpu()
            ranges[name] = torch.maximum(ranges[name], r) if name in ranges else r
        return record

    handles = [m.register_forward_hook(hook(n)) for n, m in layers]
    was_training = model.training
    model.eval()
    try:
        device = model_device(model)
        for xb in image_batches(images, batch_size):
            model(xb.to(device))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return {n: ranges[n] for n, _ in layers if n in ranges}


def spread_by_kind(ranges: dict[str, Tensor]) -> dict[str, float]:
    """The worst :func:`channel_spread` per layer kind (the last part of the name: qkv, proj, fc1, fc2),
    in the order the kinds first appear."""
    worst: dict[str, float] = {}
    for name, r in ranges.items():
        kind = name.rsplit(".", 1)[-1]
        worst[kind] = max(worst.get(kind, 1.0), channel_spread(r))
    return worst
