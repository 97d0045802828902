"""Explanation methods: rollout, Grad-CAM, gradient-weighted rollout, on every ViT variant and on
token-reduced models."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vitkit.explain import explain, grad_cam, rollout
from vitkit.explain.chefer import relevance
from vitkit.explain.metrics import measure_cost
from vitkit.explain.tokens import StateSnapshot, scatter_to_grid, source_map, transition
from vitkit.models.registry import create_model
from vitkit.models.vit import VisionTransformer, ViTConfig
from vitkit.reduce import EViTConfig, ToMeConfig, evit, tome

VIT_METHODS = ("rollout", "gradcam", "chefer")


class ClipClassifier(nn.Module):
    """A CLIP vision tower with a linear probe (a stand-in for zero-shot text weights)."""

    def __init__(self) -> None:
        super().__init__()
        self.clip = create_model("clip_test")
        self.probe = nn.Linear(32, 5)

    def forward(self, x):
        return self.probe(self.clip.encode_image(x, normalize=True))


def tiny(kind: str) -> nn.Module:
    base = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, num_classes=5)
    if kind == "vit":
        return VisionTransformer(ViTConfig(**base))
    if kind == "deit":
        return VisionTransformer(ViTConfig(**base, dist_token=True, family="deit"))
    if kind == "dinov2_reg":
        return VisionTransformer(ViTConfig(**base, num_reg_tokens=4, layer_scale=True, layer_scale_init=1.0,
                                           pos_antialias=True, family="dinov2"))
    if kind == "avgpool":
        return VisionTransformer(ViTConfig(**base, global_pool="avg", class_token=False))
    if kind == "clip":
        return ClipClassifier()
    raise AssertionError(kind)


KINDS = ("vit", "deit", "dinov2_reg", "avgpool", "clip")


def test_rollout_of_identity_attention_is_uniform_over_patches() -> None:
    B, H, N = 2, 3, 1 + 16
    eye = torch.eye(N).expand(B, H, N, N)
    R = rollout([eye, eye, eye])
    patches = R[:, 0, 1:]
    assert torch.allclose(R, torch.eye(N).expand(B, N, N))
    assert torch.allclose(patches, patches[:, :1].expand_as(patches))
    # uniform attention, too, gives a uniform patch map (and a row-stochastic R)
    uni = torch.full((B, H, N, N), 1.0 / N)
    R = rollout([uni, uni])
    assert torch.allclose(R[:, 0, 1:], R[:, 0, 1:2].expand(B, N - 1))
    assert torch.allclose(R.sum(-1), torch.ones(B, N))


def test_rollout_equals_hand_product() -> None:
    torch.manual_seed(0)
    B, H, N = 1, 2, 5
    a1, a2 = (torch.rand(B, H, N, N).softmax(-1) for _ in range(2))

    def step(a):
        m = a.mean(1)[0] + torch.eye(N)
        return m / m.sum(-1, keepdim=True)

    assert torch.allclose(rollout([a1, a2])[0], step(a2) @ step(a1), atol=1e-6)
    g1, g2 = torch.randn(B, H, N, N), torch.randn(B, H, N, N)
    r1 = torch.eye(N) + (g1 * a1).clamp_min(0).mean(1)[0]
    r2 = torch.eye(N) + (g2 * a2).clamp_min(0).mean(1)[0]
    assert torch.allclose(relevance([a1, a2], [g1, g2])[0], r2 @ r1, atol=1e-6)


def test_gradcam_of_a_linear_model_equals_the_analytic_map() -> None:
    torch.manual_seed(0)
    B, C, h, w, K = 2, 6, 4, 5, 3
    acts = torch.randn(B, C, h, w, requires_grad=True)
    W = torch.randn(K, C)
    logits = acts.mean(dim=(2, 3)) @ W.t()  # linear: global average pool + linear head
    target = torch.tensor([0, 2])
    (g,) = torch.autograd.grad(logits.gather(1, target.view(-1, 1)).sum(), acts)
    analytic = torch.einsum("bc,bchw->bhw", W[target] / (h * w), acts.detach()).clamp_min(0)
    assert torch.allclose(grad_cam(acts.detach(), g), analytic, atol=1e-6)
    assert torch.allclose(grad_cam(acts.detach(), g, relu=False).clamp_min(0), analytic, atol=1e-6)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("method", VIT_METHODS)
def test_every_variant_explains_without_changing_the_prediction(kind: str, method: str) -> None:
    torch.manual_seed(1)
    model = tiny(kind).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        before = model(x)
    e = explain(model, x, method, target=1)
    with torch.no_grad():
        after = model(x)
    assert torch.equal(before, after)
    assert torch.allclose(e.logits, before, atol=1e-5)
    assert e.maps.shape == (2, 4, 4) and torch.isfinite(e.maps).all()
    assert e.target.tolist() == [1, 1]
    assert (e.maps.flatten(1).std(1) > 0).all()  # a real map, not a constant
    assert all(p.grad is None for p in model.parameters())
    vis = next(m for m in model.modules() if isinstance(m, VisionTransformer))
    for blk in vis.blocks:  # nothing left installed
        assert blk.attn.readout is None and not blk._forward_hooks and not blk._forward_pre_hooks
        assert not blk.norm1._forward_hooks


def test_gradcam_drops_every_prefix_token() -> None:
    """With 4 registers + class token, the map covers exactly the 16 patches and matches a hand
    Grad-CAM on the last block's norm1 output without the first 5 tokens."""
    torch.manual_seed(2)
    model = tiny("dinov2_reg").eval()
    x = torch.randn(1, 3, 32, 32)
    store = {}
    h = model.blocks[-1].norm1.register_forward_hook(lambda m, a, o: store.setdefault("t", o))
    logits = model(x)
    h.remove()
    (g,) = torch.autograd.grad(logits[0, 3], store["t"])
    t, g = store["t"][:, 5:].detach(), g[:, 5:]
    hand = (g.mean(1, keepdim=True) * t).sum(-1).clamp_min(0).reshape(1, 4, 4)
    assert torch.allclose(explain(model, x, "gradcam", target=3).maps, hand, atol=1e-6)


@pytest.mark.parametrize("method", VIT_METHODS)
def test_reduction_at_rate_one_gives_the_dense_map(method: str) -> None:
    torch.manual_seed(3)
    model = tiny("vit").eval()
    x = torch.randn(2, 3, 32, 32)
    dense = explain(model, x, method, target=0).maps
    evit.apply(model, EViTConfig(layers=(0,), keep_rate=1.0))
    try:
        assert torch.allclose(explain(model, x, method, target=0).maps, dense, atol=1e-5)
    finally:
        evit.remove(model)
    tome.apply(model, ToMeConfig(r=0, trace_source=True))
    try:
        assert torch.allclose(explain(model, x, method, target=0).maps, dense, atol=1e-5)
    finally:
        tome.remove(model)


@pytest.mark.parametrize("cfg", [EViTConfig(layers=(0,), keep_rate=0.5, fuse=False),
                                 EViTConfig(layers=(0,), keep_rate=0.5, fuse=True),
                                 ToMeConfig(r=4, trace_source=True)], ids=["evit", "evit_fuse", "tome"])
@pytest.mark.parametrize("method", VIT_METHODS)
def test_token_reduced_maps_cover_the_full_grid(cfg, method: str) -> None:
    torch.manual_seed(4)
    model = tiny("vit").eval()
    x = torch.randn(2, 3, 32, 32)
    mod = evit if isinstance(cfg, EViTConfig) else tome
    mod.apply(model, cfg)
    try:
        with torch.no_grad():
            before = model(x)
        e = explain(model, x, method)
        assert e.maps.shape == (2, 4, 4) and torch.isfinite(e.maps).all()
        assert torch.allclose(e.logits, before, atol=1e-5)
        if method == "rollout":  # every original token keeps or passes on its share: R stays row-stochastic
            assert e.maps.sum(dim=(1, 2)).gt(0).all()
    finally:
        mod.remove(model)


def test_untraceable_reductions_are_refused() -> None:
    model = tiny("vit").eval()
    x = torch.randn(1, 3, 32, 32)
    tome.apply(model, ToMeConfig(r=4, trace_source=False))
    try:
        with pytest.raises(ValueError, match="trace_source=True"):
            explain(model, x, "gradcam")
    finally:
        tome.remove(model)
    # HiRED packs partitions into one sequence (its forward goes through hired's own encoder)
    with pytest.raises(ValueError, match="HiRED"):
        source_map(StateSnapshot(None, None, None, packed=True), 17, 17, 1)
    with pytest.raises(ValueError, match="fuse=False"):  # two fused rows alive at once
        source_map(StateSnapshot(torch.tensor([[0, 3, -1, -1]]), None, None, False), 4, 17, 1)
    with pytest.raises(ValueError, match="evidence"):
        explain(model, x, "evidence")
    with pytest.raises(ValueError, match="unknown method"):
        explain(model, x, "lime")


def test_transition_and_scatter_follow_merges_and_drops() -> None:
    # 1 prefix + 4 patches; after: prefix, patch 0, merged(1, 2); patch 3 dropped
    before = torch.arange(5).view(1, 5)
    after = torch.tensor([[0, 1, 2, 2, -1]])
    T = transition(before, after, 5, 3)
    assert torch.allclose(T[0], torch.tensor([[1.0, 0, 0, 0, 0], [0, 1, 0, 0, 0], [0, 0, 0.5, 0.5, 0]]))
    vals = torch.tensor([[[9.0], [1.0], [4.0]]])
    grid = scatter_to_grid(vals, after, 1, (2, 2))
    assert grid.flatten().tolist() == [1.0, 4.0, 4.0, 0.0]
    assert scatter_to_grid(vals, after, 1, (2, 2), split=True).flatten().tolist() == [1.0, 2.0, 2.0, 0.0]


def test_cost_counts_passes() -> None:
    model = tiny("vit").eval()
    x = torch.randn(1, 3, 32, 32)
    for method, fb in (("rollout", (1, 0)), ("gradcam", (1, 1)), ("chefer", (1, 1))):
        c = measure_cost(lambda m=method: explain(model, x, m), model)
        assert (c.forwards, c.backwards) == fb, method


def test_lam_reads_class_token_maps_from_the_predicting_forward() -> None:
    from vitkit.segment.cam import PatchClassifier
    from vitkit.segment.more import MoRe

    torch.manual_seed(5)
    backbone = VisionTransformer(ViTConfig(img_size=32, patch_size=8, embed_dim=32, depth=3, num_heads=2))
    model = MoRe(PatchClassifier(backbone, num_classes=4, aux_layer=-2)).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        parts = model.forward_parts(x)
    e = explain(model, x, "lam", target=2)
    assert torch.allclose(e.maps, parts["lam"][:, 2], atol=1e-6) and torch.allclose(e.logits, parts["logits"])
    c = measure_cost(lambda: explain(model, x, "lam"), model, first=backbone.patch_embed.proj)
    assert (c.forwards, c.backwards) == (1, 0)
    flipped = explain(model, x, "lam", target=2, flip=True)
    assert flipped.forwards == 2 and (flipped.maps >= e.maps - 1e-6).all()
