"""VPL (AAAI 2025): vision prototypes guided by CLIP text prototypes for weakly supervised segmentation.

No code and no equations are public; this is the simplest faithful reading of the abstract, on top
of the same CAM classifier as the other methods (:mod:`.cam`):

* **Text prototypes** t_c (C, E): CLIP text embeddings of the class names (:mod:`.scene_clip`
  trains vitkit's small CLIP on scene captions; any CLIP works). A learnt linear map A: E → D
  places them in patch-feature space (the backbone is not CLIP's image tower, so the two spaces
  must be bridged); the text assignment of patch f is q_text(f) = softmax_c(cos(f, A·t_c) / τ).
* **Vision prototypes** V (C, M, D), M per class, learnt in patch-feature space, initialised from
  A·t_c plus noise (so each class's prototypes start at its text prototype); the vision
  assignment is q_vis(f) = softmax_c(max_m cos(f, V_cm) / τ).
* **Grounding** by the image labels: image logits = max over patches of cos(f, ·)/τ for both the
  text-side and the vision-side similarities, multi-label soft-margin loss on each (weight 1).
* **KL guidance**: KL(q_text ‖ q_vis) per patch with the text side detached (the teacher), over the
  image's classes only, averaged over patches (weight ``w_kl``).
* **Localisation map** = max_m cos(f_p, V_cm) per patch (min-max normalised like a CAM).
* **Regional semantic contrast**: per present class, the region where its current (detached)
  normalised map ≥ ``region_threshold``; the region embedding (mean patch feature) is contrasted
  with all classes' prototypes: cross-entropy over classes of max_m cos(r, V_cm)/τ (weight
  ``w_contrast``), pulling regions to their class prototypes and away from the others.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .cam import PatchClassifier, multi_scale_maps, normalize_maps, tokens_to_maps


@dataclass
class VPLConfig:
    """VPL's knobs (no public values: each is the plain choice, see the module docstring)."""

    prototypes: int = 4  # M vision prototypes per class (parts and looks of a class)
    tau: float = 0.1  # temperature of every cosine softmax / logit
    w_proto_cls: float = 1.0  # multi-label loss on the prototype similarities (text and vision side)
    w_kl: float = 1.0  # KL(text assignment ‖ vision assignment)
    w_contrast: float = 0.1  # regional semantic contrast
    region_threshold: float = 0.6  # normalised map value that makes a patch part of a class region
    init_noise: float = 0.02  # std of the noise added to the text-initialised prototypes


class VPL(nn.Module):
    """The VPL model: :class:`.cam.PatchClassifier` + text-to-feature map + vision prototypes.
    ``forward_parts`` adds ``text_sim`` / ``vis_sim`` (B, N, C) and ``vpl`` (B, C, gh, gw) raw maps."""

    def __init__(self, classifier: PatchClassifier, text_prototypes: Tensor, cfg: VPLConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg or VPLConfig()
        C, E = text_prototypes.shape
        if C != classifier.num_classes:
            raise ValueError(f"{C} text prototypes for a {classifier.num_classes}-class classifier")
        self.classifier = classifier
        D = classifier.backbone.embed_dim
        self.register_buffer("text", F.normalize(text_prototypes.detach().float(), dim=-1))
        self.text_to_feature = nn.Linear(E, D, bias=False)
        with torch.no_grad():
            start = F.normalize(self.text_to_feature(self.text), dim=-1)  # (C, D)
            init = start[:, None].repeat(1, self.cfg.prototypes, 1)
            init = init + self.cfg.init_noise * torch.randn_like(init)
        self.prototypes = nn.Parameter(init)  # (C, M, D)

    def similarities(self, patches: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """patches (B, N, D) → text_sim (B, N, C), vis_sim (B, N, C) (max over M), vis_all (B, N, C, M); cosines."""
        f = F.normalize(patches, dim=-1)
        t = F.normalize(self.text_to_feature(self.text), dim=-1)  # (C, D)
        v = F.normalize(self.prototypes, dim=-1)  # (C, M, D)
        text_sim = f @ t.T
        vis_all = torch.einsum("bnd,cmd->bncm", f, v)
        return text_sim, vis_all.max(-1).values, vis_all

    def forward_parts(self, images: Tensor) -> dict[str, Tensor]:
        parts = self.classifier.forward_parts(images)
        text_sim, vis_sim, _ = self.similarities(parts["patches"])
        parts.update(text_sim=text_sim, vis_sim=vis_sim, vpl=tokens_to_maps(vis_sim, parts["grid"]))
        return parts

    def forward(self, images: Tensor) -> Tensor:
        return self.forward_parts(images)["logits"]

    def loss(self, images: Tensor, labels: Tensor, progress: float) -> tuple[Tensor, dict[str, float]]:
        """Total loss of one batch (``progress`` is unused: VPL has no schedule)."""
        cfg = self.cfg
        parts = self.forward_parts(images)
        cls = self.classifier.classification_loss(parts, labels)
        tau = cfg.tau
        proto_cls = F.multilabel_soft_margin_loss(parts["text_sim"].max(1).values / tau, labels) + \
            F.multilabel_soft_margin_loss(parts["vis_sim"].max(1).values / tau, labels)
        kl = prototype_kl(parts["text_sim"], parts["vis_sim"], labels, tau)
        maps = normalize_maps(parts["vpl"].detach(), labels).flatten(2)  # (B, C, N)
        con = region_contrast(parts["patches"], maps, labels, self.prototypes, cfg.region_threshold, tau)
        total = cls + cfg.w_proto_cls * proto_cls + cfg.w_kl * kl + cfg.w_contrast * con
        return total, {"cls": cls.item(), "proto_cls": proto_cls.item(), "kl": kl.item(), "contrast": con.item()}

    @torch.no_grad()
    def maps(self, images: Tensor, labels: Tensor, scales: Sequence[float] = (1.0,), flip: bool = True) -> Tensor:
        """Normalised vision-prototype maps (B, C, gh, gw) of the image's classes."""
        raw = multi_scale_maps(lambda x: self.forward_parts(x)["vpl"], images, scales, flip,
                               patch=self.classifier.backbone.patch_size)
        return normalize_maps(raw, labels)


def prototype_kl(text_sim: Tensor, vis_sim: Tensor, labels: Tensor, tau: float) -> Tensor:
    """Mean over patches of KL(q_text ‖ q_vis), both softmaxes over the image's classes only.

    text_sim, vis_sim (B, N, C) cosines; labels (B, C). The text side is detached (the teacher).
    """
    mask = labels[:, None, :] > 0
    neg = torch.finfo(vis_sim.dtype).min
    log_q_vis = (vis_sim / tau).masked_fill(~mask, neg).log_softmax(-1)
    q_text = (text_sim.detach() / tau).masked_fill(~mask, neg).softmax(-1)
    kl = (q_text * (torch.log(q_text.clamp_min(1e-12)) - log_q_vis)).masked_fill(~mask, 0.0).sum(-1)
    return kl.mean()


def region_contrast(patches: Tensor, maps: Tensor, labels: Tensor, prototypes: Tensor, threshold: float,
                    tau: float) -> Tensor:
    """Regional semantic contrast: cross-entropy over classes of max_m cos(region, V_cm)/τ.

    patches (B, N, D); maps (B, C, N) normalised, detached; labels (B, C); prototypes (C, M, D).
    A region = the patches where a present class's map ≥ ``threshold``; its embedding is their mean.
    """
    region = (maps >= threshold).float() * labels[:, :, None]  # (B, C, N)
    count = region.sum(-1)  # (B, C)
    keep = count > 0
    if not keep.any():
        return patches.sum() * 0.0
    emb = (region @ patches) / count.clamp_min(1)[..., None]  # (B, C, D)
    r = F.normalize(emb[keep], dim=-1)  # (R, D)
    target = torch.nonzero(keep)[:, 1]
    logits = torch.einsum("rd,cmd->rcm", r, F.normalize(prototypes, dim=-1)).max(-1).values / tau
    return F.cross_entropy(logits, target)
