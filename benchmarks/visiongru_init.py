#!/usr/bin/env python
"""VisionGRU at initialisation: how much of each block's minGRU mixer output (forward + reversed branch) is one
vector shared by every token and image, and how much varies (what the network can learn from).

For each (Linear init, gate_memory): the FRB-size model (dims 16/32/64/104, depths 1/1/2/1, 96-px crops), 32 ink
crops of validation pages; per block the RMS of the block input, of the mixer output, of its mean over
batch and positions ("shared") and of the rest ("varies"); and the spread of the pooled features across images.

    python benchmarks/visiongru_init.py
"""

from __future__ import annotations

import torch

from vitkit import frb
from vitkit.frb.ink import InkCropDataset
from vitkit.frb.pages import frb_pages
from vitkit.models.visiongru import VisionGRU, VisionGRUConfig


def main() -> None:
    torch.set_num_threads(1)
    pages = frb_pages(list(frb.val_split(8, 0, size_range=(37, 43))))
    ds = InkCropDataset(*pages, size=96, crops_per_page=4, seed=1)
    x = torch.stack([ds[i][0] for i in range(32)])
    for init, memory in (("trunc_normal", 0), ("torch", 0), ("trunc_normal", 64), ("torch", 64)):
        torch.manual_seed(0)
        model = VisionGRU(VisionGRUConfig(img_size=96, dims=(16, 32, 64, 104), depths=(1, 1, 2, 1), num_classes=15,
                                          linear_init=init, gate_memory=memory)).train()
        rows = []

        def hook(blk, inp, out, rows=rows):
            fwd, rev = blk.branches(inp[0])
            mix = fwd + rev
            shared = mix.mean((0, 1, 2), keepdim=True)
            rows.append(f"input {inp[0].std():.3f}  mixer {mix.pow(2).mean().sqrt():.3f}  "
                        f"shared {shared.pow(2).mean().sqrt():.3f}  varies {(mix - shared).pow(2).mean().sqrt():.4f}")

        handles = [b.register_forward_hook(hook) for s in model.stages for b in s.blocks]
        with torch.no_grad():
            f = model.forward_head(model.forward_features(x), pre_logits=True)
        for h in handles:
            h.remove()
        print(f"linear_init={init} gate_memory={memory}: pooled-feature spread across images "
              f"{(f - f.mean(0)).pow(2).mean().sqrt():.3f}")
        for r in rows:
            print("   ", r)


if __name__ == "__main__":
    main()
