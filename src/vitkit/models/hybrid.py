"""The evidence-map hybrid CNN-Transformer (Djoumessi et al., "self-explainable" fully convolutional
CNN-Transformer, MICCAI-IMIMIC 2025): interpretable by design, every class logit is the spatial mean
of that class's evidence map, so one forward pass gives the prediction and its maps.

Architecture (own code: the public release builds on torchvision's ResNet/BagNet, which vitkit does
not depend on; choices where the paper is silent are marked "choice"):

* trunk: a small ResNet stage stack (3×3 stem, then per stage ``trunk_depths[i]`` basic residual
  blocks of ``trunk_widths[i]`` channels, the first of each stage after the first with stride 2;
  BatchNorm), then a 1×1 conv to ``dim`` channels. Output (B, dim, h, w), h = H / ``stride``.
  ``trunk="bagnet"`` keeps the same stages but, as BagNet does, only the first conv of each stage's
  first block is 3×3 and every other conv is 1×1, so a grid cell sees a small patch of the image
  (:attr:`HybridConfig.trunk_receptive_field`: 19 px for three one-block stages at stride 8, against
  47 px for the ResNet stack); the attention blocks then mix only within their windows.
* ``depth`` dual-resolution blocks on the grid: windowed self-attention over ``window`` consecutive
  flattened positions (row-major; the last window padded and masked), q and k L2-normalised and
  scaled by a learnable per-head temperature (choice: init 10, clamped to ≤ 100); a low-resolution
  branch (max-pool ×2 → its own windowed attention → transposed conv ×2) added to the
  high-resolution one; 1×1 projection, residual, LayerNorm over channels, gated depth-wise-conv
  feed-forward (Restormer's GDFN: 1×1 → 3×3 depth-wise → GELU gate → 1×1) with residual.
* head: a 1×1 conv to one evidence map per class (B, K, h, w) (held as a Linear over channels, the
  same map); logits = spatial mean of each map.
* loss: :func:`evidence_loss` = cross-entropy (multi-label: BCE summed over classes) + ``l1_weight`` (8e-6) · L1
  of the maps over the whole batch (the released train.py takes only the first sample's maps).

Feature API as the ViT: ``forward_features`` → tokens (B, h·w, dim) (no prefix tokens),
``forward_head``, ``forward_intermediates``; plus :meth:`HybridCNNTransformer.evidence`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import config_from_dict
from .surgery import reset_head

MAX_LOG_TEMP = math.log(100.0)
TRUNKS = ("resnet", "bagnet")


def block_stride(stage: int, block: int) -> int:
    """Stride of a trunk block: 2 for the first block of every stage after the first, else 1."""
    return 2 if (stage > 0 and block == 0) else 1


def block_kernels(trunk: str, *, first: bool) -> tuple[int, int]:
    """Kernel sizes of a basic block's two convs: 3×3 both (ResNet); BagNet keeps a 3×3 only as the
    first conv of a stage's first block, which bounds the receptive field."""
    if trunk == "bagnet":
        return (3 if first else 1, 1)
    return (3, 3)


@dataclass
class HybridConfig:
    """Architecture of a :class:`HybridCNNTransformer`. ``img_size`` is (height, width)."""

    img_size: tuple[int, int] = (224, 224)  # nominal input (any size divisible by the stride works)
    in_chans: int = 3
    num_classes: int = 0  # evidence maps; 0 = features only
    trunk_widths: tuple[int, ...] = (32, 64, 128)  # channels per ResNet stage
    trunk_depths: tuple[int, ...] = (1, 1, 1)  # basic blocks per stage
    stem_stride: int = 2  # the stem's stride; stages after the first halve again
    trunk: str = "resnet"  # "resnet": 3×3 convs throughout; "bagnet": 3×3 only where a stage starts (small receptive field)
    dim: int = 128  # width of the attention blocks
    depth: int = 2  # dual-resolution blocks
    num_heads: int = 4
    window: int = 8  # consecutive flattened positions per attention window (paper: 8–10)
    ffn_expansion: float = 2.0  # GDFN hidden = expansion · dim
    temperature_init: float = 10.0  # initial attention temperature for the L2-normalised q·k
    l1_weight: float = 8e-6  # sparsity weight on the evidence maps (paper)
    family: str = "hybrid"  # informational
    labels: list[str] | None = None  # class names for the head, if known

    def __post_init__(self) -> None:
        if isinstance(self.img_size, int):
            self.img_size = (self.img_size, self.img_size)
        self.img_size = tuple(int(s) for s in self.img_size)  # type: ignore[assignment]
        self.trunk_widths = tuple(int(w) for w in self.trunk_widths)
        self.trunk_depths = tuple(int(d) for d in self.trunk_depths)
        if len(self.trunk_widths) != len(self.trunk_depths) or not self.trunk_widths:
            raise ValueError(f"trunk_widths {self.trunk_widths} and trunk_depths {self.trunk_depths} must be "
                             "non-empty and of the same length")
        if self.dim % self.num_heads:
            raise ValueError(f"dim {self.dim} is not divisible by num_heads {self.num_heads}")
        if self.trunk not in TRUNKS:
            raise ValueError(f"trunk must be one of {TRUNKS}, got {self.trunk!r}")
        if self.window < 1 or self.depth < 1:
            raise ValueError(f"window ({self.window}) and depth ({self.depth}) must be ≥ 1")

    @property
    def stride(self) -> int:
        return self.stem_stride * 2 ** (len(self.trunk_widths) - 1)

    @property
    def trunk_receptive_field(self) -> int:
        """Side in pixels of the image patch one trunk output cell sees (before the attention blocks)."""
        rf, jump = 3, self.stem_stride  # the 3×3 stem
        for i, n in enumerate(self.trunk_depths):
            for j in range(n):
                stride = block_stride(i, j)
                for k in block_kernels(self.trunk, first=j == 0):
                    rf += (k - 1) * jump
                    jump *= stride
                    stride = 1  # only the block's first conv is strided
        return rf

    def to_dict(self) -> dict:
        d = asdict(self)
        d["img_size"] = list(self.img_size)
        d["trunk_widths"], d["trunk_depths"] = list(self.trunk_widths), list(self.trunk_depths)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> HybridConfig:
        return config_from_dict(cls, d)


class BasicBlock(nn.Module):
    """ResNet basic block: two conv-BN (``kernels``, 3×3 by default), ReLU, residual (1×1 conv-BN
    shortcut on a shape change)."""

    def __init__(self, *, cin: int, cout: int, stride: int, kernels: tuple[int, int] = (3, 3)) -> None:
        super().__init__()
        k1, k2 = kernels
        self.conv1 = nn.Conv2d(cin, cout, k1, stride, k1 // 2, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, k2, 1, k2 // 2, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.short = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                      if stride != 1 or cin != cout else nn.Identity())

    def forward(self, x: Tensor) -> Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(y)) + self.short(x))


class WindowAttention(nn.Module):
    """Multi-head attention within windows of ``window`` consecutive flattened positions.

    (B, C, H, W) → (B, C, H, W). q and k are L2-normalised; logits = temperature · q̂·k̂ with a
    learnable per-head log-temperature.
    """

    def __init__(self, *, dim: int, num_heads: int, window: int, temperature_init: float) -> None:
        super().__init__()
        self.num_heads, self.window = num_heads, window
        self.qkv = nn.Linear(dim, 3 * dim)
        self.log_temp = nn.Parameter(torch.full((num_heads, 1, 1), math.log(temperature_init)))

    def forward(self, x: Tensor) -> Tensor:
        B, C, H, W = x.shape
        L, w, h = H * W, min(self.window, H * W), self.num_heads
        t = x.flatten(2).transpose(1, 2)  # (B, L, C)
        pad = (-L) % w
        if pad:
            t = F.pad(t, (0, 0, 0, pad))
        nw = t.shape[1] // w
        qkv = self.qkv(t).view(B, nw, w, 3, h, C // h).permute(3, 0, 1, 4, 2, 5)  # (3, B, nw, h, w, d)
        q, k, v = qkv.unbind(0)
        temp = self.log_temp.clamp(max=MAX_LOG_TEMP).exp()  # (h, 1, 1)
        q = F.normalize(q, dim=-1) * temp
        k = F.normalize(k, dim=-1)
        mask = None
        if pad:  # padded keys of the last window get no attention
            valid = torch.ones(nw, w, dtype=torch.bool, device=x.device)
            valid[-1, w - pad:] = False
            mask = valid.view(1, nw, 1, 1, w)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=1.0)  # (B, nw, h, w, d)
        out = out.permute(0, 1, 3, 2, 4).reshape(B, nw * w, C)[:, :L]
        return out.transpose(1, 2).reshape(B, C, H, W)


class DualResBlock(nn.Module):
    """High-res windowed attention + (max-pool ×2 → attention → transposed conv ×2), 1×1 projection,
    residual, LayerNorm, gated depth-wise-conv FFN with residual. (B, C, H, W) → same."""

    def __init__(self, cfg: HybridConfig) -> None:
        super().__init__()
        d = cfg.dim
        kw = dict(dim=d, num_heads=cfg.num_heads, window=cfg.window, temperature_init=cfg.temperature_init)
        self.attn = WindowAttention(**kw)
        self.attn_low = WindowAttention(**kw)
        self.up = nn.ConvTranspose2d(d, d, 2, stride=2)
        self.proj = nn.Conv2d(d, d, 1)
        self.norm = nn.LayerNorm(d)
        hidden = int(d * cfg.ffn_expansion)
        self.ffn_in = nn.Conv2d(d, 2 * hidden, 1)
        self.ffn_dw = nn.Conv2d(2 * hidden, 2 * hidden, 3, padding=1, groups=2 * hidden)
        self.ffn_out = nn.Conv2d(hidden, d, 1)

    def forward(self, x: Tensor) -> Tensor:
        H, W = x.shape[-2:]
        y = self.attn(x)
        if H >= 2 and W >= 2:
            low = self.up(self.attn_low(F.max_pool2d(x, 2, ceil_mode=True)))[..., :H, :W]
            y = y + low
        x = x + self.proj(y)
        x = self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        a, b = self.ffn_dw(self.ffn_in(x)).chunk(2, dim=1)
        return x + self.ffn_out(F.gelu(a) * b)


class HybridCNNTransformer(nn.Module):
    """CNN trunk → dual-resolution attention blocks → per-class evidence maps; logits = their mean.

    Input (B, 3, H, W) with H, W multiples of ``cfg.stride``; tokens (B, h·w, dim), h = H / stride.
    """

    num_prefix_tokens = 0

    def __init__(self, cfg: HybridConfig | None = None, **kwargs) -> None:
        super().__init__()
        if cfg is None:
            cfg = HybridConfig(**kwargs)
        elif kwargs:
            cfg = HybridConfig.from_dict({**cfg.to_dict(), **kwargs})
        self.cfg = cfg
        w0 = cfg.trunk_widths[0]
        self.stem = nn.Sequential(nn.Conv2d(cfg.in_chans, w0, 3, cfg.stem_stride, 1, bias=False),
                                  nn.BatchNorm2d(w0), nn.ReLU())
        stages, cin = [], w0
        for i, (w, n) in enumerate(zip(cfg.trunk_widths, cfg.trunk_depths, strict=True)):
            blocks = [BasicBlock(cin=cin if j == 0 else w, cout=w, stride=block_stride(i, j),
                                 kernels=block_kernels(cfg.trunk, first=j == 0))
                      for j in range(n)]
            stages.append(nn.Sequential(*blocks))
            cin = w
        self.stages = nn.Sequential(*stages)
        self.trunk_proj = nn.Conv2d(cin, cfg.dim, 1)
        self.blocks = nn.ModuleList([DualResBlock(cfg) for _ in range(cfg.depth)])
        self.embed_dim = self.num_features = cfg.dim
        self.patch_size = cfg.stride
        self.grid_size = (cfg.img_size[0] // cfg.stride, cfg.img_size[1] // cfg.stride)
        self.head = nn.Linear(cfg.dim, cfg.num_classes) if cfg.num_classes else nn.Identity()
        self.preprocess = None  # a vitkit.data.PreprocessConfig, set by loaders

    @property
    def depth(self) -> int:
        return len(self.blocks)

    def patch_grid(self, height: int, width: int) -> tuple[int, int]:
        s = self.cfg.stride
        if height % s or width % s:
            raise ValueError(f"input {height}×{width} is not a multiple of the hybrid's stride {s}")
        return height // s, width // s

    def trunk(self, x: Tensor) -> Tensor:
        """Pixels (B, 3, H, W) → grid features (B, dim, h, w)."""
        self.patch_grid(x.shape[-2], x.shape[-1])  # refuses a size that is not a multiple of the stride
        return self.trunk_proj(self.stages(self.stem(x)))

    @staticmethod
    def to_tokens(x: Tensor) -> Tensor:
        return x.flatten(2).transpose(1, 2)  # (B, h·w, C)

    def forward_grid(self, x: Tensor) -> Tensor:
        """Final grid features (B, dim, h, w)."""
        x = self.trunk(x)
        for blk in self.blocks:
            x = blk(x)
        return x

    def forward_features(self, x: Tensor) -> Tensor:
        """Final tokens (B, h·w, dim)."""
        return self.to_tokens(self.forward_grid(x))

    def forward_intermediates(self, x: Tensor, indices: int | Sequence[int] | None = None, *, norm: bool = False,
                              output_fmt: str = "NLC", prefix_tokens: bool = True, stop_early: bool = False
                              ) -> tuple[Tensor | None, list[Tensor]]:
        """Outputs of chosen attention blocks, as the ViT's (``norm`` and ``prefix_tokens`` have no
        effect: the blocks end in their own norm and there are no prefix tokens)."""
        if output_fmt not in ("NLC", "NCHW"):
            raise ValueError(f"output_fmt must be 'NLC' or 'NCHW', got {output_fmt!r}")
        if indices is None:
            take = list(range(self.depth))
        elif isinstance(indices, int):
            if not 1 <= indices <= self.depth:
                raise ValueError(f"indices={indices}: as a count it must be in [1, {self.depth}]")
            take = list(range(self.depth - indices, self.depth))
        else:
            take = []
            for i in indices:
                if not -self.depth <= i < self.depth:
                    raise ValueError(f"indices contains {i}, outside [-{self.depth}, {self.depth - 1}]")
                take.append(i % self.depth)
        last = max(take) if (stop_early and take) else self.depth - 1
        x = self.trunk(x)
        out = []
        for i, blk in enumerate(self.blocks[: last + 1]):
            x = blk(x)
            if i in take:
                out.append(x if output_fmt == "NCHW" else self.to_tokens(x))
        final = self.to_tokens(x) if last == self.depth - 1 else None
        return final, out

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """Tokens (B, N, dim) → logits (B, K) = mean over positions of the evidence (a 1×1 conv), or
        the mean token (B, dim) if ``pre_logits``."""
        if pre_logits:
            return x.mean(1)
        return self.head(x).mean(1)

    def evidence_from_grid(self, feats: Tensor) -> Tensor:
        """Grid features (B, dim, h, w) → evidence maps (B, K, h, w) (the 1×1 conv head)."""
        if not self.cfg.num_classes:
            raise ValueError("this hybrid has no classification head (num_classes=0): no evidence maps")
        return F.conv2d(feats, self.head.weight[:, :, None, None], self.head.bias)

    def evidence(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Images (B, 3, H, W) → (logits (B, K), evidence maps (B, K, h, w)); logits = maps' spatial mean."""
        maps = self.evidence_from_grid(self.forward_grid(x))
        return maps.mean(dim=(2, 3)), maps

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))

    def reset_classifier(self, num_classes: int, labels: Sequence[str] | None = None) -> None:
        """A fresh ``num_classes``-way head (0 = features only); ``cfg.num_classes`` and ``cfg.labels`` follow."""
        reset_head(self, num_classes, labels)


def evidence_loss(logits: Tensor, maps: Tensor, target: Tensor, *, l1_weight: float = 8e-6,
                  multilabel: bool = False, label_smoothing: float = 0.0) -> Tensor:
    """Classification loss + ``l1_weight`` · Σ|maps| over the whole batch.

    logits (B, K); maps (B, K, h, w); target (B,) class indices, or (B, K) 0/1 for ``multilabel``:
    binary cross-entropy on the logits, summed over the K classes and averaged over the batch. Summed,
    not averaged over classes, because cross-entropy is a per-sample sum over classes: averaging would
    shrink the classification term K-fold against the fixed L1 weight (with K = 10 and a 16×16 map, the
    L1's pull on each map value then exceeds the classification gradient and every map collapses to 0).
    """
    if multilabel:
        cls = F.binary_cross_entropy_with_logits(logits, target.float(), reduction="sum") / logits.shape[0]
    else:
        cls = F.cross_entropy(logits, target, label_smoothing=label_smoothing)
    return cls + l1_weight * maps.abs().sum()


def hybrid_loss(*, l1_weight: float = 8e-6, multilabel: bool = False, label_smoothing: float = 0.0):
    """A Trainer ``loss_fn(model, batch)`` for the hybrid: :func:`evidence_loss` on (images, targets)."""

    def loss(model: nn.Module, batch: Sequence[Tensor]) -> Tensor:
        logits, maps = model.evidence(batch[0])
        return evidence_loss(logits, maps, batch[1], l1_weight=l1_weight, multilabel=multilabel,
                             label_smoothing=label_smoothing)

    return loss
