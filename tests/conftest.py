"""Shared fixtures: tiny, offline stand-ins for real checkpoints' pieces."""

from __future__ import annotations

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
