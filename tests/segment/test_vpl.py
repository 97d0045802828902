"""VPL: prototype maps, KL guidance and regional contrast."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vitkit.models.vit import VisionTransformer
from vitkit.segment.cam import PatchClassifier
from vitkit.segment.vpl import VPL, VPLConfig, prototype_kl, region_contrast


def test_vpl_shapes_and_maps():
    vit = VisionTransformer(img_size=(32, 32), patch_size=8, embed_dim=32, depth=2, num_heads=4, num_classes=0)
    model = VPL(PatchClassifier(vit, num_classes=3), torch.randn(3, 12), VPLConfig(prototypes=2, init_noise=0.0))
    x = torch.randn(2, 3, 32, 32)
    parts = model.forward_parts(x)
    assert parts["text_sim"].shape == (2, 16, 3) and parts["vpl"].shape == (2, 3, 4, 4)
    # prototypes start at their class's text prototype: with no noise, vision = text similarities
    torch.testing.assert_close(parts["vis_sim"], parts["text_sim"])
    maps = model.maps(x, torch.tensor([[1.0, 0, 1], [0, 1, 0]]))
    assert maps.shape == (2, 3, 4, 4) and maps[0, 1].abs().sum() == 0 and maps.max() <= 1
    loss, logs = model.loss(x, torch.tensor([[1.0, 0, 1], [0, 1, 0]]), 0.0)
    loss.backward()
    assert model.prototypes.grad.abs().sum() > 0 and model.text_to_feature.weight.grad is not None
    assert set(logs) == {"cls", "proto_cls", "kl", "contrast"}


def test_kl_is_zero_when_assignments_agree_and_ignores_absent_classes():
    sim = torch.randn(2, 5, 4)
    labels = torch.tensor([[1.0, 1, 0, 0], [0, 1, 1, 1]])
    assert prototype_kl(sim, sim, labels, 0.1).abs() < 1e-6
    changed = sim.clone()
    changed[0, :, 2:] += 5  # absent classes of image 0 change
    changed[1, :, 0] -= 5
    assert prototype_kl(sim, changed, labels, 0.1).abs() < 1e-6
    assert prototype_kl(sim, sim.flip(-1), labels, 0.1) > 0


def test_region_contrast_prefers_own_prototype():
    protos = F.normalize(torch.eye(3, 8)[:, None, :].repeat(1, 2, 1), dim=-1)  # (3, 2, 8)
    patches = torch.zeros(1, 4, 8)
    patches[0, :2, 0] = 1  # class 0 region
    patches[0, 2:, 1] = 1  # class 1 region
    maps = torch.tensor([[[1.0, 1, 0, 0], [0, 0, 1, 1], [0, 0, 0, 0]]])
    labels = torch.tensor([[1.0, 1, 0]])
    good = region_contrast(patches, maps, labels, protos, 0.5, 0.1)
    bad = region_contrast(patches, maps, labels, protos[[1, 0, 2]], 0.5, 0.1)
    assert good < 0.01 < bad
