"""Forward FLOP count of a model (multiply-add = 2 FLOPs)."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .attention import Attention


def _addmm_flops(self_shape, a_shape, b_shape, out_shape=None, **_) -> int:
    """FLOPs of the in-place ``addmm_`` (C += A·B, A (m, k), B (k, n)), which torch's counter table lacks (VisionGRU's
    no-grad pieces accumulate their output projection with it): what ``addmm`` costs, 2·m·k·n."""
    m, k = a_shape
    return 2 * m * k * b_shape[1]


def count_flops(model: nn.Module, x: torch.Tensor) -> int:
    """FLOPs of ``model(x)``. torch's counter misses the fused attention kernel on some devices, so the
    attention products (QKᵀ and AV: 4·B·N²·C per layer) are counted analytically for each Attention."""
    attn_flops = 0

    def hook(module: Attention, args, output) -> None:
        nonlocal attn_flops
        if module.readout != "full":  # the explicit path is seen by the counter
            B, N, C = args[0].shape
            attn_flops += 4 * B * N * N * C

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, Attention)]
    try:
        with torch.no_grad(), FlopCounterMode(display=False, custom_mapping={torch.ops.aten.addmm_: _addmm_flops}) as fc:
            model(x)
    finally:
        for h in handles:
            h.remove()
    counted = fc.get_flop_counts().get("Global", {})
    sdpa_seen = any("scaled_dot_product" in str(op) for op in counted)
    return int(fc.get_total_flops()) + (0 if sdpa_seen else attn_flops)
