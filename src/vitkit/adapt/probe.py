"""Frozen-feature classifiers: a linear probe (mini-batch AdamW, cosine schedule) and weighted k-NN.

The two standard ways to ask "how good are a backbone's features" without changing the backbone
(DINO / DINOv2 report both). Pure tensor functions on precomputed features; own code because
they are a few lines of torch and a scikit-learn dependency would be heavier than the method.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass(frozen=True, kw_only=True)
class ProbeConfig:
    """Training of a linear probe on frozen features."""

    steps: int = 600  # optimizer steps (the budget compared against other training)
    batch_size: int = 64  # features per step, as the crop classifiers' batches
    lr: float = 3e-3  # AdamW peak learning rate (cosine decay to 0, no warm-up: the problem is convex)
    weight_decay: float = 1e-4  # small L2: the features are fixed, overfitting is bounded by their dimension
    standardize: bool = True  # z-score features with the training mean/std (folded into the returned Linear)
    seed: int = 0  # batch order and initialisation

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError(f"steps and batch_size must be ≥ 1, got {self.steps}, {self.batch_size}")
        if self.lr <= 0 or self.weight_decay < 0:
            raise ValueError(f"lr must be > 0 and weight_decay ≥ 0, got {self.lr}, {self.weight_decay}")


def fit_linear_probe(features: Tensor, labels: Tensor, num_classes: int, cfg: ProbeConfig = ProbeConfig()
                     ) -> nn.Linear:
    """Features (N, D), labels (N,) in [0, num_classes) → a Linear(D, num_classes) on raw features.

    With ``standardize`` the probe is trained on z-scored features and the standardisation is then
    folded into the returned layer's weight and bias, so it applies to raw features directly.
    """
    if features.dim() != 2 or len(features) != len(labels):
        raise ValueError(f"features must be (N, D) with N labels, got {tuple(features.shape)} and {len(labels)}")
    x = features.detach().float()
    mu = x.mean(0) if cfg.standardize else torch.zeros(x.shape[1])
    sd = x.std(0).clamp_min(1e-6) if cfg.standardize else torch.ones(x.shape[1])
    z = (x - mu) / sd
    g = torch.Generator().manual_seed(cfg.seed)
    head = nn.Linear(x.shape[1], num_classes)
    with torch.no_grad():
        head.weight.normal_(0, 0.01, generator=g)
        head.bias.zero_()
    opt = torch.optim.AdamW(head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / cfg.steps)))
    order = torch.randperm(len(z), generator=g)
    pos = 0
    with torch.enable_grad():
        for _ in range(cfg.steps):
            if pos + cfg.batch_size > len(order):
                order, pos = torch.randperm(len(z), generator=g), 0
            idx = order[pos: pos + cfg.batch_size]
            pos += cfg.batch_size
            loss = F.cross_entropy(head(z[idx]), labels[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    out = nn.Linear(x.shape[1], num_classes)
    with torch.no_grad():  # W (x − μ)/σ + b = (W/σ) x + (b − W μ/σ)
        out.weight.copy_(head.weight / sd)
        out.bias.copy_(head.bias - (head.weight * (mu / sd)).sum(1))
    return out


@torch.no_grad()
def knn_scores(bank: Tensor, bank_labels: Tensor, query: Tensor, num_classes: int, *, k: int = 20,
               temperature: float = 0.07, chunk: int = 1024) -> Tensor:
    """Weighted k-NN class scores (DINO's protocol): (Q, num_classes), each row summing to 1.

    Cosine similarity to the ``k`` nearest of ``bank`` (N, D); each neighbour votes for its label
    with weight exp(sim / temperature).
    """
    if k < 1 or k > len(bank):
        raise ValueError(f"k={k} must be in [1, {len(bank)}] (the bank's size)")
    b = F.normalize(bank.float(), dim=-1)
    out = []
    for i in range(0, len(query), chunk):
        q = F.normalize(query[i: i + chunk].float(), dim=-1)
        sim, idx = (q @ b.T).topk(k, dim=-1)
        w = (sim / temperature).exp()
        votes = torch.zeros(len(q), num_classes).scatter_add_(1, bank_labels[idx], w)
        out.append(votes / votes.sum(1, keepdim=True))
    return torch.cat(out)
