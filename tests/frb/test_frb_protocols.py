"""FRB evaluation protocols (``vitkit.frb.protocols``), checked with oracle callables (CPU, seconds)."""

from __future__ import annotations

import hashlib
import json
import random
from collections import Counter
from collections.abc import Sequence

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import vitkit
from vitkit import frb
from vitkit.frb import FONT_NAMES, FRBSample, results
from vitkit.frb import protocols as fe
from vitkit.frb.batching import embed_samples
from vitkit.models.clip import text_classifier_weights

K = len(FONT_NAMES)


# ---------------------------------------------------------------------------------------------- helpers


def cheap(img: Image.Image) -> torch.Tensor:
    """Grayscale, resized to 32x64, repeated to 3 channels: a (3, 32, 64) float tensor in [0, 1]."""
    gray = img.convert("L").resize((64, 32), Image.Resampling.BILINEAR)
    x = torch.from_numpy(np.asarray(gray, dtype=np.float32) / 255.0)
    return x.expand(3, -1, -1).clone()


def labelled(*groups: Sequence[FRBSample]):
    """A cheap transform that also writes each image's label into pixel (0, 0, 0)."""
    label_of = {id(s.image): s.label for group in groups for s in group}

    def transform(img: Image.Image) -> torch.Tensor:
        x = cheap(img)
        x[0, 0, 0] = float(label_of[id(img)])
        return x

    return transform


def read_label(batch: torch.Tensor) -> torch.Tensor:
    return batch[:, 0, 0, 0].round().long()


def oracle_logits(batch: torch.Tensor) -> torch.Tensor:
    """One-hot of the true label: a perfect classifier."""
    return F.one_hot(read_label(batch), K).float()


def tiny(img: Image.Image) -> torch.Tensor:
    return torch.zeros(3, 2, 2)


def synthetic(n: int, seed: int = 0) -> list[FRBSample]:
    """``n`` blank 4x4 samples with uniformly random labels."""
    rng = random.Random(seed)
    img = Image.new("RGB", (4, 4), "white")
    samples = []
    for _ in range(n):
        y = rng.randrange(K)
        samples.append(FRBSample(img, y, FONT_NAMES[y], "", "synthetic"))
    return samples


def random_logits(seed: int):
    g = torch.Generator().manual_seed(seed)
    return lambda batch: torch.randn(batch.shape[0], K, generator=g)


@pytest.fixture(scope="module")
def easy() -> list[FRBSample]:
    return frb.easy_split()


@pytest.fixture(scope="module")
def hard() -> list[FRBSample]:
    return frb.hard_split()


@pytest.fixture(scope="module")
def letters() -> list[FRBSample]:
    return fe.letter_exemplars()


@pytest.fixture(scope="module")
def mixed(easy, hard) -> list[FRBSample]:
    """45 samples: 2 easy images of every font plus the hard images of fonts 0 and 1."""
    return easy[::5] + hard[:30]


# ---------------------------------------------------------------------------------------------- helpers


def test_confusion_matrix_and_per_class() -> None:
    cm = results.confusion_matrix([0, 0, 1, 2, 2, 2], [0, 1, 1, 2, 0, 2], 4)
    expected = np.array([[1, 1, 0, 0], [0, 1, 0, 0], [1, 0, 2, 0], [0, 0, 0, 0]])
    np.testing.assert_array_equal(cm, expected)
    assert cm.dtype == np.int64
    acc = results.per_class_accuracy(cm, ["a", "b", "c", "d"])
    assert acc == pytest.approx({"a": 0.5, "b": 1.0, "c": 2 / 3})  # "d" has no samples: left out
    assert results.confusion_matrix([], [], 3).sum() == 0


@pytest.mark.parametrize(
    ("targets", "preds", "k", "match"),
    [
        ([0, 1], [0], 3, "length"),
        ([0, 3], [0, 1], 3, "targets"),
        ([0, 1], [-1, 1], 3, "preds"),
        ([0], [0], 0, "num_classes"),
    ],
)
def test_confusion_matrix_errors(targets, preds, k, match) -> None:
    with pytest.raises(ValueError, match=match):
        results.confusion_matrix(targets, preds, k)


def test_per_class_accuracy_shape_error() -> None:
    with pytest.raises(ValueError, match="3x3"):
        results.per_class_accuracy(np.zeros((2, 2)), ["a", "b", "c"])


# ---------------------------------------------------------------------------------------------- classifier


def test_classifier_oracle_is_exact(mixed) -> None:
    result = fe.evaluate_classifier(oracle_logits, mixed, transform=labelled(mixed), batch_size=7)
    targets = [s.label for s in mixed]
    assert result.accuracy == 1.0 and result.correct == result.n == len(mixed)
    assert result.protocol == "classifier" and result.split == "mixed"
    assert result.targets == targets and result.predictions == targets
    assert result.confusion.shape == (K, K) and result.confusion.sum() == len(mixed)
    np.testing.assert_array_equal(result.confusion, np.diag(np.bincount(targets, minlength=K)))
    assert result.per_class == dict.fromkeys(FONT_NAMES, 1.0)
    assert result.class_names == FONT_NAMES and result.chance == pytest.approx(1 / K)
    d = json.loads(json.dumps(result.to_dict()))
    assert d["accuracy"] == 1.0 and d["n"] == len(mixed)
    assert d["confusion"] == result.confusion.tolist() and d["per_class"] == result.per_class
    assert "options" not in d


def test_classifier_constant_model(easy) -> None:
    subset = easy[:30]  # fonts 0, 1, 2: ten sentences each
    result = fe.evaluate_classifier(lambda b: torch.zeros(b.shape[0], K), subset, transform=cheap)
    assert result.split == "easy"
    assert result.predictions == [0] * 30  # all logits tie: the first class wins
    assert result.accuracy == pytest.approx(1 / 3)
    assert result.per_class == {FONT_NAMES[0]: 1.0, FONT_NAMES[1]: 0.0, FONT_NAMES[2]: 0.0}
    assert result.confusion[:, 0].tolist()[:3] == [10, 10, 10] and result.confusion[:, 1:].sum() == 0


def test_classifier_batching_and_split_override(mixed) -> None:
    table = torch.randn(len(mixed), K, generator=torch.Generator().manual_seed(3))
    served = [0]

    def by_order(batch: torch.Tensor) -> torch.Tensor:
        """Logit rows served in sample order: checks that batching keeps the order."""
        start = served[0]
        served[0] += batch.shape[0]
        return table[start : served[0]]

    a = fe.evaluate_classifier(by_order, mixed, transform=cheap, batch_size=4, split="custom")
    served[0] = 0
    b = fe.evaluate_classifier(by_order, iter(mixed), transform=cheap, batch_size=100, progress=True)
    assert a.split == "custom" and b.split == "mixed"
    assert a.predictions == b.predictions == table.argmax(1).tolist()


def test_classifier_output_checks(mixed) -> None:
    t = labelled(mixed)
    with pytest.raises(ValueError, match="expected 15.*got 7"):
        fe.evaluate_classifier(lambda b: torch.zeros(b.shape[0], 7), mixed, transform=t)
    with pytest.raises(ValueError, match="logits_fn must return"):
        fe.evaluate_classifier(lambda b: torch.zeros(1, K), mixed, transform=t, batch_size=4)
    with pytest.raises(ValueError, match="NaN"):
        fe.evaluate_classifier(lambda b: torch.full((b.shape[0], K), float("nan")), mixed, transform=t)
    with pytest.raises(ValueError, match="transform"):
        fe.evaluate_classifier(oracle_logits, mixed, transform=lambda img: torch.zeros(32, 64))
    with pytest.raises(ValueError, match="batch_size"):
        fe.evaluate_classifier(oracle_logits, mixed, transform=t, batch_size=0)
    bad = [FRBSample(mixed[0].image, K, "x", "", "easy")]
    with pytest.raises(ValueError, match="label"):
        fe.evaluate_classifier(oracle_logits, bad, transform=t)


def test_classifier_numpy_logits_and_custom_classes(easy) -> None:
    subset = easy[:20]  # fonts 0 and 1
    t = labelled(subset)
    result = fe.evaluate_classifier(
        lambda b: F.one_hot(read_label(b), 2).numpy(), subset, transform=t, class_names=["x", "y"]
    )
    assert result.accuracy == 1.0 and result.per_class == {"x": 1.0, "y": 1.0} and result.chance == 0.5


def test_classifier_random_is_near_chance() -> None:
    samples = synthetic(600)
    result = fe.evaluate_classifier(random_logits(0), samples, transform=tiny, batch_size=64)
    assert 0.02 < result.accuracy < 0.13  # chance 1/15 = 0.067


# ---------------------------------------------------------------------------------------------- multiple choice


def test_multiple_choice_option_sets(mixed) -> None:
    t = labelled(mixed)
    a = fe.evaluate_multiple_choice(oracle_logits, mixed, transform=t, n_options=4, seed=0)
    b = fe.evaluate_multiple_choice(random_logits(1), mixed, transform=t, n_options=4, seed=0)
    c = fe.evaluate_multiple_choice(oracle_logits, mixed, transform=t, n_options=4, seed=1)
    assert a.options is not None and len(a.options) == len(mixed)
    for opts, s in zip(a.options, mixed, strict=True):
        assert len(opts) == 4 and len(set(opts)) == 4 and s.label in opts
        assert all(0 <= o < K for o in opts)
    assert a.options == b.options  # identical for every model
    assert a.options == fe.multiple_choice_options([s.label for s in mixed], 4, K, seed=0)
    assert c.options != a.options  # another seed, other questions
    assert len({opts.index(s.label) for opts, s in zip(a.options, mixed, strict=True)}) > 1  # shuffled
    assert a.protocol == "multiple_choice" and a.params == {"n_options": 4, "seed": 0}
    assert a.accuracy == 1.0 and c.accuracy == 1.0 and a.chance == 0.25
    d = json.loads(json.dumps(a.to_dict()))
    assert d["options"] == [list(o) for o in a.options] and d["chance"] == 0.25


def test_multiple_choice_options_are_pinned() -> None:
    # random.Random's sample/shuffle are stable across Python versions: pin the first questions
    opts = fe.multiple_choice_options([0, 1, 2, 14], n_options=4, num_classes=K, seed=0)
    assert opts == [(0, 13, 7, 14), (5, 7, 13, 1), (5, 2, 9, 3), (9, 8, 14, 11)]
    assert fe.multiple_choice_options([3] * 5, n_options=K, num_classes=K, seed=5)[0] != tuple(range(K))
    assert all(sorted(o) == list(range(K)) for o in fe.multiple_choice_options([3] * 5, K, K, seed=5))


def test_multiple_choice_is_restricted_to_the_options(mixed) -> None:
    t = labelled(mixed)

    def decoy_first(batch: torch.Tensor) -> torch.Tensor:
        """Always wrong as a classifier: the top logit is the next font, the truth comes second."""
        y = read_label(batch)
        return 2.0 * F.one_hot((y + 1) % K, K).float() + F.one_hot(y, K).float()

    assert fe.evaluate_classifier(decoy_first, mixed, transform=t).accuracy == 0.0
    result = fe.evaluate_multiple_choice(decoy_first, mixed, transform=t, n_options=3, seed=7)
    expected = []
    for opts, s in zip(result.options, mixed, strict=True):
        decoy = (s.label + 1) % K
        expected.append(decoy if decoy in opts else s.label)
    assert result.predictions == expected
    assert result.accuracy == pytest.approx(
        np.mean([p == s.label for p, s in zip(expected, mixed, strict=True)])
    )
    assert 0.0 < result.accuracy < 1.0
    for opts, p in zip(result.options, result.predictions, strict=True):
        assert p in opts

    def truth_last(batch: torch.Tensor) -> torch.Tensor:
        return -F.one_hot(read_label(batch), K).float()

    worst = fe.evaluate_multiple_choice(truth_last, mixed, transform=t, n_options=2)
    assert worst.accuracy == 0.0 and all(
        p != y for p, y in zip(worst.predictions, worst.targets, strict=True)
    )


@pytest.mark.parametrize("n_options", [0, 1, K + 1, 2.0, True])
def test_multiple_choice_n_options_errors(mixed, n_options) -> None:
    with pytest.raises(ValueError, match="n_options"):
        fe.evaluate_multiple_choice(oracle_logits, mixed, transform=cheap, n_options=n_options)
    with pytest.raises(ValueError, match="n_options"):
        fe.multiple_choice_options([0, 1], n_options=n_options, num_classes=K)


def test_multiple_choice_all_options(mixed) -> None:
    t = labelled(mixed)
    logits = random_logits(4)
    full = fe.evaluate_multiple_choice(logits, mixed, transform=t, n_options=K)
    assert all(sorted(o) == list(range(K)) for o in full.options)
    # with every font offered, multiple choice is plain classification
    again = fe.evaluate_classifier(random_logits(4), mixed, transform=t)
    assert full.predictions == again.predictions


def test_multiple_choice_random_is_near_chance() -> None:
    samples = synthetic(400, seed=1)
    result = fe.evaluate_multiple_choice(random_logits(2), samples, transform=tiny, n_options=4, seed=3)
    assert result.chance == 0.25
    assert 0.15 < result.accuracy < 0.35


def test_multiple_choice_wrong_logit_width(mixed) -> None:
    with pytest.raises(ValueError, match="expected 15.*got 4"):
        fe.evaluate_multiple_choice(lambda b: torch.zeros(b.shape[0], 4), mixed, transform=cheap)


# ---------------------------------------------------------------------------------------------- zero-shot


def test_zero_shot_oracle(mixed) -> None:
    t = labelled(mixed)
    result = fe.evaluate_zero_shot(
        lambda b: 3.0 * F.one_hot(read_label(b), K).float(), torch.eye(K), mixed, transform=t
    )
    assert result.accuracy == 1.0 and result.protocol == "zero_shot"
    assert result.params == {"logit_scale": 100.0}


def test_zero_shot_is_cosine_argmax(mixed) -> None:
    t = labelled(mixed)
    g = torch.Generator().manual_seed(0)
    table = torch.randn(K, 8, generator=g)  # one image embedding per label
    classes = torch.randn(K, 8, generator=g).numpy()
    result = fe.evaluate_zero_shot(
        lambda b: table[read_label(b)] * 5, classes, mixed, transform=t, batch_size=6
    )
    cos = F.normalize(table, dim=-1) @ F.normalize(torch.from_numpy(classes), dim=-1).t()
    assert result.predictions == [int(cos[s.label].argmax()) for s in mixed]


def test_zero_shot_errors(mixed) -> None:
    t = labelled(mixed)

    def embed(b):
        return F.one_hot(read_label(b), K).float()

    with pytest.raises(ValueError, match="expected 15 rows, got 14"):
        fe.evaluate_zero_shot(embed, torch.eye(K)[:14], mixed, transform=t)
    with pytest.raises(ValueError, match="expected 16, got 15"):
        fe.evaluate_zero_shot(embed, torch.zeros(K, 16), mixed, transform=t)
    with pytest.raises(ValueError, match="2-D"):
        fe.evaluate_zero_shot(embed, torch.zeros(K), mixed, transform=t)
    with pytest.raises(ValueError, match="logit_scale"):
        fe.evaluate_zero_shot(embed, torch.eye(K), mixed, transform=t, logit_scale=0.0)


def test_clip_zero_shot_end_to_end(easy, hard, tiny_tokenizer) -> None:
    torch.manual_seed(0)
    model = vitkit.create_model("clip_test")
    model.tokenizer = tiny_tokenizer
    model.train()
    samples = easy[::10] + hard[::15]  # 30 samples, every font twice
    result = fe.clip_zero_shot(model, samples, batch_size=8)
    assert model.training  # mode restored
    assert 0.0 <= result.accuracy <= 1.0 and result.n == 30
    assert result.confusion.sum() == 30 and result.split == "mixed"
    assert result.params["templates"] == list(fe.FONT_TEMPLATES)
    assert result.params["logit_scale"] == pytest.approx(float(model.logit_scale.detach().exp()))
    assert fe.FONT_TEMPLATES == (
        "text written in the {} font.",
        "a sample of the {} typeface.",
        "the font of this text is {}.",
    )
    # the same as the generic protocol with the class embeddings built by hand
    model.eval()
    weights = text_classifier_weights(model, FONT_NAMES, fe.FONT_TEMPLATES)
    manual = fe.evaluate_zero_shot(
        model.encode_image,
        weights,
        samples,
        transform=lambda img: vitkit.data.preprocess(img, model.preprocess),
    )
    assert manual.predictions == result.predictions
    json.dumps(result.to_dict())


def test_clip_zero_shot_needs_tokenizer_and_preprocess(easy, tiny_tokenizer) -> None:
    model = vitkit.create_model("clip_test")
    with pytest.raises(RuntimeError, match="tokenizer"):
        fe.clip_zero_shot(model, easy[:2])
    model.tokenizer = tiny_tokenizer
    model.preprocess = None
    with pytest.raises(ValueError, match="preprocess"):
        fe.clip_zero_shot(model, easy[:2])
    result = fe.clip_zero_shot(
        model, easy[:2], templates=["{}"], transform=lambda img: torch.zeros(3, 32, 32)
    )
    assert result.n == 2


# ---------------------------------------------------------------------------------------------- few-shot


def _digest(samples: Sequence[FRBSample]) -> str:
    h = hashlib.sha256()
    for s in samples:
        h.update(f"{s.label}|{s.font}|{s.text}|{s.split}|{s.image.size}".encode())
        h.update(s.image.tobytes())
    return h.hexdigest()


def test_letter_exemplars(letters) -> None:
    assert len(letters) == 52 * K == 780
    assert Counter(s.label for s in letters) == dict.fromkeys(range(K), 52)
    assert Counter(s.text for s in letters) == dict.fromkeys(fe.LETTERS, K)
    assert len(set(fe.LETTERS)) == 52 and set(fe.LETTERS) == set(
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
    )
    for i, s in enumerate(letters):
        assert s.label == i // 52 and s.font == FONT_NAMES[s.label] and s.text == fe.LETTERS[i % 52]
        assert s.split == "letters" and s.image.mode == "RGB" and s.data is not None  # the paper's JPEGs
        assert 40 < s.image.height < 200  # one letter at size 80 on a tight canvas
        assert np.asarray(s.image.convert("L")).min() < 128  # every letter leaves ink
    assert _digest(letters) == _digest(fe.letter_exemplars())  # deterministic, pixel for pixel
    legacy = fe.letter_exemplars("canvas440")
    assert len(legacy) == 780 and legacy[0].image.size == frb.CANVAS


def test_few_shot_oracle(mixed, letters) -> None:
    t = labelled(mixed, letters)

    def embed(b):
        return F.one_hot(read_label(b), K).float()

    result = fe.evaluate_few_shot(embed, mixed, letters, transform=t, k=5, batch_size=64)
    assert result.accuracy == 1.0 and result.protocol == "few_shot"
    assert result.params == {"k": 5, "n_exemplars": 780}
    assert fe.evaluate_few_shot(embed, mixed, letters, transform=t, k=52, batch_size=64).accuracy == 1.0


def test_few_shot_precomputed_exemplars(mixed, letters) -> None:
    t = labelled(mixed, letters)
    g = torch.Generator().manual_seed(0)
    table = torch.randn(K, 6, generator=g)
    seen = []

    def embed(b):
        seen.append(b.shape[0])
        return table[read_label(b)]

    cache = embed_samples(embed, letters, transform=t, batch_size=128)
    assert cache.shape == (780, 6) and cache.dtype == torch.float32
    assert torch.equal(cache, table[[s.label for s in letters]])
    noisy = cache + 0.8 * torch.randn(cache.shape, generator=g)
    seen.clear()
    a = fe.evaluate_few_shot(embed, mixed, letters, transform=t, exemplar_embeds=noisy, k=1)
    assert sum(seen) == len(mixed)  # only the queries were embedded
    b = fe.evaluate_few_shot(embed, mixed, letters, transform=t, exemplar_embeds=noisy.numpy(), k=1)
    cos = F.normalize(table, dim=-1) @ F.normalize(noisy, dim=-1).t()  # (label, exemplar)
    nearest = [letters[int(cos[s.label].argmax())].label for s in mixed]
    assert a.predictions == b.predictions == nearest
    with pytest.raises(ValueError, match="expected 780 rows, got 779"):
        fe.evaluate_few_shot(embed, mixed, letters, transform=t, exemplar_embeds=cache[:-1])
    with pytest.raises(ValueError, match="expected 5, got 6"):
        fe.evaluate_few_shot(embed, mixed, letters, transform=t, exemplar_embeds=cache[:, :5])


def _table_samples(n: int, labels: Sequence[int]) -> list[FRBSample]:
    """Samples whose image encodes its index ``i`` (as a 1x1 grey level) for a table oracle."""
    return [
        FRBSample(Image.new("L", (1, 1), i), y, FONT_NAMES[y], "", "t")
        for i, y in zip(range(n), labels, strict=True)
    ]


def test_few_shot_vote_rule() -> None:
    # exemplar 0 (font 0) is the query's direction; exemplars 1, 2 (font 1) are at cosine -0.5
    vectors = {
        0: [1.0, 0.0],  # query
        1: [2.0, 0.0],  # exemplar of font 0, cosine 1 -> weight 1
        2: [-0.5, 0.75**0.5],  # exemplars of font 1, cosine -0.5 -> weight 0.25 each
        3: [-0.5, -(0.75**0.5)],
    }

    def transform(img: Image.Image) -> torch.Tensor:
        return torch.full((3, 1, 1), float(img.getpixel((0, 0))))

    def embed(b: torch.Tensor) -> torch.Tensor:
        return torch.tensor([vectors[int(v)] for v in b[:, 0, 0, 0].round()])

    everything = _table_samples(4, [0, 0, 1, 1])
    query, exemplars = everything[:1], everything[1:]
    for k in (1, 2, 3):  # a majority vote would say font 1 at k=3; the weighted vote says font 0
        result = fe.evaluate_few_shot(embed, query, exemplars, transform=transform, k=k)
        assert result.predictions == [0]
    # a tie in total weight goes to the class of the nearest neighbour (weights exact in floats)
    vectors.update({1: [3.0, 0.0], 2: [0.0, 1.0], 3: [0.0, -2.0]})  # weights 1 vs 0.5 + 0.5
    assert fe.evaluate_few_shot(embed, query, exemplars, transform=transform, k=3).predictions == [0]
    # equal similarities: the earlier exemplar counts as nearer, so exemplar order decides the tie
    vectors.update({1: [1.0, 0.0], 2: [2.0, 0.0], 3: [-1.0, 0.0]})  # weights 1 vs 1 + 0
    assert fe.evaluate_few_shot(embed, query, exemplars, transform=transform, k=3).predictions == [0]
    assert fe.evaluate_few_shot(embed, query, exemplars[::-1], transform=transform, k=3).predictions == [1]
    with pytest.raises(ValueError, match="k must be"):
        fe.evaluate_few_shot(embed, query, exemplars, transform=transform, k=4)
    with pytest.raises(ValueError, match="k must be"):
        fe.evaluate_few_shot(embed, query, exemplars, transform=transform, k=0)


# ---------------------------------------------------------------------------------------------- empty input


@pytest.mark.parametrize(
    "call",
    [
        lambda s, ex: fe.evaluate_classifier(oracle_logits, s, transform=cheap),
        lambda s, ex: fe.evaluate_multiple_choice(oracle_logits, s, transform=cheap),
        lambda s, ex: fe.evaluate_zero_shot(oracle_logits, torch.eye(K), s, transform=cheap),
        lambda s, ex: fe.evaluate_few_shot(oracle_logits, s, ex, transform=cheap),
        lambda s, ex: fe.evaluate_few_shot(oracle_logits, ex, s, transform=cheap),
        lambda s, ex: embed_samples(oracle_logits, s, transform=cheap),
    ],
    ids=["classifier", "multiple_choice", "zero_shot", "few_shot_queries", "few_shot_exemplars", "embed"],
)
def test_empty_samples(call, easy) -> None:
    with pytest.raises(ValueError, match="empty"):
        call([], easy[:3])


def test_empty_class_names(easy) -> None:
    with pytest.raises(ValueError, match="class_names"):
        fe.evaluate_classifier(oracle_logits, easy[:3], transform=cheap, class_names=[])
    with pytest.raises(ValueError, match="distinct"):
        fe.evaluate_classifier(oracle_logits, easy[:3], transform=cheap, class_names=["a", "a"])
