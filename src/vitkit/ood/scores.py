"""OOD scores as pure tensor functions (higher = more in-distribution).

Logit scores take ``logits (B, K)``; feature scores take ``features (B, D)`` and the statistics a
detector fitted on the training set (see :mod:`vitkit.ood.detectors` for the fitted wrappers).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["energy", "knn_score", "mahalanobis_score", "max_logit", "msp", "class_statistics"]


def msp(logits: Tensor) -> Tensor:
    """Maximum softmax probability (Hendrycks & Gimpel): (B, K) → (B,)."""
    return logits.softmax(-1).max(-1).values


def max_logit(logits: Tensor) -> Tensor:
    """Maximum logit (Hendrycks et al. 2022): (B, K) → (B,)."""
    return logits.max(-1).values


def energy(logits: Tensor, temperature: float = 1.0) -> Tensor:
    """Negative free energy T·logsumexp(logits / T) (Liu et al. 2020): (B, K) → (B,)."""
    return temperature * torch.logsumexp(logits / temperature, dim=-1)


def knn_score(queries: Tensor, bank: Tensor, k: int = 1, chunk: int = 4096, bank_normalized: bool = False) -> Tensor:
    """Cosine similarity to the k-th nearest neighbour in ``bank`` (Sun et al. 2022).

    queries (B, D), bank (N, D), both L2-normalised here → (B,). The negative k-th neighbour
    distance of the paper is a monotone function of this similarity (‖a−b‖² = 2 − 2 a·b), so
    rankings and every metric are identical. The bank is scanned in chunks of ``chunk`` rows;
    ``bank_normalized`` skips re-normalising a bank that already has unit rows (a fitted detector's).
    """
    q = F.normalize(queries, dim=-1)
    b = bank if bank_normalized else F.normalize(bank, dim=-1)
    if k > len(b):
        raise ValueError(f"k={k} is larger than the {len(b)} training features: use k <= {len(b)}")
    best = None
    for i in range(0, len(b), chunk):
        sims = q @ b[i : i + chunk].T  # (B, chunk)
        cand = sims if best is None else torch.cat([best, sims], dim=1)
        best = cand.topk(min(k, cand.shape[1]), dim=1).values
    return best[:, k - 1]


def class_statistics(features: Tensor, labels: Tensor, num_classes: int) -> tuple[Tensor, Tensor]:
    """Class means (K, D) and the inverse of the shared (pooled) covariance (D, D).

    The covariance is the mean of the within-class outer products; a tiny ridge keeps it invertible.
    """
    x = features.double()
    means = torch.stack([x[labels == c].mean(0) for c in range(num_classes)])
    centred = x - means[labels]
    cov = centred.T @ centred / len(x)
    cov = cov + 1e-6 * cov.diagonal().mean().clamp_min(1e-12) * torch.eye(x.shape[1], dtype=x.dtype)
    return means.to(features.dtype), torch.linalg.inv(cov).to(features.dtype)


def mahalanobis_score(features: Tensor, means: Tensor, precision: Tensor) -> Tensor:
    """−min_c (x−μ_c)ᵀ Σ⁻¹ (x−μ_c) (Lee et al. 2018): features (B, D), means (K, D), precision (D, D) → (B,)."""
    d = features.unsqueeze(1) - means.unsqueeze(0)  # (B, K, D)
    m = torch.einsum("bkd,de,bke->bk", d, precision, d)
    return -m.min(-1).values
