"""MAE and FSFM on vitkit's ViT: token bookkeeping, loss invariants, EMA target."""

import torch

from vitkit.models.vit import VisionTransformer
from vitkit.pretrain import FSFM, MAE, FSFMConfig, MAEConfig, attach_ema, ema_momentum
from vitkit.pretrain.mae import (
    encode_visible,
    fill_masked,
    masked_mse,
    patch_targets,
    patchify,
    unpatchify,
    visible_only,
)
from vitkit.pretrain.masking import mask_to_ids, random_mask


def tiny_vit(**kw) -> VisionTransformer:
    return VisionTransformer(img_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=2, **kw)


def test_patchify_round_trip_and_normalised_targets():
    x = torch.rand(2, 3, 16, 12)
    p = patchify(x, 4)
    assert p.shape == (2, 12, 48)
    assert torch.equal(unpatchify(p, 4, (4, 3)), x)
    assert torch.equal(p[0, 1].view(4, 4, 3).permute(2, 0, 1), x[0, :, 0:4, 4:8])
    t = patch_targets(x, 4)
    assert torch.allclose(t.mean(-1), torch.zeros(2, 12), atol=1e-5)
    assert torch.allclose(t.var(-1), torch.ones(2, 12), atol=1e-3)


def test_visible_encoding_equals_full_forward_on_the_same_tokens():
    """Masked-token bookkeeping: encoding the visible patches is the full model run on exactly those tokens."""
    torch.manual_seed(0)
    vit = tiny_vit(num_reg_tokens=1).eval()
    x = torch.rand(3, 3, 16, 16)
    mask = random_mask(3, 16, 0.75, generator=torch.Generator().manual_seed(2))
    keep, _, restore = mask_to_ids(mask)
    out = encode_visible(vit, x, keep)
    assert out.shape == (3, vit.num_prefix_tokens + 4, 32)
    assert vit.embed_hook is None  # the hook is removed after the forward
    p = vit.num_prefix_tokens
    with visible_only(vit, keep):
        again, state = vit.forward_features(x, return_state=True)
    assert torch.equal(again, out)
    assert torch.equal(state.index[:, p:] - p, keep)  # TokenState records the kept positions
    # reference: embed all tokens, keep the same rows, run the blocks directly
    tokens, state = vit.embed(x)
    rows = torch.cat([torch.arange(p).expand(3, -1), keep + p], 1)
    ref = tokens.gather(1, rows.unsqueeze(-1).expand(-1, -1, 32))
    for blk in vit.blocks:
        ref = blk(ref, state)
    assert torch.allclose(out, vit.norm(ref), atol=1e-6)
    # the visible tokens go back to their patches, mask tokens everywhere else
    tok = torch.zeros(1, 1, 32) - 7.0
    full = fill_masked(out[:, p:], restore, tok)
    assert torch.equal(full.gather(1, keep.unsqueeze(-1).expand(-1, -1, 32)), out[:, p:])
    assert (full[mask] == -7.0).all()


def test_mae_loss_is_zero_for_a_perfect_decoder_and_counts_only_masked_patches():
    torch.manual_seed(0)
    mae = MAE(tiny_vit(), cfg=MAEConfig(decoder_dim=32, decoder_depth=1, decoder_heads=2))
    x = torch.rand(2, 3, 16, 16)
    mask = random_mask(2, 16, 0.75)
    target = patch_targets(x, 4, norm_pix=True)
    assert masked_mse(target, target, mask) == 0
    wrong_visible = target.clone()
    wrong_visible[~mask] += 5.0  # errors on visible patches do not count
    assert masked_mse(wrong_visible, target, mask) == 0
    mae.decoder.forward = lambda tokens, ids_restore: target  # a perfect decoder
    out = mae(x, mask)
    assert out["loss"].item() == 0.0
    pred = target.clone()
    pred[mask] += 1.0
    assert torch.isclose(masked_mse(pred, target, mask), torch.tensor(1.0))


def test_mae_trains_and_leaves_the_encoder_plain():
    torch.manual_seed(0)
    enc = tiny_vit()
    mae = MAE(enc, cfg=MAEConfig(decoder_dim=32, decoder_depth=1, decoder_heads=2))
    opt = torch.optim.AdamW(mae.parameters(), lr=1e-2)
    x = torch.rand(4, 3, 16, 16)
    mask = random_mask(4, 16, 0.75, generator=torch.Generator().manual_seed(0))
    first = None
    for _ in range(12):
        loss = mae(x, mask)["loss"]
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.8 * first  # 12 steps on fixed images: the masked patches get learnt
    assert enc.embed_hook is None and enc(x).shape == (4, 32)


def test_ema_schedule():
    assert ema_momentum(0, 100) == 0.996
    assert ema_momentum(100, 100) == 1.0
    assert abs(ema_momentum(50, 100) - 0.998) < 1e-12
    assert ema_momentum(10, 100) < ema_momentum(60, 100)


def test_fsfm_target_gets_no_gradient_and_follows_the_ema():
    torch.manual_seed(0)
    fsfm = FSFM(tiny_vit(), cfg=FSFMConfig(decoder_dim=32, decoder_depth=1, decoder_heads=2, proj_dim=16,
                                           proj_hidden=32, total_steps=10))
    x = torch.rand(4, 3, 16, 16)
    regions = torch.zeros(4, 16, 16, dtype=torch.long)
    regions[:, 4:12, 2:9] = 1
    regions[:, 0:3, :] = 2
    opt = torch.optim.AdamW([p for p in fsfm.parameters() if p.requires_grad], lr=1e-2)
    attach_ema(fsfm, opt)
    online0 = {k: v.clone() for k, v in fsfm.encoder.state_dict().items()}
    target0 = {k: v.clone() for k, v in fsfm.target_encoder.state_dict().items()}
    assert all(torch.equal(online0[k], target0[k]) for k in online0)
    out = fsfm(x, regions)
    assert set(out) >= {"loss", "rec", "rec_region", "cl"}
    assert torch.isclose(out["loss"], out["rec"] + 0.007 * out["rec_region"] + 0.1 * out["cl"])
    assert (out["mask"].sum(1) == 12).all() and (out["mask"] >= out["region"]).all()
    out["loss"].backward()
    assert all(p.grad is None and not p.requires_grad for p in fsfm.target_parameters())
    assert fsfm.predictor[0].weight.grad is not None and fsfm.encoder.patch_embed.proj.weight.grad is not None
    opt.step()
    # after one step: target = m·target0 + (1 − m)·online1 with m = 0.996
    m = 0.996
    for k, v in fsfm.target_encoder.named_parameters():
        online1 = dict(fsfm.encoder.named_parameters())[k]
        assert torch.allclose(v, m * target0[k] + (1 - m) * online1.detach(), atol=1e-6), k
    assert int(fsfm.ema_step) == 1
    assert not torch.equal(fsfm.encoder.patch_embed.proj.weight, online0["patch_embed.proj.weight"])
