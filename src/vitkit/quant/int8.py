"""Real int8 execution of Linear layers (W8A8) with dynamic per-token activation scales.

Weights: int8 per output channel, symmetric (scale = max|w_c| / 127, or a calibrated scale).
Activations: each token x_t is quantized at run time with its own scale max|x_t| / 127. The product
runs in int8 → int32 through ``torch._int_mm`` (oneDNN/VNNI on x86 CPUs), then
y = acc · s_t · s_w + b in float.

``to_int8(model)`` replaces Linears (or the QuantLinear wrappers of :mod:`vitkit.quant.ptq`, using
their calibrated weight scales) by :class:`Int8Linear`. The float weights are dropped; that is the
point (4× smaller). ``Int8Linear.to_float()`` gives back a dequantized ``nn.Linear``.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..models.applied import forget, record, restorer
from ..models.attention import Attention
from ..models.surgery import replace_module
from ..models.wrapper import base_of
from . import ptq
from .ptq import DEFAULT_TARGETS, QuantLinear
from .quantizers import Log2Quantizer

log = logging.getLogger(__name__)

QMAX = 127
METHOD = "int8"


@dataclass
class Int8Config:
    """Which Linears run in int8: ``targets`` is a regex over module names (default: every Linear in the blocks)."""

    targets: str = DEFAULT_TARGETS

    def __post_init__(self) -> None:
        try:
            re.compile(self.targets)
        except re.error as e:
            raise ValueError(f"targets={self.targets!r} is not a valid regular expression ({e})") from e


def quantize_per_token(x: Tensor) -> tuple[Tensor, Tensor]:
    """x (M, K) float → (int8 codes (M, K), scales (M, 1)) with symmetric per-row scales."""
    amax = x.abs().amax(-1, keepdim=True).clamp_min(1e-8)
    q = torch.round(x * (QMAX / amax)).to(torch.int8)  # |x| ≤ amax, so no clamp is needed
    return q, amax / QMAX


def quantize_weight(w: Tensor, scale: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """w (N, K) float → (int8 (N, K), scales (N,)); symmetric per output channel."""
    if scale is None:
        scale = w.abs().amax(1).clamp_min(1e-8) / QMAX
    scale = scale.reshape(-1).float()
    q = torch.round(w / scale[:, None]).clamp(-QMAX, QMAX).to(torch.int8)
    return q, scale


def int8_linear(x: Tensor, w_int8_t: Tensor, w_scale: Tensor, bias: Tensor | None) -> Tensor:
    """y = dequant(int_mm(quant(x), W_int8ᵀ)) + b.

    x (…, K) float; w_int8_t (K, N) int8 (the transposed weight); w_scale (N,); bias (N,) or None.
    """
    shape = x.shape
    x2 = x.reshape(-1, shape[-1])
    q, s = quantize_per_token(x2.float())
    acc = torch._int_mm(q, w_int8_t)  # (M, N) int32
    y = torch.addcmul(bias, acc * s, w_scale) if bias is not None else (acc * s).mul_(w_scale)
    return y.to(x.dtype).reshape(*shape[:-1], -1)


def reference_int8_linear(x: Tensor, w_int8: Tensor, w_scale: Tensor, bias: Tensor | None) -> Tensor:
    """Naive float reference of :func:`int8_linear` (for tests): same codes, float matmul."""
    q, s = quantize_per_token(x.reshape(-1, x.shape[-1]).float())
    y = (q.double() @ w_int8.double().t()) * s.double() * w_scale.double()
    if bias is not None:
        y = y + bias.double()
    return y.float().reshape(*x.shape[:-1], -1)


class Int8Linear(nn.Module):
    """A Linear stored and executed in int8: buffers ``weight_int8`` (N, K), ``weight_scale`` (N,), ``bias``."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.register_buffer("weight_int8", torch.zeros(out_features, in_features, dtype=torch.int8))
        self.register_buffer("weight_scale", torch.ones(out_features))
        self.register_buffer("bias", torch.zeros(out_features) if bias else None)

    @classmethod
    def from_linear(cls, linear: nn.Linear, scale: Tensor | None = None) -> Int8Linear:
        m = cls(linear.in_features, linear.out_features, linear.bias is not None)
        q, s = quantize_weight(linear.weight.detach().float(), scale)
        m.weight_int8.copy_(q)
        m.weight_scale.copy_(s)
        if linear.bias is not None:
            m.bias.copy_(linear.bias.detach().float())
        return m

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] != self.in_features:
            raise ValueError(f"Int8Linear expects inputs (…, {self.in_features}), got {tuple(x.shape)}")
        return int8_linear(x, self.weight_int8.t(), self.weight_scale, self.bias)

    def to_float(self) -> nn.Linear:
        lin = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None)
        with torch.no_grad():
            lin.weight.copy_(self.weight_int8.float() * self.weight_scale[:, None])
            if self.bias is not None:
                lin.bias.copy_(self.bias)
        return lin

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, W8A8 per-token dynamic"


def to_int8(model: nn.Module, targets: str = DEFAULT_TARGETS) -> list[str]:
    """Replace target Linears (or 8-bit symmetric QuantLinears, keeping their scales) by Int8Linear, in place.

    Returns the names replaced; raises ValueError when none matched or a target cannot run in int8.
    """
    cfg = Int8Config(targets)
    pattern = re.compile(targets)
    touched: list[str] = []
    for name, mod in list(model.named_modules()):
        if not name or not pattern.search(name):
            continue
        if isinstance(mod, QuantLinear):
            wq = mod.weight_quantizer
            if wq.bits != 8 or not wq.symmetric:
                raise ValueError(f"{name}: int8 execution needs 8-bit symmetric weights, got {wq.extra_repr()}")
            new = Int8Linear.from_linear(mod.base_layer, wq.scale.detach())
        elif isinstance(mod, nn.Linear):
            new = Int8Linear.from_linear(mod)
        elif isinstance(base_of(mod), nn.Linear):  # an adapter wrapper (LoRA): its inner Linear runs in int8
            mod.base_layer = Int8Linear.from_linear(mod.base_layer)
            touched.append(f"{name}.base_layer")
            continue
        else:
            raise ValueError(f"module {name!r} matches targets but is a {type(mod).__name__}, not a Linear")
        replace_module(model, name, new)
        touched.append(name)
    if not touched:
        raise ValueError(f"no Linear of {type(model).__name__} matches targets={targets!r}")
    for name, mod in model.named_modules():  # int8 execution covers Linears; attention maps run float
        if isinstance(mod, Attention) and isinstance(mod.attn_map_fn, Log2Quantizer):
            mod.attn_map_fn = None
            log.info("%s: log2 attention-map quantizer removed (the int8 path keeps maps float)", name)
    forget(model, ptq.METHOD)  # the fake quantizers are gone: the model now runs real int8
    record(model, METHOD, cfg)
    log.info("int8: %d Linear layers", len(touched))
    return touched


def int8_supported() -> bool:
    """Whether this torch build runs ``torch._int_mm`` on CPU."""
    try:
        torch._int_mm(torch.ones(17, 8, dtype=torch.int8), torch.ones(8, 8, dtype=torch.int8))
        return True
    except RuntimeError:
        return False


def linear_bytes(model: nn.Module) -> int:
    """Bytes of the Linear / Int8Linear weights (+ scales and biases) in ``model``."""
    total = 0
    for m in model.modules():
        if isinstance(m, Int8Linear):
            total += sum(b.numel() * b.element_size() for b in m.buffers())
        elif isinstance(m, nn.Linear):
            total += sum(p.numel() * p.element_size() for p in m.parameters(recurse=False))
    return total



@restorer(METHOD, Int8Config)
def restore(model: nn.Module, cfg: Int8Config, instance: str | None = None) -> None:
    """Re-create the Int8Linear layers of a saved int8 model (placeholders until its tensors are loaded)."""
    to_int8(model, cfg.targets)
