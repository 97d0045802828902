"""Dataclass configs from plain dicts (JSON, safetensors metadata, adapter files), strictly."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from typing import Any, TypeVar

T = TypeVar("T")


def config_from_dict(cls: type[T], d: Mapping[str, Any], what: str | None = None) -> T:
    """``cls(**d)`` after checking that every key of ``d`` is a field of the dataclass ``cls``.

    An unknown key (a typo, or a file written by another version) raises ``ValueError`` naming the
    key(s) and the allowed ones, instead of a bare ``TypeError`` or a silently ignored setting.
    """
    known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(d) - known)
    if unknown:
        raise ValueError(f"unknown {what or cls.__name__} keys {unknown}; allowed: {sorted(known)}")
    return cls(**d)
