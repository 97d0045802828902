from types import SimpleNamespace

import torch

from vitkit.frb.recipe import DemoConfig
from vitkit.quant.report import demo_section


def test_demo_section_builds(make_vit):
    model = make_vit(img_size=32, patch_size=8)
    gen = torch.Generator().manual_seed(0)
    pages = (torch.rand(6, 1, 64, 64, generator=gen) > 0.3).float()
    labels = torch.arange(6) % 5
    ctx = SimpleNamespace(cfg=DemoConfig.quick(), model=model, train_pages=pages, train_labels=labels,
                          val_pages=pages, val_labels=labels, metrics={})
    sec = demo_section(ctx, spdfq_steps=2, n_calib=4, val_pages=4, recon_steps=2)
    assert sec.id == "quantization" and "W4A4" in sec.html and "int8" in sec.html
    m = ctx.metrics["quantization"]
    assert len(m["val_crop_accuracy"]) == 8 and m["file_bytes"]["int8"] < m["file_bytes"]["fp32"]
    assert set(m["channel_spread"]) == {"qkv", "proj", "fc1", "fc2"} and min(m["channel_spread"].values()) >= 1.0
    assert "Outlier channels" in sec.html and f"qkv ×{m['channel_spread']['qkv']:.1f}" in sec.html
    # the model's own record of what was applied is what the section shows (then it is gone again)
    assert "<li>W4A4: quant (w_bits=4, a_bits=4" in sec.html and "<li>int8 kernels: int8" in sec.html
    assert "quant" not in model.applied
    assert not any(n.endswith("attn_map_fn") for n, _ in model.named_modules())  # model left float
    assert all(isinstance(b.attn.qkv, torch.nn.Linear) for b in model.blocks)
