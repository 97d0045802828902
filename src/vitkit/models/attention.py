"""The one multi-head self-attention of vitkit, with an explicit attention read-out.

The output always comes from the fused ``scaled_dot_product_attention`` path unless the full map is
requested. What a method may read out of a layer is chosen by ``Attention.readout``:

* ``None`` (default): nothing is kept.
* ``"cls"``: the CLS-to-token row ``softmax(q_cls · Kᵀ / √d)`` per head, shape (B, H, N). It costs
  O(N·d) time and O(N) memory on top of the fused path, whose output it does not touch.
* ``"full"``: the whole map ``softmax(Q Kᵀ / √d)``, shape (B, H, N, N). O(N²) memory: an explicit
  opt-in. The output is then computed from that map (same values up to float rounding).

``"keys"`` may be added to ``Attention.keep`` to keep the per-head keys (B, H, N, d), which token
merging uses as its similarity metric. Read-outs land in ``Attention.last`` (a dict) after each
forward; they are detached unless ``keep_grad`` is set (data-free quantization optimises through them).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

READOUTS = (None, "cls", "full")


def cls_attention(q: Tensor, k: Tensor, scale: float, bias: Tensor | None = None, index: int = 0) -> Tensor:
    """CLS-to-token attention row.

    q, k: (B, H, N, d); bias: additive logits broadcastable to (B, H, N, N) or None.
    Returns (B, H, N): softmax over keys of the query at ``index``.
    """
    logits = (q[:, :, index : index + 1] * scale) @ k.transpose(-2, -1)  # (B, H, 1, N)
    if bias is not None:
        logits = logits + (bias[..., index : index + 1, :] if bias.shape[-2] > 1 else bias)
    return logits.float().softmax(dim=-1).to(q.dtype).squeeze(-2)


def full_attention(q: Tensor, k: Tensor, scale: float, bias: Tensor | None = None) -> Tensor:
    """Full attention map (B, H, N, N). O(N²) memory."""
    logits = (q @ k.transpose(-2, -1)) * scale
    if bias is not None:
        logits = logits + bias
    return logits.float().softmax(dim=-1).to(q.dtype)


class Attention(nn.Module):
    """Multi-head self-attention with a fused qkv projection.

    ``qkv`` is one Linear (dim → 3·dim) laid out as [q; k; v], so adapters can target q, k or v
    inside it. Call with x (B, N, C); optional ``attn_bias`` is an additive float mask broadcastable
    to (B, H, N, N) (token merging's log-size, transferability biases, padding) and ``is_causal``
    for text towers.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        qkv_bias: bool = True,
        proj_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
    ) -> None:
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim, bias=proj_bias)
        self.attn_drop = attn_drop
        self.proj_drop = nn.Dropout(proj_drop)
        # read-out knobs (plain attributes, set by methods or by ``set_readout``)
        self.readout: str | None = None
        self.keep: set[str] = set()
        self.keep_grad: bool = False
        self.last: dict[str, Tensor] = {}
        # opt-in hook (quantization): when set, the map is computed explicitly and its probabilities
        # (B, H, N, N) pass through this callable before multiplying V; None = fused SDPA path
        self.attn_map_fn: Callable[[Tensor], Tensor] | None = None

    def forward(self, x: Tensor, attn_bias: Tensor | None = None, is_causal: bool = False) -> Tensor:
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # (B, H, N, d)
        drop = self.attn_drop if self.training else 0.0

        explicit = self.readout is not None or self.attn_map_fn is not None
        if explicit and is_causal:  # explicit read-outs see the causal mask too
            causal = torch.full((N, N), float("-inf"), device=x.device, dtype=q.dtype).triu(1)
            read_bias = causal if attn_bias is None else attn_bias + causal
        else:
            read_bias = attn_bias
        if self.readout == "full" or self.attn_map_fn is not None:
            attn = full_attention(q, k, self.scale, read_bias)  # (B, H, N, N)
            if self.readout == "full":
                self._store("attn", attn)
            elif self.readout == "cls":
                self._store("cls_attn", attn[:, :, 0])
            if self.attn_map_fn is not None:
                attn = self.attn_map_fn(attn)
            out = F.dropout(attn, drop, self.training) @ v
        else:
            if attn_bias is not None and attn_bias.dtype != q.dtype:
                attn_bias = attn_bias.to(q.dtype)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_bias, dropout_p=drop, is_causal=is_causal)
            if self.readout == "cls":
                self._store("cls_attn", cls_attention(q, k, self.scale, read_bias))
        if "keys" in self.keep:
            self._store("keys", k)
        out = out.transpose(1, 2).reshape(B, N, C)  # (B, N, C)
        return self.proj_drop(self.proj(out))

    def _store(self, name: str, t: Tensor) -> None:
        self.last[name] = t if self.keep_grad else t.detach()

    def set_readout(self, readout: str | None, keep_grad: bool = False) -> None:
        if readout not in READOUTS:
            raise ValueError(f"readout must be one of {READOUTS}, got {readout!r}")
        self.readout = readout
        self.keep_grad = keep_grad
        self.last = {}
