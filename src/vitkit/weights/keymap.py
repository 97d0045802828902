"""Pure helpers shared by the checkpoint converters: regex key renaming and q/k/v fusion."""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch
from torch import Tensor

Rule = tuple[str, str]  # (regex matched against the whole key, replacement); replacement "" drops it


def rename(sd: dict[str, Tensor], rules: Sequence[Rule]) -> tuple[dict[str, Tensor], list[str]]:
    """Apply the first matching rule to each key. Returns (renamed, keys no rule matched)."""
    compiled = [(re.compile(p), r) for p, r in rules]
    out: dict[str, Tensor] = {}
    unmatched: list[str] = []
    for key, value in sd.items():
        for pat, repl in compiled:
            if pat.fullmatch(key):
                new = pat.sub(repl, key)
                if new:
                    out[new] = value
                break
        else:
            unmatched.append(key)
    return out, unmatched


def fuse_qkv(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    """Merge ``*.attn.q.{weight,bias}``, ``.k.``, ``.v.`` into ``*.attn.qkv.{weight,bias}`` ([q; k; v])."""
    out = dict(sd)
    for key in [k for k in sd if re.search(r"\.attn\.q\.(weight|bias)$", k)]:
        stem, kind = key.rsplit(".q.", 1)
        parts = [f"{stem}.{p}.{kind}" for p in "qkv"]
        missing = [p for p in parts if p not in sd]
        if missing:
            raise KeyError(f"cannot fuse attention projections: {missing} missing")
        out[f"{stem}.qkv.{kind}"] = torch.cat([sd[p] for p in parts], dim=0)
        for p in parts:
            del out[p]
    return out


def split_qkv(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    """Inverse of :func:`fuse_qkv`."""
    out = dict(sd)
    for key in [k for k in sd if re.search(r"\.attn\.qkv\.(weight|bias)$", k)]:
        stem, kind = key.rsplit(".qkv.", 1)
        for name, t in zip("qkv", sd[key].chunk(3, dim=0), strict=True):
            out[f"{stem}.{name}.{kind}"] = t
        del out[key]
    return out
