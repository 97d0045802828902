"""vitkit's Vision Transformer: ViT (Google/AugReg), DeiT, DINOv2 and the CLIP vision tower in one class.

Token layout: ``[cls] [dist] [reg × R] [patches]``. The position embedding covers the class and
distillation tokens and the patch grid (registers get none, as in DINOv2) and is resampled
(bicubic, optionally antialiased) for any other input size, non-square included.

Hook points that methods set as plain attributes and reset to ``None`` on ``remove``:

* ``model.embed_hook(x, state) -> x``: after the position embedding, before ``norm_pre``
  (prompt tokens, per-class tokens).
* ``block.pre_hook(x, state) -> x``: before a block (deep prompts).
* ``block.token_hook(x, state) -> x``: between a block's attention and its MLP (token dropping,
  merging). It may change N and must then update ``state``.
* ``block.attn.readout`` / ``model.attention_readout(...)``: attention read-out (see attention.py).

Every forward builds a :class:`TokenState` that travels through the blocks: which original token
each row is (``index``), how many tokens each row stands for (``size``, for proportional attention),
and an additive attention bias. ``forward_features(x, return_state=True)`` and
``forward_intermediates(..., return_state=True)`` return it with the tokens; ``model(x)`` gives
logits alone.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import config_from_dict
from .attention import Attention
from .surgery import linear_head, reset_head

log = logging.getLogger(__name__)

GLOBAL_POOLS = ("token", "avg", "token_avg", "none")
ACTIVATIONS = ("gelu", "gelu_tanh", "quick_gelu")


@dataclass
class ViTConfig:
    """Architecture of a :class:`VisionTransformer`. ``img_size`` is (height, width)."""

    img_size: tuple[int, int] = (224, 224)
    patch_size: int = 16
    in_chans: int = 3
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_hidden_dim: int | None = None  # default 4 · embed_dim
    qkv_bias: bool = True
    patch_bias: bool = True
    class_token: bool = True
    dist_token: bool = False
    dist_head: bool = True  # DeiT: a second head on the distillation token, logits averaged
    num_reg_tokens: int = 0
    pre_norm: bool = False  # CLIP's ln_pre
    final_norm: bool = True
    fc_norm: bool = False  # norm after pooling (MAE-style average pooling)
    layer_scale: bool = False  # DINOv2
    layer_scale_init: float = 1e-5
    act: str = "gelu"
    norm_eps: float = 1e-6
    global_pool: str = "token"
    num_classes: int = 0
    proj_dim: int = 0  # CLIP image projection (no bias), 0 = none
    pos_antialias: bool = False  # DINOv2-with-registers resamples with antialias
    drop_rate: float = 0.0
    drop_path_rate: float = 0.0
    family: str = "vit"  # informational: vit | deit | dinov2 | clip
    labels: list[str] | None = None  # class names for the head, if known

    def __post_init__(self) -> None:
        if isinstance(self.img_size, int):
            self.img_size = (self.img_size, self.img_size)
        self.img_size = tuple(int(s) for s in self.img_size)  # type: ignore[assignment]
        if self.mlp_hidden_dim is None:
            self.mlp_hidden_dim = 4 * self.embed_dim
        if self.global_pool not in GLOBAL_POOLS:
            raise ValueError(f"global_pool must be one of {GLOBAL_POOLS}, got {self.global_pool!r}")
        if self.act not in ACTIVATIONS:
            raise ValueError(f"act must be one of {ACTIVATIONS}, got {self.act!r}")
        if self.embed_dim % self.num_heads:
            raise ValueError(f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}")
        if self.global_pool == "token" and not self.class_token:
            raise ValueError("global_pool='token' needs class_token=True; use 'avg'")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["img_size"] = list(self.img_size)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ViTConfig:
        return config_from_dict(cls, d)


@dataclass
class TokenState:
    """What travels with the tokens through the blocks of one forward pass.

    ``index`` (B, N) original token position of each row (prefix tokens first), None while no
    token has been dropped or merged. ``size`` (B, N, 1) tokens each row stands for, None = all 1.
    ``attn_bias`` additive attention logits broadcastable to (B, H, N, N), None = no bias.
    ``grid`` is the patch grid (gh, gw) of the input, ``num_prefix`` the prefix tokens.
    """

    grid: tuple[int, int]
    num_prefix: int
    index: Tensor | None = None
    size: Tensor | None = None
    attn_bias: Tensor | None = None
    extras: dict = field(default_factory=dict)


class QuickGELU(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x * torch.sigmoid(1.702 * x)


def make_act(name: str) -> nn.Module:
    if name == "gelu":
        return nn.GELU()
    if name == "gelu_tanh":
        return nn.GELU(approximate="tanh")
    if name == "quick_gelu":
        return QuickGELU()
    raise ValueError(f"unknown activation {name!r}; allowed: {ACTIVATIONS}")


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int, act: str = "gelu", drop: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = make_act(act)
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class LayerScale(nn.Module):
    def __init__(self, dim: int, init: float = 1e-5) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), init))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gamma


class DropPath(nn.Module):
    """Stochastic depth: drop the whole residual branch per sample during training."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(1 - self.p)
        return x * keep / (1 - self.p)


class Block(nn.Module):
    """Pre-norm transformer block: x + ls1(attn(norm1(x))), then x + ls2(mlp(norm2(x))).

    The parts are injectable (as in timm): ``attn_layer(dim, num_heads, qkv_bias=, attn_drop=,
    proj_drop=)``, ``mlp_layer(dim, hidden, act=, drop=)`` and ``norm_layer(dim)`` are classes or
    factories (e.g. ``functools.partial(nn.LayerNorm, eps=1e-5)``). ``init_values`` turns on
    LayerScale with that initial value (None = off). x (B, N, dim) → (B, N, dim).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        mlp_hidden_dim: int | None = None,
        qkv_bias: bool = True,
        act: str = "gelu",
        proj_drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
        init_values: float | None = None,
        attn_layer: Callable[..., nn.Module] = Attention,
        mlp_layer: Callable[..., nn.Module] = Mlp,
        norm_layer: Callable[[int], nn.Module] | None = None,
    ) -> None:
        super().__init__()
        norm_layer = norm_layer or partial(nn.LayerNorm, eps=1e-6)
        hidden = mlp_hidden_dim or 4 * dim
        self.norm1 = norm_layer(dim)
        self.attn = attn_layer(dim, num_heads, qkv_bias=qkv_bias, attn_drop=attn_drop, proj_drop=proj_drop)
        self.ls1 = LayerScale(dim, init_values) if init_values is not None else nn.Identity()
        self.drop_path1 = DropPath(drop_path)
        self.norm2 = norm_layer(dim)
        self.mlp = mlp_layer(dim, hidden, act=act, drop=proj_drop)
        self.ls2 = LayerScale(dim, init_values) if init_values is not None else nn.Identity()
        self.drop_path2 = DropPath(drop_path)
        self.pre_hook: Callable[[Tensor, TokenState], Tensor] | None = None
        self.token_hook: Callable[[Tensor, TokenState], Tensor] | None = None

    def forward(self, x: Tensor, state: TokenState | None = None) -> Tensor:
        if self.pre_hook is not None:
            x = self.pre_hook(x, state)
        bias = state.attn_bias if state is not None else None
        x = x + self.drop_path1(self.ls1(self.attn(self.norm1(x), attn_bias=bias)))
        if self.token_hook is not None:
            x = self.token_hook(x, state)
        x = x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))
        return x


def vit_block(cfg: ViTConfig, drop_path: float = 0.0) -> Block:
    """The block a :class:`VisionTransformer` with config ``cfg`` is made of."""
    return Block(
        cfg.embed_dim,
        cfg.num_heads,
        mlp_hidden_dim=cfg.mlp_hidden_dim,
        qkv_bias=cfg.qkv_bias,
        act=cfg.act,
        proj_drop=cfg.drop_rate,
        drop_path=drop_path,
        init_values=cfg.layer_scale_init if cfg.layer_scale else None,
        norm_layer=partial(nn.LayerNorm, eps=cfg.norm_eps),
    )


def resample_pos_embed(
    pos: Tensor, old_grid: tuple[int, int], new_grid: tuple[int, int], antialias: bool = False
) -> Tensor:
    """Bicubic resampling of patch position embeddings (1, gh·gw, C) → (1, gh'·gw', C), in fp32."""
    if tuple(old_grid) == tuple(new_grid):
        return pos
    C = pos.shape[-1]
    grid = pos.reshape(1, old_grid[0], old_grid[1], C).permute(0, 3, 1, 2)
    grid = F.interpolate(grid.float(), size=new_grid, mode="bicubic", align_corners=False, antialias=antialias)
    return grid.to(pos.dtype).permute(0, 2, 3, 1).reshape(1, new_grid[0] * new_grid[1], C)


class VisionTransformer(nn.Module):
    """ViT / DeiT / DINOv2 / CLIP-vision backbone with a timm-like feature API.

    Input (B, 3, H, W) with any H, W ≥ patch size; features (B, N, C) with
    N = num_prefix_tokens + (H // P) · (W // P).
    """

    def __init__(self, cfg: ViTConfig | None = None, **kwargs) -> None:
        super().__init__()
        if cfg is None:
            cfg = ViTConfig(**kwargs)
        elif kwargs:
            cfg = ViTConfig.from_dict({**cfg.to_dict(), **kwargs})
        self.cfg = cfg
        dim = cfg.embed_dim
        P = cfg.patch_size
        self.patch_size = P
        self.embed_dim = dim
        self.grid_size = (cfg.img_size[0] // P, cfg.img_size[1] // P)
        self.num_pos_prefix = int(cfg.class_token) + int(cfg.dist_token)
        self.num_prefix_tokens = self.num_pos_prefix + cfg.num_reg_tokens

        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(cfg.in_chans, dim, P, stride=P, bias=cfg.patch_bias)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim)) if cfg.class_token else None
        self.dist_token = nn.Parameter(torch.zeros(1, 1, dim)) if cfg.dist_token else None
        self.reg_token = nn.Parameter(torch.zeros(1, cfg.num_reg_tokens, dim)) if cfg.num_reg_tokens else None
        n_pos = self.num_pos_prefix + self.grid_size[0] * self.grid_size[1]
        self.pos_embed = nn.Parameter(torch.zeros(1, n_pos, dim))
        self.pos_drop = nn.Dropout(cfg.drop_rate)
        self.norm_pre = nn.LayerNorm(dim, eps=cfg.norm_eps) if cfg.pre_norm else nn.Identity()
        dpr = [cfg.drop_path_rate * i / max(cfg.depth - 1, 1) for i in range(cfg.depth)]
        self.blocks = nn.ModuleList([vit_block(cfg, dpr[i]) for i in range(cfg.depth)])
        self.norm = nn.LayerNorm(dim, eps=cfg.norm_eps) if cfg.final_norm else nn.Identity()

        pooled = 2 * dim if cfg.global_pool == "token_avg" else dim
        self.fc_norm = nn.LayerNorm(pooled, eps=cfg.norm_eps) if cfg.fc_norm else nn.Identity()
        self.proj = nn.Linear(pooled, cfg.proj_dim, bias=False) if cfg.proj_dim else None
        self.num_features = cfg.proj_dim or pooled
        self.head_drop = nn.Dropout(cfg.drop_rate)
        self.head = nn.Linear(self.num_features, cfg.num_classes) if cfg.num_classes else nn.Identity()
        self.head_dist = (
            nn.Linear(self.num_features, cfg.num_classes) if cfg.num_classes and cfg.dist_token and cfg.dist_head else None
        )

        self.embed_hook: Callable[[Tensor, TokenState], Tensor] | None = None
        self.preprocess = None  # a vitkit.data.PreprocessConfig, set by loaders
        self.pipeline = None  # a vitkit.frb.classifier.PagePolicy for crop classifiers that read whole pages
        self.init_weights()

    # ------------------------------------------------------------------ init
    def init_weights(self) -> None:
        """ViT-style init: truncated normal (std 0.02) for linear layers and embeddings."""
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        for t in (self.cls_token, self.dist_token, self.reg_token):
            if t is not None:
                nn.init.normal_(t, std=1e-6)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        w = self.patch_embed.proj.weight
        nn.init.trunc_normal_(w.view(w.shape[0], -1), std=math.sqrt(1.0 / w[0].numel()))

    # ------------------------------------------------------------------ geometry
    def patch_grid(self, height: int, width: int) -> tuple[int, int]:
        """Patch grid (rows, cols) for an input of the given size."""
        P = self.patch_size
        if height < P or width < P:
            raise ValueError(f"input {height}×{width} is smaller than the patch size {P}")
        return height // P, width // P

    @property
    def depth(self) -> int:
        return len(self.blocks)

    # ------------------------------------------------------------------ forward pieces
    def embed(self, x: Tensor) -> tuple[Tensor, TokenState]:
        """Pixels (B, 3, H, W) → tokens (B, prefix + gh·gw, C) and a fresh TokenState."""
        B = x.shape[0]
        grid = self.patch_grid(x.shape[-2], x.shape[-1])
        x = self.patch_embed.proj(x).flatten(2).transpose(1, 2)  # (B, gh·gw, C)
        pos = self.pos_embed
        patch_pos = resample_pos_embed(pos[:, self.num_pos_prefix :], self.grid_size, grid, self.cfg.pos_antialias)
        x = x + patch_pos
        prefix = []
        if self.cls_token is not None:
            prefix.append(self.cls_token.expand(B, -1, -1) + pos[:, :1])
        if self.dist_token is not None:
            j = int(self.cls_token is not None)
            prefix.append(self.dist_token.expand(B, -1, -1) + pos[:, j : j + 1])
        if self.reg_token is not None:
            prefix.append(self.reg_token.expand(B, -1, -1))
        if prefix:
            x = torch.cat(prefix + [x], dim=1)
        state = TokenState(grid=grid, num_prefix=self.num_prefix_tokens)
        if self.embed_hook is not None:
            x = self.embed_hook(x, state)
        x = self.norm_pre(self.pos_drop(x))
        return x, state

    def forward_features(self, x: Tensor, *, return_state: bool = False) -> Tensor | tuple[Tensor, TokenState]:
        """Final normalised tokens (B, N, C); with ``return_state`` also the forward's TokenState
        (which rows survived token reduction, the grid, the prefix count)."""
        x, state = self.embed(x)
        for blk in self.blocks:
            x = blk(x, state)
        x = self.norm(x)
        return (x, state) if return_state else x

    def forward_intermediates(
        self,
        x: Tensor,
        indices: int | Sequence[int] | None = None,
        *,
        norm: bool = False,
        output_fmt: str = "NLC",
        prefix_tokens: bool = True,
        stop_early: bool = False,
        return_state: bool = False,
    ) -> tuple[Tensor | None, list[Tensor]] | tuple[Tensor | None, list[Tensor], TokenState]:
        """Outputs of chosen blocks: (final, [per block]), and the TokenState with ``return_state``.

        ``indices``: block indices (negative allowed) or an int n = the last n blocks; None = all.
        ``output_fmt``: "NLC" → (B, N, C) tokens; "NCHW" → (B, C, gh, gw) patch tokens only
        (needs an unreduced token set). ``norm`` applies the final norm to each. With
        ``stop_early`` the blocks after the last index are skipped and the final output is None.
        """
        if output_fmt not in ("NLC", "NCHW"):
            raise ValueError(f"output_fmt must be 'NLC' or 'NCHW', got {output_fmt!r}")
        take = self._layer_indices(indices, "indices")
        x, state = self.embed(x)
        out: list[Tensor] = []
        last = max(take) if (stop_early and take) else self.depth - 1
        for i, blk in enumerate(self.blocks[: last + 1]):
            x = blk(x, state)
            if i in take:
                y = self.norm(x) if norm else x
                if output_fmt == "NCHW":
                    y = self.tokens_to_grid(y, state)
                elif not prefix_tokens:
                    y = y[:, state.num_prefix :]
                out.append(y)
        final = self.norm(x) if last == self.depth - 1 else None
        return (final, out, state) if return_state else (final, out)

    def tokens_to_grid(self, x: Tensor, state: TokenState) -> Tensor:
        """Patch tokens (B, prefix + gh·gw, C) → (B, C, gh, gw)."""
        gh, gw = state.grid
        patches = x[:, state.num_prefix :]
        if patches.shape[1] != gh * gw:
            raise ValueError(
                f"cannot lay {patches.shape[1]} patch tokens on a {gh}×{gw} grid (tokens were reduced)"
            )
        return patches.transpose(1, 2).reshape(x.shape[0], -1, gh, gw)

    def pool(self, x: Tensor) -> Tensor:
        """Tokens (B, N, C) → pooled features (B, C) (or (B, 2C) for 'token_avg')."""
        gp = self.cfg.global_pool
        if gp == "token":
            return x[:, 0]
        patches = x[:, self.num_prefix_tokens :]
        if gp == "avg":
            return patches.mean(1)
        if gp == "token_avg":
            return torch.cat([x[:, 0], patches.mean(1)], dim=-1)
        return x

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """Tokens (B, N, C) → logits (B, num_classes), or embeddings (B, num_features) if pre_logits."""
        if self.head_dist is not None and not pre_logits:
            cls = self.head(self.head_drop(x[:, 0]))
            dist = self.head_dist(self.head_drop(x[:, 1]))
            return (cls + dist) / 2
        x = self.fc_norm(self.pool(x))
        if self.proj is not None:
            x = self.proj(x)
        if pre_logits:
            return x
        return self.head(self.head_drop(x))

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))

    def reset_classifier(self, num_classes: int, labels: Sequence[str] | None = None) -> None:
        """A fresh ``num_classes``-way head (0 = features only), and the distillation head of a DeiT
        with one; ``cfg.num_classes`` and ``cfg.labels`` follow (``labels`` has one name per class)."""
        reset_head(self, num_classes, labels)
        with_dist = num_classes and self.cfg.dist_token and self.cfg.dist_head
        self.head_dist = linear_head(self.num_features, num_classes, like=self.pos_embed) if with_dist else None

    # ------------------------------------------------------------------ read-out
    def _layer_indices(self, indices: int | Sequence[int] | None, name: str) -> list[int]:
        depth = self.depth
        if indices is None:
            return list(range(depth))
        if isinstance(indices, int):
            if not 1 <= indices <= depth:
                raise ValueError(f"{name}={indices}: as a count it must be in [1, {depth}]")
            return list(range(depth - indices, depth))
        out = []
        for i in indices:
            if not -depth <= i < depth:
                raise ValueError(f"{name} contains {i}, outside [-{depth}, {depth - 1}] for depth {depth}")
            out.append(i % depth)
        return out

    @contextmanager
    def attention_readout(
        self, layers: int | Sequence[int] | None = None, kind: str = "cls", keep_grad: bool = False
    ) -> Iterator[AttentionMaps]:
        """Read attention out of chosen blocks during the forwards inside the ``with``.

        ``layers`` as in ``forward_intermediates`` (a bare int is one block index here).
        ``kind`` "cls" → {layer: (B, H, N)} CLS-row maps (O(N)); "full" → {layer: (B, H, N, N)}.
        The yielded dict is filled after each forward; settings are restored on exit.
        """
        if isinstance(layers, int):
            layers = [layers]
        idx = self._layer_indices(layers, "layers")
        key = {"cls": "cls_attn", "full": "attn"}.get(kind)
        if key is None:
            raise ValueError(f"kind must be 'cls' or 'full', got {kind!r}")
        attns = [self.blocks[i].attn for i in idx]
        saved = [(a.readout, a.keep_grad) for a in attns]
        maps = AttentionMaps(dict(zip(idx, attns, strict=True)), key)
        for a in attns:
            a.set_readout(kind, keep_grad)
        try:
            yield maps
        finally:
            maps.freeze()
            for a, (r, g) in zip(attns, saved, strict=True):
                a.set_readout(r, g)


class AttentionMaps(Mapping):
    """Read-only {layer: map} view of the attention modules' latest read-outs.

    Inside ``attention_readout`` it shows the latest forward; on exit it keeps the last maps.
    """

    def __init__(self, attns: dict[int, Attention], key: str) -> None:
        self._attns = attns
        self._key = key
        self._kept: dict[int, Tensor] | None = None

    def _current(self) -> dict[int, Tensor]:
        if self._kept is not None:
            return self._kept
        return {i: a.last[self._key] for i, a in self._attns.items() if self._key in a.last}

    def freeze(self) -> None:
        self._kept = self._current()

    def __getitem__(self, i: int) -> Tensor:
        cur = self._current()
        if i not in cur:
            raise KeyError(f"no attention read out of layer {i}: run a forward inside the `with` first")
        return cur[i]

    def __iter__(self) -> Iterator[int]:
        return iter(self._current())

    def __len__(self) -> int:
        return len(self._current())
