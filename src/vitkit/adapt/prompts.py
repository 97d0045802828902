"""Prompt tuning: VPT (visual prompts, shallow and deep) and CoOp (learned text context for CLIP).

VPT (Jia et al., 2022). ``n`` learnable tokens are inserted after the prefix tokens (CLS,
distillation, registers) and before the patches: ``[cls] [prompts × n] [patches]``. They get no
position embedding. *Shallow*: inserted once, after the position embedding (``model.embed_hook``).
*Deep*: in addition, before every later block the n prompt rows are replaced by that block's own
prompts (``block.pre_hook``), so each layer has its own. The prompts count as prefix tokens
(``model.num_prefix_tokens`` grows by n while applied), so pooling, token reduction and grid
read-outs skip them. Initialisation: uniform in ±√(6 / (3·P² + C)) (VPT's Xavier-style choice).
:func:`apply_vpt` / :func:`remove_vpt` wire it in and out; the prompts live in ``model.vpt`` and the
config in the vision tower's applied-methods record (key ``"vpt"``).

CoOp (Zhou et al., 2022). The text prompt of class k is ``[SOS] ctx₁ … ctx_M name_k . [EOS]``
where the M context vectors are learned word embeddings: one shared set, or one set per class
(``class_specific``). The class name may also sit at the front (``[SOS] name ctx … . [EOS]``) or in
the middle (half of the context on each side). Everything of CLIP stays frozen; logits are
``exp(logit_scale) · cos(image, text_k)``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..models.applied import forget, record, record_of, restorer
from ..models.clip import CLIP
from ..models.vit import TokenState, VisionTransformer

log = logging.getLogger(__name__)

POSITIONS = ("end", "middle", "front")
VPT = "vpt"


# ================================================================================================ VPT
@dataclass
class VPTConfig:
    """``num_tokens`` prompts per layer; ``deep`` = a new set before every block; ``dropout`` on them."""

    num_tokens: int = 8
    deep: bool = False
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.num_tokens, int) or self.num_tokens < 1:
            raise ValueError(f"VPTConfig.num_tokens must be an int ≥ 1, got {self.num_tokens!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"VPTConfig.dropout must be in [0, 1), got {self.dropout!r}")


def insert_prompts(x: Tensor, prompts: Tensor, num_prefix: int) -> Tensor:
    """Tokens (B, N, C), prompts (n, C) → (B, N + n, C): ``[prefix] [prompts] [rest]``."""
    p = prompts.unsqueeze(0).expand(x.shape[0], -1, -1).to(x.dtype)
    return torch.cat([x[:, :num_prefix], p, x[:, num_prefix:]], dim=1)


def replace_prompts(x: Tensor, prompts: Tensor, num_prefix: int) -> Tensor:
    """Tokens (B, N, C) whose rows [num_prefix, num_prefix + n) are prompts → the same with new ones."""
    n = prompts.shape[0]
    p = prompts.unsqueeze(0).expand(x.shape[0], -1, -1).to(x.dtype)
    return torch.cat([x[:, :num_prefix], p, x[:, num_prefix + n :]], dim=1)


class VisualPrompts(nn.Module):
    """Prompt parameters: ``tokens`` (L, n, C) with L = depth for deep VPT, 1 for shallow."""

    def __init__(self, cfg: VPTConfig, depth: int, dim: int, patch_size: int) -> None:
        super().__init__()
        self.cfg = cfg
        L = depth if cfg.deep else 1
        bound = math.sqrt(6.0 / (3 * patch_size**2 + dim))
        self.tokens = nn.Parameter(torch.empty(L, cfg.num_tokens, dim).uniform_(-bound, bound))
        self.drop = nn.Dropout(cfg.dropout)

    def layer(self, i: int) -> Tensor:
        return self.drop(self.tokens[i])


def _vision(model: nn.Module) -> VisionTransformer:
    visual = model.visual if isinstance(model, CLIP) else model
    if not isinstance(visual, VisionTransformer):
        raise ValueError(f"VPT needs a vitkit VisionTransformer or CLIP, got {type(model).__name__}")
    return visual


def apply_vpt(model: nn.Module, cfg: VPTConfig | None = None) -> list[str]:
    """Add visual prompts to ``model`` (a VisionTransformer or the vision tower of a CLIP).

    Returns the hook points set. Raises ``ValueError`` if prompts are already there or another
    method holds the embedding / block pre-hooks.
    """
    cfg = cfg or VPTConfig()
    vit = _vision(model)
    if VPT in record_of(vit):
        raise ValueError("this model already has visual prompts: call remove_vpt first")
    blocks = list(vit.blocks)
    busy = (["embed_hook"] if vit.embed_hook is not None else []) + [
        f"blocks.{i}.pre_hook" for i, b in enumerate(blocks) if cfg.deep and i > 0 and b.pre_hook is not None
    ]
    if busy:
        raise ValueError(f"cannot add visual prompts: hook(s) {busy} are already used by another method")
    vit.vpt = VisualPrompts(cfg, len(blocks), vit.embed_dim, vit.patch_size).to(vit.pos_embed.device)
    prefix = vit.num_prefix_tokens
    prompts = vit.vpt

    def embed_hook(x: Tensor, state: TokenState) -> Tensor:
        return insert_prompts(x, prompts.layer(0), prefix)  # state.num_prefix already counts them

    vit.embed_hook = embed_hook
    touched = ["embed_hook"]
    if cfg.deep:
        for i, blk in enumerate(blocks[1:], start=1):
            blk.pre_hook = _deep_hook(prompts, i, prefix)
            touched.append(f"blocks.{i}.pre_hook")
    vit.num_prefix_tokens = prefix + cfg.num_tokens
    record(vit, VPT, cfg)
    log.info("VPT (%s, %d tokens) on %s", "deep" if cfg.deep else "shallow", cfg.num_tokens, touched)
    return touched


def _deep_hook(prompts: VisualPrompts, i: int, prefix: int):
    def hook(x: Tensor, state: TokenState) -> Tensor:
        return replace_prompts(x, prompts.layer(i), prefix)

    return hook


def remove_vpt(model: nn.Module) -> VisualPrompts:
    """Take the prompts out again; returns them (the model is the plain model afterwards)."""
    vit = _vision(model)
    if VPT not in record_of(vit):
        raise ValueError("this model has no visual prompts to remove")
    forget(vit, VPT)
    prompts = vit.vpt
    del vit.vpt
    vit.embed_hook = None
    if prompts.cfg.deep:
        for blk in list(vit.blocks)[1:]:
            blk.pre_hook = None
    vit.num_prefix_tokens -= prompts.cfg.num_tokens
    return prompts


@restorer(VPT, VPTConfig)
def restore_vpt(model: nn.Module, cfg: VPTConfig, instance: str | None = None) -> None:
    """Re-insert saved visual prompts (fresh values; :func:`vitkit.load` loads the saved ones after)."""
    apply_vpt(model, cfg)


def mark_prompts_trainable(model: nn.Module, extra: Sequence[str] = ()) -> int:
    """Freeze all but the visual prompts (``….vpt.tokens``) and the modules named in ``extra``
    (e.g. "head"); returns the number of trainable values."""
    for name, p in model.named_parameters():
        keep = ".vpt." in f".{name}" or any(name == e or name.startswith(e + ".") for e in extra)
        p.requires_grad_(keep)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# ================================================================================================ CoOp
@dataclass
class CoOpConfig:
    """``n_ctx`` context vectors; ``ctx_init`` (e.g. "a photo of a") initialises them from its word
    embeddings and sets ``n_ctx`` to its length; ``class_specific`` = one context per class;
    ``position`` of the class name: "end", "middle" or "front"."""

    n_ctx: int = 8
    ctx_init: str | None = None
    class_specific: bool = False
    position: str = "end"
    init_std: float = 0.02

    def __post_init__(self) -> None:
        if self.position not in POSITIONS:
            raise ValueError(f"CoOpConfig.position must be one of {POSITIONS}, got {self.position!r}")
        if self.ctx_init is None and (not isinstance(self.n_ctx, int) or self.n_ctx < 1):
            raise ValueError(f"CoOpConfig.n_ctx must be an int ≥ 1, got {self.n_ctx!r}")


def _word_ids(model: CLIP, text: str) -> list[int]:
    """Token ids of ``text`` without start/end-of-text tokens and padding."""
    ids = model.tokenize([text])[0].tolist()
    eos = model.cfg.text.eos_token_id
    end = ids.index(eos) if eos is not None and eos in ids else max(range(len(ids)), key=ids.__getitem__)
    return ids[1:end]


def build_prompt_ids(
    sos: int, eos: int, name_ids: Sequence[int], suffix_ids: Sequence[int], n_ctx: int, position: str, length: int,
    placeholder: int = 0,
) -> tuple[list[int], list[int]]:
    """One prompt's ids (``length``, zero-padded) and the positions of its n_ctx context slots.

    end: [SOS] ctx name suffix [EOS]; front: [SOS] name ctx suffix [EOS];
    middle: [SOS] ctx[:n/2] name ctx[n/2:] suffix [EOS]. Context slots hold ``placeholder``.
    """
    half = n_ctx // 2
    ctx = [placeholder] * n_ctx
    if position == "end":
        body = ctx + list(name_ids)
        slots = list(range(1, 1 + n_ctx))
    elif position == "front":
        body = list(name_ids) + ctx
        slots = list(range(1 + len(name_ids), 1 + len(name_ids) + n_ctx))
    elif position == "middle":
        body = ctx[:half] + list(name_ids) + ctx[half:]
        slots = list(range(1, 1 + half)) + list(range(1 + half + len(name_ids), 1 + n_ctx + len(name_ids)))
    else:
        raise ValueError(f"position must be one of {POSITIONS}, got {position!r}")
    ids = [sos] + body + list(suffix_ids) + [eos]
    if len(ids) > length:
        raise ValueError(f"prompt of {len(ids)} tokens (context {n_ctx} + class name {len(name_ids)}) is longer "
                         f"than the text context length {length}: use fewer context tokens or a shorter name")
    return ids + [0] * (length - len(ids)), slots


class CoOp(nn.Module):
    """Frozen CLIP + learned text context → logits over ``classnames``.

    ``forward(images)`` (B, 3, H, W) → (B, K); ``logits(image_features)`` takes precomputed image
    embeddings (B, D) (the vision tower is frozen, so training can cache them);
    ``text_features()`` → (K, D) normalised. ``self.ctx`` is (M, W) shared or (K, M, W) per class.
    """

    def __init__(self, clip: CLIP, classnames: Sequence[str], cfg: CoOpConfig | None = None, freeze: bool = True) -> None:
        super().__init__()
        cfg = cfg or CoOpConfig()
        if not classnames:
            raise ValueError("CoOp needs at least one class name")
        if clip.tokenizer is None:
            raise ValueError("CoOp needs a CLIP with a tokenizer (clip.tokenizer is None)")
        self.cfg, self.clip = cfg, clip
        if freeze:
            clip.requires_grad_(False)
        emb = clip.text.token_embedding.weight
        init_ids = _word_ids(clip, cfg.ctx_init) if cfg.ctx_init else None
        n_ctx = len(init_ids) if init_ids is not None else cfg.n_ctx
        if n_ctx < 1:
            raise ValueError(f"CoOpConfig.ctx_init {cfg.ctx_init!r} has no tokens")
        self.n_ctx = n_ctx
        K = len(classnames)
        shape = (K, n_ctx, emb.shape[1]) if cfg.class_specific else (n_ctx, emb.shape[1])
        if init_ids is not None:
            base = emb[torch.tensor(init_ids, device=emb.device)].detach().clone()
            ctx = base.expand(shape).clone()
        else:
            ctx = torch.randn(shape, device=emb.device) * cfg.init_std
        self.ctx = nn.Parameter(ctx)
        self.set_classnames(classnames)

    def set_classnames(self, classnames: Sequence[str]) -> None:
        """(Re)build the prompts for a new class list (a shared context carries over)."""
        if self.cfg.class_specific and hasattr(self, "classnames") and len(classnames) != self.ctx.shape[0]:
            raise ValueError(f"a class-specific context has {self.ctx.shape[0]} classes, got {len(classnames)} names")
        clip = self.clip
        ids_sos = clip.tokenize([""])[0].tolist()
        sos = ids_sos[0]
        eos = clip.cfg.text.eos_token_id if clip.cfg.text.eos_token_id is not None else max(ids_sos)
        suffix = _word_ids(clip, ".")
        rows, slots = [], []
        for name in classnames:
            ids, s = build_prompt_ids(sos, eos, _word_ids(clip, name), suffix, self.n_ctx, self.cfg.position,
                                      clip.cfg.text.context_length)
            rows.append(ids)
            slots.append(s)
        self.classnames = list(classnames)
        device = self.ctx.device
        self.register_buffer("prompt_ids", torch.tensor(rows, device=device), persistent=False)
        self.register_buffer("ctx_slots", torch.tensor(slots, device=device), persistent=False)  # (K, M)

    def prompt_embeddings(self, index: Tensor | None = None) -> Tensor:
        """Token embeddings (K', L, W) of the prompts (all, or the classes in ``index``) with the context in."""
        ids = self.prompt_ids if index is None else self.prompt_ids[index]
        slots = self.ctx_slots if index is None else self.ctx_slots[index]
        x = self.clip.text.token_embedding(ids)  # (K', L, W)
        if self.cfg.class_specific:
            ctx = self.ctx if index is None else self.ctx[index]
        else:
            ctx = self.ctx.unsqueeze(0).expand(ids.shape[0], -1, -1)
        return x.scatter(1, slots.unsqueeze(-1).expand(-1, -1, x.shape[-1]), ctx.to(x.dtype))

    def text_features(self, index: Tensor | None = None) -> Tensor:
        """(K', D) normalised text embeddings of the prompts."""
        ids = self.prompt_ids if index is None else self.prompt_ids[index]
        z = self.clip.text(ids, embeds=self.prompt_embeddings(index))
        return F.normalize(z, dim=-1)

    def logits(self, image_features: Tensor, text_features: Tensor | None = None) -> Tensor:
        """Image embeddings (B, D) (normalised here) → (B, K) logits."""
        t = self.text_features() if text_features is None else text_features
        return self.clip.logit_scale.exp() * F.normalize(image_features, dim=-1) @ t.t()

    def forward(self, images: Tensor) -> Tensor:
        return self.logits(self.clip.encode_image(images))


def train_prompts(
    prompt_logits, params, features: Tensor, labels: Tensor, *, steps: int = 300, lr: float = 2e-3,
    batch_size: int = 64, weight_decay: float = 0.0, seed: int = 0, loss_fn=None,
) -> list[float]:
    """Train prompt parameters on cached image features (N, D) with labels (N,); → the loss curve.

    ``prompt_logits(features_batch, labels_batch) -> loss-or-logits``: with ``loss_fn`` None it must
    return (B, K) logits for cross-entropy; else ``loss_fn(logits, labels)`` is used. AdamW,
    cosine schedule, one mini-batch per step drawn with a seeded generator.
    """
    params = [p for p in params if p.requires_grad]
    if not params:
        raise ValueError("nothing to train: no parameter requires grad")
    if len(features) != len(labels):
        raise ValueError(f"{len(features)} features but {len(labels)} labels")
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    g = torch.Generator().manual_seed(seed)
    losses = []
    for _ in range(steps):
        idx = torch.randint(len(features), (min(batch_size, len(features)),), generator=g)
        out = prompt_logits(features[idx], labels[idx])
        loss = F.cross_entropy(out, labels[idx]) if loss_fn is None else loss_fn(out, labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
    return losses


__all__ = [
    "CoOp",
    "CoOpConfig",
    "VPTConfig",
    "VisualPrompts",
    "apply_vpt",
    "build_prompt_ids",
    "insert_prompts",
    "mark_prompts_trainable",
    "remove_vpt",
    "replace_prompts",
    "train_prompts",
]
