"""minGRU (Feng et al., "Were RNNs all we needed?", 2024): a GRU whose gate and candidate depend on the
input only, so the recurrence is linear in h and can be trained in parallel.

    h̃_t, gate_t = Linear(x_t).chunk(2)          z_t = σ(gate_t)
    h_t = (1 − z_t) · h_{t−1} + z_t · g(h̃_t)     g(v) = v + 0.5 (v ≥ 0), σ(v) (v < 0);  h_0 = 0

g keeps every candidate positive, so h stays positive and the recurrence can run in log space
(Heinsen's scan): log a = −softplus(gate) = log(1 − z), log b = −softplus(−gate) + log g(h̃) = log(z·g),
a* = cumsum(log a), h = exp(a* + logcumsumexp(log b − a*)).

Why chunked: over a long sequence a* grows without bound (−0.7 per token at gate 0: −45,000 after 65k
tokens), and log h = a* + logcumsumexp(…) then subtracts two numbers of that size; in fp32 that loses
about |a*|·6e-8 absolute in log h, and bf16 keeps no digit at all. :func:`scan` therefore runs the
log-space scan inside chunks of ``chunk`` tokens (|a*| bounded by the chunk) and carries the log state
from chunk to chunk with a short sequential loop over (B, D) tensors, and it always computes in fp32
(fp64 for fp64 input) whatever the input dtype. Memory stays O(L·D), like the activations themselves.
Own code rather than a dependency: the published packages (minGRU-pytorch) run the unchunked scan.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

DEFAULT_CHUNK = 256


def g(v: Tensor) -> Tensor:
    """minGRU's positive candidate activation: v + 0.5 for v ≥ 0, σ(v) below (continuous at 0)."""
    return torch.where(v >= 0, v + 0.5, torch.sigmoid(v))


def log_g(v: Tensor) -> Tensor:
    """log g(v), computed without forming g(v) for negative v (−softplus(−v) = log σ(v))."""
    return torch.where(v >= 0, torch.log(F.relu(v) + 0.5), -F.softplus(-v))


def scan_sequential(gate: Tensor, hidden: Tensor) -> Tensor:
    """Reference recurrence, one token at a time. gate, hidden (B, L, D) → h (B, L, D). For tests."""
    z = torch.sigmoid(gate)
    cand = g(hidden)
    h = torch.zeros_like(cand[:, 0])
    out = []
    for t in range(gate.shape[1]):
        h = (1 - z[:, t]) * h + z[:, t] * cand[:, t]
        out.append(h)
    return torch.stack(out, 1)


def log_scan(log_a: Tensor, log_b: Tensor, dim: int = 1) -> tuple[Tensor, Tensor]:
    """Heinsen's scan of h_t = a_t·h_{t−1} + b_t from h_0 = 0, in log space along ``dim``.

    Returns (log h, a*) where a* = cumsum(log a) (needed to carry a state in from the left).
    """
    a_star = log_a.cumsum(dim)
    return a_star + torch.logcumsumexp(log_b - a_star, dim), a_star


def scan(gate: Tensor, hidden: Tensor, chunk: int = DEFAULT_CHUNK) -> Tensor:
    """Parallel minGRU scan. gate, hidden (B, L, D) → h (B, L, D) in the input dtype (see module doc)."""
    if gate.shape != hidden.shape or gate.dim() != 3:
        raise ValueError(f"gate and hidden must both be (B, L, D), got {tuple(gate.shape)} and {tuple(hidden.shape)}")
    if chunk < 1:
        raise ValueError(f"chunk={chunk}: must be ≥ 1")
    out_dtype = gate.dtype
    work = torch.float64 if gate.dtype == torch.float64 else torch.float32
    gate, hidden = gate.to(work), hidden.to(work)
    log_a = -F.softplus(gate)
    log_b = -F.softplus(-gate) + log_g(hidden)
    B, L, D = gate.shape
    if L <= chunk:
        return log_scan(log_a, log_b)[0].exp().to(out_dtype)
    n = -(-L // chunk)
    pad = n * chunk - L
    if pad:  # a = 1, b ≈ 0 after the end: the padded tail changes nothing before it and is cut off
        log_a = F.pad(log_a, (0, 0, 0, pad))
        log_b = F.pad(log_b, (0, 0, 0, pad), value=-1e30)
    local, a_star = log_scan(log_a.view(B, n, chunk, D), log_b.view(B, n, chunk, D), dim=2)  # (B, n, T, D)
    # state entering chunk k: c_k = logaddexp(A_{k−1} + c_{k−1}, local end of chunk k−1); no long cumsum
    carry = [local[:, 0, -1]]
    for k in range(1, n - 1):
        carry.append(torch.logaddexp(a_star[:, k, -1] + carry[-1], local[:, k, -1]))
    c = torch.stack(carry, 1).unsqueeze(2)  # (B, n−1, 1, D)
    rest = torch.logaddexp(local[:, 1:], a_star[:, 1:] + c)
    log_h = torch.cat([local[:, :1], rest], 1).view(B, n * chunk, D)[:, :L]
    return log_h.exp().to(out_dtype)


class MinGRU(nn.Module):
    """minGRU layer: x (B, L, dim) → (B, L, dim). ``expansion`` widens the recurrent state to
    ``int(dim · expansion)`` channels (2 in VisionGRU) with an output projection back to ``dim``.
    Linears without bias, as in the reference implementation."""

    def __init__(self, *, dim: int, expansion: float = 2.0, chunk: int = DEFAULT_CHUNK) -> None:
        super().__init__()
        inner = int(dim * expansion)
        if inner < 1:
            raise ValueError(f"dim={dim} × expansion={expansion} leaves no recurrent channel")
        self.chunk = chunk
        self.proj_in = nn.Linear(dim, 2 * inner, bias=False)
        self.proj_out = nn.Linear(inner, dim, bias=False) if inner != dim else nn.Identity()

    def gates(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x (B, L, dim) → (gate, hidden), each (B, L, inner)."""
        hidden, gate = self.proj_in(x).chunk(2, dim=-1)
        return gate, hidden

    def forward(self, x: Tensor) -> Tensor:
        gate, hidden = self.gates(x)
        return self.proj_out(scan(gate, hidden, self.chunk))
