"""Hugging Face transformers checkpoints (ViT, DeiT, DINOv2 (+registers), CLIP) → vitkit.

Key map (HF name → vitkit name; both the hub layout and transformers-5's in-memory names):

=========================================================  ===============================
``embeddings.cls_token`` / CLIP ``embeddings.class_embedding``  ``cls_token`` (1, 1, C)
``embeddings.distillation_token``                              ``dist_token``
``embeddings.register_tokens``                                 ``reg_token``
``embeddings.position_embeddings`` / CLIP ``position_embedding.weight``  ``pos_embed`` (1, N, C)
``embeddings.patch_embeddings.projection`` / CLIP ``patch_embedding``    ``patch_embed.proj``
``pre_layrnorm`` (CLIP)                                        ``norm_pre``
``encoder.layer.i.attention.attention.{query,key,value}``,
``layers.i.attention.{q,k,v}_proj``, ``layers.i.self_attn.{q,k,v}_proj``  ``blocks.i.attn.qkv`` ([q; k; v])
``…attention.output.dense`` / ``o_proj`` / ``self_attn.out_proj``          ``blocks.i.attn.proj``
``layernorm_before`` / ``norm1`` / ``layer_norm1``               ``blocks.i.norm1`` (and 2)
``intermediate.dense``, ``output.dense`` / ``mlp.fc1``, ``mlp.fc2``  ``blocks.i.mlp.fc1``, ``fc2``
``layer_scale{1,2}.lambda1`` (DINOv2)                          ``blocks.i.ls{1,2}.gamma``
``layernorm`` / CLIP ``post_layernorm``                        ``norm`` (applied to all tokens)
``classifier`` / ``cls_classifier`` / ``distillation_classifier``  ``head`` / ``head`` / ``head_dist``
``visual_projection``, ``text_projection``, ``logit_scale``       ``visual.proj``, ``text.proj``, ``logit_scale``
CLIP text ``embeddings.token_embedding``, ``position_embedding``, ``final_layer_norm``
                                                               ``text.token_embedding``, ``text.pos_embed``, ``text.norm``
=========================================================  ===============================

Dropped on purpose: ``mask_token`` (masked-image pretraining only), ViT's ``pooler`` (dense + tanh
head of ViTModel, unused by its classifier), ``position_ids`` buffers.
"""

from __future__ import annotations

import logging
import math
import re

from torch import Tensor

from ..models.clip import CLIPConfig, TextConfig
from ..models.vit import ViTConfig
from .io import CheckpointError
from .keymap import Rule, fuse_qkv, rename

log = logging.getLogger(__name__)

VISION_TYPES = ("vit", "deit", "dinov2", "dinov2_with_registers", "clip_vision_model")
MODEL_TYPES = VISION_TYPES + ("clip",)

_L = r"(?:encoder\.)?layers?\.(\d+)\."
_BLOCK_RULES: list[Rule] = [
    (_L + r"(?:attention\.attention\.|attention\.|self_attn\.)(?:query|q_proj)\.(weight|bias)", r"blocks.\1.attn.q.\2"),
    (_L + r"(?:attention\.attention\.|attention\.|self_attn\.)(?:key|k_proj)\.(weight|bias)", r"blocks.\1.attn.k.\2"),
    (_L + r"(?:attention\.attention\.|attention\.|self_attn\.)(?:value|v_proj)\.(weight|bias)", r"blocks.\1.attn.v.\2"),
    (_L + r"(?:attention\.output\.dense|attention\.o_proj|self_attn\.out_proj)\.(weight|bias)", r"blocks.\1.attn.proj.\2"),
    (_L + r"intermediate\.dense\.(weight|bias)", r"blocks.\1.mlp.fc1.\2"),
    (_L + r"output\.dense\.(weight|bias)", r"blocks.\1.mlp.fc2.\2"),
    (_L + r"mlp\.(fc1|fc2)\.(weight|bias)", r"blocks.\1.mlp.\2.\3"),
    (_L + r"(?:layernorm_before|norm1|layer_norm1)\.(weight|bias)", r"blocks.\1.norm1.\2"),
    (_L + r"(?:layernorm_after|norm2|layer_norm2)\.(weight|bias)", r"blocks.\1.norm2.\2"),
    (_L + r"layer_scale([12])\.lambda1", r"blocks.\1.ls\2.gamma"),
]
_VISION_RULES: list[Rule] = [
    (r"embeddings\.(?:cls_token|class_embedding)", "cls_token"),
    (r"embeddings\.distillation_token", "dist_token"),
    (r"embeddings\.register_tokens", "reg_token"),
    (r"embeddings\.mask_token", ""),
    (r"embeddings\.position_ids", ""),
    (r"embeddings\.(?:position_embeddings|position_embedding\.weight)", "pos_embed"),
    (r"embeddings\.(?:patch_embeddings\.projection|patch_embedding)\.(weight|bias)", r"patch_embed.proj.\1"),
    (r"pre_layrnorm\.(weight|bias)", r"norm_pre.\1"),
    (r"(?:layernorm|post_layernorm)\.(weight|bias)", r"norm.\1"),
    (r"pooler\..*", ""),
    *_BLOCK_RULES,
]
_TEXT_RULES: list[Rule] = [
    (r"embeddings\.token_embedding\.weight", "token_embedding.weight"),
    (r"embeddings\.position_embedding\.weight", "pos_embed"),
    (r"embeddings\.position_ids", ""),
    (r"final_layer_norm\.(weight|bias)", r"norm.\1"),
    *_BLOCK_RULES,
]
_HEAD_RULES: list[Rule] = [
    (r"(?:classifier|cls_classifier)\.(weight|bias)", r"head.\1"),
    (r"distillation_classifier\.(weight|bias)", r"head_dist.\1"),
    (r"visual_projection\.weight", "proj.weight"),
]
_BACKBONE_PREFIX = re.compile(r"^(vit|deit|dinov2|dinov2_with_registers|vision_model)\.")

_ACTS = {"gelu": "gelu", "quick_gelu": "quick_gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh"}
_RESAMPLE = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic"}


def _act(name: str, where: str) -> str:
    if name not in _ACTS:
        raise CheckpointError(f"{where}: hidden_act {name!r} is not supported (supported: {sorted(_ACTS)})")
    return _ACTS[name]


def _labels(cfg: dict) -> list[str] | None:
    id2label = cfg.get("id2label")
    if not id2label:
        return None
    return [id2label[str(i)] if str(i) in id2label else id2label.get(i, str(i)) for i in range(len(id2label))]


def vit_config(cfg: dict, sd: dict[str, Tensor], where: str = "config.json") -> ViTConfig:
    """ViTConfig from an HF vision config dict (+ the converted state dict, for heads)."""
    mt = cfg.get("model_type")
    if cfg.get("use_swiglu_ffn"):
        raise CheckpointError(f"{where}: DINOv2 with a SwiGLU feed-forward (ViT-g) is not supported yet")
    dim = cfg["hidden_size"]
    size = cfg.get("image_size", 224)
    patch = cfg.get("patch_size", 16)
    hidden = cfg.get("intermediate_size") or int(dim * cfg.get("mlp_ratio", 4))
    is_clip = mt in ("clip_vision_model", "clip")
    head = sd.get("head.weight")
    pool = "token"
    if mt in ("dinov2", "dinov2_with_registers") and head is not None and head.shape[1] == 2 * dim:
        pool = "token_avg"
    proj = sd.get("proj.weight")
    return ViTConfig(
        img_size=(size, size) if isinstance(size, int) else tuple(size),
        patch_size=patch if isinstance(patch, int) else patch[0],
        in_chans=cfg.get("num_channels", 3),
        embed_dim=dim,
        depth=cfg["num_hidden_layers"],
        num_heads=cfg["num_attention_heads"],
        mlp_hidden_dim=hidden,
        qkv_bias=cfg.get("qkv_bias", True),
        patch_bias=not is_clip,
        dist_token=mt == "deit",
        dist_head="head_dist.weight" in sd,
        num_reg_tokens=cfg.get("num_register_tokens", 0) if mt == "dinov2_with_registers" else 0,
        pre_norm=is_clip,
        layer_scale=mt in ("dinov2", "dinov2_with_registers"),
        layer_scale_init=cfg.get("layerscale_value", 1.0),
        act=_act(cfg.get("hidden_act", "gelu"), where),
        norm_eps=cfg.get("layer_norm_eps", 1e-12),
        global_pool=pool,
        num_classes=int(head.shape[0]) if head is not None else 0,
        proj_dim=int(proj.shape[0]) if proj is not None else 0,
        pos_antialias=mt == "dinov2_with_registers",
        family={"vit": "vit", "deit": "deit", "clip_vision_model": "clip", "clip": "clip"}.get(mt, "dinov2"),
        labels=_labels(cfg) if head is not None else None,
    )


def text_config(cfg: dict, proj_dim: int, where: str = "config.json") -> TextConfig:
    eos = cfg.get("eos_token_id", 49407)
    return TextConfig(
        vocab_size=cfg["vocab_size"],
        context_length=cfg.get("max_position_embeddings", 77),
        width=cfg["hidden_size"],
        depth=cfg["num_hidden_layers"],
        num_heads=cfg["num_attention_heads"],
        mlp_hidden_dim=cfg["intermediate_size"],
        act=_act(cfg.get("hidden_act", "quick_gelu"), where),
        norm_eps=cfg.get("layer_norm_eps", 1e-5),
        proj_dim=proj_dim,
        # transformers' legacy CLIP configs say eos_token_id=2 and mean "pool at the largest id"
        eos_token_id=None if eos == 2 else eos,
    )


def _vision_fixups(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    if "cls_token" in sd and sd["cls_token"].dim() == 1:
        sd["cls_token"] = sd["cls_token"].reshape(1, 1, -1)
    if "pos_embed" in sd and sd["pos_embed"].dim() == 2:
        sd["pos_embed"] = sd["pos_embed"].unsqueeze(0)
    return fuse_qkv(sd)


def _convert_vision(sd: dict[str, Tensor], where: str) -> dict[str, Tensor]:
    stripped = {_BACKBONE_PREFIX.sub("", k): v for k, v in sd.items()}
    out, unmatched = rename(stripped, _VISION_RULES + _HEAD_RULES)
    if unmatched:
        raise CheckpointError(f"{where}: keys with no known Hugging Face mapping: {unmatched[:10]}")
    return _vision_fixups(out)


def convert(cfg: dict, sd: dict[str, Tensor], where: str = "checkpoint") -> tuple[str, object, dict[str, Tensor]]:
    """HF (config dict, state dict) → (arch "vit" | "clip", vitkit config, vitkit state dict)."""
    mt = cfg.get("model_type")
    if mt not in MODEL_TYPES:
        raise CheckpointError(f"{where}: model_type {mt!r} is not supported; supported: {MODEL_TYPES}")
    if mt != "clip":
        vsd = _convert_vision(sd, where)
        vcfg = cfg.get("vision_config", cfg) if mt == "clip_vision_model" else cfg
        vcfg = {**vcfg, "model_type": mt}
        return "vit", vit_config(vcfg, vsd, where), vsd

    vision = {k[len("vision_model.") :]: v for k, v in sd.items() if k.startswith("vision_model.")}
    text = {k[len("text_model.") :]: v for k, v in sd.items() if k.startswith("text_model.")}
    rest = {k: v for k, v in sd.items() if not k.startswith(("vision_model.", "text_model."))}
    vsd = _convert_vision(vision, where)
    if "visual_projection.weight" in rest:
        vsd["proj.weight"] = rest.pop("visual_projection.weight")
    tsd, unmatched = rename(text, _TEXT_RULES)
    tsd = fuse_qkv(tsd)
    if "text_projection.weight" in rest:
        tsd["proj.weight"] = rest.pop("text_projection.weight")
    logit_scale = rest.pop("logit_scale", None)
    unmatched += list(rest)
    if unmatched:
        raise CheckpointError(f"{where}: keys with no known Hugging Face mapping: {unmatched[:10]}")
    proj_dim = cfg.get("projection_dim", 512)
    vc = {**cfg["vision_config"], "model_type": "clip"}
    ccfg = CLIPConfig(
        vision=vit_config(vc, vsd, where),
        text=text_config(cfg["text_config"], proj_dim, where),
        logit_scale_init=cfg.get("logit_scale_init_value", math.log(1 / 0.07)),
    )
    out = {f"visual.{k}": v for k, v in vsd.items()} | {f"text.{k}": v for k, v in tsd.items()}
    if logit_scale is not None:
        out["logit_scale"] = logit_scale
    return "clip", ccfg, out


def preprocess_dict(pp: dict, default_size: tuple[int, int]) -> dict:
    """HF ``preprocessor_config.json`` → kwargs of vitkit's PreprocessConfig."""
    size = pp.get("size", {})
    crop = pp.get("crop_size") if pp.get("do_center_crop") else None
    if isinstance(size, int):
        size = {"shortest_edge": size}
    if crop:
        out_hw = (crop["height"], crop["width"]) if isinstance(crop, dict) else (crop, crop)
    elif "height" in size:
        out_hw = (size["height"], size["width"])
    else:
        out_hw = default_size
    if "shortest_edge" in size:
        mode, crop_pct = "shortest", min(out_hw) / size["shortest_edge"]
    else:
        mode, crop_pct = "squash", 1.0
    return {
        "input_size": tuple(out_hw),
        "mean": tuple(pp.get("image_mean", (0.5, 0.5, 0.5))),
        "std": tuple(pp.get("image_std", (0.5, 0.5, 0.5))),
        "interpolation": _RESAMPLE.get(pp.get("resample", 2), "bilinear"),
        "crop_pct": crop_pct,
        "resize_mode": mode,
    }
