"""MoLAR: a mixture of exemplars for OOD detection on frozen backbone features (Mannix & Bondell).

1. :func:`kmeans` (k-means++ init, seeded, best of ``n_init``) with ``budget`` clusters on the
   L2-normalised training features;
2. :func:`select_exemplars`: the real sample with the largest inner product with each centroid
   becomes an exemplar, with its label;
3. :class:`SoftNNHead` (Linear-BN-ReLU ×2, Linear) trained as a soft nearest-neighbour classifier
   over the exemplars (:func:`soft_nn_probs`, τ = 0.1, label smoothing 0.1 on the exemplar
   labels, targets of the other view sharpened with T = 0.25);
4. score = the maximum cosine similarity between a sample's head embedding and the exemplars'.

Scoring costs one small MLP plus ``budget`` dot products per sample instead of a search over
every training feature (KNN). The backbone is frozen and features are precomputed, so the
paper's multi-crop views are replaced here by two feature-space views (dropout + Gaussian noise).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .detectors import Detector, register_detector

log = logging.getLogger(__name__)

__all__ = ["MoLARConfig", "MoLARDetector", "SoftNNHead", "group_partners", "kmeans", "kmeans_pp_init", "select_exemplars",
           "sharpen", "soft_nn_probs"]


# ------------------------------------------------------------------ k-means and exemplars
def _sq_dist(x: Tensor, c: Tensor) -> Tensor:
    """Squared Euclidean distances (N, D) × (K, D) → (N, K)."""
    return ((x * x).sum(1, keepdim=True) - 2 * x @ c.T + (c * c).sum(1)).clamp_min(0)


def kmeans_pp_init(x: Tensor, k: int, generator: torch.Generator) -> Tensor:
    """k-means++ seeding (Arthur & Vassilvitskii 2007): x (N, D) → centroids (k, D)."""
    n = len(x)
    first = int(torch.randint(n, (1,), generator=generator))
    centres = [x[first]]
    d2 = _sq_dist(x, x[first : first + 1]).squeeze(1)
    for _ in range(1, k):
        total = d2.sum()
        if total <= 0:  # fewer distinct points than k: pick any
            idx = int(torch.randint(n, (1,), generator=generator))
        else:
            idx = int(torch.multinomial(d2 / total, 1, generator=generator))
        centres.append(x[idx])
        d2 = torch.minimum(d2, _sq_dist(x, x[idx : idx + 1]).squeeze(1))
    return torch.stack(centres)


def kmeans(x: Tensor, k: int, *, n_init: int = 10, iters: int = 100, tol: float = 1e-6,
           seed: int = 0) -> tuple[Tensor, Tensor, float]:
    """Lloyd's k-means, best inertia of ``n_init`` k-means++ starts.

    x (N, D) → centroids (k, D), assignment (N,), inertia (sum of squared distances). An empty
    cluster is re-seeded at the point farthest from its centroid.
    """
    if not 1 <= k <= len(x):
        raise ValueError(f"k={k} clusters must be between 1 and the number of points ({len(x)})")
    g = torch.Generator().manual_seed(seed)
    best = None
    for _ in range(n_init):
        c = kmeans_pp_init(x, k, g)
        prev = float("inf")
        for _ in range(iters):
            d = _sq_dist(x, c)
            dist, assign = d.min(1)
            inertia = float(dist.sum())
            counts = torch.bincount(assign, minlength=k)
            sums = torch.zeros_like(c).index_add_(0, assign, x)
            c = sums / counts.clamp_min(1).unsqueeze(1).to(x.dtype)
            for j in torch.nonzero(counts == 0).flatten().tolist():
                far = int(dist.argmax())
                c[j], dist[far] = x[far], 0.0
            if prev - inertia <= tol * max(prev, 1e-12):
                break
            prev = inertia
        dist, assign = _sq_dist(x, c).min(1)
        inertia = float(dist.sum())
        if best is None or inertia < best[2]:
            best = (c, assign, inertia)
    return best


def select_exemplars(features: Tensor, budget: int, *, n_init: int = 10, iters: int = 100,
                     seed: int = 0) -> Tensor:
    """Indices (budget,) of the real samples nearest (inner product) to the k-means centroids of
    the L2-normalised ``features`` (N, D); distinct samples, one per centroid."""
    n = len(features)
    if budget > n:
        raise ValueError(f"exemplar budget={budget} is larger than the {n} training samples: "
                         f"use budget <= {n}")
    if budget < 1:
        raise ValueError(f"exemplar budget={budget} must be >= 1")
    x = F.normalize(features.float(), dim=-1)
    centroids, _, _ = kmeans(x, budget, n_init=n_init, iters=iters, seed=seed)
    sims = x @ F.normalize(centroids, dim=-1).T  # (N, budget)
    chosen: list[int] = []
    taken = torch.zeros(n, dtype=torch.bool)
    for j in range(budget):
        s = sims[:, j].masked_fill(taken, float("-inf"))
        i = int(s.argmax())
        chosen.append(i)
        taken[i] = True
    return torch.tensor(chosen)


def group_partners(groups: Tensor, index: Tensor, generator: torch.Generator) -> Tensor:
    """For rows ``index`` (B,), a uniformly drawn row of the same group each (itself included): groups (N,) → (B,)."""
    order = torch.argsort(groups, stable=True)
    _, counts = torch.unique(groups[order], return_counts=True)
    starts = torch.cumsum(counts, 0) - counts
    slot = torch.empty_like(order)
    slot[order] = torch.repeat_interleave(torch.arange(len(counts)), counts)
    grp = slot[index]
    off = (torch.rand(len(index), generator=generator) * counts[grp]).long().clamp_max(counts[grp] - 1)
    return order[starts[grp] + off]


# ------------------------------------------------------------------ soft nearest-neighbour head
class SoftNNHead(nn.Module):
    """Projection (B, D) → (B, out_dim): Linear-BN-ReLU, Linear-BN-ReLU, Linear."""

    def __init__(self, dim: int, hidden: int, out_dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
            nn.Linear(hidden, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
            nn.Linear(hidden, out_dim),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def soft_nn_probs(queries: Tensor, support: Tensor, support_labels: Tensor, tau: float = 0.1) -> Tensor:
    """p = softmax(q̂·Ŝᵀ / τ) @ Y: queries (B, E), support (M, E), label distributions Y (M, K) → (B, K)."""
    sims = F.normalize(queries, dim=-1) @ F.normalize(support, dim=-1).T
    return sims.div(tau).softmax(-1) @ support_labels


def sharpen(p: Tensor, temperature: float = 0.25) -> Tensor:
    """p^(1/T), renormalised over the last dimension: (B, K) → (B, K)."""
    q = p.clamp_min(1e-12) ** (1.0 / temperature)
    return q / q.sum(-1, keepdim=True)


@dataclass
class MoLARConfig:
    budget: int = 100  # exemplars (k-means clusters)
    hidden: int = 256
    out_dim: int = 128
    tau: float = 0.1
    label_smoothing: float = 0.1
    sharpen: float = 0.25
    steps: int = 1500  # ≈ 12 epochs over 32k features; the loss plateaus (benchmarks/RESULTS.md)
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 1e-4
    view_dropout: float = 0.1  # feature-space views (stand-in for multi-crop, the backbone is frozen)
    view_noise: float = 0.1  # Gaussian noise, in units of the features' standard deviation
    n_init: int = 10
    kmeans_iters: int = 100
    seed: int = 0

    def __post_init__(self) -> None:
        checks = {"budget": self.budget >= 1, "hidden": self.hidden >= 1, "out_dim": self.out_dim >= 1,
                  "tau": self.tau > 0, "label_smoothing": 0 <= self.label_smoothing < 1,
                  "sharpen": self.sharpen > 0, "steps": self.steps >= 0, "batch_size": self.batch_size >= 2,
                  "n_init": self.n_init >= 1, "kmeans_iters": self.kmeans_iters >= 1,
                  "view_dropout": 0 <= self.view_dropout < 1, "view_noise": self.view_noise >= 0}
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"invalid MoLAR option(s) {bad}: budget/hidden/out_dim/steps/n_init >= 1 (steps >= 0), "
                             "tau/sharpen > 0, label_smoothing and view_dropout in [0, 1), batch_size >= 2")


@register_detector("molar")
class MoLARDetector(Detector):
    """MoLAR on features (B, D): needs labels; score = max cosine similarity to the exemplars in head space."""

    input, needs_labels, Config = "features", True, MoLARConfig

    def fit(self, data, labels=None, *, extractor=None, groups: Tensor | None = None) -> MoLARDetector:
        """As :meth:`Detector.fit`; ``groups`` (N,) optionally names the image each row was cropped from:
        the second view of a row is then another crop of the same image (multi-crop views) instead of
        a feature-space perturbation of the row itself."""
        if groups is not None:
            groups = torch.as_tensor(groups).reshape(-1).long()
        self._groups = groups
        try:
            return super().fit(data, labels, extractor=extractor)
        finally:
            self._groups = None

    def _fit(self, x: Tensor, y: Tensor | None) -> None:
        cfg = self.cfg
        groups = getattr(self, "_groups", None)
        if groups is not None and len(groups) != len(x):
            raise ValueError(f"groups has {len(groups)} entries but there are {len(x)} training rows: they must match")
        if cfg.budget > len(x):
            raise ValueError(f"exemplar budget={cfg.budget} is larger than the {len(x)} training samples: "
                             f"use budget <= {len(x)}")
        idx = select_exemplars(x, cfg.budget, n_init=cfg.n_init, iters=cfg.kmeans_iters, seed=cfg.seed)
        self.exemplar_index = idx
        self.exemplars, self.exemplar_labels = x[idx].clone(), y[idx].clone()
        self.num_classes = int(y.max()) + 1
        covered = len(self.exemplar_labels.unique())
        log.info("MoLAR: %d exemplars cover %d of %d classes", cfg.budget, covered, self.num_classes)
        with torch.random.fork_rng():  # seeded init without touching the caller's global RNG
            torch.manual_seed(cfg.seed)
            self.head = SoftNNHead(x.shape[1], cfg.hidden, cfg.out_dim)
        self.history = self._train_head(x, y, groups)
        self.head.eval()
        self._cache()

    def _train_head(self, x: Tensor, y: Tensor, groups: Tensor | None = None) -> list[float]:
        """Soft nearest-neighbour training over the exemplars; returns the loss per step.

        Per batch: two views of each feature; p_v = softmax(ẑ_v·Ŝᵀ/τ) @ Y_S with the exemplars'
        label-smoothed labels Y_S; loss = mean over views of CE(smoothed label, p_v) plus the
        PAWS-style consistency CE(sharpen(p_other, T), p_v) with the target detached. With
        ``groups``, the second view is another row of the same group (another crop of the image).
        """
        cfg = self.cfg
        g = torch.Generator().manual_seed(cfg.seed)
        k = self.num_classes
        ys = F.one_hot(self.exemplar_labels, k).float() * (1 - cfg.label_smoothing) + cfg.label_smoothing / k
        std = x.std(0, keepdim=True).clamp_min(1e-6)
        opt = torch.optim.AdamW(self.head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, cfg.steps))
        bs = min(cfg.batch_size, len(x))

        def view(v: Tensor) -> Tensor:
            keep = (torch.rand(v.shape, generator=g) >= cfg.view_dropout).float() / (1 - cfg.view_dropout)
            return v * keep + cfg.view_noise * std * torch.randn(v.shape, generator=g)

        def partner(b: Tensor) -> Tensor:
            return group_partners(groups, b, g)

        history = []
        self.head.train()
        for _ in range(cfg.steps):
            b = torch.randint(len(x), (bs,), generator=g)
            xb, yb = x[b], y[b]
            xb2 = xb if groups is None else x[partner(b)]
            z = self.head(torch.cat([view(xb), view(xb2), self.exemplars]))  # shared BN statistics
            z1, z2, s = z[:bs], z[bs : 2 * bs], z[2 * bs :]
            p1 = soft_nn_probs(z1, s, ys, cfg.tau)
            p2 = soft_nn_probs(z2, s, ys, cfg.tau)
            target = F.one_hot(yb, k).float() * (1 - cfg.label_smoothing) + cfg.label_smoothing / k
            ce = lambda t, p: -(t * p.clamp_min(1e-12).log()).sum(-1).mean()  # noqa: E731
            loss = 0.5 * (ce(target, p1) + ce(target, p2)) + 0.5 * (
                ce(sharpen(p2, cfg.sharpen).detach(), p1) + ce(sharpen(p1, cfg.sharpen).detach(), p2))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            history.append(float(loss.detach()))
        return history

    @torch.no_grad()
    def _cache(self) -> None:
        self.exemplar_embeds = F.normalize(self.head(self.exemplars), dim=-1)  # (budget, out_dim)

    @torch.no_grad()
    def embed(self, x: Tensor) -> Tensor:
        """Normalised head embeddings (B, out_dim)."""
        return F.normalize(self.head(x), dim=-1)

    @torch.no_grad()
    def predict(self, x: Tensor) -> Tensor:
        """Soft nearest-neighbour class probabilities (B, K) over the exemplars' (unsmoothed) labels."""
        ys = F.one_hot(self.exemplar_labels, self.num_classes).float()
        return soft_nn_probs(self.head(x), self.exemplar_embeds, ys, self.cfg.tau)

    def _score(self, x: Tensor) -> Tensor:
        return (self.embed(x) @ self.exemplar_embeds.T).max(-1).values

    def _tensors(self) -> dict[str, Tensor]:
        t = {f"head.{k}": v for k, v in self.head.state_dict().items()}
        return t | {"exemplars": self.exemplars, "exemplar_labels": self.exemplar_labels,
                    "exemplar_index": self.exemplar_index, "num_classes": torch.tensor([self.num_classes])}

    def _restore(self, t: dict[str, Tensor]) -> None:
        self.head = SoftNNHead(self.dim, self.cfg.hidden, self.cfg.out_dim)
        self.head.load_state_dict({k[5:]: v for k, v in t.items() if k.startswith("head.")})
        self.head.eval()
        self.exemplars, self.exemplar_labels = t["exemplars"], t["exemplar_labels"]
        self.exemplar_index, self.num_classes = t["exemplar_index"], int(t["num_classes"])
        self._cache()
