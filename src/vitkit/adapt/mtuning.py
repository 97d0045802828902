"""M-Tuning: CoOp-style prompt tuning whose vocabulary holds open words, with combinatorial tuning
and testing (CTT), for open-set recognition with a frozen CLIP.

The paper leaves out how many open words, how they are drawn and the selection rule (SYSTEMS.md
§15); the choices here:

* **Open words**: a pool of WordNet nouns (:mod:`vitkit.adapt.wordnet`, none equal to a class-name
  word). Each training step draws ``n_open`` of them afresh and appends them to the class
  vocabulary, so the shared context learns prompts for which unseen words are plausible
  alternatives; softmax over [known classes + open words]. Testing uses a fixed draw of
  ``n_open_test`` words (seeded).
* **CTT**: the K classes are split into ``groups`` contiguous groups; group g has its own context
  (sub-prompt) trained on its vocabulary [classes of g + open words]. Images of *other* groups are
  part of g's simulated open set: their loss is −log Σ p(open words), so a sub-prompt learns to
  stay unconfident outside its group (``other_groups_open``). At test each sub-prompt gives the
  highest known-class probability in its vocabulary; the sub-prompt with the highest one is
  selected, its class is the prediction and that probability is the known-ness score (higher =
  more likely a known class). With ``groups=1`` this is plain M-Tuning without CTT.

Closed-set parity (our addition, not in the paper). On the FRB open-set benchmark the contexts tuned
this way classify the known fonts worse than CoOp's (``benchmarks/RESULTS.md``): open words compete with
the known classes during training, and each sub-prompt also learns to push other groups' images to
the open words. Two knobs keep CoOp's objective in play:

* ``closed_weight`` λ ≥ 0: the sub-prompts are tuned *jointly* on
  ``Σ_g open_set_loss_g + λ · CE(known-class logits of all groups, label)``, where class k's logit
  comes from the sub-prompt of k's group (:func:`joint_known_logits`) and the softmax of the CE covers
  the known classes only — with ``groups=1`` that term is exactly CoOp's loss. λ = 0 (default) is the
  previous training: each sub-prompt tuned on its own open-set loss.
* ``closed_rule``: ``"selected"`` (default, the paper's CTT) predicts the class from the selected
  sub-prompt; ``"joint"`` predicts the argmax of the known-class logits of all sub-prompts together.
  The known-ness score is the CTT score either way; with ``groups=1`` both rules agree.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..models.clip import CLIP
from .prompts import CoOp, CoOpConfig, train_prompts

log = logging.getLogger(__name__)

CLOSED_RULES = ("selected", "joint")


@dataclass
class MTuningConfig:
    n_ctx: int = 8
    position: str = "end"
    n_open: int = 16  # open words per training step
    n_open_test: int = 64  # open words in the test vocabulary
    groups: int = 1  # CTT groups (1 = no CTT)
    other_groups_open: bool = True
    closed_weight: float = 0.0  # λ of the joint closed-set cross-entropy (0 = independent sub-prompts)
    closed_rule: str = "selected"  # closed-set prediction: "selected" sub-prompt (CTT) or "joint" argmax
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("n_ctx", "n_open", "n_open_test", "groups"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"MTuningConfig.{name} must be an int ≥ 1, got {v!r}")
        if not isinstance(self.closed_weight, (int, float)) or not 0.0 <= self.closed_weight < float("inf"):
            raise ValueError(f"MTuningConfig.closed_weight must be a number ≥ 0 (0 = the paper's loss), "
                             f"got {self.closed_weight!r}")
        if self.closed_rule not in CLOSED_RULES:
            raise ValueError(f"MTuningConfig.closed_rule must be one of {CLOSED_RULES}, got {self.closed_rule!r}")


def split_groups(num_classes: int, groups: int) -> list[list[int]]:
    """Contiguous, near-equal groups of class indices."""
    if not 1 <= groups <= num_classes:
        raise ValueError(f"groups={groups}: must be between 1 and the number of classes ({num_classes})")
    base, extra = divmod(num_classes, groups)
    out, start = [], 0
    for g in range(groups):
        n = base + (g < extra)
        out.append(list(range(start, start + n)))
        start += n
    return out


def open_set_loss(logits: Tensor, target: Tensor, n_known: int) -> Tensor:
    """Mean loss over a batch whose vocabulary is [n_known classes, open words].

    logits (B, n_known + M); target (B,) local class index, or -1 for an image that belongs to the
    open set (loss −log Σ_open p). Known targets get cross-entropy.
    """
    logp = logits.log_softmax(-1)
    known = target >= 0
    loss = logits.new_zeros(())
    if known.any():
        loss = loss + F.nll_loss(logp[known], target[known], reduction="sum")
    if (~known).any():
        loss = loss - logp[~known, n_known:].logsumexp(-1).sum()
    return loss / len(target)


def joint_known_logits(known_logits: Sequence[Tensor], groups: Sequence[Sequence[int]]) -> Tensor:
    """Known-class logits of every sub-prompt in the global class order.

    ``known_logits[g]`` (B, |g|) = sub-prompt g's logits of its own classes → (B, K), column
    ``groups[g][j]`` = ``known_logits[g][:, j]``.
    """
    K = sum(len(g) for g in groups)
    B = known_logits[0].shape[0]
    out = known_logits[0].new_empty(B, K)
    for z, g in zip(known_logits, groups, strict=True):
        out[:, torch.as_tensor(list(g), device=z.device)] = z
    return out


def local_targets(labels: Tensor, group: Sequence[int]) -> Tensor:
    """Global labels (B,) → index within ``group``, or −1 for an image of another group (open)."""
    local = torch.full_like(labels, -1)
    for j, c in enumerate(group):
        local[labels == c] = j
    return local


def mtuning_loss(group_logits: Sequence[Tensor], labels: Tensor, groups: Sequence[Sequence[int]],
                 closed_weight: float = 0.0, other_groups_open: bool = True) -> Tensor:
    """Joint training loss of all sub-prompts on one batch.

    ``group_logits[g]`` (B, |g| + M_g): sub-prompt g's logits over [its classes, open words];
    labels (B,) global class indices. → Σ_g open_set_loss_g + closed_weight · CE over the K known
    classes of :func:`joint_known_logits` (softmax over known classes only). Group g's open-set loss
    takes its own classes as targets and the other groups' images as open (−log Σ p(open)), or leaves
    them out with ``other_groups_open=False``.
    """
    loss = labels.new_zeros((), dtype=group_logits[0].dtype)
    for z, g in zip(group_logits, groups, strict=True):
        local = local_targets(labels, g)
        keep = local >= 0 if not other_groups_open else torch.ones_like(local, dtype=torch.bool)
        if keep.any():
            loss = loss + open_set_loss(z[keep], local[keep], len(g))
    if closed_weight > 0:
        known = joint_known_logits([z[:, : len(g)] for z, g in zip(group_logits, groups, strict=True)], groups)
        loss = loss + closed_weight * F.cross_entropy(known, labels)
    return loss


def select_subprompt(known_probs: Sequence[Tensor], groups: Sequence[Sequence[int]]) -> tuple[Tensor, Tensor]:
    """CTT test rule. ``known_probs[g]`` (B, |g|) = group g's probabilities of its own classes (its
    softmax also covered open words). → (prediction (B,) global class, score (B,) its probability)."""
    best = torch.stack([p.max(-1).values for p in known_probs], -1)  # (B, G)
    arg = torch.stack([torch.as_tensor(g, device=p.device)[p.argmax(-1)] for p, g in zip(known_probs, groups, strict=True)], -1)
    score, g = best.max(-1)
    return arg.gather(1, g.unsqueeze(1)).squeeze(1), score


class MTuning(nn.Module):
    """Frozen CLIP + one CoOp context per class group; vocabulary = group classes + open words."""

    def __init__(self, clip: CLIP, classnames: Sequence[str], open_words: Sequence[str], cfg: MTuningConfig | None = None) -> None:
        super().__init__()
        cfg = cfg or MTuningConfig()
        names = {n.lower() for n in classnames}
        words = [w for w in dict.fromkeys(open_words) if w.lower() not in names]
        need = max(cfg.n_open, cfg.n_open_test)
        if len(words) < need:
            raise ValueError(f"open_words: {len(words)} distinct words (not class names) but n_open/n_open_test need {need}")
        self.cfg = cfg
        self.classnames = list(classnames)
        self.open_words = words
        self.groups = split_groups(len(classnames), cfg.groups)
        rng = random.Random(cfg.seed)
        self.test_words = rng.sample(range(len(words)), cfg.n_open_test)
        self.prompts = nn.ModuleList()
        for g in self.groups:
            vocab = [self.classnames[i] for i in g] + words
            self.prompts.append(CoOp(clip, vocab, CoOpConfig(n_ctx=cfg.n_ctx, position=cfg.position)))
        self.clip = clip
        self._gen = torch.Generator().manual_seed(cfg.seed)

    def _vocab_index(self, g: int, open_idx: Sequence[int]) -> Tensor:
        k = len(self.groups[g])
        return torch.tensor(list(range(k)) + [k + i for i in open_idx], device=self.prompts[g].ctx.device)

    def group_logits(self, g: int, image_features: Tensor, open_idx: Sequence[int]) -> Tensor:
        """(B, D) → (B, |g| + len(open_idx)) logits of sub-prompt g over [its classes, chosen open words]."""
        coop = self.prompts[g]
        return coop.logits(image_features, coop.text_features(self._vocab_index(g, open_idx)))

    def loss(self, image_features: Tensor, labels: Tensor, g: int = 0) -> Tensor:
        """Training loss of sub-prompt g on a batch (fresh open words drawn for this step)."""
        open_idx = torch.randperm(len(self.open_words), generator=self._gen)[: self.cfg.n_open].tolist()
        group = self.groups[g]
        local = local_targets(labels, group)
        keep = local >= 0
        if not self.cfg.other_groups_open:
            image_features, local = image_features[keep], local[keep]
            if not len(local):
                return image_features.new_zeros((), requires_grad=True)
        return open_set_loss(self.group_logits(g, image_features, open_idx), local, len(group))

    def joint_loss(self, image_features: Tensor, labels: Tensor) -> Tensor:
        """:func:`mtuning_loss` of all sub-prompts on a batch (fresh open words per sub-prompt)."""
        logits = []
        for g in range(len(self.groups)):
            open_idx = torch.randperm(len(self.open_words), generator=self._gen)[: self.cfg.n_open].tolist()
            logits.append(self.group_logits(g, image_features, open_idx))
        return mtuning_loss(logits, labels, self.groups, self.cfg.closed_weight, self.cfg.other_groups_open)

    @torch.no_grad()
    def predict(self, image_features: Tensor) -> tuple[Tensor, Tensor]:
        """(B, D) → (prediction (B,) known class, score (B,) higher = more likely known)."""
        probs, known = [], []
        for g, group in enumerate(self.groups):
            z = self.group_logits(g, image_features, self.test_words)
            probs.append(z.softmax(-1)[:, : len(group)])
            known.append(z[:, : len(group)])
        pred, score = select_subprompt(probs, self.groups)
        if self.cfg.closed_rule == "joint":
            pred = joint_known_logits(known, self.groups).argmax(-1)
        return pred, score

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        return self.predict(self.clip.encode_image(images))

    def fit(self, features: Tensor, labels: Tensor, steps: int = 300, lr: float = 2e-3, batch_size: int = 64,
            seed: int = 0) -> list[list[float]]:
        """Tune the sub-prompts on cached image features (N, D) of known classes; → loss curves.

        ``closed_weight`` = 0: each sub-prompt in turn on its own loss (one curve per sub-prompt);
        > 0: all together on :meth:`joint_loss` with one optimiser (one curve).
        """
        if len(features) != len(labels):
            raise ValueError(f"{len(features)} features but {len(labels)} labels")
        if labels.min() < 0 or labels.max() >= len(self.classnames):
            raise ValueError(f"labels must be in [0, {len(self.classnames) - 1}]")
        if self.cfg.closed_weight > 0:
            curve = _tune([p.ctx for p in self.prompts], self.joint_loss, features, labels, steps, lr, batch_size,
                          seed * 1000)
            log.info("M-Tuning, %d sub-prompt(s) jointly, closed-set weight %g: loss %.3f → %.3f", len(self.groups),
                     self.cfg.closed_weight, curve[0], curve[-1])
            return [curve]
        curves = []
        for g in range(len(self.groups)):
            curve = _tune([self.prompts[g].ctx], lambda f, y, g=g: self.loss(f, y, g), features, labels, steps, lr,
                          batch_size, seed * 1000 + g)
            curves.append(curve)
            log.info("M-Tuning group %d/%d: loss %.3f → %.3f", g + 1, len(self.groups), curve[0], curve[-1])
        return curves


def _tune(params: list[Tensor], batch_loss: Callable[[Tensor, Tensor], Tensor], features: Tensor, labels: Tensor,
          steps: int, lr: float, batch_size: int, seed: int) -> list[float]:
    """:func:`~vitkit.adapt.prompts.train_prompts` with ``batch_loss(features, labels)`` as the loss; → loss curve."""
    return train_prompts(batch_loss, params, features, labels, steps=steps, lr=lr, batch_size=batch_size, seed=seed,
                         loss_fn=lambda loss, _labels: loss)


__all__ = ["CLOSED_RULES", "MTuning", "MTuningConfig", "joint_known_logits", "local_targets", "mtuning_loss",
           "open_set_loss", "select_subprompt", "split_groups"]
