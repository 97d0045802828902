"""open_clip / OpenAI CLIP state dicts (ViT image tower) → vitkit CLIP.

Key map (open_clip → vitkit):

======================================================  ==================================
``visual.class_embedding`` (C,)                         ``visual.cls_token`` (1, 1, C)
``visual.positional_embedding`` (N, C)                  ``visual.pos_embed`` (1, N, C)
``visual.conv1.weight``                                 ``visual.patch_embed.proj.weight``
``visual.ln_pre`` / ``visual.ln_post``                  ``visual.norm_pre`` / ``visual.norm``
``visual.proj`` (C, D), used as ``x @ proj``            ``visual.proj.weight`` = projᵀ
``[visual.]transformer.resblocks.i.ln_1`` / ``ln_2``    ``….blocks.i.norm1`` / ``norm2``
``….attn.in_proj_weight`` / ``in_proj_bias``            ``….blocks.i.attn.qkv.weight`` / ``bias``
``….attn.out_proj``                                     ``….blocks.i.attn.proj``
``….mlp.c_fc`` / ``mlp.c_proj``                         ``….blocks.i.mlp.fc1`` / ``fc2``
``….ls_1.gamma`` / ``ls_2.gamma``                       ``….blocks.i.ls1.gamma`` / ``ls2.gamma``
``token_embedding``, ``positional_embedding``           ``text.token_embedding``, ``text.pos_embed``
``ln_final``, ``text_projection`` (W, D)                ``text.norm``, ``text.proj.weight`` = ᵀ
``logit_scale``                                         ``logit_scale``
======================================================  ==================================

Text pooling is at the largest token id (end-of-text), as in open_clip. What the weights cannot tell
(heads: width / head_width with head_width 64; QuickGELU for OpenAI weights) comes from
``open_clip_config.json`` when present, else those defaults, else the caller's overrides.
"""

from __future__ import annotations

from torch import Tensor

from ..models.clip import CLIPConfig, TextConfig
from ..models.vit import ViTConfig
from .io import CheckpointError
from .keymap import Rule, rename

_R = r"transformer\.resblocks\.(\d+)\."
_BLOCK: list[Rule] = [
    (_R + r"ln_1\.(weight|bias)", r"blocks.\1.norm1.\2"),
    (_R + r"ln_2\.(weight|bias)", r"blocks.\1.norm2.\2"),
    (_R + r"attn\.in_proj_weight", r"blocks.\1.attn.qkv.weight"),
    (_R + r"attn\.in_proj_bias", r"blocks.\1.attn.qkv.bias"),
    (_R + r"attn\.out_proj\.(weight|bias)", r"blocks.\1.attn.proj.\2"),
    (_R + r"mlp\.c_fc\.(weight|bias)", r"blocks.\1.mlp.fc1.\2"),
    (_R + r"mlp\.c_proj\.(weight|bias)", r"blocks.\1.mlp.fc2.\2"),
    (_R + r"ls_([12])\.gamma", r"blocks.\1.ls\2.gamma"),
]
_RULES: list[Rule] = [
    (r"visual\.class_embedding", "visual.cls_token"),
    (r"visual\.positional_embedding", "visual.pos_embed"),
    (r"visual\.conv1\.weight", "visual.patch_embed.proj.weight"),
    (r"visual\.ln_pre\.(weight|bias)", r"visual.norm_pre.\1"),
    (r"visual\.ln_post\.(weight|bias)", r"visual.norm.\1"),
    (r"visual\.proj", "visual.proj.weight"),
    *[("visual\\." + p, "visual." + r) for p, r in _BLOCK],
    (r"token_embedding\.weight", "text.token_embedding.weight"),
    (r"positional_embedding", "text.pos_embed"),
    (r"ln_final\.(weight|bias)", r"text.norm.\1"),
    (r"text_projection", "text.proj.weight"),
    (r"text_projection\.(weight|bias)", r"text.proj.\1"),
    (r"logit_scale", "logit_scale"),
    (r"attn_mask", ""),
    *[(p, "text." + r) for p, r in _BLOCK],
]


def is_openclip_layout(sd: dict[str, Tensor]) -> bool:
    return "visual.conv1.weight" in sd and "visual.class_embedding" in sd


def convert(sd: dict[str, Tensor], where: str = "checkpoint") -> dict[str, Tensor]:
    """open_clip state dict → vitkit CLIP state dict."""
    if "visual.trunk.patch_embed.proj.weight" in sd or "visual.attnpool.c_proj.weight" in sd:
        raise CheckpointError(f"{where}: only open_clip ViT image towers are supported (not timm-trunk or ResNet)")
    out, unmatched = rename(sd, _RULES)
    if unmatched:
        raise CheckpointError(f"{where}: open_clip keys with no vitkit mapping: {unmatched[:10]}")
    out["visual.cls_token"] = out["visual.cls_token"].reshape(1, 1, -1)
    out["visual.pos_embed"] = out["visual.pos_embed"].unsqueeze(0)
    out["visual.proj.weight"] = out["visual.proj.weight"].t()
    if "text_projection" in sd:  # a Parameter (W, D) used as x @ P
        out["text.proj.weight"] = sd["text_projection"].t()
    return out


def infer_config(sd: dict[str, Tensor], oc_cfg: dict | None = None, where: str = "checkpoint") -> CLIPConfig:
    """CLIPConfig from an open_clip state dict (+ ``open_clip_config.json``'s ``model_cfg``)."""
    mc = (oc_cfg or {}).get("model_cfg", oc_cfg or {})
    vc, tc = mc.get("vision_cfg", {}), mc.get("text_cfg", {})
    act = "quick_gelu" if mc.get("quick_gelu", False) else "gelu"
    conv = sd["visual.conv1.weight"]
    width, P = conv.shape[0], conv.shape[2]
    n_pos = sd["visual.positional_embedding"].shape[0]
    grid = round((n_pos - 1) ** 0.5)
    if grid * grid != n_pos - 1:
        raise CheckpointError(f"{where}: visual.positional_embedding has {n_pos} rows, not 1 + a square grid")
    v_layers = 1 + max(int(k.split(".")[3]) for k in sd if k.startswith("visual.transformer.resblocks."))
    embed_dim = sd["visual.proj"].shape[1]
    vision = ViTConfig(
        img_size=(grid * P, grid * P),
        patch_size=P,
        embed_dim=width,
        depth=v_layers,
        num_heads=width // vc.get("head_width", 64),
        mlp_hidden_dim=sd["visual.transformer.resblocks.0.mlp.c_fc.weight"].shape[0],
        patch_bias=False,
        pre_norm=True,
        layer_scale="visual.transformer.resblocks.0.ls_1.gamma" in sd,
        act=act,
        norm_eps=1e-5,
        proj_dim=embed_dim,
        family="clip",
    )
    tok = sd["token_embedding.weight"]
    t_width = tok.shape[1]
    t_layers = 1 + max(int(k.split(".")[2]) for k in sd if k.startswith("transformer.resblocks."))
    text = TextConfig(
        vocab_size=tok.shape[0],
        context_length=sd["positional_embedding"].shape[0],
        width=t_width,
        depth=t_layers,
        num_heads=tc.get("heads", t_width // 64),
        mlp_hidden_dim=sd["transformer.resblocks.0.mlp.c_fc.weight"].shape[0],
        act=act,
        norm_eps=1e-5,
        proj_dim=embed_dim,
        eos_token_id=None,
    )
    return CLIPConfig(vision=vision, text=text)


def preprocess_dict(oc_cfg: dict | None, size: tuple[int, int]) -> dict:
    """open_clip ``preprocess_cfg`` → PreprocessConfig kwargs (OpenAI CLIP statistics by default)."""
    pp = (oc_cfg or {}).get("preprocess_cfg", {})
    return {
        "input_size": size,
        "mean": tuple(pp.get("mean", (0.48145466, 0.4578275, 0.40821073))),
        "std": tuple(pp.get("std", (0.26862954, 0.26130258, 0.27577711))),
        "interpolation": pp.get("interpolation", "bicubic"),
        "crop_pct": 1.0,
        "resize_mode": "squash" if pp.get("resize_mode") == "squash" else "shortest",
    }
