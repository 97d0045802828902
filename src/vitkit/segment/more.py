"""MoRe (AAAI 2025): class tokens, graph category representation (GCR), localisation attention maps
(LAM) and localisation-informed regularisation (LIR) for weakly supervised segmentation.

Choices, following the public code (zwyang6/MoRe) unless said otherwise:

* **Class tokens.** One token per class replaces the backbone's CLS token after the position
  embedding (``model.embed_hook``), each initialised as CLS + its position embedding (the code
  repeats the pretrained CLS and its position embedding). The code's 4 extra "regularise" tokens,
  which the paper does not describe, are left out. :func:`apply_class_tokens` /
  :func:`remove_class_tokens` wire and unwire them; with one class token the model is the plain one.
* **Classification** stays on the patch tokens (the CAM classifier of :mod:`.cam`, GMP + 1×1,
  plus the auxiliary classifier), as in the code.
* **GCR** (:class:`GraphCategoryRepresentation`): scores head(class) · tail([class; detached
  patches]) / √d, top-k neighbours with k = ⌊0.5 · C⌋, neighbour mixing by the softmax of the
  scores, a tanh gate, attention over the neighbours, then the code's bi-interaction aggregation
  with its 0.1 scalings, LeakyReLU and LayerNorm. (The code's unused ``_fc1`` is left out.)
* **LAM** (:func:`lam`): patch tokens · GCR class tokens (a dot product), max over the image and its
  mirror, summed over scales, min-max normalised (:func:`.cam.multi_scale_maps`).
* **LIR losses** (:func:`confident_loss`, :func:`uncertain_loss`) from CAM pseudo-labels of the same
  forward pass (detached; the code runs a separate multi-scale CAM pass, 4 scales × flip, which
  would triple a step here): by default the main CAM at high 0.7 / low 0.25 for the first half of
  training, then 0.6 / 0.35 (the code switches at 10k of 20k iterations). Confident regions:
  InfoNCE of each present class token against all patches (τ 0.5), the class's confident patches
  as positives, both sides L2-normalised by default. Uncertain regions: up to 8 patches of the
  ignore band per image (the code's 6×6 kernel search for uncertain patches near foreground is
  replaced by a random draw from the band, falling back to confident foreground patches), pulled
  to |cos| 1 with the present classes' detached tokens and to 0 with the absent ones.
* **The code's recipe** (:meth:`MoReConfig.code_recipe`): for the first half both LIR masks come
  from the *auxiliary* CAM (the confident one at high 0.5); the InfoNCE uses the raw (detached)
  patch features, only the class tokens normalised (a log-softmax keeps that stable where the
  code's exp(·)/sum could overflow); and ToCo's patch-token contrast (:func:`patch_contrast_loss`)
  at weight 0.3: the auxiliary CAM's pseudo-label (0.7 / 0.25) says which pairs of last-layer
  patches belong together, |cos| of same-label pairs → 1, of different-label pairs → 0, pairs with
  an uncertain patch ignored (it counters the over-smoothing of deep ViT features, so it changes
  the model's own CAM as well as its LAM). At the CLI's budget it measured level with the
  defaults on the from-scratch scene ViT and clearly below them on a fine-tuned DINOv2-S
  (benchmarks/RESULTS.md), so it is an option, not the default.
* **Token regulariser**: the code's ``multi_cls_loss(only_regu=True)``: cross-entropy making each
  normalised class token most similar to itself among the tokens (τ 0.07).
* **Weights** as the code: cls 1, aux 1, token 1, confident 0.2, uncertain 0.1 (patch contrast 0.3
  in the code's recipe). Its segmentation decoder (trained on PAR-refined labels), the dense-CRF
  energy loss and CRF need compiled extensions or belong to the segmentation stage: left out
  (vitkit trains its segmentation head separately).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .cam import PatchClassifier, multi_scale_maps, normalize_maps, pseudo_label, tokens_to_maps
from .metrics import IGNORE


@dataclass
class MoReConfig:
    """MoRe's knobs. The losses, weights and thresholds are the public code's; four choices of its
    recipe (:meth:`code_recipe`) are off by default: at this scale they measured no better than the defaults."""

    gcr: bool = True  # off = LAM from the raw class tokens (ablation / neutral setting)
    topk_ratio: float = 0.5  # k = ⌊ratio · C⌋ graph neighbours per class token
    tau_confident: float = 0.5  # InfoNCE temperature on confident regions
    tau_token: float = 0.07  # class-token regulariser temperature
    high: float = 0.7  # CAM pseudo-label thresholds for LIR (first half of training)
    low: float = 0.25
    high_confident: float = 0.7  # the confident-region mask's high threshold in the first half (code: 0.5)
    high_late: float = 0.6  # … and for the second half, both masks
    low_late: float = 0.35
    lir_from_aux: bool = False  # first half: LIR masks from the auxiliary CAM (code) instead of the main CAM
    normalize_patches: bool = True  # cosine InfoNCE (both sides normalised); code: raw patch features
    uncertain_per_image: int = 8  # uncertain patches drawn per image
    w_token: float = 1.0
    w_confident: float = 0.2
    w_uncertain: float = 0.1
    w_ptc: float = 0.0  # ToCo's patch-token contrast (code: 0.3); labels from the aux CAM at high / low

    @classmethod
    def code_recipe(cls, **overrides) -> MoReConfig:
        """The public code's training recipe where it differs from the defaults: LIR masks from the
        auxiliary CAM early (confident at 0.5), raw patch features in the InfoNCE, patch-token
        contrast at 0.3. No better than the defaults at this CPU scale (benchmarks/RESULTS.md)."""
        base = dict(high_confident=0.5, lir_from_aux=True, normalize_patches=False, w_ptc=0.3)
        return cls(**{**base, **overrides})

    @classmethod
    def from_recipe(cls, name: str) -> MoReConfig:
        """``default`` or ``code`` (:meth:`code_recipe`); anything else is a ValueError naming both."""
        if name not in RECIPES:
            raise ValueError(f"MoRe recipe must be one of {RECIPES}, got {name!r}")
        return cls.code_recipe() if name == "code" else cls()


RECIPES = ("default", "code")


def apply_class_tokens(backbone: nn.Module, num_classes: int) -> nn.Parameter:
    """Replace the backbone's CLS token with ``num_classes`` class tokens (each CLS + its position
    embedding at start) via ``backbone.embed_hook``; returns the (1, C, D) parameter (also set as
    ``backbone.class_tokens``). Undo with :func:`remove_class_tokens`."""
    if backbone.cls_token is None:
        raise ValueError("MoRe needs a backbone with a CLS token to make its class tokens from")
    if backbone.embed_hook is not None:
        raise ValueError("the backbone already has an embed_hook (prompts or class tokens): remove it first")
    with torch.no_grad():
        init = (backbone.cls_token + backbone.pos_embed[:, :1]).repeat(1, num_classes, 1)
    tokens = nn.Parameter(init.clone())

    def hook(x: Tensor, state) -> Tensor:
        state.num_prefix += num_classes - 1
        return torch.cat([tokens.expand(x.shape[0], -1, -1), x[:, 1:]], dim=1)

    backbone.class_tokens = tokens
    backbone.embed_hook = hook
    return tokens


def remove_class_tokens(backbone: nn.Module) -> None:
    """Undo :func:`apply_class_tokens` (the backbone's own CLS token was never changed)."""
    if getattr(backbone, "class_tokens", None) is None:
        raise ValueError("the backbone has no MoRe class tokens to remove")
    backbone.embed_hook = None
    del backbone.class_tokens


class GraphCategoryRepresentation(nn.Module):
    """GCR: class tokens (B, C, D) aggregate from their top-k neighbours among [class tokens; detached
    patches (B, N, D)] → enhanced class tokens (B, C, D)."""

    def __init__(self, *, dim: int, topk_ratio: float = 0.5) -> None:
        super().__init__()
        self.topk_ratio = topk_ratio
        self.head_proj = nn.Linear(dim, dim)
        self.tail_proj = nn.Linear(dim, dim)
        self.linear1 = nn.Linear(dim, dim)
        self.linear2 = nn.Linear(dim, dim)
        self.act = nn.LeakyReLU()
        self.norm = nn.LayerNorm(dim)
        self.scale = dim**-0.5

    def forward(self, cls_tokens: Tensor, patches: Tensor) -> Tensor:
        B, C, D = cls_tokens.shape
        k = max(1, int(self.topk_ratio * C))
        nodes = torch.cat([cls_tokens, patches.detach()], dim=1)  # (B, C+N, D)
        e_h = self.head_proj(cls_tokens)  # (B, C, D)
        e_t = self.tail_proj(nodes)  # (B, C+N, D)
        scores = (e_h * self.scale) @ e_t.transpose(1, 2)  # (B, C, C+N)
        w, idx = scores.topk(k, dim=-1)  # (B, C, k)
        nb = torch.gather(e_t[:, None].expand(B, C, -1, D), 2, idx[..., None].expand(-1, -1, -1, D))  # (B, C, k, D)
        p = w.softmax(-1)[..., None]
        mixed = (1 - p) * e_h[:, :, None] + p * nb  # (B, C, k, D)
        gate = torch.tanh(e_h[:, :, None] + mixed)
        att = (nb * gate).sum(-1).softmax(-1)  # (B, C, k)
        e_n = (att[..., None] * nb).sum(2)  # (B, C, D)
        summed = self.act(self.linear1((e_h + e_n) * 0.1 + cls_tokens))
        inter = self.act(self.linear2(e_h * e_n * 0.1 + cls_tokens))
        return self.norm(summed + inter)


class MoRe(nn.Module):
    """The MoRe model: :class:`.cam.PatchClassifier` + class tokens + GCR. ``forward_parts`` adds
    ``tokens`` (B, C, D) (after GCR when enabled) and ``lam`` (B, C, gh, gw) raw to the classifier's dict."""

    def __init__(self, classifier: PatchClassifier, cfg: MoReConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg or MoReConfig()
        self.classifier = classifier
        self.num_classes = classifier.num_classes
        self.class_tokens = apply_class_tokens(classifier.backbone, self.num_classes)
        self.gcr = GraphCategoryRepresentation(dim=classifier.backbone.embed_dim, topk_ratio=self.cfg.topk_ratio)

    def remove(self) -> nn.Module:
        """Unwire the class tokens; returns the plain backbone."""
        remove_class_tokens(self.classifier.backbone)
        return self.classifier.backbone

    def forward_parts(self, images: Tensor) -> dict[str, Tensor]:
        parts = self.classifier.forward_parts(images)
        tokens = parts["prefix"][:, : self.num_classes]
        if self.cfg.gcr:
            tokens = self.gcr(tokens, parts["patches"])
        parts["tokens"] = tokens
        parts["lam"] = tokens_to_maps(parts["patches"] @ tokens.transpose(1, 2), parts["grid"])
        return parts

    def forward(self, images: Tensor) -> Tensor:
        return self.forward_parts(images)["logits"]

    def loss(self, images: Tensor, labels: Tensor, progress: float) -> tuple[Tensor, dict[str, float]]:
        """Total loss of one batch; ``progress`` ∈ [0, 1] is the fraction of training done."""
        cfg = self.cfg
        parts = self.forward_parts(images)
        cls = self.classifier.classification_loss(parts, labels)
        with torch.no_grad():
            cam = normalize_maps(parts["cam"].detach(), labels)
            # the auxiliary CAM only feeds the code recipe's masks
            aux = normalize_maps(parts["aux_cam"].detach(), labels) if cfg.lir_from_aux or cfg.w_ptc else None
            if progress >= 0.5:
                pl_conf = pl_unc = pseudo_label(cam, labels, cfg.high_late, cfg.low_late).flatten(1)
            else:
                early = aux if cfg.lir_from_aux else cam
                pl_conf = pseudo_label(early, labels, cfg.high_confident, cfg.low).flatten(1)
                pl_unc = pseudo_label(early, labels, cfg.high, cfg.low).flatten(1)
        tok = token_regulariser(parts["tokens"], cfg.tau_token)
        conf = confident_loss(parts["tokens"], parts["patches"], pl_conf, labels, cfg.tau_confident,
                              normalize_patches=cfg.normalize_patches)
        unc = uncertain_loss(parts["tokens"], parts["patches"], pl_unc, labels, cfg.uncertain_per_image)
        total = cls + cfg.w_token * tok + cfg.w_confident * conf + cfg.w_uncertain * unc
        terms = {"cls": cls.item(), "token": tok.item(), "confident": conf.item(), "uncertain": unc.item()}
        if cfg.w_ptc:
            with torch.no_grad():
                pl_aff = pseudo_label(aux, labels, cfg.high, cfg.low).flatten(1)
            ptc = patch_contrast_loss(parts["patches"], pl_aff)
            total = total + cfg.w_ptc * ptc
            terms["ptc"] = ptc.item()
        return total, terms

    @torch.no_grad()
    def maps(self, images: Tensor, labels: Tensor, scales: Sequence[float] = (1.0,), flip: bool = True) -> Tensor:
        """Normalised LAM (B, C, gh, gw) of the image's classes (``labels`` (B, C))."""
        raw = multi_scale_maps(lambda x: self.forward_parts(x)["lam"], images, scales, flip,
                               patch=self.classifier.backbone.patch_size)
        return normalize_maps(raw, labels)


def token_regulariser(tokens: Tensor, tau: float = 0.07) -> Tensor:
    """Cross-entropy making each L2-normalised class token (B, C, D) closest to itself among the tokens."""
    t = F.normalize(tokens, dim=-1)
    logits = t @ t.transpose(1, 2) / tau  # (B, C, C)
    target = torch.arange(t.shape[1], device=t.device).expand(t.shape[0], -1)
    return F.cross_entropy(logits.flatten(0, 1), target.flatten())


def confident_loss(tokens: Tensor, patches: Tensor, pl: Tensor, labels: Tensor, tau: float = 0.5,
                   normalize_patches: bool = True) -> Tensor:
    """InfoNCE on confident regions: for every present class c, −log softmax over all patches of
    (unit token_c · patch)/τ, averaged over the patches pseudo-labelled c. Patches are detached and
    L2-normalised (cosines), or with ``normalize_patches=False`` used as they are (the code's logits).

    tokens (B, C, D), patches (B, N, D), pl (B, N) pseudo-labels (0 bg, k = class k−1, IGNORE),
    labels (B, C). Sum over present classes, mean over images.
    """
    t = F.normalize(tokens, dim=-1)
    f = patches.detach()
    f = F.normalize(f, dim=-1) if normalize_patches else f
    logp = (t @ f.transpose(1, 2) / tau).log_softmax(-1)  # (B, C, N)
    cls_ids = torch.arange(tokens.shape[1], device=tokens.device)[None, :, None] + 1
    pos = (pl[:, None, :] == cls_ids).float() * labels[:, :, None]  # (B, C, N)
    per_class = -(logp * pos).sum(-1) / (pos.sum(-1) + 1e-4)  # (B, C); 0 where no confident patch
    return per_class.sum(1).mean()


def uncertain_loss(tokens: Tensor, patches: Tensor, pl: Tensor, labels: Tensor, per_image: int = 8,
                   generator: torch.Generator | None = None) -> Tensor:
    """Cosine loss on uncertain patches: |cos| with the present classes' (detached) tokens → 1,
    with the absent ones → 0. Up to ``per_image`` patches of the ignore band per image (random),
    else confident foreground patches. Shapes as :func:`confident_loss`."""
    t = F.normalize(tokens.detach(), dim=-1)
    f = F.normalize(patches, dim=-1)
    absent = 1.0 - labels
    losses = []
    for i in range(patches.shape[0]):
        pool = torch.nonzero(pl[i] == IGNORE).flatten()
        if pool.numel() == 0:
            pool = torch.nonzero((pl[i] > 0) & (pl[i] != IGNORE)).flatten()
        if pool.numel() == 0:
            continue
        pick = pool[torch.randperm(pool.numel(), generator=generator, device=pool.device)[:per_image]]
        cos = (f[i, pick] @ t[i].T).abs()  # (k, C)
        pos = (cos * labels[i]).sum(1) / (labels[i].sum() + 1)
        neg = (cos * absent[i]).sum(1) / (absent[i].sum() + 1)
        losses.append((0.5 * (1 - pos) + 0.5 * neg).mean())
    return torch.stack(losses).mean() if losses else patches.sum() * 0.0


def patch_contrast_loss(patches: Tensor, pl: Tensor, ignore: int = IGNORE) -> Tensor:
    """ToCo's patch-token contrast: 0.5 · (1 − mean |cos| of same-label pairs) + 0.5 · mean |cos| of
    different-label pairs, over every pair of distinct patches of an image whose labels are both
    known (``ignore`` excluded), pooled over the batch. patches (B, N, D), pl (B, N) long → scalar."""
    f = F.normalize(patches, dim=-1)
    cos = (f @ f.transpose(1, 2)).abs()  # (B, N, N)
    known = pl != ignore
    pairs = known[:, :, None] & known[:, None, :]
    pairs &= ~torch.eye(pl.shape[1], dtype=torch.bool, device=pl.device)
    same = pairs & (pl[:, :, None] == pl[:, None, :])
    diff = pairs & ~same
    pos = (cos * same).sum() / (same.sum() + 1)
    neg = (cos * diff).sum() / (diff.sum() + 1)
    return 0.5 * (1 - pos) + 0.5 * neg
