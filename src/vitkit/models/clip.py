"""CLIP: the vision tower (a :class:`VisionTransformer` with ``pre_norm`` and a projection), a causal
text transformer, the dual encoder with its learned logit scale, and a zero-shot classifier.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import config_from_dict
from .vit import Block, TokenState, VisionTransformer, ViTConfig

DEFAULT_TEMPLATES = ("a photo of a {}.",)


@dataclass
class TextConfig:
    """Architecture of the CLIP text transformer.

    ``eos_token_id`` picks the pooled position: the first occurrence of that id (or, in a text
    without it, the largest id); None → the position of the largest id (OpenAI/open_clip
    convention, where end-of-text is the last id).
    """

    vocab_size: int = 49408
    context_length: int = 77
    width: int = 512
    depth: int = 12
    num_heads: int = 8
    mlp_hidden_dim: int | None = None
    act: str = "quick_gelu"
    norm_eps: float = 1e-5
    proj_dim: int = 512
    proj_bias: bool = False
    eos_token_id: int | None = 49407

    def __post_init__(self) -> None:
        if self.mlp_hidden_dim is None:
            self.mlp_hidden_dim = 4 * self.width

    def block(self) -> Block:
        """One text-transformer block (causality comes from the attention bias at run time)."""
        return Block(self.width, self.num_heads, mlp_hidden_dim=self.mlp_hidden_dim, act=self.act,
                     norm_layer=partial(nn.LayerNorm, eps=self.norm_eps))


@dataclass
class CLIPConfig:
    vision: ViTConfig
    text: TextConfig
    logit_scale_init: float = math.log(1 / 0.07)

    def to_dict(self) -> dict:
        return {"vision": self.vision.to_dict(), "text": asdict(self.text), "logit_scale_init": self.logit_scale_init}

    @classmethod
    def from_dict(cls, d: dict) -> CLIPConfig:
        missing = {"vision", "text"} - set(d)
        if missing:
            raise ValueError(f"CLIP config lacks keys {sorted(missing)}")
        return cls(
            ViTConfig.from_dict(d["vision"]),
            config_from_dict(TextConfig, d["text"], "text config"),
            d.get("logit_scale_init", math.log(1 / 0.07)),
        )


class TextTransformer(nn.Module):
    """Causal text encoder: token ids (B, L) → tokens (B, L, W); ``encode`` → (B, proj_dim)."""

    def __init__(self, cfg: TextConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.token_embedding = nn.Embedding(cfg.vocab_size, cfg.width)
        self.pos_embed = nn.Parameter(torch.empty(cfg.context_length, cfg.width))
        self.blocks = nn.ModuleList([cfg.block() for _ in range(cfg.depth)])
        self.norm = nn.LayerNorm(cfg.width, eps=cfg.norm_eps)
        self.proj = nn.Linear(cfg.width, cfg.proj_dim, bias=cfg.proj_bias) if cfg.proj_dim else None
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.pos_embed, std=0.01)

    def forward_features(self, ids: Tensor, embeds: Tensor | None = None) -> Tensor:
        """ids (B, L) → final-normed tokens (B, L, W). ``embeds`` (B, L, W) replaces the token
        embedding lookup (learned prompt contexts such as CoOp)."""
        L = ids.shape[1]
        if L > self.cfg.context_length:
            raise ValueError(f"text of {L} tokens is longer than the context length {self.cfg.context_length}")
        x = self.token_embedding(ids) if embeds is None else embeds
        x = x + self.pos_embed[:L]
        causal = torch.full((L, L), float("-inf"), device=x.device, dtype=x.dtype).triu(1)
        state = TokenState(grid=(1, L), num_prefix=0, attn_bias=causal)
        for blk in self.blocks:
            x = blk(x, state)
        return self.norm(x)

    def pool(self, x: Tensor, ids: Tensor) -> Tensor:
        """Tokens (B, L, W) → the end-of-text token's features (B, W)."""
        eos = self.cfg.eos_token_id
        pos = ids.argmax(-1)
        if eos is not None:  # the first end-of-text token; the largest id where there is none
            is_eos = ids == eos
            pos = torch.where(is_eos.any(-1), is_eos.int().argmax(-1), pos)
        return x[torch.arange(x.shape[0], device=x.device), pos]

    def forward(self, ids: Tensor, embeds: Tensor | None = None) -> Tensor:
        x = self.pool(self.forward_features(ids, embeds), ids)
        return self.proj(x) if self.proj is not None else x


class CLIP(nn.Module):
    """Dual encoder. ``visual`` is a VisionTransformer whose ``forward`` gives image embeddings."""

    def __init__(self, cfg: CLIPConfig) -> None:
        super().__init__()
        if not cfg.vision.proj_dim or cfg.vision.proj_dim != cfg.text.proj_dim:
            raise ValueError(
                f"vision proj_dim ({cfg.vision.proj_dim}) and text proj_dim ({cfg.text.proj_dim}) must be equal and > 0"
            )
        self.cfg = cfg
        self.visual = VisionTransformer(cfg.vision)
        self.text = TextTransformer(cfg.text)
        self.logit_scale = nn.Parameter(torch.tensor(cfg.logit_scale_init))
        self.tokenizer = None  # a vitkit CLIPTokenizer, set by loaders
        self.preprocess = None

    @property
    def embed_dim(self) -> int:
        return self.cfg.text.proj_dim

    def encode_image(self, images: Tensor, normalize: bool = False) -> Tensor:
        """(B, 3, H, W) → (B, D)."""
        z = self.visual(images)
        return F.normalize(z, dim=-1) if normalize else z

    def encode_text(self, ids: Tensor, normalize: bool = False) -> Tensor:
        """(B, L) token ids → (B, D)."""
        z = self.text(ids)
        return F.normalize(z, dim=-1) if normalize else z

    def tokenize(self, texts: str | Sequence[str]) -> Tensor:
        if self.tokenizer is None:
            raise RuntimeError("this CLIP model has no tokenizer: load it from a checkpoint with tokenizer files")
        return self.tokenizer(texts, context_length=self.cfg.text.context_length)["input_ids"]

    def forward(self, images: Tensor, ids: Tensor) -> tuple[Tensor, Tensor]:
        """Returns (logits_per_image (B_i, B_t), logits_per_text (B_t, B_i))."""
        img = self.encode_image(images, normalize=True)
        txt = self.encode_text(ids, normalize=True)
        logits = self.logit_scale.exp() * img @ txt.t()
        return logits, logits.t()


@torch.no_grad()
def text_classifier_weights(model: CLIP, classnames: Sequence[str], templates: Sequence[str]) -> Tensor:
    """Class weights (K, D): per class, the renormalised mean of its templates' normalised embeddings."""
    if not classnames:
        raise ValueError("classnames is empty")
    if not templates or any("{}" not in t for t in templates):
        raise ValueError(f"every template must contain '{{}}' for the class name, got {list(templates)}")
    weights = []
    for name in classnames:
        ids = model.tokenize([t.format(name) for t in templates]).to(model.logit_scale.device)
        z = model.encode_text(ids, normalize=True).mean(0)
        weights.append(F.normalize(z, dim=-1))
    return torch.stack(weights)


class ZeroShotClassifier(nn.Module):
    """Images → logits over class names, from CLIP text embeddings of prompt templates."""

    def __init__(self, model: CLIP, classnames: Sequence[str], templates: Sequence[str] = DEFAULT_TEMPLATES) -> None:
        super().__init__()
        self.model = model
        self.classnames = list(classnames)
        self.register_buffer("weights", text_classifier_weights(model, classnames, templates))

    def forward(self, images: Tensor) -> Tensor:
        img = self.model.encode_image(images, normalize=True)
        return self.model.logit_scale.exp() * img @ self.weights.t()
