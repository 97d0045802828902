"""A page classifier from a crop classifier: average the crops' log-probabilities over ink tiles.

:class:`PagePolicy` says how a crop classifier reads a whole page (tile size, grid, text scale); it is
saved with a model trained on page crops (``vitkit.save`` writes it as the model's ``pipeline``), so
``vitkit.load`` + :func:`vitkit.predict.classify_images` read a page file exactly as the training
run's evaluation did.

Layering: :mod:`vitkit.weights.load` imports :class:`PagePolicy` from here to restore a saved
``pipeline``, so this module imports only :mod:`vitkit.config` and :mod:`vitkit.frb.ink` (and the
``vitkit.frb`` package, whose ``__init__`` holds only the data API) -- never the training recipe or
the engine, which import ``vitkit.weights`` and would close a cycle.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ..config import config_from_dict
from .ink import INK, prepare_page, to_model_input

#: The core text height (px, see :func:`vitkit.frb.ink.text_height`) every page is resampled to, as a
#: band (low, high) of one value. One height for every page keeps the classifier's accuracy about the same
#: on pages drawn at 0.5× or 2× (a band that leaves in-band pages untouched lost 30-40 points on rescaled
#: ones). Chosen on the paper-layout validation texts among 15, 20, 24, 28 and 32 px (benchmarks/RESULTS.md):
#: 24 px gives the glyphs more pixels than the benchmark's own (its easy core is ~16 px, hard ~20) and
#: still fits a few words in a 96-px tile; 32 px lost 5-8 points.
REFERENCE_TEXT_HEIGHT: tuple[float, float] = (24.0, 24.0)


@dataclass
class PagePolicy:
    """How a crop classifier reads a page of any size (the model's page pipeline)."""

    tile: int = 96  # side of the square tiles: the crop size the backbone was trained on
    stride: int = 48  # the page is cut into stride×stride cells; each inked cell gives one tile
    min_ink_pixels: int = 20  # a cell with fewer ink pixels (at the reference scale) gives no tile
    # pages whose text's core height (px) is outside this band are resampled into it (None: every page is
    # used at its own scale); inside it they are read pixel for pixel
    text_height: tuple[float, float] | None = REFERENCE_TEXT_HEIGHT
    max_tiles: int = 256  # a very large page is read from this many tiles, evenly spaced over its ink
    # the page is read once per factor, at text_height × factor, and the per-reading mean log-probabilities
    # (features) are averaged: a classifier trained at one text scale errs differently a few percent off it,
    # while the page's height estimate is itself a few percent off on short words. (1.0,) reads it once
    scales: tuple[float, ...] = (1.0,)
    kind: str = "ink-tiles"  # the only kind so far; recorded so a file says what it holds

    def __post_init__(self) -> None:
        if self.kind != "ink-tiles":
            raise ValueError(f"unknown page pipeline kind {self.kind!r} (this vitkit knows 'ink-tiles')")
        if min(self.tile, self.stride, self.max_tiles) < 1 or self.min_ink_pixels < 0:
            raise ValueError(f"PagePolicy needs tile, stride, max_tiles >= 1 and min_ink_pixels >= 0, got {self}")
        if self.text_height is not None:
            self.text_height = tuple(float(v) for v in self.text_height)  # JSON gives a list
            if len(self.text_height) != 2 or not 0 < self.text_height[0] <= self.text_height[1]:
                raise ValueError(f"PagePolicy.text_height must be (low, high) with 0 < low <= high, or None; "
                                 f"got {self.text_height}")
        self.scales = tuple(float(v) for v in self.scales)
        if not self.scales or min(self.scales) <= 0:
            raise ValueError(f"PagePolicy.scales must be one or more positive factors, got {self.scales}")
        if self.text_height is None and self.scales != (1.0,):
            raise ValueError("PagePolicy.scales other than (1.0,) need a text_height to scale (it is None)")

    def readings_note(self) -> str:
        """How the readings are combined, for reports: "" for one reading, else ", read at 0.9 and 1 × that scale and averaged"."""
        if self.scales == (1.0,):
            return ""
        return f", read at {' and '.join(f'{s:g}' for s in self.scales)} × that scale and averaged"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PagePolicy:
        return config_from_dict(cls, d, "page pipeline")


class TiledClassifier(nn.Module):
    """Pages → logits (B, K): RGB in [0, 1], a (B, 3, H, W) batch or a list of (3, H, W) of any sizes.

    Each page is prepared by :func:`vitkit.frb.ink.prepare_page` (normalised grey, rescaled to
    the policy's text height, padded to at least one tile) and cut into ink-centred tiles, as the
    crops the backbone was trained on: the page is divided into ``stride``×``stride`` cells, and
    every cell with at least ``min_ink_pixels`` ink pixels gives one ``tile``×``tile`` tile centred
    on the centroid of its ink (clamped to the page). The tiles are classified by ``backbone`` and
    their log-softmax averaged per page (a page without ink uses its centre tile). ``embed`` gives
    the mean pre-logit feature of the same tiles, for retrieval.

    ``policy`` defaults to one built from ``size``/``stride``/``min_ink_pixels`` with no rescaling
    (pages used at their own scale).
    """

    def __init__(self, backbone: nn.Module, size: int = 96, stride: int = 48, min_ink_pixels: int = 20,
                 max_batch: int = 512, *, policy: PagePolicy | None = None) -> None:
        super().__init__()
        self.backbone = backbone
        self.policy = policy or PagePolicy(tile=size, stride=stride, min_ink_pixels=min_ink_pixels,
                                           text_height=None)
        self.max_batch = max_batch

    @property
    def size(self) -> int:
        return self.policy.tile

    @property
    def stride(self) -> int:
        return self.policy.stride

    def page_tiles(self, rgb: Tensor, scale: float = 1.0) -> Tensor:
        """One page (3, H, W) → its tiles (T, 1, S, S), normalised grey, read at text height × ``scale``."""
        p = self.policy
        height = None if p.text_height is None else (p.text_height[0] * scale, p.text_height[1] * scale)
        grey, _ = prepare_page(rgb, text_height_px=height, min_size=p.tile)
        H, W = grey.shape[-2:]
        s, c = p.tile, p.stride
        gh, gw = -(-H // c), -(-W // c)
        ys, xs = torch.nonzero(grey[0] < INK, as_tuple=True)
        cell = (ys // c) * gw + xs // c
        count = torch.bincount(cell, minlength=gh * gw)
        cy = torch.zeros(gh * gw, device=grey.device).index_add_(0, cell, ys.float()) / count.clamp_min(1)
        cx = torch.zeros(gh * gw, device=grey.device).index_add_(0, cell, xs.float()) / count.clamp_min(1)
        keep = torch.nonzero(count >= p.min_ink_pixels).flatten()
        if len(keep) > p.max_tiles:  # evenly spaced over the inked cells, in reading order
            keep = keep[torch.linspace(0, len(keep) - 1, p.max_tiles).round().long()]
        centres = [(int(cy[k]), int(cx[k])) for k in keep.tolist()] or [(H // 2, W // 2)]
        tiles = []
        for y, x in centres:
            y0, x0 = min(max(y - s // 2, 0), H - s), min(max(x - s // 2, 0), W - s)
            tiles.append(grey[:, y0 : y0 + s, x0 : x0 + s])
        return torch.stack(tiles)

    def tiles(self, pages: Tensor | Sequence[Tensor]) -> tuple[Tensor, Tensor]:
        """→ model-input tiles (T, 3, S, S) and their page index (T,), every reading of ``policy.scales``."""
        tiles, group = self._readings(pages)
        return tiles, group // len(self.policy.scales)

    def _readings(self, pages: Tensor | Sequence[Tensor]) -> tuple[Tensor, Tensor]:
        """→ tiles (T, 3, S, S) and their reading (T,): page b read at scale k is reading b · len(scales) + k."""
        per_reading = [self.page_tiles(page, sc) for page in pages for sc in self.policy.scales]
        group = torch.cat([torch.full((len(t),), g, dtype=torch.long) for g, t in enumerate(per_reading)])
        return to_model_input(torch.cat(per_reading)), group.to(per_reading[0].device)

    def _run(self, tiles: Tensor, fn) -> Tensor:
        return torch.cat([fn(tiles[i : i + self.max_batch]) for i in range(0, len(tiles), self.max_batch)])

    def _pool(self, values: Tensor, group: Tensor, n: int) -> Tensor:
        """Tile values (T, D) → the mean per reading, then over each page's readings: (n, D)."""
        k = len(self.policy.scales)
        out = values.new_zeros(n * k, values.shape[1]).index_add_(0, group, values)
        out = out / torch.bincount(group, minlength=n * k).clamp_min(1).unsqueeze(1).to(values.dtype)
        return out.view(n, k, -1).mean(1)  # (n·k, D) → (n, k, D) → (n, D)

    def forward(self, pages: Tensor | Sequence[Tensor]) -> Tensor:
        tiles, group = self._readings(pages)
        logp = self._run(tiles, lambda t: self.backbone(t).log_softmax(-1))
        return self._pool(logp, group, len(pages))

    def logits_and_embeddings(self, pages: Tensor | Sequence[Tensor]) -> tuple[Tensor, Tensor]:
        """:meth:`forward` and :meth:`embed` from one pass over the tiles: ``(B, K)``, ``(B, D)``."""
        tiles, group = self._readings(pages)
        bb = self.backbone
        logp, feats = [], []
        for i in range(0, len(tiles), self.max_batch):
            f = bb.forward_features(tiles[i : i + self.max_batch])
            logp.append(bb.forward_head(f).log_softmax(-1))
            feats.append(bb.forward_head(f, pre_logits=True))
        return self._pool(torch.cat(logp), group, len(pages)), self._pool(torch.cat(feats), group, len(pages))

    def embed(self, pages: Tensor | Sequence[Tensor]) -> Tensor:
        tiles, group = self._readings(pages)
        bb = self.backbone
        feats = self._run(tiles, lambda t: bb.forward_head(bb.forward_features(t), pre_logits=True))
        return self._pool(feats, group, len(pages))
