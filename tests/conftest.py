"""Shared fixtures: tiny, offline stand-ins for real checkpoints' pieces."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
import torch

from vitkit.models.tokenizer import CLIPTokenizer, bytes_to_unicode


def make_tiny_tokenizer(context_length: int = 16) -> CLIPTokenizer:
    """Byte-level CLIP vocabulary (512 symbols + specials), no merges: every byte is a token."""
    base = list(bytes_to_unicode().values())
    vocab = base + [b + "</w>" for b in base] + ["<|startoftext|>", "<|endoftext|>"]
    return CLIPTokenizer({t: i for i, t in enumerate(vocab)}, [], context_length=context_length)


@pytest.fixture()
def tiny_tokenizer() -> CLIPTokenizer:
    return make_tiny_tokenizer()


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="module")
def one_thread():
    """Small tensors: one intra-op thread is fastest, above all on a busy CPU (restored afterwards)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture()
def empty_cache(tmp_path, monkeypatch) -> Path:
    """An empty ``VITKIT_CACHE`` for this test (no pretrained checkpoint cached)."""
    monkeypatch.setenv("VITKIT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture()
def cache_tiny_pretrained(empty_cache):
    """A function (name, dim=, depth=) → model that caches a tiny random ViT in DINOv2's layout (patch 14,
    layer scale, ImageNet normalisation, 28 px) under the pretrained ``name`` in this test's empty cache: it
    stands in for the downloaded weights."""
    import json

    from vitkit import VisionTransformer, save
    from vitkit.data.transforms import PreprocessConfig
    from vitkit.weights.cache import PROVENANCE, checkpoint_dir

    def cache(name: str, *, dim: int, depth: int) -> VisionTransformer:
        torch.manual_seed(0)
        m = VisionTransformer(img_size=28, patch_size=14, embed_dim=dim, depth=depth, num_heads=2, num_classes=0,
                              layer_scale=True).eval()
        m.preprocess = PreprocessConfig(input_size=(28, 28), mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
        d = save(m, checkpoint_dir(name))
        (d / PROVENANCE).write_text(json.dumps({"name": name, "note": "tiny random test model"}))
        return m

    return cache


BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _load_benchmark(name: str) -> Iterator[ModuleType]:
    """Import ``benchmarks/<name>.py`` as a module for the duration of a fixture."""
    spec = importlib.util.spec_from_file_location(f"{name}_bench", BENCHMARKS / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    yield mod
    sys.modules.pop(spec.name, None)


@pytest.fixture(scope="module")
def tr() -> Iterator[ModuleType]:
    """``benchmarks/token_reduction.py`` as a module."""
    yield from _load_benchmark("token_reduction")


@pytest.fixture(scope="module")
def qb() -> Iterator[ModuleType]:
    """``benchmarks/quantization.py`` as a module."""
    yield from _load_benchmark("quantization")


@pytest.fixture(scope="module")
def vgb() -> Iterator[ModuleType]:
    """``benchmarks/visiongru.py`` as a module."""
    yield from _load_benchmark("visiongru")
