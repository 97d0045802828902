"""Show why: explanation maps for vitkit models and measures of how good they are.

Methods (one module each; all return an :class:`Explanation` with maps on the patch grid):

* ``rollout`` (:mod:`.rollout`): attention rollout, one forward.
* ``gradcam`` (:mod:`.gradcam`): Grad-CAM on a block's patch tokens, or on the final feature map of a
  backbone without attention (VisionGRU), one forward + one backward.
* ``chefer`` (:mod:`.chefer`): gradient-weighted attention rollout, one forward + one backward.
* ``evidence`` (:mod:`.evidence`): the hybrid CNN-Transformer's own evidence maps, one forward.
* ``lam`` (:mod:`.lam`): MoRe's localisation attention maps (class tokens · patch tokens), one forward.

Every ViT variant (ViT, DeiT, DINOv2 with registers, CLIP's vision tower through a classifier
wrapping it) and token-reduced models (EViT, ToMe with source tracing; HiRED is refused) work;
maps of reduced models are scattered back to the full grid. Metrics: :mod:`.metrics`.
"""

from __future__ import annotations

from torch import Tensor, nn

from .capture import Explanation
from .chefer import explain_chefer
from .evidence import explain_evidence
from .gradcam import explain_gradcam, grad_cam
from .lam import explain_lam
from .rollout import explain_rollout, rollout
from .tokens import vision_tower

METHODS = {
    "rollout": explain_rollout,
    "gradcam": explain_gradcam,
    "chefer": explain_chefer,
    "evidence": explain_evidence,
    "lam": explain_lam,
}


def explain(model: nn.Module, x: Tensor, method: str = "rollout", target=None, **kwargs) -> Explanation:
    """Explain ``model``'s prediction on images x (B, 3, H, W) for class ``target`` (None = top class)
    with ``method`` (one of :data:`METHODS`); ``kwargs`` go to the method. The model's outputs,
    parameters and settings are left as they were."""
    fn = METHODS.get(method)
    if fn is None:
        raise ValueError(f"unknown method {method!r}; available: {', '.join(METHODS)}")
    was_training = model.training
    model.eval()
    try:
        return fn(model, x, target, **kwargs)
    finally:
        model.train(was_training)


def default_method(model: nn.Module) -> str:
    """``evidence`` for a model with evidence maps, ``lam`` for a MoRe model, ``gradcam`` for a backbone
    without a ViT tower (VisionGRU: nothing to roll out), else ``rollout``."""
    if hasattr(model, "evidence"):
        return "evidence"
    if hasattr(model, "class_tokens"):
        return "lam"
    return "gradcam" if vision_tower(model) is None and hasattr(model, "forward_intermediates") else "rollout"


__all__ = ["METHODS", "Explanation", "default_method", "explain", "explain_chefer", "explain_evidence",
           "explain_gradcam", "explain_lam", "explain_rollout", "grad_cam", "rollout"]
