"""FedMVP's PromptFormer: image-specific visual prompts generated from class attribute descriptions.

FedMVP (ICCV 2025) adapts a frozen CLIP with a small *prompt generator* that is the only trained (and,
federated, the only shared) part. For an image x:

1. queries  = the image's patch embeddings after the position embedding, (B, N, C);
   context  = CLIP text embeddings of the attribute descriptions of the classes in play, (M, D),
   projected to the vision width C by a Linear;
2. PromptFormer block: LayerNorm on queries and on context → multi-head cross-attention (4 heads) →
   GEGLU feed-forward with a residual around it;
3. the block's output (B, N, C) is average-pooled over tokens to ``num_prompts`` = 4 tokens, which are
   appended after the patch tokens (``[cls] [patches] [prompts]``, through the tower's ``embed_hook``);
4. the frozen vision tower runs on as usual → CLS → projection → image feature f (B, D).

Logits (:func:`description_logits`): class k's logit is the mean over its S descriptions of
``scale · cos(f, t_ks)``. Loss (:func:`fedmvp_loss`): cross-entropy + α · (1 − cos(f_prompted(x),
f_frozen(flip(x)))) with α = 10, where f_frozen is the plain frozen CLIP (no prompts) on the horizontally
flipped image — a consistency term that keeps the prompted feature close to CLIP's own.

Optional LoRA (rank 8) on the cross-attention's q/k/v (vitkit's :mod:`vitkit.adapt.lora`): applied from
the start with B = 0, so it changes nothing and every client exchanges arrays of the same shapes; once a
client's loss falls below ``lora_switch_loss`` (0.5), :func:`switch_to_lora` freezes the cross-attention
and only the LoRA factors (and the rest of the generator) keep training.

Choices where the paper and its (incomplete) code are silent, written down here: the feed-forward gets its
own LayerNorm in front (pre-norm, as in the transformer blocks the PromptFormer follows); pooling is
adaptive average pooling over the token axis (contiguous groups of ≈ N/4 patches, row-major); the prompt
tokens get no position embedding; the class-description text embeddings are computed once with the frozen
text tower (they do not depend on the image) and L2-normalised before the projection.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..models.clip import CLIP
from ..models.vit import TokenState, VisionTransformer
from . import lora

log = logging.getLogger(__name__)

LORA_NAME = "fedmvp"
LORA_TARGETS = ("cross_attn.q", "cross_attn.k", "cross_attn.v")


@dataclass
class PromptFormerConfig:
    """Sizes of the prompt generator; defaults are the paper's."""

    num_prompts: int = 4  # prompt tokens appended after the patches (paper: 4)
    heads: int = 4  # cross-attention heads (paper: 4)
    ff_mult: int = 4  # GEGLU hidden width = ff_mult · vision width (the usual transformer ratio)
    alpha: float = 10.0  # weight of the consistency loss (paper: 10)
    lora_rank: int = 0  # rank of the LoRA on q/k/v; 0 = no LoRA (paper's optional variant uses 8)
    lora_switch_loss: float = 0.5  # loss below which the cross-attention freezes and LoRA trains (paper: 0.5)

    def __post_init__(self) -> None:
        for name in ("num_prompts", "heads", "ff_mult"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"PromptFormerConfig.{name} must be an int ≥ 1, got {v!r}")
        if not isinstance(self.lora_rank, int) or self.lora_rank < 0:
            raise ValueError(f"PromptFormerConfig.lora_rank must be an int ≥ 0 (0 = off), got {self.lora_rank!r}")
        if self.alpha < 0:
            raise ValueError(f"PromptFormerConfig.alpha must be ≥ 0, got {self.alpha!r}")


# ============================================================================================ pure maths
def geglu(x: Tensor) -> Tensor:
    """(..., 2H) → (..., H): value half times GELU of the gate half."""
    value, gate = x.chunk(2, dim=-1)
    return value * F.gelu(gate)


def pool_tokens(x: Tensor, n: int) -> Tensor:
    """(B, N, C) → (B, n, C): average over n contiguous groups of tokens (adaptive average pooling)."""
    return F.adaptive_avg_pool1d(x.transpose(1, 2), n).transpose(1, 2)


def description_logits(image_features: Tensor, text_features: Tensor, scale: Tensor | float) -> Tensor:
    """Image features (B, D), description embeddings (K, S, D) → logits (B, K):
    per class, the mean over its S descriptions of scale · cos(image, description)."""
    img = F.normalize(image_features, dim=-1)
    txt = F.normalize(text_features, dim=-1)
    return scale * torch.einsum("bd,ksd->bks", img, txt).mean(-1)


def consistency_loss(prompted: Tensor, frozen: Tensor) -> Tensor:
    """Mean over the batch of 1 − cos(prompted feature, frozen CLIP feature), both (B, D)."""
    return (1 - F.cosine_similarity(prompted, frozen.to(prompted.dtype), dim=-1)).mean()


def fedmvp_loss(logits: Tensor, labels: Tensor, prompted: Tensor, frozen_flipped: Tensor, alpha: float = 10.0
                ) -> tuple[Tensor, Tensor, Tensor]:
    """(total, cross-entropy, consistency): CE(logits (B, K), labels (B,)) + α · consistency."""
    ce = F.cross_entropy(logits, labels)
    cons = consistency_loss(prompted, frozen_flipped)
    return ce + alpha * cons, ce, cons


# ============================================================================================ modules
class CrossAttention(nn.Module):
    """Multi-head attention of queries (B, N, C) over a context (M, C) shared by the batch or (B, M, C).

    Separate ``q``, ``k``, ``v`` Linear layers (so LoRA can target each) and an output ``proj``.
    """

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"PromptFormer width {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, context: Tensor) -> Tensor:
        B, N, C = x.shape
        if context.dim() == 2:
            context = context.unsqueeze(0).expand(B, -1, -1)
        h = self.heads
        q = self.q(x).view(B, N, h, C // h).transpose(1, 2)  # (B, h, N, c)
        k = self.k(context).view(B, -1, h, C // h).transpose(1, 2)  # (B, h, M, c)
        v = self.v(context).view(B, -1, h, C // h).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v)  # (B, h, N, c)
        return self.proj(out.transpose(1, 2).reshape(B, N, C))


class PromptFormer(nn.Module):
    """Patch embeddings (B, N, C) + description embeddings (M, D) → prompt tokens (B, num_prompts, C)."""

    def __init__(self, *, dim: int, text_dim: int, cfg: PromptFormerConfig | None = None) -> None:
        super().__init__()
        cfg = cfg or PromptFormerConfig()
        self.cfg = cfg
        self.ctx_proj = nn.Linear(text_dim, dim)  # text width → vision width (512 → 768 in the paper)
        self.norm_q = nn.LayerNorm(dim)
        self.norm_ctx = nn.LayerNorm(dim)
        self.cross_attn = CrossAttention(dim, cfg.heads)
        self.norm_ff = nn.LayerNorm(dim)
        self.ff_in = nn.Linear(dim, 2 * cfg.ff_mult * dim)
        self.ff_out = nn.Linear(cfg.ff_mult * dim, dim)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def forward(self, patches: Tensor, context: Tensor) -> Tensor:
        """patches (B, N, C), context (M, D) or (B, M, D) → prompts (B, num_prompts, C)."""
        ctx = self.norm_ctx(self.ctx_proj(context))
        h = self.cross_attn(self.norm_q(patches), ctx)  # (B, N, C)
        h = h + self.ff_out(geglu(self.ff_in(self.norm_ff(h))))
        return pool_tokens(h, self.cfg.num_prompts)


class FedMVP(nn.Module):
    """A frozen CLIP + a PromptFormer whose prompts enter the vision tower through ``embed_hook``.

    ``set_classes(text_features)`` sets the class descriptions in play, (K, S, D) — K classes with S
    descriptions each, already encoded by the CLIP text tower. ``forward(images)`` → logits (B, K);
    ``encode(images)`` → prompted image features (B, D). Only ``generator`` holds trainable parameters;
    ``generator_state()`` / ``load_generator_state()`` are what a federated client exchanges. The hook
    is set on construction and taken out by :meth:`remove` (the CLIP is the plain model afterwards).
    """

    def __init__(self, clip: CLIP, *, cfg: PromptFormerConfig | None = None, freeze: bool = True) -> None:
        super().__init__()
        cfg = cfg or PromptFormerConfig()
        visual = clip.visual
        if not isinstance(visual, VisionTransformer):
            raise ValueError(f"FedMVP needs a vitkit CLIP whose visual tower is a VisionTransformer, got {type(visual).__name__}")
        if visual.embed_hook is not None:
            raise ValueError("cannot add FedMVP prompts: the vision tower's embed_hook is already used by another method")
        self.cfg, self.clip = cfg, clip
        if freeze:
            clip.requires_grad_(False)
        self.generator = PromptFormer(dim=visual.embed_dim, text_dim=clip.embed_dim, cfg=cfg).to(visual.pos_embed.device)
        if cfg.lora_rank:
            lora.apply(self.generator, lora.LoraConfig(rank=cfg.lora_rank, alpha=float(cfg.lora_rank), targets=LORA_TARGETS),
                       name=LORA_NAME)
            for n, p in self.generator.named_parameters():  # LoRA waits for the switch (B = 0: no effect yet)
                if lora.PREFIX in n:
                    p.requires_grad_(False)
        self.lora_active = False
        self.register_buffer("text_features", torch.zeros(0, 0, clip.embed_dim), persistent=False)
        self._prompting = True
        visual.embed_hook = self._embed_hook

    # ---------------------------------------------------------------- wiring
    def _embed_hook(self, x: Tensor, state: TokenState) -> Tensor:
        if not self._prompting:
            return x
        if self.text_features.numel() == 0:
            raise RuntimeError("FedMVP has no class descriptions: call set_classes(text_features) first")
        context = self.text_features.flatten(0, 1)  # (K·S, D)
        context = F.normalize(context, dim=-1)
        prompts = self.generator(x[:, state.num_prefix :], context)  # queries: patches after the position embedding
        state.extras["fedmvp_prompts"] = prompts.shape[1]
        return torch.cat([x, prompts.to(x.dtype)], dim=1)

    def remove(self) -> PromptFormer:
        """Take the hook out; returns the generator."""
        if self.clip.visual.embed_hook != self._embed_hook:  # bound methods: equal, not identical
            raise ValueError("FedMVP's hook is not on this CLIP any more (removed twice, or replaced)")
        self.clip.visual.embed_hook = None
        return self.generator

    def set_classes(self, text_features: Tensor) -> None:
        """Description embeddings (K, S, D) of the classes to score (and to condition the prompts on)."""
        if text_features.dim() != 3 or text_features.shape[-1] != self.clip.embed_dim:
            raise ValueError(f"text_features must be (classes, descriptions, {self.clip.embed_dim}), "
                             f"got {tuple(text_features.shape)}")
        self.text_features = text_features.detach().to(self.clip.logit_scale.device)

    # ---------------------------------------------------------------- forward
    def encode(self, images: Tensor) -> Tensor:
        """Prompted image features (B, D) (unnormalised)."""
        return self.clip.encode_image(images)

    @torch.no_grad()
    def encode_frozen(self, images: Tensor) -> Tensor:
        """The plain frozen CLIP's image features (B, D), prompts switched off."""
        self._prompting = False
        try:
            return self.clip.encode_image(images)
        finally:
            self._prompting = True

    def logits(self, features: Tensor) -> Tensor:
        return description_logits(features, self.text_features, self.clip.logit_scale.exp())

    def forward(self, images: Tensor) -> Tensor:
        return self.logits(self.encode(images))

    def loss(self, images: Tensor, labels: Tensor, frozen_flipped: Tensor | None = None) -> tuple[Tensor, dict]:
        """FedMVP's loss on a batch; ``frozen_flipped`` (B, D) may be precomputed (the CLIP is frozen)."""
        if frozen_flipped is None:
            frozen_flipped = self.encode_frozen(images.flip(-1))
        f = self.encode(images)
        total, ce, cons = fedmvp_loss(self.logits(f), labels, f, frozen_flipped, self.cfg.alpha)
        return total, {"ce": ce.item(), "consistency": cons.item()}

    # ---------------------------------------------------------------- LoRA switch and exchange
    def switch_to_lora(self) -> bool:
        """Freeze the cross-attention's own q/k/v weights and train the LoRA factors instead; True if it
        switched now (False when there is no LoRA or it is already on)."""
        if not self.cfg.lora_rank or self.lora_active:
            return False
        for n, p in self.generator.named_parameters():
            if n.startswith("cross_attn."):
                p.requires_grad_(lora.PREFIX in n)
        self.lora_active = True
        log.info("FedMVP: loss below %.2f, cross-attention frozen, LoRA (rank %d) trains",
                 self.cfg.lora_switch_loss, self.cfg.lora_rank)
        return True

    def maybe_switch(self, loss: float) -> bool:
        """Apply the paper's rule: switch to LoRA once the (client's) loss falls below the threshold."""
        return loss < self.cfg.lora_switch_loss and self.switch_to_lora()

    def generator_state(self) -> dict[str, Tensor]:
        """Every tensor of the generator (LoRA factors included), detached, CPU: what travels."""
        return {k: v.detach().cpu().clone() for k, v in self.generator.state_dict().items()}

    def load_generator_state(self, state: dict[str, Tensor]) -> None:
        own = self.generator.state_dict()
        bad = sorted(set(own) ^ set(state))
        if bad:
            raise ValueError(f"generator state does not fit this FedMVP model (keys differ: {bad[:4]}…)")
        self.generator.load_state_dict(state)

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.generator.parameters() if p.requires_grad]


class MomentumSGD:
    """SGD with momentum (dampening 0, no Nesterov), the update of ``torch.optim.SGD``.

    Own code because constructing the first ``torch.optim`` optimizer of a process imports TorchDynamo,
    which costs seconds; a Flower ClientApp run as a process starts afresh every round.
    """

    def __init__(self, params: list[nn.Parameter], lr: float, momentum: float = 0.9) -> None:
        self.params, self.lr, self.momentum = list(params), lr, momentum
        self.bufs: list[Tensor | None] = [None] * len(self.params)

    @torch.no_grad()
    def step(self) -> None:
        for i, p in enumerate(self.params):
            if p.grad is None:
                continue
            b = self.bufs[i]
            self.bufs[i] = b = p.grad.clone() if b is None else b.mul_(self.momentum).add_(p.grad)
            p.add_(b, alpha=-self.lr)

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None


def cosine_lr(lr: float, step: int, total: int) -> float:
    """Cosine decay from ``lr`` at step 0 to 0 at ``total``."""
    return lr * 0.5 * (1 + math.cos(math.pi * min(step, total) / max(1, total)))


def train_fedmvp(model: FedMVP, images: Tensor, labels: Tensor, frozen_flipped: Tensor, *, steps: int, lr: float,
                 batch_size: int, momentum: float = 0.9, seed: int = 0, total_steps: int | None = None,
                 step_offset: int = 0, on_step: Callable[[int, float], None] | None = None) -> list[float]:
    """SGD (momentum, cosine over ``total_steps``) on the generator; → per-step losses.

    images (N, 3, S, S), labels (N,) into the classes of ``model.set_classes``, frozen_flipped (N, D)
    the frozen CLIP's features of the flipped images. ``step_offset`` continues a cosine schedule that
    spans several calls (federated rounds). With LoRA configured, the switch rule is checked on the
    running mean loss of the call so far after every step.
    """
    total = total_steps or steps
    g = torch.Generator().manual_seed(seed)
    opt = MomentumSGD(model.trainable_parameters(), lr=lr, momentum=momentum)
    losses: list[float] = []
    model.train()
    for s in range(steps):
        opt.lr = cosine_lr(lr, step_offset + s, total)
        idx = torch.randint(len(images), (min(batch_size, len(images)),), generator=g)
        loss, _ = model.loss(images[idx], labels[idx], frozen_flipped[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if on_step is not None:
            on_step(s, losses[-1])
        if model.maybe_switch(sum(losses) / len(losses)):
            opt = MomentumSGD(model.trainable_parameters(), lr=lr, momentum=momentum)
    model.eval()
    return losses


__all__ = [
    "CrossAttention",
    "FedMVP",
    "LORA_NAME",
    "MomentumSGD",
    "PromptFormer",
    "PromptFormerConfig",
    "consistency_loss",
    "cosine_lr",
    "description_logits",
    "fedmvp_loss",
    "geglu",
    "pool_tokens",
    "train_fedmvp",
]
