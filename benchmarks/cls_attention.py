"""Where does the CLS token look on a whole FRB page? Last-block CLS attention of a pretrained and a scratch ViT.

Each model reads whole FRB pages (not crops) at its own patch size; the CLS row of the last block's attention
(mean over heads, ``model.attention_readout(kind="cls")``) is drawn over the page, and summarised as the share of
CLS attention that falls on ink patches (patches with ≥ 1 ink pixel) against the share of such patches (1.0 =
no preference for ink).

    OMP_NUM_THREADS=1 python benchmarks/cls_attention.py --scratch runs/frozen_features/scratch_p600_s500_seed0
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F

from vitkit import frb, load
from vitkit.frb.ink import INK, normalize_pages, pil_to_tensor, to_model_input
from vitkit.weights import pretrained


@torch.no_grad()
def cls_map(model, grey: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Grey page (1, 1, H, W) → CLS attention over patches (gh, gw) and the ink mask on the same grid."""
    P = model.patch_size
    H, W = (grey.shape[-2] // P) * P, (grey.shape[-1] // P) * P
    g = grey[..., :H, :W]
    with model.attention_readout(layers=[-1], kind="cls") as maps:
        model.forward_features(to_model_input(g))
    a = maps[model.depth - 1][0].mean(0)  # (N,) over all tokens
    n = model.num_prefix_tokens
    att = a[n:].reshape(H // P, W // P)
    ink = F.max_pool2d((g < INK).float(), P)[0, 0] > 0
    return att / att.sum(), ink


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbone", default="dinov2-s14")
    ap.add_argument("--scratch", type=Path, help="a vitkit checkpoint trained from scratch on FRB crops")
    ap.add_argument("--pages", type=int, default=24,
                    help="FRB hard pages summarised, evenly spaced over the split (the first 3 are drawn)")
    ap.add_argument("--png", type=Path, default=Path("benchmarks/cls_attention.png"))
    ap.add_argument("--json", type=Path, default=Path("runs/cls_attention.json"))
    a = ap.parse_args()
    torch.set_num_threads(1)
    models = {a.backbone: pretrained.crop_classifier(f"pretrained:{a.backbone}", list(frb.FONT_NAMES))}
    if a.scratch:
        models["scratch"] = load(a.scratch).eval()
    hard = frb.hard_split()
    samples = hard[:: max(1, len(hard) // a.pages)][: a.pages]  # spread over the split, so over its fonts
    greys = [normalize_pages(pil_to_tensor(s.image).unsqueeze(0)) for s in samples]
    stats, drawn = {}, {}
    for name, m in models.items():
        ratios = []
        for i, g in enumerate(greys):
            att, ink = cls_map(m, g)
            ratios.append((att[ink].sum() / ink.float().mean()).item())
            if i < 3:
                drawn[(name, i)] = att
        stats[name] = {"ink_attention_over_ink_share_mean": sum(ratios) / len(ratios), "per_page": ratios}
        print(f"{name:12s} CLS attention on ink patches / ink-patch share: mean {stats[name]['ink_attention_over_ink_share_mean']:.2f} "
              f"over {len(ratios)} hard pages (1 = no preference)")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 1 + len(models), figsize=(4 * (1 + len(models)), 6.5))
    for i in range(3):
        axes[i, 0].imshow(greys[i][0, 0], cmap="gray")
        axes[i, 0].set_title(f"FRB hard: {samples[i].font}")
        for j, name in enumerate(models, start=1):
            axes[i, j].imshow(drawn[(name, i)], cmap="magma")
            if i == 0:
                axes[i, j].set_title(f"{name}: last-block CLS attention")
        for ax in axes[i]:
            ax.axis("off")
    fig.tight_layout()
    a.png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(a.png, dpi=80)
    a.json.parent.mkdir(parents=True, exist_ok=True)
    a.json.write_text(json.dumps(stats, indent=2))
    print(f"→ {a.png}, {a.json}")


if __name__ == "__main__":
    main()
