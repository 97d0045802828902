"""Parity with transformers: tiny random HF models saved with save_pretrained, loaded by vitkit.load.

The timm- and open_clip-layout checkpoints are written here from the HF weights by the documented
key maps (written out independently of vitkit's converters), then loaded by vitkit.load.
"""

from __future__ import annotations

import json

import pytest
import torch

import vitkit
from vitkit.weights import save_state_dict

T = pytest.importorskip("transformers")

TOL = 1e-5
SIZES = [(32, 32), (32, 48)]  # native, non-square
torch.manual_seed(0)


def _vit_kwargs(**kw):
    base = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                image_size=32, patch_size=8)
    return {**base, **kw}


def _close(a, b, tol=TOL):
    assert a.shape == b.shape, (a.shape, b.shape)
    err = (a - b).abs().max().item()
    assert err <= tol, f"max abs error {err:.2e} > {tol:.0e}"


def _randomise(model):
    """HF inits LayerNorm to (1, 0) and some tokens to 0: perturb everything so parity means something."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model.eval()


def _save(model, tmp_path, name):
    d = tmp_path / name
    model.save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def hf_vit():
    cfg = T.ViTConfig(**_vit_kwargs(num_labels=5))
    return _randomise(T.ViTForImageClassification(cfg))


def test_vit_classification(hf_vit, tmp_path):
    d = _save(hf_vit, tmp_path, "vit")
    model = vitkit.load(d)
    assert model.cfg.num_classes == 5 and model.cfg.norm_eps == 1e-12
    for h, w in SIZES:
        x = torch.randn(2, 3, h, w)
        with torch.no_grad():
            ref = hf_vit(x, interpolate_pos_encoding=True, output_hidden_states=True)
            ref_tokens = hf_vit.vit(x, interpolate_pos_encoding=True).last_hidden_state
            _close(model.forward_features(x), ref_tokens)
            _close(model(x), ref.logits)


def test_vit_model_without_head_and_pooler_dropped(tmp_path):
    hf = _randomise(T.ViTModel(T.ViTConfig(**_vit_kwargs())))
    model = vitkit.load(_save(hf, tmp_path, "vitmodel"))
    x = torch.randn(1, 3, 40, 24)
    with torch.no_grad():
        _close(model.forward_features(x), hf(x, interpolate_pos_encoding=True).last_hidden_state)


@pytest.mark.parametrize("teacher", [True, False])
def test_deit(tmp_path, teacher):
    cfg = T.DeiTConfig(**_vit_kwargs(num_labels=4))
    cls = T.DeiTForImageClassificationWithTeacher if teacher else T.DeiTForImageClassification
    hf = _randomise(cls(cfg))
    model = vitkit.load(_save(hf, tmp_path, "deit"))
    assert model.num_prefix_tokens == 2
    for h, w in SIZES:
        x = torch.randn(2, 3, h, w)
        with torch.no_grad():
            _close(model.forward_features(x), hf.deit(x, interpolate_pos_encoding=True).last_hidden_state)
            _close(model(x), hf(x, interpolate_pos_encoding=True).logits)


def test_dinov2_classification(tmp_path):
    cfg = T.Dinov2Config(**_vit_kwargs(intermediate_size=None, mlp_ratio=2, num_labels=3))
    hf = _randomise(T.Dinov2ForImageClassification(cfg))
    model = vitkit.load(_save(hf, tmp_path, "dinov2"))
    assert model.cfg.layer_scale and model.cfg.global_pool == "token_avg"
    for h, w in SIZES:
        x = torch.randn(2, 3, h, w)
        with torch.no_grad():
            _close(model.forward_features(x), hf.dinov2(x).last_hidden_state)
            _close(model(x), hf(x).logits)


def test_dinov2_registers(tmp_path):
    cfg = T.Dinov2WithRegistersConfig(**_vit_kwargs(intermediate_size=None, mlp_ratio=2, num_register_tokens=3))
    hf = _randomise(T.Dinov2WithRegistersModel(cfg))
    model = vitkit.load(_save(hf, tmp_path, "dinov2reg"))
    assert model.num_prefix_tokens == 4 and model.cfg.pos_antialias
    for h, w in SIZES + [(56, 40)]:
        x = torch.randn(2, 3, h, w)
        with torch.no_grad():
            _close(model.forward_features(x), hf(x).last_hidden_state)


def _clip_config():
    return T.CLIPConfig(
        text_config=dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                         vocab_size=100, max_position_embeddings=16, bos_token_id=98, eos_token_id=99,
                         pad_token_id=0),
        vision_config=_vit_kwargs(),
        projection_dim=24,
    )


IDS = torch.tensor([[98, 5, 6, 7, 99, 0, 0, 0], [98, 11, 12, 99, 0, 0, 0, 0], [98, 99, 0, 0, 0, 0, 0, 0]])


@pytest.fixture(scope="module")
def hf_clip():
    return _randomise(T.CLIPModel(_clip_config()))


def test_clip(hf_clip, tmp_path):
    model = vitkit.load(_save(hf_clip, tmp_path, "clip"))
    assert isinstance(model, vitkit.CLIP)
    for h, w in SIZES:
        x = torch.randn(2, 3, h, w)
        with torch.no_grad():
            ref = hf_clip(input_ids=IDS, pixel_values=x, interpolate_pos_encoding=True)
            vis = hf_clip.vision_model(x, interpolate_pos_encoding=True).last_hidden_state
            _close(model.visual.forward_features(x), hf_clip.vision_model.post_layernorm(vis))
            _close(model.encode_image(x, normalize=True), ref.image_embeds)
            _close(model.encode_text(IDS, normalize=True), ref.text_embeds)
            logits, _ = model(x, IDS)
            _close(logits, ref.logits_per_image, 1e-4 * ref.logits_per_image.abs().max().item())


def test_clip_vision_with_projection(hf_clip, tmp_path):
    cfg = _clip_config().vision_config
    cfg.projection_dim = 24
    hf = _randomise(T.CLIPVisionModelWithProjection(cfg))
    model = vitkit.load(_save(hf, tmp_path, "clipvis"))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        _close(model(x), hf(x).image_embeds)


# --------------------------------------------------------------------------- timm layout
def _hf_vit_to_timm(hf_sd: dict, prefix: str, depth: int) -> dict:
    """The documented timm key map, written independently of vitkit's converter."""
    p = prefix
    out = {
        "cls_token": hf_sd[f"{p}embeddings.cls_token"],
        "pos_embed": hf_sd[f"{p}embeddings.position_embeddings"],
        "patch_embed.proj.weight": hf_sd[f"{p}embeddings.patch_embeddings.projection.weight"],
        "patch_embed.proj.bias": hf_sd[f"{p}embeddings.patch_embeddings.projection.bias"],
        "norm.weight": hf_sd[f"{p}layernorm.weight"],
        "norm.bias": hf_sd[f"{p}layernorm.bias"],
    }
    if f"{p}embeddings.distillation_token" in hf_sd:
        out["dist_token"] = hf_sd[f"{p}embeddings.distillation_token"]
    for i in range(depth):
        L = f"{p}encoder.layer.{i}."
        b = f"blocks.{i}."
        for kind in ("weight", "bias"):
            out[b + f"attn.qkv.{kind}"] = torch.cat(
                [hf_sd[L + f"attention.attention.{n}.{kind}"] for n in ("query", "key", "value")]
            )
            out[b + f"attn.proj.{kind}"] = hf_sd[L + f"attention.output.dense.{kind}"]
            out[b + f"norm1.{kind}"] = hf_sd[L + f"layernorm_before.{kind}"]
            out[b + f"norm2.{kind}"] = hf_sd[L + f"layernorm_after.{kind}"]
            out[b + f"mlp.fc1.{kind}"] = hf_sd[L + f"intermediate.dense.{kind}"]
            out[b + f"mlp.fc2.{kind}"] = hf_sd[L + f"output.dense.{kind}"]
    return out


def _hf_state_dict(model, tmp_path):
    from safetensors.torch import load_file

    d = _save(model, tmp_path, "hf_for_timm")
    return load_file(str(d / "model.safetensors"))


def test_timm_layout(hf_vit, tmp_path):
    sd = _hf_state_dict(hf_vit, tmp_path)
    timm_sd = _hf_vit_to_timm(sd, "vit.", 2)
    timm_sd["head.weight"], timm_sd["head.bias"] = sd["classifier.weight"], sd["classifier.bias"]
    d = tmp_path / "timm"
    d.mkdir()
    save_state_dict(timm_sd, d / "model.safetensors")
    # timm's hub config.json: the architecture name and the args that shapes cannot tell
    hub_cfg = {"architecture": "vit_test_patch8_32", "num_classes": 5, "global_pool": "token",
               "model_args": {"num_heads": 4, "norm_eps": 1e-12},
               "pretrained_cfg": {"input_size": [3, 32, 32], "interpolation": "bicubic", "crop_pct": 0.9,
                                  "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}}
    (d / "config.json").write_text(json.dumps(hub_cfg))
    model = vitkit.load(d)
    assert model.preprocess.crop_pct == 0.9
    for h, w in SIZES:
        x = torch.randn(2, 3, h, w)
        with torch.no_grad():
            _close(model(x), hf_vit(x, interpolate_pos_encoding=True).logits)


def test_timm_bare_state_dict_with_overrides(tmp_path):
    hf = _randomise(T.DeiTForImageClassificationWithTeacher(T.DeiTConfig(**_vit_kwargs(num_labels=4))))
    sd = _hf_state_dict(hf, tmp_path)
    timm_sd = _hf_vit_to_timm(sd, "deit.", 2)
    timm_sd |= {"head.weight": sd["cls_classifier.weight"], "head.bias": sd["cls_classifier.bias"],
                "head_dist.weight": sd["distillation_classifier.weight"],
                "head_dist.bias": sd["distillation_classifier.bias"]}
    f = tmp_path / "deit_timm.safetensors"
    save_state_dict(timm_sd, f)
    model = vitkit.load(f, num_heads=4, norm_eps=1e-12)  # a bare file: what shapes cannot tell, the caller does
    x = torch.randn(2, 3, 32, 48)
    with torch.no_grad():
        _close(model(x), hf(x, interpolate_pos_encoding=True).logits)


# --------------------------------------------------------------------------- open_clip layout
def _hf_clip_to_openclip(sd: dict, v_depth: int, t_depth: int) -> dict:
    """The documented open_clip key map, written independently of vitkit's converter."""
    V, Tx = "vision_model.", "text_model."
    out = {
        "visual.class_embedding": sd[V + "embeddings.class_embedding"],
        "visual.positional_embedding": sd[V + "embeddings.position_embedding.weight"],
        "visual.conv1.weight": sd[V + "embeddings.patch_embedding.weight"],
        "visual.ln_pre.weight": sd[V + "pre_layrnorm.weight"],
        "visual.ln_pre.bias": sd[V + "pre_layrnorm.bias"],
        "visual.ln_post.weight": sd[V + "post_layernorm.weight"],
        "visual.ln_post.bias": sd[V + "post_layernorm.bias"],
        "visual.proj": sd["visual_projection.weight"].t().contiguous(),
        "token_embedding.weight": sd[Tx + "embeddings.token_embedding.weight"],
        "positional_embedding": sd[Tx + "embeddings.position_embedding.weight"],
        "ln_final.weight": sd[Tx + "final_layer_norm.weight"],
        "ln_final.bias": sd[Tx + "final_layer_norm.bias"],
        "text_projection": sd["text_projection.weight"].t().contiguous(),
        "logit_scale": sd["logit_scale"],
    }
    for src, dst, depth in ((V, "visual.", v_depth), (Tx, "", t_depth)):
        for i in range(depth):
            L, b = f"{src}encoder.layers.{i}.", f"{dst}transformer.resblocks.{i}."
            out[b + "attn.in_proj_weight"] = torch.cat([sd[L + f"self_attn.{n}_proj.weight"] for n in "qkv"])
            out[b + "attn.in_proj_bias"] = torch.cat([sd[L + f"self_attn.{n}_proj.bias"] for n in "qkv"])
            for kind in ("weight", "bias"):
                out[b + f"attn.out_proj.{kind}"] = sd[L + f"self_attn.out_proj.{kind}"]
                out[b + f"ln_1.{kind}"] = sd[L + f"layer_norm1.{kind}"]
                out[b + f"ln_2.{kind}"] = sd[L + f"layer_norm2.{kind}"]
                out[b + f"mlp.c_fc.{kind}"] = sd[L + f"mlp.fc1.{kind}"]
                out[b + f"mlp.c_proj.{kind}"] = sd[L + f"mlp.fc2.{kind}"]
    return out


def test_openclip_layout(hf_clip, tmp_path):
    sd = _hf_state_dict(hf_clip, tmp_path)
    d = tmp_path / "openclip"
    d.mkdir()
    save_state_dict(_hf_clip_to_openclip(sd, 2, 2), d / "open_clip_model.safetensors")
    oc_cfg = {"model_cfg": {"embed_dim": 24, "quick_gelu": True,
                            "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "patch_size": 8,
                                           "head_width": 8},
                            "text_cfg": {"context_length": 16, "vocab_size": 100, "width": 32, "heads": 4,
                                         "layers": 2}},
              "preprocess_cfg": {"mean": [0.4, 0.4, 0.4], "std": [0.2, 0.2, 0.2]}}
    (d / "open_clip_config.json").write_text(json.dumps(oc_cfg))
    model = vitkit.load(d)
    assert model.preprocess.mean == (0.4, 0.4, 0.4)
    for h, w in SIZES:
        x = torch.randn(2, 3, h, w)
        with torch.no_grad():
            ref = hf_clip(input_ids=IDS, pixel_values=x, interpolate_pos_encoding=True)
            # eos (99) is the largest id here, so open_clip's argmax pooling agrees with HF's
            _close(model.encode_image(x, normalize=True), ref.image_embeds)
            _close(model.encode_text(IDS, normalize=True), ref.text_embeds)
