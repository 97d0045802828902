"""A downstream consumer of token sets, standing in for a language model's prefill.

:class:`TokenSetConsumer` is a small transformer over the kept tokens of a
:class:`~vitkit.reduce.partitions.TokenSet`: each token is projected to the consumer's width and gets
learned embeddings of its partition id and its 2-D patch position (row, col; a fused token gets a
"no position" embedding); a class token reads out the label. Its cost grows with the number of
tokens (linear layers ∝ K, attention ∝ K²), as a language model's prefill does.

:func:`train_consumer` trains it with the engine on frozen dense token sets, with random token
dropping as augmentation (each batch keeps a random fraction in [min_keep, 1] of every set), so one
consumer serves every reduction method; optionally some batches keep attention-guided subsets instead.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset

from ..engine import TrainConfig, Trainer, TrainResult, model_device
from ..models.vit import Block
from .partitions import TokenSet

log = logging.getLogger(__name__)


@dataclass
class ConsumerConfig:
    in_dim: int = 64
    dim: int = 64
    depth: int = 6
    heads: int = 4
    num_classes: int = 15
    num_partitions: int = 10
    grid: tuple[int, int] = (8, 8)

    def __post_init__(self) -> None:
        self.grid = tuple(self.grid)
        for name in ("in_dim", "dim", "depth", "heads", "num_classes", "num_partitions"):
            if getattr(self, name) < 1:
                raise ValueError(f"ConsumerConfig.{name} must be ≥ 1, got {getattr(self, name)}")
        if self.dim % self.heads:
            raise ValueError(f"ConsumerConfig.dim {self.dim} is not divisible by heads {self.heads}")


class TokenSetConsumer(nn.Module):
    """Token set (B, K, in_dim) + partition (B, K) + pos (B, K, 2) → logits (B, num_classes)."""

    def __init__(self, cfg: ConsumerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.proj = nn.Linear(cfg.in_dim, cfg.dim)
        self.part_embed = nn.Embedding(cfg.num_partitions, cfg.dim)
        self.row_embed = nn.Embedding(cfg.grid[0] + 1, cfg.dim)  # last row: no position
        self.col_embed = nn.Embedding(cfg.grid[1] + 1, cfg.dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.dim))
        self.blocks = nn.ModuleList([Block(cfg.dim, cfg.heads) for _ in range(cfg.depth)])
        self.norm = nn.LayerNorm(cfg.dim, eps=1e-6)
        self.head = nn.Linear(cfg.dim, cfg.num_classes)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Embedding):
                nn.init.trunc_normal_(m.weight, std=0.02)

    def forward(self, tokens: Tensor, partition: Tensor, pos: Tensor) -> Tensor:
        gh, gw = self.cfg.grid
        row = torch.where(pos[..., 0] < 0, torch.full_like(pos[..., 0], gh), pos[..., 0])
        col = torch.where(pos[..., 1] < 0, torch.full_like(pos[..., 1], gw), pos[..., 1])
        x = self.proj(tokens) + self.part_embed(partition) + self.row_embed(row) + self.col_embed(col)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], 1)
        for blk in self.blocks:
            x = blk(x)
        return self.head(self.norm(x[:, 0]))

    def classify(self, ts: TokenSet) -> Tensor:
        return self(ts.tokens, ts.partition, ts.pos)


class _TokenSets(Dataset):
    def __init__(self, *tensors: Tensor) -> None:
        self.tensors = tensors

    def __len__(self) -> int:
        return len(self.tensors[0])

    def __getitem__(self, i: int) -> tuple[Tensor, ...]:
        return tuple(t[i] for t in self.tensors)


def random_subset(K: int, k: int, batch: int, generator: torch.Generator | None = None) -> Tensor:
    """(batch, k) random distinct indices in [0, K), ascending."""
    return torch.rand(batch, K, generator=generator).topk(k, dim=1).indices.sort(dim=1).values


def train_consumer(
    tokens: Tensor,
    labels: Tensor,
    partition: Tensor,
    pos: Tensor,
    cfg: ConsumerConfig,
    tcfg: TrainConfig,
    *,
    min_keep: float = 0.1,
    val: tuple[Tensor, Tensor] | None = None,
    scores: Tensor | None = None,
    guided_prob: float = 0.0,
    reduced: TokenSet | Sequence[TokenSet] | None = None,
    reduced_prob: float = 0.0,
) -> tuple[TokenSetConsumer, TrainResult]:
    """Train a consumer on dense token sets tokens (P, K, C) / labels (P,), with one shared layout
    ``partition`` (K,) and ``pos`` (K, 2). Each batch keeps a random k ∈ [min_keep·K, K] tokens of
    every set (a fresh subset per sample). With ``scores`` (P, K) (e.g. the encoder's CLS attention)
    a fraction ``guided_prob`` of the batches keeps instead the top-k by log score + Gumbel noise
    (subsets like attention-guided methods keep). With ``reduced`` — the same P pages' token sets as a
    reduction method produced them (tokens (P, k, C), per-page partition (P, k) and pos (P, k, 2)) — a
    fraction ``reduced_prob`` of the batches uses those instead, so the consumer also sees features the
    method computed (e.g. HiRED-early's, encoded without the dropped tokens); with several methods' sets
    (a sequence), each such batch takes one of them uniformly at random. ``val`` = (tokens, labels) is
    scored on all tokens."""
    if not 0.0 < min_keep <= 1.0:
        raise ValueError(f"min_keep={min_keep} is outside (0, 1]")
    if not 0.0 <= guided_prob <= 1.0 or (guided_prob > 0 and scores is None):
        raise ValueError(f"guided_prob={guided_prob} must be in [0, 1] and needs scores")
    reduced = [] if reduced is None else [reduced] if isinstance(reduced, TokenSet) else list(reduced)
    if not 0.0 <= reduced_prob <= 1.0 or (reduced_prob > 0 and not reduced):
        raise ValueError(f"reduced_prob={reduced_prob} must be in [0, 1] and needs reduced token sets")
    for j, r in enumerate(reduced):
        if len(r.tokens) != len(tokens):
            raise ValueError(f"reduced[{j}] holds {len(r.tokens)} token sets but tokens {len(tokens)}: give the same pages")
    torch.manual_seed(tcfg.seed)
    model = TokenSetConsumer(cfg)
    K = tokens.shape[1]

    extra = [t for r in reduced for t in (r.tokens, r.partition, r.pos)]
    first_reduced = 2 + (scores is not None)  # index of reduced[0]'s tokens in a batch
    ds = _TokenSets(tokens, labels, *([] if scores is None else [scores]), *extra)

    def loss_fn(m: nn.Module, batch) -> Tensor:
        x, y = batch[0], batch[1]
        B = x.shape[0]
        if reduced and float(torch.rand(())) < reduced_prob:
            j = int(torch.randint(len(reduced), ())) if len(reduced) > 1 else 0
            rt, rp, rpos = batch[first_reduced + 3 * j : first_reduced + 3 * j + 3]
            return F.cross_entropy(m(rt, rp, rpos), y, label_smoothing=tcfg.label_smoothing)
        k = int(torch.randint(max(1, int(min_keep * K)), K + 1, ()))
        # random numbers come from the CPU generator (the same stream on every device), then move to x's device
        if scores is not None and float(torch.rand(())) < guided_prob:
            gumbel = -torch.log(-torch.log(torch.rand(B, K).clamp_min(1e-20))).to(x.device)
            idx = (batch[2].clamp_min(1e-20).log() + gumbel).topk(k, dim=1).indices.sort(dim=1).values
        else:
            idx = random_subset(K, k, B).to(x.device)
        xs = x.gather(1, idx.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
        logits = m(xs, partition.to(x.device)[idx], pos.to(x.device)[idx])
        return F.cross_entropy(logits, y, label_smoothing=tcfg.label_smoothing)

    eval_fn = None
    if val is not None:
        vx, vy = val

        @torch.no_grad()
        def eval_fn(m: nn.Module) -> dict:
            dev = model_device(m)  # the engine may have moved the model to CUDA
            part_d, pos_d = partition.to(dev), pos.to(dev)
            pred = torch.cat([
                m(vx[i : i + 64].to(dev), part_d.expand(len(vx[i : i + 64]), -1),
                  pos_d.expand(len(vx[i : i + 64]), -1, -1)).argmax(-1).cpu()
                for i in range(0, len(vx), 64)
            ])
            return {"val_accuracy": (pred == vy.cpu()).float().mean().item()}

    result = Trainer(model, ds, tcfg, loss_fn=loss_fn, eval_fn=eval_fn).fit()
    return model.eval(), result


def save_consumer(model: TokenSetConsumer, path) -> None:
    """``{"cfg", "state"}`` of a consumer at ``path`` (a ``.pt`` file; tensors on the CPU)."""
    torch.save({"cfg": asdict(model.cfg), "state": {k: v.cpu() for k, v in model.state_dict().items()}}, path)


def load_consumer(path, device: torch.device | str = "cpu") -> TokenSetConsumer:
    """The consumer :func:`save_consumer` wrote at ``path``, on ``device``, in eval mode."""
    d = torch.load(path, weights_only=True)
    m = TokenSetConsumer(ConsumerConfig(**d["cfg"]))
    m.load_state_dict(d["state"])
    return m.to(device).eval()
