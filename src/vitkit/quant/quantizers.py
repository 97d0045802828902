"""Uniform and log2 quantizers: pure tensor functions and small modules holding their scales.

Conventions: ``bits`` in 2–8 (16 is accepted as the near-float check). Symmetric quantization maps
to the signed grid [-(2^(b-1) - 1), 2^(b-1) - 1] with zero point 0; asymmetric to [0, 2^b - 1] with a
zero point. Rounding uses a straight-through estimator, so scales can be learned (block
reconstruction) and gradients reach the input.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

BITS_RANGE = (2, 8)
NEUTRAL_BITS = 16  # a quantizer at 16 bits must reproduce the float model (test)
METHODS = ("minmax", "percentile", "mse")
GRANULARITIES = ("channel", "tensor", "token")


def check_bits(bits: int, name: str = "bits") -> int:
    """Validate a bit width: an int in 2–8, or 16 (the near-float check)."""
    if isinstance(bits, bool) or not isinstance(bits, int) or not (
        BITS_RANGE[0] <= bits <= BITS_RANGE[1] or bits == NEUTRAL_BITS
    ):
        raise ValueError(
            f"{name}={bits!r}: bit widths must be integers in {BITS_RANGE[0]}–{BITS_RANGE[1]} "
            f"(or {NEUTRAL_BITS} to check that quantization is neutral)"
        )
    return bits


def qrange(bits: int, symmetric: bool) -> tuple[int, int]:
    """Integer grid (qmin, qmax) of a ``bits``-bit quantizer."""
    if symmetric:
        return -(2 ** (bits - 1) - 1), 2 ** (bits - 1) - 1
    return 0, 2**bits - 1


def round_ste(x: Tensor) -> Tensor:
    """round(x) forward, identity gradient backward."""
    return x + (x.round() - x).detach()


def fake_quant(x: Tensor, scale: Tensor, zero_point: Tensor | float, qmin: int, qmax: int) -> Tensor:
    """Quantize-dequantize: scale · (clamp(round(x / scale) + z, qmin, qmax) − z).

    ``scale``/``zero_point`` broadcast against x (per tensor, per channel (C, 1), per token (…, 1)).
    Gradients: straight-through to x inside the range, LSQ-style to ``scale``.
    """
    q = torch.clamp(round_ste(x / scale) + zero_point, qmin, qmax)
    return (q - zero_point) * scale


def quantize_int(x: Tensor, scale: Tensor, zero_point: Tensor | float, qmin: int, qmax: int) -> Tensor:
    """The integer codes (as float) of :func:`fake_quant`."""
    return torch.clamp(torch.round(x / scale) + zero_point, qmin, qmax)


def scale_from_range(lo: Tensor, hi: Tensor, bits: int, symmetric: bool) -> tuple[Tensor, Tensor]:
    """(scale, zero_point) that map [lo, hi] (elementwise ranges) onto the ``bits``-bit grid."""
    qmin, qmax = qrange(bits, symmetric)
    eps = torch.finfo(torch.float32).eps
    if symmetric:
        scale = torch.maximum(lo.abs(), hi.abs()).clamp_min(eps) / qmax
        return scale, torch.zeros_like(scale)
    lo, hi = lo.clamp(max=0), hi.clamp(min=0)  # zero must be exactly representable
    scale = (hi - lo).clamp_min(eps) / (qmax - qmin)
    zero = (qmin - lo / scale).round().clamp(qmin, qmax)
    return scale, zero


def channel_ranges(w: Tensor, method: str, bits: int, symmetric: bool, percentile: float = 99.99,
                   grid: int = 80) -> tuple[Tensor, Tensor]:
    """Per-output-channel scale and zero point (C, 1) for a weight (C, …) by min-max, percentile or MSE.

    MSE searches a clipping ratio r ∈ (0, 1] of the min-max range per channel (``grid`` candidates)
    that minimises the channel's squared quantization error.
    """
    flat = w.detach().reshape(w.shape[0], -1).float()
    lo, hi = flat.amin(1), flat.amax(1)
    if method == "percentile":
        lo = torch.quantile(flat, 1 - percentile / 100, dim=1)
        hi = torch.quantile(flat, percentile / 100, dim=1)
    elif method == "mse":
        return _mse_search(flat, lo, hi, bits, symmetric, grid, reduce_dims=(1,))
    elif method != "minmax":
        raise ValueError(f"method={method!r}: allowed {METHODS}")
    s, z = scale_from_range(lo, hi, bits, symmetric)
    return s[:, None], z[:, None]


def _mse_search(x: Tensor, lo: Tensor, hi: Tensor, bits: int, symmetric: bool, grid: int,
                reduce_dims: tuple[int, ...]) -> tuple[Tensor, Tensor]:
    """Best clipping ratio per range element; x (C, K) with lo/hi (C,), or x (M,) with scalar lo/hi."""
    qmin, qmax = qrange(bits, symmetric)
    shape = (-1,) + (1,) * len(reduce_dims) if lo.dim() else ()
    best_err = torch.full_like(lo, float("inf"))
    best_s, best_z = scale_from_range(lo, hi, bits, symmetric)
    for i in range(grid):
        r = 1.0 - i / grid
        s, z = scale_from_range(lo * r, hi * r, bits, symmetric)
        err = (fake_quant(x, s.reshape(shape), z.reshape(shape), qmin, qmax) - x).pow(2).sum(dim=reduce_dims)
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best_s, best_z = torch.where(better, s, best_s), torch.where(better, z, best_z)
    if lo.dim():
        return best_s[:, None], best_z[:, None]
    return best_s, best_z


LOG2_RANGE = 16  # octaves below the scale that the log2 grid covers before it refines the exponent


def log2_steps(bits: int) -> int:
    """Steps per octave of the log2 grid: 1 up to 4 bits (plain log2), then 2^bits / 16.

    2^bits levels only need to cover ~16 octaves of probabilities; the extra levels of wider bit
    widths refine the exponent (base 2^(1/k)), so 8 bits err ≤ 2 % per value and 16 bits ≈ float.
    """
    return max(1, 2**bits // LOG2_RANGE)


def log2_quant(p: Tensor, scale: Tensor | float, bits: int) -> Tensor:
    """Log2 quantizer for post-softmax probabilities p ∈ [0, 1].

    With k = :func:`log2_steps` (1 for ≤ 4 bits): q = clamp(round(−k·log2(p / scale)), 0, 2^bits − 1),
    p̂ = scale · 2^(−q / k); codes past the last level become 0. Straight-through gradient to p.
    """
    levels = 2**bits - 1
    k = log2_steps(bits)
    scale = torch.as_tensor(scale, dtype=p.dtype, device=p.device)
    tiny = torch.finfo(p.dtype).tiny
    code = round_ste(-k * torch.log2((p / scale).clamp_min(tiny)))
    out = scale * torch.exp2(-code.clamp(0, levels) / k)
    return torch.where(code > levels, torch.zeros_like(out), out)


class WeightQuantizer(nn.Module):
    """Per-output-channel weight quantizer; ``scale``/``zero_point`` (C, 1) set by :meth:`calibrate`."""

    def __init__(self, bits: int, symmetric: bool = True, method: str = "mse") -> None:
        super().__init__()
        self.bits = check_bits(bits, "w_bits")
        self.symmetric = symmetric
        if method not in METHODS:
            raise ValueError(f"calib_method={method!r}: allowed {METHODS}")
        self.method = method
        self.scale = nn.Parameter(torch.ones(1, 1), requires_grad=False)
        self.register_buffer("zero_point", torch.zeros(1, 1))
        self.enabled = True
        self.ready = False

    def calibrate(self, w: Tensor) -> None:
        s, z = channel_ranges(w, self.method, self.bits, self.symmetric)
        self.scale = nn.Parameter(s.to(w.dtype), requires_grad=False)
        self.zero_point = z.to(w.dtype)
        self.ready = True

    def forward(self, w: Tensor) -> Tensor:
        if not self.enabled:
            return w
        if not self.ready:
            self.calibrate(w)
        qmin, qmax = qrange(self.bits, self.symmetric)
        shape = (-1,) + (1,) * (w.dim() - 1)
        return fake_quant(w, self.scale.reshape(shape), self.zero_point.reshape(shape), qmin, qmax)

    def extra_repr(self) -> str:
        return f"bits={self.bits}, symmetric={self.symmetric}, per-channel, method={self.method}"


class ActQuantizer(nn.Module):
    """Activation quantizer for x (…, C), per tensor (static scale) or per token (dynamic scales).

    Per tensor: the range is calibrated from observed activations (min-max, percentile or MSE).
    Per token: each token's own min/max gives its scale at run time, shrunk by a clipping ratio
    ``clip`` (1 = min-max) that MSE calibration searches on observed activations.
    Call :meth:`observe` (through the ``observing`` flag) on calibration data, then :meth:`finish`.
    """

    def __init__(self, bits: int, granularity: str = "token", symmetric: bool = False, method: str = "mse",
                 percentile: float = 99.99, max_rows: int = 4096) -> None:
        super().__init__()
        self.bits = check_bits(bits, "a_bits")
        if granularity not in ("tensor", "token"):
            raise ValueError(f"act_granularity={granularity!r}: allowed ('tensor', 'token')")
        if method not in METHODS:
            raise ValueError(f"calib_method={method!r}: allowed {METHODS}")
        self.granularity, self.symmetric, self.method = granularity, symmetric, method
        self.percentile, self.max_rows = percentile, max_rows
        # per tensor: scale/zero point; per token: clip ratio (learnable in block reconstruction)
        self.scale = nn.Parameter(torch.ones(()), requires_grad=False)
        self.register_buffer("zero_point", torch.zeros(()))
        self.clip = nn.Parameter(torch.ones(()), requires_grad=False)
        self.enabled = True
        self.observing = False
        self.ready = granularity == "token"  # per-token min-max works without calibration
        self._seen: list[Tensor] = []

    def observe(self, x: Tensor) -> None:
        rows = x.detach().reshape(-1, x.shape[-1]).float()
        if len(rows) > self.max_rows:  # a CPU generator: the same subset on every device
            idx = torch.randperm(len(rows), generator=torch.Generator().manual_seed(len(self._seen)))
            rows = rows[idx[: self.max_rows].to(rows.device)]
        self._seen.append(rows.cpu())

    def finish(self) -> None:
        """Set the scale (per tensor) or clip ratio (per token) from what was observed."""
        if not self._seen:
            raise RuntimeError("ActQuantizer.finish() without observed activations: run calibration data first")
        x = torch.cat(self._seen)  # observed rows wait on the CPU; the search runs on the quantizer's device
        if len(x) > 4 * self.max_rows:
            x = x[torch.randperm(len(x), generator=torch.Generator().manual_seed(0))[: 4 * self.max_rows]]
        x = x.to(self.scale.device)
        self._seen = []
        if self.granularity == "tensor":
            flat = x.flatten()
            if self.method == "minmax":
                lo, hi = flat.min(), flat.max()
                s, z = scale_from_range(lo, hi, self.bits, self.symmetric)
            elif self.method == "percentile":
                idx = torch.randperm(len(flat), generator=torch.Generator().manual_seed(0))[: 1 << 22]
                sample = flat[idx.to(flat.device)]
                lo = torch.quantile(sample, 1 - self.percentile / 100)
                hi = torch.quantile(sample, self.percentile / 100)
                s, z = scale_from_range(lo, hi, self.bits, self.symmetric)
            else:
                s, z = _mse_search(flat, flat.min(), flat.max(), self.bits, self.symmetric, 80, reduce_dims=(0,))
            self.scale.data = s.reshape(()).to(self.scale.dtype)
            self.zero_point = z.reshape(()).to(self.zero_point.dtype)
        else:
            ratios = {"minmax": [1.0], "percentile": [1.0], "mse": [1.0 - i / 50 for i in range(40)]}[self.method]
            if self.method == "percentile":  # per token: the percentile of |x| relative to each token's max
                ratios = [float(torch.quantile((x.abs() / x.abs().amax(-1, keepdim=True).clamp_min(1e-12))
                                               .flatten()[: 1 << 22], self.percentile / 100))]
            errs = [(self._token_quant(x, torch.tensor(r, device=x.device)) - x).pow(2).sum().item() for r in ratios]
            self.clip.data = torch.tensor(ratios[min(range(len(errs)), key=errs.__getitem__)], device=self.clip.device)
        self.ready = True

    def _token_quant(self, x: Tensor, clip: Tensor) -> Tensor:
        qmin, qmax = qrange(self.bits, self.symmetric)
        lo = x.detach().amin(-1, keepdim=True) if not self.symmetric else -x.detach().abs().amax(-1, keepdim=True)
        hi = x.detach().amax(-1, keepdim=True) if not self.symmetric else -lo
        s, z = scale_from_range(lo, hi, self.bits, self.symmetric)
        return fake_quant(x, s * clip, z, qmin, qmax)  # clipping the range keeps the zero point

    def forward(self, x: Tensor) -> Tensor:
        if self.observing:
            self.observe(x)
            return x
        if not self.enabled:
            return x
        if self.granularity == "token":
            return self._token_quant(x, self.clip)
        if not self.ready:
            raise RuntimeError("per-tensor activation quantizer used before calibration (run calibrate())")
        qmin, qmax = qrange(self.bits, self.symmetric)
        return fake_quant(x, self.scale, self.zero_point, qmin, qmax)

    def extra_repr(self) -> str:
        return f"bits={self.bits}, per-{self.granularity}, symmetric={self.symmetric}, method={self.method}"


class Log2Quantizer(nn.Module):
    """Log2 quantizer for post-softmax attention (B, H, N, N); ``scale`` = the largest level (≤ 1)."""

    def __init__(self, bits: int) -> None:
        super().__init__()
        self.bits = check_bits(bits, "attn_bits")
        self.scale = nn.Parameter(torch.ones(()), requires_grad=False)
        self.enabled = True
        self.observing = False
        self.ready = True  # scale 1 (probabilities ≤ 1) is a valid default

    def observe(self, p: Tensor) -> None:
        pass  # the default scale 1 fits any probabilities; kept for a uniform interface

    def finish(self) -> None:
        self.ready = True

    def forward(self, p: Tensor) -> Tensor:
        if self.observing or not self.enabled:
            return p
        return log2_quant(p, self.scale.clamp(1e-4, 1.0), self.bits)

    def extra_repr(self) -> str:
        return f"bits={self.bits}, log2"


def bits_label(w_bits: int, a_bits: int) -> str:
    return f"W{w_bits}A{a_bits}"


def parse_bits(spec: str) -> tuple[int, int]:
    """'w4a4' → (4, 4). Raises ValueError naming ``bits`` for anything else."""
    s = spec.strip().lower()
    try:
        if not (s.startswith("w") and "a" in s):
            raise ValueError
        w, a = s[1:].split("a")
        w_bits, a_bits = int(w), int(a)
    except ValueError:
        raise ValueError(f"bits={spec!r}: expected 'w<N>a<M>' such as w8a8, w6a6, w4a4") from None
    return check_bits(w_bits, "bits (weights)"), check_bits(a_bits, "bits (activations)")

