"""Tests for ``vitkit.data.transforms``."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from vitkit.data import PreprocessConfig, preprocess, preprocess_batch


def _wide_image() -> Image.Image:
    """A 300x100 image: left third red, middle green, right third blue."""
    arr = np.zeros((100, 300, 3), dtype=np.uint8)
    arr[:, :100, 0] = 255
    arr[:, 100:200, 1] = 255
    arr[:, 200:, 2] = 255
    return Image.fromarray(arr)


def test_default_config() -> None:
    cfg = PreprocessConfig()
    assert cfg.input_size == (224, 224)
    assert cfg.interpolation == "bicubic"
    assert cfg.resize_mode == "shortest"


def test_shortest_shape_and_center_crop_non_square_input() -> None:
    cfg = PreprocessConfig(input_size=(32, 48), resize_mode="shortest", mean=(0, 0, 0), std=(1, 1, 1))
    out = preprocess(_wide_image(), cfg)
    assert out.shape == (3, 32, 48)
    assert out.dtype == torch.float32
    # 300x100 -> 144x48 keeping aspect, center crop 48 wide: only the green middle third remains.
    assert torch.allclose(out[:, 16, 24], torch.tensor([0.0, 1.0, 0.0]), atol=1e-6)


def test_shortest_with_crop_pct() -> None:
    cfg = PreprocessConfig(input_size=(20, 20), crop_pct=0.5)  # resize short edge to 40, crop 20
    out = preprocess(Image.new("RGB", (80, 60), (10, 20, 30)), cfg)
    assert out.shape == (3, 20, 20)


def test_squash_shape_keeps_whole_image() -> None:
    cfg = PreprocessConfig(
        input_size=(32, 48), resize_mode="squash", interpolation="nearest", mean=(0, 0, 0), std=(1, 1, 1)
    )
    out = preprocess(_wide_image(), cfg)
    assert out.shape == (3, 32, 48)
    assert torch.equal(out[:, 10, 2], torch.tensor([1.0, 0.0, 0.0]))  # red survives on the left
    assert torch.equal(out[:, 10, 45], torch.tensor([0.0, 0.0, 1.0]))  # blue on the right


@pytest.mark.parametrize("interpolation", ["nearest", "bilinear", "bicubic", "lanczos"])
def test_normalisation_exact_on_constant_image(interpolation: str) -> None:
    cfg = PreprocessConfig(input_size=(8, 8), interpolation=interpolation)  # mean = std = 0.5
    out = preprocess(Image.new("RGB", (13, 9), (255, 0, 255)), cfg)
    assert torch.equal(out[0], torch.ones(8, 8))
    assert torch.equal(out[1], -torch.ones(8, 8))
    assert torch.equal(out[2], torch.ones(8, 8))


def test_normalisation_with_imagenet_stats() -> None:
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    cfg = PreprocessConfig(input_size=(4, 4), mean=mean, std=std)
    out = preprocess(Image.new("RGB", (4, 4), (51, 102, 204)), cfg)
    expected = [(v / 255 - m) / s for v, m, s in zip((51, 102, 204), mean, std, strict=True)]
    for c in range(3):
        assert torch.allclose(out[c], torch.full((4, 4), expected[c]), atol=1e-6)


def test_non_rgb_input_is_converted_with_alpha_over_white() -> None:
    cfg = PreprocessConfig(input_size=(4, 4))
    out = preprocess(Image.new("RGBA", (4, 4), (0, 0, 0, 0)), cfg)
    assert torch.equal(out, torch.ones(3, 4, 4))


def test_preprocess_batch_shape() -> None:
    cfg = PreprocessConfig(input_size=(16, 24))
    batch = preprocess_batch([_wide_image(), Image.new("RGB", (10, 40)), Image.new("L", (7, 7))], cfg)
    assert batch.shape == (3, 3, 16, 24)
    assert batch.dtype == torch.float32
    with pytest.raises(ValueError, match="at least one"):
        preprocess_batch([], cfg)


def test_bad_interpolation_names_the_field() -> None:
    with pytest.raises(ValueError, match=r"interpolation.*'cubic'"):
        PreprocessConfig(interpolation="cubic")


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"resize_mode": "stretch"}, "resize_mode"),
        ({"crop_pct": 0.0}, "crop_pct"),
        ({"crop_pct": 1.5}, "crop_pct"),
        ({"input_size": (224,)}, "input_size"),
        ({"input_size": (0, 224)}, "input_size"),
        ({"mean": (0.5, 0.5)}, "mean"),
        ({"std": (0.5, 0.0, 0.5)}, "std"),
    ],
)
def test_other_invalid_fields_name_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        PreprocessConfig(**kwargs)


def test_to_dict_from_dict_round_trip() -> None:
    cfg = PreprocessConfig(
        input_size=(384, 256),
        mean=(0.485, 0.456, 0.406),
        std=(0.229, 0.224, 0.225),
        interpolation="bilinear",
        crop_pct=0.875,
        resize_mode="squash",
    )
    assert PreprocessConfig.from_dict(cfg.to_dict()) == cfg
    assert PreprocessConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def test_from_dict_missing_keys_take_defaults() -> None:
    assert PreprocessConfig.from_dict({"crop_pct": 0.9}) == PreprocessConfig(crop_pct=0.9)


def test_from_dict_unknown_key_raises() -> None:
    with pytest.raises(ValueError, match=r"unknown keys \['img_size', 'resize'\]"):
        PreprocessConfig.from_dict({"img_size": 224, "resize": "shortest", "crop_pct": 0.9})
