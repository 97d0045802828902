"""The applied-methods record: filled by apply, emptied by remove, written by vitkit.save and
replayed by vitkit.load (LoRA on a quantized model, visual prompts, token reduction, int8), shown by info."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

import vitkit
from vitkit.adapt import lora, prompts
from vitkit.cli import app
from vitkit.models import VisionTransformer, ViTConfig
from vitkit.models.applied import describe, record, record_of, walk
from vitkit.models.clip import CLIP, CLIPConfig, TextConfig
from vitkit.quant import int8, ptq
from vitkit.reduce import hired, tome
from vitkit.reduce.reducers import REDUCERS, reducer_for
from vitkit.weights.io import CheckpointError


def tiny(**kw) -> VisionTransformer:
    torch.manual_seed(0)
    return VisionTransformer(ViTConfig(**{**dict(img_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=4,
                                                 num_classes=3), **kw})).eval()


def nudge_lora(model) -> None:
    with torch.no_grad():
        for w in lora.lora_layers(model).values():
            for p in w.lora_B.values():
                p.normal_(0, 0.1)


def test_record_follows_apply_and_remove():
    model = tiny()
    assert dict(record_of(model)) == {} and not hasattr(model, "applied")
    cfg = lora.LoraConfig(rank=2)
    lora.apply(model, cfg, "a")
    lora.apply(model, lora.LoraConfig(rank=4, targets=("fc1",)), "b")
    assert list(model.applied) == ["lora:a", "lora:b"] and model.applied["lora:a"] is cfg
    assert lora.configs(model) == {"a": cfg, "b": model.applied["lora:b"]}
    lora.remove(model, "a")
    assert list(model.applied) == ["lora:b"]
    prompts.apply_vpt(model, prompts.VPTConfig(num_tokens=2))
    tome.apply(model, tome.ToMeConfig(r=1))
    assert model.applied.methods() == ["lora", "vpt", "tome"]
    with pytest.raises(ValueError, match="tome is already applied"):
        hired.apply(model, hired.HiREDConfig())
    tome.remove(model)
    prompts.remove_vpt(model)
    lora.remove(model)
    assert dict(model.applied) == {} and model.applied.undo == {}
    with pytest.raises(ValueError, match="already applied"):
        record(model, "x", 1)
        record(model, "x", 2)


def test_reducer_registry_dispatches_by_config():
    assert set(REDUCERS) == {"hired", "evit", "tome"}
    assert reducer_for(hired.HiREDConfig()) is REDUCERS["hired"] and REDUCERS["hired"].apply is hired.apply
    assert reducer_for(tome.ToMeConfig()).name == "tome"
    with pytest.raises(ValueError, match="not the config of a token-reduction method"):
        reducer_for(lora.LoraConfig())


def test_lora_on_quantized_round_trips_through_save_and_load(tmp_path):
    model = tiny()
    x = torch.rand(4, 3, 16, 16)
    qcfg = ptq.QuantConfig(w_bits=4, a_bits=8)
    ptq.apply(model, qcfg)
    ptq.calibrate(model, x)
    lcfg = lora.LoraConfig(rank=2, targets=("qkv", "fc1"), modules_to_save=("head",))
    lora.apply(model, lcfg)
    nudge_lora(model)
    ref = model(x)
    vitkit.save(model, tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "config.json").read_text())["vitkit"]
    assert [e["method"] for e in meta["applied"]] == ["quant", "lora:default"]

    back = vitkit.load(tmp_path / "m")
    assert list(back.applied) == ["quant", "lora:default"]
    assert back.applied["quant"] == qcfg and back.applied["lora:default"] == lcfg
    qkv = back.blocks[0].attn.qkv
    assert isinstance(qkv, lora.LoraLinear) and isinstance(qkv.base_layer, ptq.QuantLinear)
    assert torch.equal(back(x), ref)
    lora.remove(back)  # still reversible after loading
    ptq.remove(back)
    assert isinstance(back.blocks[0].attn.qkv, torch.nn.Linear) and dict(back.applied) == {}


def test_prompts_and_reduction_round_trip_on_a_clip_vision_tower(tmp_path):
    torch.manual_seed(0)
    vision = ViTConfig(img_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=4, proj_dim=16, pre_norm=True)
    model = CLIP(CLIPConfig(vision, TextConfig(vocab_size=64, context_length=8, width=32, depth=1, num_heads=4,
                                               proj_dim=16, eos_token_id=None))).eval()
    prompts.apply_vpt(model, prompts.VPTConfig(num_tokens=2, deep=True))
    tome.apply(model, tome.ToMeConfig(r=2))
    x = torch.rand(2, 3, 16, 16)
    ref = model.encode_image(x)
    assert [(p, k) for p, k, _ in walk(model)] == [("visual", "vpt"), ("visual", "tome")]
    vitkit.save(model, tmp_path / "clip")
    back = vitkit.load(tmp_path / "clip")
    assert list(back.visual.applied) == ["vpt", "tome"] and back.visual.applied["tome"] == tome.ToMeConfig(r=2)
    assert torch.equal(back.encode_image(x), ref)
    assert any(line.startswith("vpt on visual") for line in describe(back))


@pytest.mark.skipif(not int8.int8_supported(), reason="this torch build has no CPU int8 matmul")
def test_int8_round_trips(tmp_path):
    model = tiny()
    int8.to_int8(model)
    x = torch.rand(2, 3, 16, 16)
    ref = model(x)
    assert list(model.applied) == ["int8"]
    vitkit.save(model, tmp_path / "i8")
    back = vitkit.load(tmp_path / "i8")
    assert isinstance(back.blocks[0].mlp.fc1, int8.Int8Linear) and list(back.applied) == ["int8"]
    assert torch.equal(back(x), ref)


def test_plain_checkpoints_have_no_record_and_unknown_methods_are_refused(tmp_path):
    model = tiny()
    vitkit.save(model, tmp_path / "plain")
    meta = json.loads((tmp_path / "plain" / "config.json").read_text())
    assert "applied" not in meta["vitkit"]  # files read by older vitkit versions stay as they were
    assert dict(record_of(vitkit.load(tmp_path / "plain"))) == {}
    meta["vitkit"]["applied"] = [{"module": "", "method": "warp", "config": {}}]
    (tmp_path / "plain" / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="method 'warp'"):
        vitkit.load(tmp_path / "plain")


def test_info_shows_what_is_applied(tmp_path):
    model = tiny()
    lora.apply(model, lora.LoraConfig(rank=3))
    vitkit.save(model, tmp_path / "m")
    r = CliRunner().invoke(app, ["info", str(tmp_path / "m")])
    assert r.exit_code == 0, r.output
    assert "applied" in r.output and "lora:default" in r.output and "rank=3" in r.output
