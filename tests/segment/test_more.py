"""MoRe: class tokens, GCR, LAM shapes, LIR losses; neutral settings reduce to the plain model."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vitkit.models.vit import VisionTransformer
from vitkit.segment.cam import PatchClassifier, tokens_to_maps
from vitkit.segment.metrics import IGNORE
from vitkit.segment.more import (
    GraphCategoryRepresentation,
    MoRe,
    MoReConfig,
    confident_loss,
    patch_contrast_loss,
    token_regulariser,
    uncertain_loss,
)


def _vit():
    return VisionTransformer(img_size=(32, 32), patch_size=8, embed_dim=32, depth=2, num_heads=4, num_classes=0).eval()


def test_one_class_token_is_the_plain_model_and_remove_restores():
    vit = _vit()
    x = torch.randn(2, 3, 32, 32)
    plain = vit.forward_features(x)
    model = MoRe(PatchClassifier(vit, num_classes=1), MoReConfig(gcr=False)).eval()
    parts = model.forward_parts(x)
    torch.testing.assert_close(parts["prefix"][:, 0], plain[:, 0])
    torch.testing.assert_close(parts["patches"], plain[:, 1:])
    # neutral GCR (off): LAM = patch tokens · class tokens
    torch.testing.assert_close(parts["lam"], tokens_to_maps(plain[:, 1:] @ plain[:, :1].transpose(1, 2), (4, 4)))
    back = model.remove()
    assert back.embed_hook is None
    torch.testing.assert_close(back.forward_features(x), plain)


def test_class_tokens_shapes_and_gradients():
    vit = _vit()
    model = MoRe(PatchClassifier(vit, num_classes=5))
    x = torch.randn(3, 3, 32, 32)
    parts = model.forward_parts(x)
    assert parts["prefix"].shape == (3, 5, 32) and parts["patches"].shape == (3, 16, 32)
    assert parts["tokens"].shape == (3, 5, 32) and parts["lam"].shape == (3, 5, 4, 4)
    assert model.maps(x, torch.ones(3, 5), scales=(1.0, 0.75, 1.25)).shape == (3, 5, 4, 4)
    labels = (torch.rand(3, 5) < 0.5).float()
    labels[:, 0] = 1
    loss, logs = model.loss(x, labels, 0.0)
    loss.backward()
    assert model.class_tokens.grad is not None and model.class_tokens.grad.abs().sum() > 0
    assert set(logs) == {"cls", "token", "confident", "uncertain"}
    model.cfg = MoReConfig.code_recipe()
    _, logs = model.loss(x, labels, 0.75)
    assert set(logs) == {"cls", "token", "confident", "uncertain", "ptc"}


def test_lir_masks_follow_the_code_schedule(monkeypatch):
    """Code recipe, first half: confident mask from the auxiliary CAM at 0.5, uncertain at 0.7; second half: the
    main CAM at 0.6 / 0.35."""
    import vitkit.segment.more as more_mod

    model = MoRe(PatchClassifier(_vit(), num_classes=3), MoReConfig.code_recipe(w_ptc=0.0))
    x, labels = torch.randn(2, 3, 32, 32), torch.ones(2, 3)
    seen = []
    real = more_mod.pseudo_label

    def spy(maps, lab, high, low, *a, **k):
        seen.append((maps, high, low))
        return real(maps, lab, high, low, *a, **k)

    monkeypatch.setattr(more_mod, "pseudo_label", spy)
    parts = model.forward_parts(x)
    aux = more_mod.normalize_maps(parts["aux_cam"], labels)
    cam = more_mod.normalize_maps(parts["cam"], labels)
    model.loss(x, labels, 0.1)
    assert [(h, lo) for _, h, lo in seen] == [(0.5, 0.25), (0.7, 0.25)]
    torch.testing.assert_close(seen[0][0], aux)
    seen.clear()
    model.loss(x, labels, 0.9)
    assert [(h, lo) for _, h, lo in seen][0] == (0.6, 0.35)
    torch.testing.assert_close(seen[0][0], cam)
    # the defaults: the main CAM at 0.7 / 0.25 for both masks from the start
    seen.clear()
    model.cfg = MoReConfig()
    model.loss(x, labels, 0.1)
    assert [(h, lo) for _, h, lo in seen] == [(0.7, 0.25), (0.7, 0.25)]
    torch.testing.assert_close(seen[0][0], cam)


def test_gcr_topk_and_detached_patches():
    gcr = GraphCategoryRepresentation(dim=16, topk_ratio=0.5)
    cls = torch.randn(2, 6, 16, requires_grad=True)
    patches = torch.randn(2, 10, 16, requires_grad=True)
    out = gcr(cls, patches)
    assert out.shape == (2, 6, 16)
    out.sum().backward()
    assert patches.grad is None and cls.grad is not None  # patches enter the graph detached
    # one class token: k = max(1, 0) = 1 neighbour; still works
    assert gcr(torch.randn(1, 1, 16), torch.randn(1, 4, 16)).shape == (1, 1, 16)


def test_confident_loss_prefers_aligned_tokens():
    patches = F.normalize(torch.randn(1, 8, 16), dim=-1)
    pl = torch.tensor([[1, 1, 2, 2, 0, 0, IGNORE, 0]])
    labels = torch.tensor([[1.0, 1.0, 0.0]])
    aligned = torch.stack([patches[0, :2].mean(0), patches[0, 2:4].mean(0), torch.randn(16)])[None]
    wrong = aligned[:, [1, 0, 2]]
    assert confident_loss(aligned, patches, pl, labels) < confident_loss(wrong, patches, pl, labels)
    # a class without confident patches contributes nothing
    only_absent = torch.tensor([[0, 0, 0, 0, 0, 0, IGNORE, 0]])
    assert confident_loss(aligned, patches, only_absent, labels) == 0


def test_confident_loss_cosines_or_raw_patch_features():
    patches = torch.randn(1, 6, 8) * 5
    pl = torch.tensor([[1, 1, 0, 0, IGNORE, 0]])
    labels = torch.tensor([[1.0]])
    tokens = torch.randn(1, 1, 8)
    t = F.normalize(tokens, dim=-1)
    expect = -((t @ patches.transpose(1, 2)) / 0.5).log_softmax(-1)[0, 0, :2].mean()
    raw = confident_loss(tokens, patches, pl, labels, normalize_patches=False)
    torch.testing.assert_close(raw, expect, atol=1e-4, rtol=1e-4)
    cosine = confident_loss(tokens, patches, pl, labels)
    unit = F.normalize(patches, dim=-1)
    torch.testing.assert_close(cosine, confident_loss(tokens, unit, pl, labels, normalize_patches=False))
    assert not torch.allclose(raw, cosine)


def test_patch_contrast_loss_by_hand():
    # patches along axes: 0 and 1 share label 1 and are identical; 2 is label 0, orthogonal; 3 uncertain
    patches = torch.tensor([[[1.0, 0, 0], [2.0, 0, 0], [0, 1.0, 0], [1.0, 1.0, 0]]])
    pl = torch.tensor([[1, 1, 0, IGNORE]])
    # same-label ordered pairs: (0,1), (1,0) with |cos| 1 → pos = 2 / (2 + 1); different: 4 pairs with 0 → neg 0
    torch.testing.assert_close(patch_contrast_loss(patches, pl), torch.tensor(0.5 * (1 - 2 / 3)))
    patches.requires_grad_(True)
    patch_contrast_loss(patches, pl).backward()
    assert patches.grad[0, 3].abs().sum() == 0  # the uncertain patch is in no pair


def test_uncertain_loss_values():
    t = torch.eye(3, 4)[None]  # class tokens along axes 0, 1, 2
    patches = torch.tensor([[[1.0, 0, 0, 0], [0, 0, 1.0, 0]]])
    pl = torch.tensor([[IGNORE, IGNORE]])
    labels = torch.tensor([[1.0, 0.0, 0.0]])
    loss = uncertain_loss(t, patches, pl, labels, per_image=8)
    # patch 0: pos = 1/(1+1), neg = 0 → 0.25; patch 1: pos 0, neg = 1/(2+1) → 0.5 + 1/6
    torch.testing.assert_close(loss, torch.tensor(((0.25) + (0.5 + 1 / 6)) / 2))


def test_token_regulariser_low_for_distinct_tokens():
    distinct = torch.eye(4)[None] * 3
    same = torch.ones(1, 4, 4)
    assert token_regulariser(distinct) < 1e-3 < token_regulariser(same)
