"""timm VisionTransformer state dicts → vitkit.

vitkit's parameter names follow timm's ViT (``cls_token``, ``pos_embed``, ``patch_embed.proj``,
``blocks.i.{norm1, attn.qkv, attn.proj, ls1.gamma, norm2, mlp.fc1, mlp.fc2, ls2.gamma}``,
``norm_pre``, ``norm``, ``fc_norm``, ``head``, ``head_dist``, ``dist_token``, ``reg_token``), so the
key map is the identity. Two layout differences are converted:

* ``no_embed_class`` models (timm's DINOv2-with-registers, some DeiT-3): ``pos_embed`` covers the
  patches only; vitkit prepends zero positions for the class/distillation tokens (same output).
* CLIP towers from timm store the image projection as ``head``; it stays a ``head``.

What the weights cannot tell (number of heads, activation, LayerNorm eps) comes from timm's hub
``config.json`` (``architecture``, ``model_args``, ``pretrained_cfg``) when present, else from the
architecture name, else from ViT conventions (head dim 64, GELU, eps 1e-6) — and can be overridden.
"""

from __future__ import annotations

import math
import re

import torch
from torch import Tensor

from ..models.vit import ViTConfig
from .io import CheckpointError

_ALLOWED = re.compile(
    r"(cls_token|dist_token|reg_token|pos_embed|patch_embed\.proj\.(weight|bias)|norm_pre\.(weight|bias)"
    r"|norm\.(weight|bias)|fc_norm\.(weight|bias)|head\.(weight|bias)|head_dist\.(weight|bias)"
    r"|blocks\.\d+\.(norm1|norm2|attn\.qkv|attn\.proj|mlp\.fc1|mlp\.fc2)\.(weight|bias)"
    r"|blocks\.\d+\.ls[12]\.gamma)"
)
# embed_dim → num_heads for timm's named sizes
_HEADS = {192: 3, 384: 6, 768: 12, 1024: 16, 1280: 16, 1408: 16, 1536: 24}
_ACT_NAMES = {"gelu": "gelu", "quick_gelu": "quick_gelu", "gelu_tanh": "gelu_tanh"}


def is_timm_layout(sd: dict[str, Tensor]) -> bool:
    return "patch_embed.proj.weight" in sd and any(k.startswith("blocks.0.attn.qkv") for k in sd)


def infer_config(sd: dict[str, Tensor], hub_cfg: dict | None = None, where: str = "checkpoint") -> ViTConfig:
    """ViTConfig from a timm-layout state dict and (optionally) timm's hub config.json."""
    hub_cfg = hub_cfg or {}
    unknown = [k for k in sd if not _ALLOWED.fullmatch(k)]
    if unknown:
        raise CheckpointError(f"{where}: timm keys vitkit's ViT does not have: {unknown[:10]}")
    arch = str(hub_cfg.get("architecture", ""))
    margs = dict(hub_cfg.get("model_args") or {})
    pcfg = hub_cfg.get("pretrained_cfg") or {}

    w = sd["patch_embed.proj.weight"]
    dim, in_chans, P = w.shape[0], w.shape[1], w.shape[2]
    depth = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
    has_cls, has_dist = "cls_token" in sd, "dist_token" in sd
    n_pos = sd["pos_embed"].shape[1]
    if "input_size" in pcfg:
        img = tuple(pcfg["input_size"][-2:])
    elif "img_size" in margs:
        s = margs["img_size"]
        img = (s, s) if isinstance(s, int) else tuple(s)
    else:
        g = math.isqrt(n_pos - has_cls - has_dist) if n_pos - has_cls - has_dist > 0 else math.isqrt(n_pos)
        img = (g * P, g * P)
    eps_default = 1e-5 if "clip" in arch else 1e-6
    act = margs.get("act_layer") or ("quick_gelu" if "quickgelu" in arch else "gelu")
    if act not in _ACT_NAMES:
        raise CheckpointError(f"{where}: model_args.act_layer {act!r} not supported ({sorted(_ACT_NAMES)})")
    pool = hub_cfg.get("global_pool") or margs.get("global_pool") or ("token" if has_cls else "avg")
    head = sd.get("head.weight")
    return ViTConfig(
        img_size=img,
        patch_size=P,
        in_chans=in_chans,
        embed_dim=dim,
        depth=depth,
        num_heads=int(margs.get("num_heads") or _HEADS.get(dim, max(dim // 64, 1))),
        mlp_hidden_dim=sd["blocks.0.mlp.fc1.weight"].shape[0],
        qkv_bias="blocks.0.attn.qkv.bias" in sd,
        patch_bias="patch_embed.proj.bias" in sd,
        class_token=has_cls,
        dist_token=has_dist,
        dist_head="head_dist.weight" in sd,
        num_reg_tokens=sd["reg_token"].shape[1] if "reg_token" in sd else 0,
        pre_norm="norm_pre.weight" in sd,
        final_norm="norm.weight" in sd,
        fc_norm="fc_norm.weight" in sd,
        layer_scale="blocks.0.ls1.gamma" in sd,
        act=_ACT_NAMES[act],
        norm_eps=float(margs.get("norm_eps", eps_default)),
        global_pool=pool,
        num_classes=int(head.shape[0]) if head is not None else 0,
        family="clip" if "clip" in arch else "dinov2" if "dinov2" in arch else "deit" if has_dist else "vit",
        labels=hub_cfg.get("label_names"),
    )


def convert(sd: dict[str, Tensor], cfg: ViTConfig) -> dict[str, Tensor]:
    """timm state dict → vitkit state dict (adds class positions for ``no_embed_class`` layouts)."""
    out = dict(sd)
    pos = out["pos_embed"]
    n_patch = (cfg.img_size[0] // cfg.patch_size) * (cfg.img_size[1] // cfg.patch_size)
    n_pos_prefix = int(cfg.class_token) + int(cfg.dist_token)
    if pos.shape[1] == n_patch and n_pos_prefix:
        out["pos_embed"] = torch.cat([pos.new_zeros(1, n_pos_prefix, pos.shape[2]), pos], dim=1)
    return out


def preprocess_dict(hub_cfg: dict) -> dict | None:
    """timm ``pretrained_cfg`` → kwargs of vitkit's PreprocessConfig (None if absent)."""
    p = hub_cfg.get("pretrained_cfg")
    if not p or "input_size" not in p:
        return None
    return {
        "input_size": tuple(p["input_size"][-2:]),
        "mean": tuple(p.get("mean", (0.485, 0.456, 0.406))),
        "std": tuple(p.get("std", (0.229, 0.224, 0.225))),
        "interpolation": p.get("interpolation", "bicubic"),
        "crop_pct": float(p.get("crop_pct", 0.875)),
        "resize_mode": "squash" if p.get("crop_mode") == "squash" else "shortest",
    }
