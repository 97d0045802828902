"""A page classifier from a crop classifier: average the crops' log-probabilities over ink tiles."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..data.crops import INK, normalize_pages, to_model_input


class TiledClassifier(nn.Module):
    """Pages (B, 3, H, W) RGB in [0, 1] → logits (B, K).

    Each page is normalised (:func:`normalize_pages`) and cut into ink-centred tiles, as the crops
    the backbone was trained on: the page is divided into ``stride``×``stride`` cells, and every
    cell with at least ``min_ink_pixels`` ink pixels gives one ``size``×``size`` tile centred on
    the centroid of its ink (clamped to the page). The tiles are classified by ``backbone`` and
    their log-softmax averaged per page (a page without ink uses its centre tile). ``embed`` gives
    the mean pre-logit feature of the same tiles, for retrieval.
    """

    def __init__(self, backbone: nn.Module, size: int = 96, stride: int = 48, min_ink_pixels: int = 20,
                 max_batch: int = 512) -> None:
        super().__init__()
        self.backbone = backbone
        self.size, self.stride, self.min_ink_pixels, self.max_batch = size, stride, min_ink_pixels, max_batch

    def _tiles(self, pages: Tensor) -> tuple[Tensor, Tensor]:
        """→ tiles (T, 3, S, S) and their page index (T,)."""
        grey = normalize_pages(pages)
        H, W = grey.shape[-2:]
        s, c = self.size, self.stride
        if H < s or W < s:
            raise ValueError(f"pages {H}×{W} are smaller than the tile size {s}")
        gh, gw = -(-H // c), -(-W // c)
        tiles, owner = [], []
        for b in range(len(grey)):
            ys, xs = torch.nonzero(grey[b, 0] < INK, as_tuple=True)
            cell = (ys // c) * gw + xs // c
            count = torch.bincount(cell, minlength=gh * gw)
            cy = torch.zeros(gh * gw).index_add_(0, cell, ys.float()) / count.clamp_min(1)
            cx = torch.zeros(gh * gw).index_add_(0, cell, xs.float()) / count.clamp_min(1)
            keep = torch.nonzero(count >= self.min_ink_pixels).flatten().tolist()
            centres = [(int(cy[k]), int(cx[k])) for k in keep] or [(H // 2, W // 2)]
            for y, x in centres:
                y0, x0 = min(max(y - s // 2, 0), H - s), min(max(x - s // 2, 0), W - s)
                tiles.append(grey[b, :, y0 : y0 + s, x0 : x0 + s])
                owner.append(b)
        return to_model_input(torch.stack(tiles)), torch.tensor(owner, device=pages.device)

    def _run(self, tiles: Tensor, fn) -> Tensor:
        return torch.cat([fn(tiles[i : i + self.max_batch]) for i in range(0, len(tiles), self.max_batch)])

    def _pool(self, values: Tensor, page: Tensor, n: int) -> Tensor:
        out = values.new_zeros(n, values.shape[1]).index_add_(0, page, values)
        return out / torch.bincount(page, minlength=n).clamp_min(1).unsqueeze(1).to(values.dtype)

    def forward(self, pages: Tensor) -> Tensor:
        tiles, page = self._tiles(pages)
        logp = self._run(tiles, lambda t: self.backbone(t).log_softmax(-1))
        return self._pool(logp, page, len(pages))

    def embed(self, pages: Tensor) -> Tensor:
        tiles, page = self._tiles(pages)
        bb = self.backbone
        feats = self._run(tiles, lambda t: bb.forward_head(bb.forward_features(t), pre_logits=True))
        return self._pool(feats, page, len(pages))
