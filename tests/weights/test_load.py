"""vitkit.load / save: round trips, format detection and the errors users see."""

from __future__ import annotations

import json

import pytest
import torch

import vitkit
from vitkit.weights import CheckpointError, read_state_dict, save_state_dict


def test_vit_round_trip(tmp_path):
    model = vitkit.create_model("vit_test", labels=[str(i) for i in range(10)]).eval()
    vitkit.save(model, tmp_path / "m")
    loaded = vitkit.load(tmp_path / "m")
    x = torch.randn(2, 3, 32, 40)
    assert torch.equal(model(x), loaded(x))
    assert loaded.cfg.labels == model.cfg.labels
    assert loaded.preprocess == model.preprocess
    # the single safetensors file carries the config in its metadata: loadable alone
    alone = vitkit.load(tmp_path / "m" / "model.safetensors")
    assert torch.equal(model(x), alone(x))


def test_clip_round_trip_with_tokenizer(tmp_path, tiny_tokenizer):
    model = vitkit.create_model("clip_test").eval()
    model.tokenizer = tiny_tokenizer
    vitkit.save(model, tmp_path / "c")
    loaded = vitkit.load(tmp_path / "c")
    ids = model.tokenize(["a cat", "two dogs!"])
    assert torch.equal(ids, loaded.tokenize(["a cat", "two dogs!"]))
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(model(x, ids)[0], loaded(x, ids)[0])


def test_create_model_pretrained_path(tmp_path):
    src = vitkit.create_model("vit_test")
    vitkit.save(src, tmp_path / "m")
    model = vitkit.create_model("vit_test", pretrained=tmp_path / "m").eval()
    x = torch.randn(1, 3, 32, 32)
    assert torch.equal(model(x), src.eval()(x))


def test_mismatch_names_missing_unexpected_and_misshaped_keys(tmp_path):
    vitkit.save(vitkit.create_model("vit_test", depth=3, num_classes=7), tmp_path / "m")
    with pytest.raises(CheckpointError) as e:
        vitkit.create_model("vit_test", pretrained=tmp_path / "m")
    msg = str(e.value)
    assert "unexpected keys" in msg and "blocks.2.attn.qkv.weight" in msg
    assert "mis-shaped keys" in msg and "head.weight: checkpoint (7, 64) vs model (10, 64)" in msg
    vitkit.save(vitkit.create_model("vit_test", depth=1), tmp_path / "m1")
    with pytest.raises(CheckpointError, match=r"missing keys \(\d+\): \['blocks\.1\."):
        vitkit.create_model("vit_test", pretrained=tmp_path / "m1")


class _Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_pickle_refused(tmp_path):
    f = tmp_path / "evil.pt"
    torch.save({"w": torch.zeros(2), "x": _Evil()}, f)
    with pytest.raises(CheckpointError, match="refused to unpickle.*safetensors"):
        read_state_dict(f)


def test_weights_only_torch_file_is_read(tmp_path):
    src = vitkit.create_model("vit_test").eval()
    f = tmp_path / "pytorch_model.bin"
    torch.save({"state_dict": src.state_dict()}, f)  # a common wrapper
    sd = read_state_dict(f)
    assert set(sd) == set(src.state_dict())


def test_sharded_safetensors(tmp_path):
    sd = vitkit.create_model("vit_test").state_dict()
    keys = sorted(sd)
    half = len(keys) // 2
    save_state_dict({k: sd[k] for k in keys[:half]}, tmp_path / "a.safetensors")
    save_state_dict({k: sd[k] for k in keys[half:]}, tmp_path / "b.safetensors")
    index = {"weight_map": {k: ("a.safetensors" if i < half else "b.safetensors") for i, k in enumerate(keys)}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    out = read_state_dict(tmp_path / "model.safetensors.index.json")
    assert all(torch.equal(out[k], sd[k]) for k in keys)


def test_unknown_layout(tmp_path):
    f = tmp_path / "weird.safetensors"
    save_state_dict({"foo.bar": torch.zeros(3)}, f)
    with pytest.raises(CheckpointError, match="cannot tell the checkpoint format"):
        vitkit.load(f)


def test_unsupported_hf_model_type(tmp_path):
    save_state_dict({"x": torch.zeros(1)}, tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "swin"}))
    with pytest.raises(CheckpointError, match="model_type 'swin' is not supported"):
        vitkit.load(tmp_path)


def test_invalid_config_json_names_file(tmp_path):
    save_state_dict({"x": torch.zeros(1)}, tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="config.json: invalid JSON"):
        vitkit.load(tmp_path)


def test_missing_source_and_missing_weights(tmp_path):
    with pytest.raises(FileNotFoundError, match="hf-hub:org/name"):
        vitkit.load(tmp_path / "nope")
    with pytest.raises(CheckpointError, match="no weights file found"):
        vitkit.load(tmp_path)


def test_corrupt_safetensors(tmp_path):
    f = tmp_path / "model.safetensors"
    f.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00garbage")
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        vitkit.load(f)


def test_unknown_override(tmp_path):
    vitkit.save(vitkit.create_model("vit_test"), tmp_path / "m")
    with pytest.raises(ValueError, match="unknown config overrides \\['nm_heads'\\]"):
        vitkit.load(tmp_path / "m", nm_heads=2)


def test_pretrained_true_is_refused():
    with pytest.raises(ValueError, match="ships no weights"):
        vitkit.create_model("vit_test", pretrained=True)


def test_hf_hub_source_downloads_only_when_asked(tmp_path, monkeypatch):
    hub = pytest.importorskip("huggingface_hub")
    vitkit.save(vitkit.create_model("vit_test"), tmp_path / "snap")
    calls = []

    def fake_snapshot_download(repo_id, **kw):
        calls.append((repo_id, kw))
        return str(tmp_path / "snap")

    monkeypatch.setattr(hub, "snapshot_download", fake_snapshot_download)
    model = vitkit.load("hf-hub:org/tiny-vit")
    assert calls and calls[0][0] == "org/tiny-vit" and "*.safetensors" in calls[0][1]["allow_patterns"]
    assert model.cfg.embed_dim == 64


def test_page_pipeline_travels_with_the_model(tmp_path):
    """A crop classifier saved with its page pipeline reads a page after loading exactly as before saving."""
    from vitkit import frb
    from vitkit.frb.classifier import PagePolicy
    from vitkit.predict import classify_images, page_classifier

    model = vitkit.VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2,
                                     num_classes=15, labels=list(frb.FONT_NAMES)).eval()
    model.pipeline = PagePolicy(tile=32, stride=16, text_height=(8.0, 8.0), scales=(0.9, 1.0))
    pages = [s.image for s in frb.hard_split()[:3]]
    before = classify_images(model, pages)
    loaded = vitkit.load(vitkit.save(model, tmp_path / "m"))
    assert loaded.pipeline == model.pipeline and loaded.cfg.labels == frb.FONT_NAMES
    after = classify_images(loaded, pages)
    assert torch.equal(before, after)  # identical, not just close
    from vitkit.frb.ink import pil_to_tensor

    with torch.no_grad():
        direct = page_classifier(loaded)([pil_to_tensor(p) for p in pages]).softmax(-1)
    assert torch.allclose(after, direct, atol=1e-6)
    # other models keep no pipeline and are read through their preprocessing
    plain = vitkit.load(vitkit.save(vitkit.create_model("vit_test"), tmp_path / "plain"))
    assert plain.pipeline is None and page_classifier(plain) is None
    assert classify_images(plain, pages).shape == (3, plain.cfg.num_classes)
