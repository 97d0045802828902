"""minGRU (Feng et al., "Were RNNs all we needed?", 2024): a GRU whose gate and candidate depend on the
input only, so the recurrence is linear in h and can be trained in parallel.

    h̃_t, gate_t = Linear(x_t).chunk(2)          z_t = σ(gate_t)
    h_t = (1 − z_t) · h_{t−1} + z_t · g(h̃_t)     g(v) = v + 0.5 (v ≥ 0), σ(v) (v < 0);  h_0 = 0

g keeps every candidate positive, so h stays positive and the recurrence can run in log space
(Heinsen's scan): log a = −softplus(gate) = log(1 − z), log b = −softplus(−gate) + log g(h̃) = log(z·g),
a* = cumsum(log a), h = exp(a* + logcumsumexp(log b − a*)).

Why chunked: over a long sequence a* grows without bound (−0.7 per token at gate 0: −45,000 after 65k
tokens), and log h = a* + logcumsumexp(…) then subtracts two numbers of that size; in fp32 that loses
about |a*|·6e-8 absolute in log h (1% error in h after 70k tokens, measured), and bf16 keeps no digit.
So the scan always computes in fp32 (fp64 for fp64 input) whatever the input dtype, and never lets a*
run over more than a chunk:

* :func:`scan_log` is the log-space scan inside chunks of ``chunk`` tokens, the log state carried from
  chunk to chunk by a short loop over (B, D) tensors;
* :func:`scan` is 4–5× faster on CPU, where logcumsumexp costs ~40 ns per element: blocks of 32 tokens
  in linear space (exp, cumsum; stable because every factor is bounded by the block's own decay, and a
  block that decays too fast is redone in log space), then the 1/32 as many block-end states through
  :func:`log_scan_chunked`;
* :func:`scan_linear` (the one the model uses) needs no logarithm at all: a = σ(−gate) ∈ (0, 1) and
  b = σ(gate)·g(h̃) > 0 are formed directly and h_t = a_t·h_{t−1} + b_t is evaluated as written, blocks of
  16 steps at a time with the block-end states carried by the same recurrence one level up
  (:func:`linear_scan`). Only products and sums of positive numbers, so it is as stable as the
  token-by-token recurrence at any length, and with an exact hand-written backward (the same recurrence
  run backwards) it is ~4× faster than :func:`scan` forward and backward on CPU and needs 2–3 passes over
  memory instead of ~25 element-wise ops. It also continues from a given state (``h0``), which lets
  inference take a long sequence piece by piece (:meth:`MinGRU.resume`).

Without autograd on CPU in fp32, :meth:`MinGRU.scan_piece` hands the recurrence to the fused kernel of
:mod:`~vitkit.models.scan_kernel` when numba is installed (one pass over memory instead of ~11; ~3× faster
per piece), and to :func:`scan_linear` otherwise.

All three agree with the token-by-token recurrence to ~1e-4 relative in fp32 on 65k tokens (tests;
:func:`scan_linear` to ~4e-7). Memory is O(L·D), like the activations themselves. Own code rather than a
dependency: the published package (minGRU-pytorch) runs the unchunked log-space scan.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import scan_kernel

DEFAULT_CHUNK = 256  # steps per log-space chunk
DEFAULT_BLOCK = 32  # steps per linear-space block of `scan`
LINEAR_BLOCK = 16  # steps per block of `linear_scan` (fastest of 16/32 on CPU, measured)
MAX_BLOCK_DECAY = 120.0  # each factor within e^60 (× g ≤ e^20): far below fp32's 3e38 after a 32-step sum


def g(v: Tensor) -> Tensor:
    """minGRU's positive candidate activation: v + 0.5 for v ≥ 0, σ(v) below (continuous at 0)."""
    return torch.where(v >= 0, v + 0.5, torch.sigmoid(v))


def log_g(v: Tensor) -> Tensor:
    """log g(v), computed without forming g(v) for negative v (−softplus(−v) = log σ(v))."""
    return torch.where(v >= 0, torch.log(F.relu(v) + 0.5), -F.softplus(-v))


def scan_sequential(gate: Tensor, hidden: Tensor) -> Tensor:
    """Reference recurrence, one token at a time. gate, hidden (B, L, D) → h (B, L, D). For tests."""
    z, keep = torch.sigmoid(gate), torch.sigmoid(-gate)  # keep = 1 − z without cancellation at large gates
    cand = g(hidden)
    h = torch.zeros_like(cand[:, 0])
    out = []
    for t in range(gate.shape[1]):
        h = keep[:, t] * h + z[:, t] * cand[:, t]
        out.append(h)
    return torch.stack(out, 1)


def log_scan(log_a: Tensor, log_b: Tensor, dim: int = 1) -> tuple[Tensor, Tensor]:
    """Heinsen's scan of h_t = a_t·h_{t−1} + b_t from h_0 = 0, in log space along ``dim``.

    Returns (log h, a*) where a* = cumsum(log a) (needed to carry a state in from the left).
    """
    a_star = log_a.cumsum(dim)
    return a_star + torch.logcumsumexp(log_b - a_star, dim), a_star


def _log_coefficients(gate: Tensor, hidden: Tensor) -> tuple[Tensor, Tensor, torch.dtype]:
    """(log a, log b) in fp32 (fp64 for fp64 input) and the dtype to return in."""
    if gate.shape != hidden.shape or gate.dim() != 3:
        raise ValueError(f"gate and hidden must both be (B, L, D), got {tuple(gate.shape)} and {tuple(hidden.shape)}")
    dtype = gate.dtype
    work = torch.float64 if dtype == torch.float64 else torch.float32
    gate, hidden = gate.to(work), hidden.to(work)
    log_a = -F.softplus(gate)
    return log_a, log_a + gate + log_g(hidden), dtype  # log z = gate − softplus(gate)


def _pad_chunks(log_a: Tensor, log_b: Tensor, chunk: int) -> tuple[Tensor, Tensor, int]:
    """Pad (B, L, D) to a multiple of ``chunk`` and view as (B, n, chunk, D): a = 1, b ≈ 0 after the end,
    so the padded tail changes nothing before it (and is cut off)."""
    B, L, D = log_a.shape
    n = -(-L // chunk)
    if n * chunk != L:
        log_a = F.pad(log_a, (0, 0, 0, n * chunk - L))
        log_b = F.pad(log_b, (0, 0, 0, n * chunk - L), value=-1e30)
    return log_a.view(B, n, chunk, D), log_b.view(B, n, chunk, D), n


def log_scan_chunked(log_a: Tensor, log_b: Tensor, chunk: int = DEFAULT_CHUNK) -> Tensor:
    """log h (B, L, D) of h_t = a_t·h_{t−1} + b_t from log a, log b (B, L, D): Heinsen's scan inside chunks
    of ``chunk`` steps, the log state carried between chunks by a loop over (B, D) tensors."""
    if chunk < 1:
        raise ValueError(f"chunk={chunk}: must be ≥ 1")
    B, L, D = log_a.shape
    if L <= chunk:
        return log_scan(log_a, log_b)[0]
    la, lb, n = _pad_chunks(log_a, log_b, chunk)
    local, a_star = log_scan(la, lb, dim=2)  # (B, n, T, D), from a zero state in each chunk
    # state entering chunk k: c_k = logaddexp(A_{k−1} + c_{k−1}, local end of chunk k−1); no long cumsum
    carry = [local[:, 0, -1]]
    for k in range(1, n - 1):
        carry.append(torch.logaddexp(a_star[:, k, -1] + carry[-1], local[:, k, -1]))
    c = torch.stack(carry, 1).unsqueeze(2)  # (B, n−1, 1, D)
    rest = torch.logaddexp(local[:, 1:], a_star[:, 1:] + c)
    return torch.cat([local[:, :1], rest], 1).view(B, n * chunk, D)[:, :L]


def scan_log(gate: Tensor, hidden: Tensor, chunk: int = DEFAULT_CHUNK) -> Tensor:
    """The log-space scan alone (every step through logcumsumexp). gate, hidden (B, L, D) → h (B, L, D)."""
    log_a, log_b, dtype = _log_coefficients(gate, hidden)
    return log_scan_chunked(log_a, log_b, chunk).exp().to(dtype)


def scan(gate: Tensor, hidden: Tensor, chunk: int = DEFAULT_CHUNK, block: int = DEFAULT_BLOCK) -> Tensor:
    """Parallel minGRU scan. gate, hidden (B, L, D) → h (B, L, D) in the input dtype (see module doc).

    Blocks of ``block`` steps run in linear space around the block's middle decay c = A/2 (A = log of the
    block's total decay): h_t = e^(a*_t − c) · cumsum(b_s e^(c − a*_s)), both factors within e^(±A/2), so
    nothing overflows while |A| ≤ MAX_BLOCK_DECAY; a block that decays more (saturated gates) is redone in
    log space. The states at block ends are then scanned in log space (chunks of ``chunk`` steps) and
    carried into the blocks.
    """
    if chunk < 1 or block < 1:
        raise ValueError(f"chunk={chunk} and block={block} must be ≥ 1")
    log_a, log_b, dtype = _log_coefficients(gate, hidden)
    B, L, D = log_a.shape
    la, lb, n = _pad_chunks(log_a, log_b, block)
    a_star = la.cumsum(2)  # (B, n, T, D), ≤ 0, non-increasing within a block
    c = a_star[:, :, -1:] / 2
    h = (a_star - c).clamp(max=80).exp() * (lb - a_star + c).clamp(max=80).exp().cumsum(2)  # clamps: only
    bad = a_star[:, :, -1:] < -MAX_BLOCK_DECAY  # in blocks replaced here, keeping gradients finite
    if bool(bad.any()):
        h = torch.where(bad, log_scan(la, lb, dim=2)[0].exp(), h)
    if n > 1:  # state after block k (k < n − 1) from the block-level recurrence, then into block k + 1
        log_end = h[:, :-1, -1].clamp_min(torch.finfo(h.dtype).tiny).log()
        log_state = log_scan_chunked(a_star[:, :-1, -1], log_end, max(1, chunk // block))
        h = h + a_star.exp() * F.pad(log_state.exp(), (0, 0, 1, 0)).unsqueeze(2)
    return h.view(B, n * block, D)[:, :L].to(dtype)


def coefficients(gate: Tensor, hidden: Tensor) -> tuple[Tensor, Tensor, torch.dtype]:
    """(a, b) of the linear recurrence h_t = a_t·h_{t−1} + b_t: a = 1 − z = σ(−gate), b = z·g(h̃) = σ(gate)·g(h̃),
    each (B, L, D) in fp32 (fp64 for fp64 input), and the dtype to return in.

    a comes from σ(−gate), not 1 − σ(gate), which would round a to 0 for gates ≳ 17 in fp32. g is written
    relu(v) + σ(min(v, 0)) (= v + 0.5 for v ≥ 0, σ(v) below, bit for bit), which can run in place: without
    autograd the temporaries are reused, so a and b are the only new (B, L, D) tensors."""
    if gate.shape != hidden.shape or gate.dim() != 3:
        raise ValueError(f"gate and hidden must both be (B, L, D), got {tuple(gate.shape)} and {tuple(hidden.shape)}")
    dtype = gate.dtype
    work = torch.float64 if dtype == torch.float64 else torch.float32
    gate, hidden = gate.to(work), hidden.to(work)
    if torch.is_grad_enabled() and (gate.requires_grad or hidden.requires_grad):
        return torch.sigmoid(-gate), torch.sigmoid(gate) * (F.relu(hidden) + torch.sigmoid(hidden.clamp(max=0))), dtype
    a = torch.neg(gate).sigmoid_()
    b = hidden.clamp(max=0).sigmoid_().add_(hidden.clamp(min=0))
    return a, b.mul_(torch.sigmoid(gate)), dtype


def _scan_blocks(a: Tensor, b: Tensor, block: int, h0: Tensor | None = None) -> Tensor:
    """h (B, L, D) of h_t = a_t·h_{t−1} + b_t from h_{−1} = h0 (B, D) or 0, without autograd.

    The recurrence itself, evaluated in linear space: within blocks of ``block`` steps a loop over the
    steps runs all blocks at once (each step one fused multiply-add over (B, n, D)); the states at block
    ends follow the same recurrence one level up (factor = the block's product of a, recursively); a
    second loop then carries each block's entering state c through the block (c ← a_t·c, h_t += c).
    Every quantity is a product or sum of numbers in [0, 1] and of positive b, so nothing overflows or
    cancels at any length (an underflowing product is an exact 0 to fp32 precision)."""
    B, L, D = a.shape
    h = torch.empty_like(b)
    n = L // block
    if n <= 1:  # short: step by step
        hs, as_, bs = h.unbind(1), a.unbind(1), b.unbind(1)
        if h0 is None:
            hs[0].copy_(bs[0])
        else:
            torch.addcmul(bs[0], as_[0], h0, out=hs[0])
        for t in range(1, L):
            torch.addcmul(bs[t], as_[t], hs[t - 1], out=hs[t])
        return h
    m = n * block
    av, bv, hv = (t[:, :m].view(B, n, block, D) for t in (a, b, h))
    A, Bs, Hs = av.unbind(2), bv.unbind(2), hv.unbind(2)  # per step: (B, n, D) views
    Hs[0].copy_(Bs[0])
    if h0 is not None:
        Hs[0][:, 0].addcmul_(A[0][:, 0], h0)
    for t in range(1, block):
        torch.addcmul(Bs[t], A[t], Hs[t - 1], out=Hs[t])
    ends = _scan_blocks(av.prod(2), hv[:, :, -1].contiguous(), block)  # (B, n, D): full state after each block
    c = ends[:, :-1]
    for t in range(block):  # blocks 1 … n−1 from their entering states
        c = A[t][:, 1:] * c
        Hs[t][:, 1:] += c
    for t in range(m, L):  # the tail after the last whole block
        torch.addcmul(b[:, t], a[:, t], h[:, t - 1], out=h[:, t])
    return h


class _LinearScan(torch.autograd.Function):
    """h = _scan_blocks(a, b) with the exact backward: the gradient g_t = ∂/∂h_t obeys the same recurrence
    run backwards, g_t = grad_t + a_{t+1}·g_{t+1}; then ∂/∂b_t = g_t and ∂/∂a_t = g_t·h_{t−1}."""

    @staticmethod
    def forward(ctx, a: Tensor, b: Tensor, block: int) -> Tensor:
        h = _scan_blocks(a.contiguous(), b.contiguous(), block)
        ctx.save_for_backward(a, h)
        ctx.block = block
        return h

    @staticmethod
    def backward(ctx, grad: Tensor):
        a, h = ctx.saved_tensors
        a_next = F.pad(a[:, 1:], (0, 0, 0, 1)).flip(1)  # a_{t+1} in reversed order (0 past the end)
        gh = _scan_blocks(a_next, grad.flip(1).contiguous(), ctx.block).flip(1)
        return gh * F.pad(h[:, :-1], (0, 0, 1, 0)), gh, None


def linear_scan(a: Tensor, b: Tensor, block: int = LINEAR_BLOCK, h0: Tensor | None = None) -> Tensor:
    """h_t = a_t·h_{t−1} + b_t along dim 1 of (B, L, D) tensors, from h_{−1} = ``h0`` (B, D) or 0.
    Differentiable in a and b (not with ``h0``, which only the no-grad chunked inference uses)."""
    if block < 2:
        raise ValueError(f"block={block}: must be ≥ 2")
    if h0 is not None:
        if torch.is_grad_enabled() and (a.requires_grad or b.requires_grad or h0.requires_grad):
            raise ValueError("linear_scan with an entering state h0 has no backward")
        return _scan_blocks(a.contiguous(), b.contiguous(), block, h0)
    if torch.is_grad_enabled() and (a.requires_grad or b.requires_grad):
        return _LinearScan.apply(a, b, block)
    return _scan_blocks(a.contiguous(), b.contiguous(), block)


def scan_linear(gate: Tensor, hidden: Tensor, block: int = LINEAR_BLOCK, h0: Tensor | None = None) -> Tensor:
    """Parallel minGRU scan in linear space (the one the model uses). gate, hidden (B, L, D) → h (B, L, D)
    in the input dtype, computed in fp32 (see :func:`coefficients`, :func:`linear_scan`). ``h0`` (B, D):
    the state entering the sequence (chunked inference), fp32."""
    a, b, dtype = coefficients(gate, hidden)
    return linear_scan(a, b, block, h0).to(dtype)


def chrono_bias(inner: int, memory: float, generator: torch.Generator | None = None) -> Tensor:
    """Gate bias (inner,) of the chrono initialisation (Tallec & Ollivier, "Can recurrent neural networks warp
    time?", 2018), written for minGRU: b = −log u, u ~ U[1, memory − 1]. With a zero input the update is
    z = σ(b) = 1/(1 + u), so channel c starts with a memory of 1/z = 1 + u tokens, spread over [2, memory]:
    some channels stay local, others carry context along a whole raster row or more from step 0."""
    u = torch.empty(inner).uniform_(1.0, max(memory - 1.0, 1.0), generator=generator)
    return -torch.log(u)


class MinGRU(nn.Module):
    """minGRU layer: x (B, L, dim) → (B, L, dim). ``expansion`` widens the recurrent state to
    ``int(dim · expansion)`` channels (2 in VisionGRU) with an output projection back to ``dim``.
    Linears without bias, as in the reference implementation. ``gate_memory`` > 0 adds a learnable bias
    (inner,) to the gate, chrono-initialised (:func:`chrono_bias`); 0 keeps the reference's gate. The scan is :func:`scan_linear`;
    ``chunk`` is kept for the log-space scans (:func:`scan`, :func:`scan_log`) and configs that set it."""

    def __init__(self, *, dim: int, expansion: float = 2.0, chunk: int = DEFAULT_CHUNK, block: int = LINEAR_BLOCK,
                 gate_memory: float = 0.0) -> None:
        super().__init__()
        inner = int(dim * expansion)
        if inner < 1:
            raise ValueError(f"dim={dim} × expansion={expansion} leaves no recurrent channel")
        if gate_memory != 0 and gate_memory < 2:
            raise ValueError(f"gate_memory={gate_memory}: 0 (no gate bias) or ≥ 2 tokens")
        self.chunk, self.block = chunk, block
        self.proj_in = nn.Linear(dim, 2 * inner, bias=False)
        self.proj_out = nn.Linear(inner, dim, bias=False) if inner != dim else nn.Identity()
        self.gate_memory = gate_memory
        self.gate_bias = nn.Parameter(chrono_bias(inner, gate_memory)) if gate_memory else None

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        """A state dict from before the gate bias existed (no ``gate_bias`` key) loads with a zero bias: the
        layer then computes what the checkpoint's layer computed (to float rounding)."""
        if self.gate_bias is not None and prefix + "gate_bias" not in state_dict:
            state_dict[prefix + "gate_bias"] = torch.zeros_like(self.gate_bias)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def gates(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x (B, L, dim) → (gate, hidden), each (B, L, inner)."""
        hidden, gate = self.proj_in(x).chunk(2, dim=-1)
        if self.gate_bias is not None:
            gate = gate + self.gate_bias.to(gate.dtype)
        return gate, hidden

    def forward(self, x: Tensor) -> Tensor:
        gate, hidden = self.gates(x)
        return self.proj_out(scan_linear(gate, hidden, self.block))

    def resume(self, x: Tensor, state: Tensor | None, reverse: bool = False) -> tuple[Tensor, Tensor]:
        """Continue the sequence: x (B, l, dim), ``state`` (B, inner) fp32 = h after the previous token (None
        at the start) → (output (B, l, dim), state after x's last token). ``reverse``: x is scanned from its last
        token to its first (the reversed sequence continued backwards; the output stays in x's order), so the
        state carries from a later piece to an earlier one. Without autograd (see :func:`linear_scan`); feeding
        a sequence piece by piece gives :meth:`forward` of the whole."""
        h, state = self.scan_piece(x, state, reverse)
        return self.proj_out(h), state

    def scan_piece(self, x: Tensor, state: Tensor | None, reverse: bool = False) -> tuple[Tensor, Tensor]:
        """:meth:`resume` without the output projection: (h (B, l, inner) in x's dtype, state (B, inner) fp32).
        On CPU in fp32 with a plain ``proj_in`` the recurrence runs in the fused kernel of
        :mod:`~vitkit.models.scan_kernel` when numba is installed (the same numbers to fp32 rounding)."""
        if scan_kernel.usable(x) and type(self.proj_in) is nn.Linear:
            bias = None if self.gate_bias is None else F.pad(self.gate_bias, (self.gate_bias.numel(), 0))
            return scan_kernel.fused_scan(F.linear(x, self.proj_in.weight, bias), state, reverse)
        if reverse:
            x = x.flip(1)
        gate, hidden = self.gates(x)
        a, b, dtype = coefficients(gate, hidden)
        del gate, hidden
        h = linear_scan(a, b, self.block, state)
        del a, b
        state = h[:, -1].clone()
        h = h.to(dtype)
        return (h.flip(1) if reverse else h), state
