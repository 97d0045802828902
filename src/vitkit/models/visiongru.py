"""VisionGRU (Yin et al., 2024): a four-stage backbone whose token mixer is two minGRUs over the raster
sequence of the feature map, one forward and one over the reversed raster. Cost and memory are linear in
the number of pixels (no N×N attention), and any input size works (the public code hard-codes 56×56).

    stem    3×3/2 conv → LN → GELU → 3×3/2 conv → LN                     (B, 3, H, W) → (B, H/4, W/4, C0)
    stage i (i > 0: 3×3/2 conv → LN), then depths[i] × Block2DGRU       → (B, H/2^(i+2), W/2^(i+2), Ci)
    head    LN → mean over positions → Linear

Block2DGRU: x + fwd(s) + rev(s) with s = dwconv3×3(LN(x)) read in raster order (row by row), fwd = minGRU
over s, rev = minGRU over s reversed (= the raster of the map flipped over H and W), flipped back; then
x + MLP(LN(x)). vitkit adds the final LayerNorm before pooling (the reference pools the raw residual
stream); it makes from-scratch training on small data steadier and mirrors the ViT's final norm.

Inference without autograd (eval mode, ``torch.no_grad``/``inference_mode``) takes a cheaper route to the
same numbers: the stem and each block's dwconv(LN(x)) in bands of rows, each minGRU over the sequence in
pieces of ``infer_piece`` // C tokens with its state carried from piece to piece (the reversed one from
the end), the MLP piece by piece, the residual written into the map in place. Only a couple of
whole-map tensors are alive at once, and a piece's work stays in the CPU's cache; at 1024 px this cut
the peak tensor memory of visiongru_micro from 170 to 22.5 MiB and, with the linear-space scan, the time
by ~2.3× (benchmarks/RESULTS.md). On CPU in fp32 with numba installed (``vitkit[fast]``) each piece's
recurrence runs in the fused kernel of :mod:`~vitkit.models.scan_kernel` (the reversed branch scans its
pieces backwards in place, no flipped copies) and the output projection accumulates into the map in place:
another 1.36× at 1024 px. Training (autograd on) runs whole sequences, as before.

Initialisation (measured on FRB crops, benchmarks/RESULTS.md). minGRU's candidate g(h̃) is positive
(≈ 0.5 at h̃ ≈ 0), so at initialisation most of a mixer's output is one vector shared by every token and
image; the token-dependent part is what the network can learn from. With the ViT's std-0.02 Linears at
these small widths that part is ~2–4% of the output and every update gate sits at z ≈ 0.5 (a memory of ~2
tokens): training sat at chance for ~50 steps. So the Linears keep torch's default init, as the public
code's do (``linear_init="torch"``), and each minGRU has a learnable gate bias with the chrono init
(``gate_memory``, :func:`~vitkit.models.mingru.chrono_bias`): at a zero input channel c starts with a memory
spread over [2, ``gate_memory``] tokens, some local, some spanning rows. Configs written before the bias
existed load without it (:meth:`VisionGRUConfig.from_dict`), and a state dict without ``gate_bias`` loads
with a zero bias, which computes what the old layer computed (to float rounding).

Same feature API as :class:`~vitkit.models.vit.VisionTransformer`: ``forward_features`` → final-normed
tokens (B, N, C) of the last stage, ``forward_head``, ``forward_intermediates`` (per stage, NCHW or NLC),
``preprocess``; ``attention_readout`` refuses (there is no attention).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import config_from_dict
from .mingru import DEFAULT_CHUNK, MinGRU
from .surgery import reset_head
from .vit import DropPath, Mlp

log = logging.getLogger(__name__)

NO_ATTENTION = (
    "VisionGRU has no attention: attention read-outs and the methods built on them (HiRED, ToMe, EViT, "
    "rollout, SPDFQ/PSAQ synthesis) need a VisionTransformer"
)


@dataclass
class VisionGRUConfig:
    """Architecture of a :class:`VisionGRU`. ``img_size`` (height, width) is only the default input size
    (preprocessing, FLOP counts): the network itself takes any size."""

    img_size: tuple[int, int] = (224, 224)
    in_chans: int = 3
    dims: tuple[int, ...] = (72, 144, 288, 576)  # channels per stage (paper's Ti)
    depths: tuple[int, ...] = (2, 2, 8, 2)  # Block2DGRU per stage
    expansion: float = 2.0  # minGRU recurrent width / channels (public code: 2)
    mlp_ratio: float = 4.0  # MLP hidden / channels
    norm_eps: float = 1e-6
    scan_chunk: int = DEFAULT_CHUNK  # only for the log-space reference scans (mingru.py); kept so configs load
    infer_piece: int = 2**17  # tokens × channels per piece of the no-grad path: bounds its working memory, in cache
    drop_path_rate: float = 0.0  # stochastic depth, linear over all blocks
    linear_init: str = "torch"  # "torch": U(±1/√fan_in), the public code's; "trunc_normal": std 0.02, the ViT's
    gate_memory: float = 64.0  # > 0: learnable gate bias, chrono init: memories spread over [2, gate_memory] tokens
    num_classes: int = 0  # 0 = features only
    family: str = "visiongru"  # informational, picks the default preprocessing
    labels: list[str] | None = None  # class names for the head, if known

    def __post_init__(self) -> None:
        if isinstance(self.img_size, int):
            self.img_size = (self.img_size, self.img_size)
        self.img_size = tuple(int(s) for s in self.img_size)  # type: ignore[assignment]
        self.dims = tuple(int(d) for d in self.dims)
        self.depths = tuple(int(d) for d in self.depths)
        if not self.dims or len(self.dims) != len(self.depths):
            raise ValueError(f"dims {self.dims} and depths {self.depths} must be non-empty and of equal length")
        if any(d < 2 for d in self.dims) or any(d < 0 for d in self.depths):
            raise ValueError(f"dims must be ≥ 2 and depths ≥ 0, got dims {self.dims}, depths {self.depths}")
        if self.expansion <= 0 or self.mlp_ratio <= 0:
            raise ValueError(f"expansion ({self.expansion}) and mlp_ratio ({self.mlp_ratio}) must be > 0")
        if self.linear_init not in ("trunc_normal", "torch"):
            raise ValueError(f"linear_init={self.linear_init!r}: 'trunc_normal' or 'torch'")
        if self.gate_memory != 0 and self.gate_memory < 2:
            raise ValueError(f"gate_memory={self.gate_memory}: 0 (no gate bias) or ≥ 2 tokens")
        if self.scan_chunk < 1 or self.infer_piece < 1:
            raise ValueError(f"scan_chunk={self.scan_chunk} and infer_piece={self.infer_piece} must be ≥ 1")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["img_size"] = list(self.img_size)
        d["dims"], d["depths"] = list(self.dims), list(self.depths)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> VisionGRUConfig:
        """Config from a dict (checkpoint metadata). A dict without ``gate_memory`` was written before the gate
        bias existed: it describes a model without one (0), so old checkpoints load and compute as saved."""
        return config_from_dict(cls, {"gate_memory": 0.0, **d})


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of an NCHW map (B, C, H, W) → (B, C, H, W)."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def conv_rows(conv: nn.Conv2d, band: Tensor, start: int, height: int, r0: int, r1: int) -> Tensor:
    """Output rows [r0, r1) (B, C_out, r1 − r0, W') of ``conv`` (3×3, padding 1, any stride s) over a map of
    ``height`` rows, given ``band`` (B, C, h, W) = its rows [start, start + h), which must cover the input rows
    s·r0 − 1 … s·(r1 − 1) + 1 that lie inside the map; rows outside it are the conv's zero padding."""
    if conv.kernel_size != (3, 3) or conv.padding != (1, 1):
        raise ValueError(f"conv_rows needs a 3×3 conv with padding 1, got {conv}")
    s = conv.stride[0]
    lo, hi = s * r0 - 1, s * (r1 - 1) + 2
    part = F.pad(band[:, :, max(lo, 0) - start : min(hi, height) - start], (0, 0, max(0, -lo), max(0, hi - height)))
    return F.conv2d(part, conv.weight, conv.bias, conv.stride, (0, 1), conv.dilation, conv.groups)


def stem_pieces(stem: nn.Sequential, x: Tensor, piece: int) -> Tensor:
    """The stem (conv/2 → LN → GELU → conv/2 → LN) of images x (B, C, H, W) computed in bands of output rows,
    each needing ≈ ``piece`` elements per image of first-conv output: the full-size first-conv map (4× the
    stem's output) is never held. Returns (B, C0, H/4, W/4), channels-last in memory like the stem's."""
    conv1, norm1, act, conv2, norm2 = stem
    B, _, H, W = x.shape
    H1, W1 = -(-H // 2), -(-W // 2)
    H2, W2 = -(-H1 // 2), -(-W1 // 2)
    out = x.new_empty(B, H2, W2, conv2.out_channels)
    rows = max(1, piece // (2 * W1 * conv1.out_channels))
    for r0 in range(0, H2, rows):
        r1 = min(r0 + rows, H2)
        q0, q1 = max(2 * r0 - 1, 0), min(2 * r1, H1)  # first-conv rows that the second conv's rows read
        t = act(norm1(conv_rows(conv1, x, 0, H, q0, q1)))
        out[:, r0:r1] = norm2(conv_rows(conv2, t, q0, H1, r0, r1)).permute(0, 2, 3, 1)
    return out.permute(0, 3, 1, 2)


def raster(x: Tensor) -> Tensor:
    """(B, H, W, C) map → (B, H·W, C) sequence, row by row."""
    return x.reshape(x.shape[0], -1, x.shape[-1])


class Block2DGRU(nn.Module):
    """Channels-last block: x (B, H, W, C) → (B, H, W, C). See the module docstring."""

    def __init__(self, *, dim: int, expansion: float, mlp_ratio: float, norm_eps: float, chunk: int,
                 drop_path: float = 0.0, infer_piece: int = 2**17, gate_memory: float = 0.0) -> None:
        super().__init__()
        self.infer_piece = infer_piece  # tokens × channels per piece of forward_pieces
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.dwconv = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.gru_fwd = MinGRU(dim=dim, expansion=expansion, chunk=chunk, gate_memory=gate_memory)
        self.gru_rev = MinGRU(dim=dim, expansion=expansion, chunk=chunk, gate_memory=gate_memory)
        self.drop_path1 = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.drop_path2 = DropPath(drop_path)

    def mixer_input(self, x: Tensor) -> Tensor:
        """dwconv(LN(x)) of x (B, H, W, C), channels-last (B, H, W, C)."""
        return self.dwconv(self.norm1(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1)

    def branches(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The two scans of LN → dwconv of x (B, H, W, C): (forward raster, reversed raster), each (B, H, W, C)."""
        y = self.mixer_input(x)
        seq = raster(y)
        fwd = self.gru_fwd(seq)
        rev = self.gru_rev(seq.flip(1)).flip(1)
        return fwd.view_as(y), rev.view_as(y)

    def forward(self, x: Tensor, inplace: bool = False) -> Tensor:
        """x (B, H, W, C) → (B, H, W, C). ``inplace``: the caller gives x up, so that the no-grad path may
        write its output into x (a whole-map tensor less at the peak); the autograd path ignores it."""
        if self.streams():
            return self.forward_pieces(x, inplace)
        fwd, rev = self.branches(x)
        x = x + self.drop_path1(fwd + rev)
        return x + self.drop_path2(self.mlp(self.norm2(x)))

    def streams(self) -> bool:
        """Whether :meth:`forward` takes :meth:`forward_pieces`: without autograd, in eval mode (no drop
        path), and with plain Linears — quantization wrappers observe and scale whole tensors, so a
        quantized block keeps the whole-sequence path and calibrates exactly as before."""
        linears = (self.gru_fwd.proj_in, self.gru_fwd.proj_out, self.gru_rev.proj_in, self.gru_rev.proj_out,
                   self.mlp.fc1, self.mlp.fc2)
        return (not torch.is_grad_enabled() and not self.training
                and all(type(m) in (nn.Linear, nn.Identity) for m in linears))

    @torch.no_grad()
    def forward_pieces(self, x: Tensor, inplace: bool = False) -> Tensor:
        """:meth:`forward` (eval mode) of x (B, H, W, C), the sequence taken ``infer_piece`` // C tokens at a time:
        dwconv(LN(x)) is built in bands of rows; each minGRU carries its state from piece to piece (the
        reversed one from the last piece back) and adds into the output; the MLP runs piece by piece in
        place. Alive besides x: dwconv(LN(x)), the output unless ``inplace`` (each B·H·W·C), and one piece's
        projections and scan (which stay in cache) — not several (B, H·W, 2·C) tensors of the whole map."""
        B, H, W, C = x.shape
        L, step = H * W, max(1, self.infer_piece // C)
        seq = x.new_empty(B, H, W, C)
        rows = max(1, self.infer_piece // (W * C))
        for r0 in range(0, H, rows):
            r1, lo = min(r0 + rows, H), max(r0 - 1, 0)
            band = self.norm1(x[:, lo : min(r1 + 1, H)]).permute(0, 3, 1, 2)
            seq[:, r0:r1] = conv_rows(self.dwconv, band, lo, H, r0, r1).permute(0, 2, 3, 1)
        seq = raster(seq)
        out = raster(x) if inplace and x.is_contiguous() else raster(x).clone()
        starts = range(0, L, step)
        for gru, order in ((self.gru_fwd, starts), (self.gru_rev, reversed(starts))):
            state = None
            proj = gru.proj_out
            # batch 1, a plain Linear, no autocast: accumulate the projection into the map in place
            in_place = B == 1 and type(proj) is nn.Linear and not torch.is_autocast_enabled(out.device.type)
            for s in order:
                h, state = gru.scan_piece(seq[:, s : s + step], state, reverse=gru is self.gru_rev)
                if in_place and h.dtype == out.dtype == proj.weight.dtype:
                    out[0, s : s + step].addmm_(h[0], proj.weight.t())
                else:
                    out[:, s : s + step] += proj(h)
        del seq
        for s in starts:
            piece = out[:, s : s + step]
            piece += self.mlp(self.norm2(piece))
        return out.view(B, H, W, C)


class Stage(nn.Module):
    """Optional 3×3/2 conv + LN, then blocks. (B, C_in, H, W) → channels-last (B, H', W', C)."""

    def __init__(self, *, cfg: VisionGRUConfig, index: int, drop_paths: Sequence[float]) -> None:
        super().__init__()
        dim = cfg.dims[index]
        self.downsample = (
            nn.Sequential(nn.Conv2d(cfg.dims[index - 1], dim, 3, stride=2, padding=1), LayerNorm2d(dim, eps=cfg.norm_eps))
            if index > 0 else nn.Identity()
        )
        self.blocks = nn.ModuleList([
            Block2DGRU(dim=dim, expansion=cfg.expansion, mlp_ratio=cfg.mlp_ratio, norm_eps=cfg.norm_eps,
                       chunk=cfg.scan_chunk, drop_path=p, infer_piece=cfg.infer_piece,
                       gate_memory=cfg.gate_memory)
            for p in drop_paths
        ])

    def forward(self, x: Tensor, owned: bool = False) -> Tensor:
        """``owned``: the caller gives x up (the blocks' no-grad path may then update it in place)."""
        owned = owned or not isinstance(self.downsample, nn.Identity)  # the downsample's output is ours
        x = self.downsample(x).permute(0, 2, 3, 1)
        for blk in self.blocks:
            x = blk(x, inplace=owned)
            owned = True
        return x


class VisionGRU(nn.Module):
    """VisionGRU backbone with the ViT's feature API. Input (B, C, H, W), any H, W ≥ 1."""

    def __init__(self, cfg: VisionGRUConfig | None = None, **kwargs) -> None:
        super().__init__()
        if cfg is None:
            cfg = VisionGRUConfig(**kwargs)
        elif kwargs:
            cfg = VisionGRUConfig.from_dict({**cfg.to_dict(), **kwargs})
        self.cfg = cfg
        d0 = cfg.dims[0]
        self.stem = nn.Sequential(
            nn.Conv2d(cfg.in_chans, d0 // 2, 3, stride=2, padding=1), LayerNorm2d(d0 // 2, eps=cfg.norm_eps), nn.GELU(),
            nn.Conv2d(d0 // 2, d0, 3, stride=2, padding=1), LayerNorm2d(d0, eps=cfg.norm_eps),
        )
        total = sum(cfg.depths)
        dpr = [cfg.drop_path_rate * i / max(total - 1, 1) for i in range(total)]
        starts = [sum(cfg.depths[:i]) for i in range(len(cfg.depths))]
        self.stages = nn.ModuleList([
            Stage(cfg=cfg, index=i, drop_paths=dpr[s : s + n]) for i, (s, n) in enumerate(zip(starts, cfg.depths, strict=True))
        ])
        self.embed_dim = cfg.dims[-1]
        self.num_features = cfg.dims[-1]
        self.norm = nn.LayerNorm(self.num_features, eps=cfg.norm_eps)
        self.head = nn.Linear(self.num_features, cfg.num_classes) if cfg.num_classes else nn.Identity()
        self.preprocess = None  # a vitkit.data.PreprocessConfig, set by create_model / load
        self.init_weights()

    def init_weights(self) -> None:
        """Linears per ``cfg.linear_init``: truncated normal (std 0.02) with zero biases, or torch's default
        (as constructed); convs and norms keep torch's defaults."""
        if self.cfg.linear_init == "torch":
            return
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    @property
    def num_stages(self) -> int:
        return len(self.stages)

    def feature_grid(self, height: int, width: int) -> tuple[int, int]:
        """Grid (rows, cols) of the last stage for an input of the given size (each conv halves, rounding up)."""
        for _ in range(2 + self.num_stages - 1):
            height, width = -(-height // 2), -(-width // 2)
        return height, width

    def _check_input(self, x: Tensor) -> None:
        if x.dim() != 4 or x.shape[1] != self.cfg.in_chans:
            raise ValueError(f"VisionGRU expects (B, {self.cfg.in_chans}, H, W) images, got {tuple(x.shape)}")

    def run_stem(self, x: Tensor) -> Tensor:
        """The stem of images (B, C, H, W); without autograd in eval mode in bands (:func:`stem_pieces`), the
        way the blocks then take their sequences in pieces (:meth:`Block2DGRU.streams`)."""
        plain = all(type(m) in (nn.Conv2d, LayerNorm2d, nn.GELU) for m in self.stem)
        if plain and not torch.is_grad_enabled() and not self.training:
            return stem_pieces(self.stem, x, self.cfg.infer_piece)
        return self.stem(x)

    def forward_features(self, x: Tensor) -> Tensor:
        """Images (B, C, H, W) → final-normed last-stage tokens (B, N, C_last), N = rows·cols in raster order."""
        self._check_input(x)
        x = self.run_stem(x)
        for stage in self.stages:
            x = stage(x, owned=True).permute(0, 3, 1, 2)
        return self.norm(raster(x.permute(0, 2, 3, 1)))

    def forward_intermediates(
        self,
        x: Tensor,
        indices: int | Sequence[int] | None = None,
        *,
        norm: bool = False,
        output_fmt: str = "NCHW",
        prefix_tokens: bool = True,
        stop_early: bool = False,
    ) -> tuple[Tensor | None, list[Tensor]]:
        """Outputs of chosen stages.

        ``indices``: stage indices (negative allowed) or an int n = the last n stages; None = all.
        ``output_fmt`` "NCHW" → (B, C_i, H_i, W_i) maps; "NLC" → (B, H_i·W_i, C_i) raster tokens.
        ``norm`` applies the final norm to the last stage's output (the only stage that has one).
        ``prefix_tokens`` is accepted for API parity (there are none). With ``stop_early`` the stages
        after the last index are skipped and the final output is None.
        """
        if output_fmt not in ("NLC", "NCHW"):
            raise ValueError(f"output_fmt must be 'NLC' or 'NCHW', got {output_fmt!r}")
        take = self._stage_indices(indices)
        self._check_input(x)
        last = max(take) if (stop_early and take) else self.num_stages - 1
        out: list[Tensor] = []
        x = self.run_stem(x)
        y = x.permute(0, 2, 3, 1)
        for i, stage in enumerate(self.stages[: last + 1]):
            y = stage(x, owned=True)  # (B, H, W, C); the stem output is not returned, so stage 0 may reuse it
            x = y.permute(0, 3, 1, 2)
            if i in take:
                z = self.norm(y) if (norm and i == self.num_stages - 1) else y
                out.append(z.permute(0, 3, 1, 2) if output_fmt == "NCHW" else raster(z))
        final = self.norm(raster(y)) if last == self.num_stages - 1 else None
        return final, out

    def _stage_indices(self, indices: int | Sequence[int] | None) -> list[int]:
        n = self.num_stages
        if indices is None:
            return list(range(n))
        if isinstance(indices, int):
            if not 1 <= indices <= n:
                raise ValueError(f"indices={indices}: as a count it must be in [1, {n}]")
            return list(range(n - indices, n))
        out = []
        for i in indices:
            if not -n <= i < n:
                raise ValueError(f"indices contains {i}, outside [-{n}, {n - 1}] for {n} stages")
            out.append(i % n)
        return out

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """Tokens (B, N, C) → logits (B, num_classes), or the pooled features (B, C) if ``pre_logits``."""
        x = x.mean(1)
        return x if pre_logits else self.head(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))

    def reset_classifier(self, num_classes: int, labels: Sequence[str] | None = None) -> None:
        """A fresh ``num_classes``-way head (0 = features only); ``cfg.num_classes`` and ``cfg.labels`` follow."""
        reset_head(self, num_classes, labels)

    def attention_readout(self, *args, **kwargs):
        """Refuses: there is no attention to read (``ValueError``, one line)."""
        raise ValueError(NO_ATTENTION)

