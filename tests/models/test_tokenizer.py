"""vitkit's CLIP BPE tokenizer against Hugging Face's on a tiny vocabulary written in all three file formats.

In transformers 5, ``transformers.CLIPTokenizer`` is the tokenizers-backed (fast) implementation; there is no
slow Python class any more. Its ``__init__`` ignores ``vocab_file=`` / ``merges_file=`` (it silently builds a
3-token vocabulary), so the reference is loaded with ``CLIPTokenizer.from_pretrained(dir_with_slow_files)``.

Known, documented divergence: OpenAI CLIP (and vitkit) unescape HTML entities (``&amp;`` -> ``&``) before
tokenising; Hugging Face's fast tokenizer does not. For texts containing entities vitkit is compared with
Hugging Face on the unescaped text instead. Two more exotic divergences, also OpenAI's behaviour and tested
below: Python's ``str.lower`` writes a word-final capital sigma as "ς" (tokenizers writes "σ"), and the
case-insensitive contraction pattern ``'s`` also matches the long s "ſ" (tokenizers' pattern is case-sensitive).
A 20k-string random fuzz over mixed scripts, emoji, combining marks and odd whitespace found no other difference.
"""

from __future__ import annotations

import collections
import gzip
import html
import json
import shutil
from pathlib import Path

import pytest
import regex
import torch

from vitkit.models import tokenizer as tokmod
from vitkit.models.tokenizer import CLIPTokenizer, bytes_to_unicode, clean_text

BOS, EOS = "<|startoftext|>", "<|endoftext|>"
NUM_MERGES = 40
TRAIN_TEXT = """
The cat sat on the mat. The dog sat on the log. It's a photo of the cat and the dog.
There is a photo of a café in the city; the café is there. A photo of them, then the theme.
This is the thing: the other one isn't there. We'll see what they're doing with the photos.
"""
SAMPLES = [
    "a photo of a cat",
    "A Photo OF the CAT!!",
    "it's what we've done, isn't it? I'd say we'll see; they're here & I'm ok. O'Neil's",
    "numbers 12345 and 3.14159, 1,000,000 or 2nd/3rd",
    "multiple    spaces\tand\nnewlines   around  ",
    "café naïve über Ünïcödé façade",
    "decomposed e\u0301 vs composed \u00e9",
    "漢字 and かな mixed with Кириллица",
    "emoji 😀 👍🏽 🐈‍⬛ done",
    "Hello—world… “quoted” ‘single’ «guillemets»",
    "İstanbul STRASSE ẞ",
    "the theme there then them these",
    "((brackets)) [x] {y} <z> #hash @at $5 100% a+b=c",
    "x" * 300,
    "<|startoftext|>hello <|endoftext|> world",
    "",
    "   \t\n ",
]
HTML_SAMPLES = [
    "salt &amp; pepper",
    "&lt;b&gt;bold&lt;/b&gt;",
    "double &amp;amp; escaped",
    "&quot;hi&quot; &#39;x&#39;",
]


def _train_merges(text: str, n: int) -> list[tuple[str, str]]:
    """A few BPE merges learned greedily from ``text`` (ties broken by the pair itself, for determinism)."""
    b2u = bytes_to_unicode()
    counts = collections.Counter(regex.findall(r"[\p{L}]+|'s|[^\s\p{L}\p{N}]+", text.lower()))
    words = {}
    for word, count in counts.items():
        chars = [b2u[b] for b in word.encode("utf-8")]
        words[tuple([*chars[:-1], chars[-1] + "</w>"])] = count
    known = set(b2u.values()) | {c + "</w>" for c in b2u.values()}
    merges: list[tuple[str, str]] = []
    while len(merges) < n:
        pairs: collections.Counter[tuple[str, str]] = collections.Counter()
        for symbols, count in words.items():
            for pair in zip(symbols, symbols[1:], strict=False):
                if pair[0] + pair[1] not in known:
                    pairs[pair] += count
        if not pairs:
            break
        best = max(pairs, key=lambda p: (pairs[p], p))
        merges.append(best)
        known.add(best[0] + best[1])
        new_words = {}
        for symbols, count in words.items():
            out, i = [], 0
            while i < len(symbols):
                if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == best:
                    out.append(symbols[i] + symbols[i + 1])
                    i += 2
                else:
                    out.append(symbols[i])
                    i += 1
            new_words[tuple(out)] = count
        words = new_words
    return merges


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The tiny vocabulary in all three formats: {"slow": dir, "fast": dir, "gz": dir}."""
    root = tmp_path_factory.mktemp("clip_tokenizer")
    merges = _train_merges(TRAIN_TEXT, NUM_MERGES)
    assert len(merges) == NUM_MERGES
    base = list(bytes_to_unicode().values())
    tokens = base + [c + "</w>" for c in base] + [a + b for a, b in merges] + [BOS, EOS]
    vocab = {t: i for i, t in enumerate(tokens)}
    assert len(vocab) == len(tokens) == 512 + NUM_MERGES + 2

    slow = root / "slow"
    slow.mkdir()
    (slow / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    merges_text = "\n".join(f"{a} {b}" for a, b in merges) + "\n"
    (slow / "merges.txt").write_text("#version: 0.2\n" + merges_text, encoding="utf-8")

    gz = root / "gz"
    gz.mkdir()
    with gzip.open(gz / tokmod.BPE_GZ, "wt", encoding="utf-8") as f:
        f.write('"bpe_simple_vocab_16e6.txt#version: 0.2\n' + merges_text)

    fast = root / "fast"
    transformers = pytest.importorskip("transformers")
    transformers.CLIPTokenizer.from_pretrained(str(slow)).save_pretrained(str(fast))
    assert (fast / "tokenizer.json").is_file()
    return {"slow": slow, "fast": fast, "gz": gz}


@pytest.fixture(scope="module")
def hf(tiny: dict[str, Path]):
    transformers = pytest.importorskip("transformers")
    return transformers.CLIPTokenizer.from_pretrained(str(tiny["slow"]))


@pytest.fixture(scope="module")
def loaded(tiny: dict[str, Path]) -> dict[str, CLIPTokenizer]:
    return {
        "slow": CLIPTokenizer.from_files(tiny["slow"] / "vocab.json", tiny["slow"] / "merges.txt"),
        "fast": CLIPTokenizer.from_tokenizer_json(tiny["fast"] / "tokenizer.json"),
        "gz": CLIPTokenizer.from_bpe_gz(tiny["gz"] / tokmod.BPE_GZ),
    }


def _hf_ids(hf, text: str) -> list[int]:
    return hf(text, add_special_tokens=False)["input_ids"]


def test_byte_alphabet_matches_tokenizers() -> None:
    from tokenizers.pre_tokenizers import ByteLevel

    b2u = bytes_to_unicode()
    assert sorted(b2u) == list(range(256))
    assert set(b2u.values()) == set(ByteLevel.alphabet())
    assert b2u[ord("a")] == "a" and b2u[ord(" ")] == "Ġ"


def test_all_formats_load_the_same_tokenizer(loaded: dict[str, CLIPTokenizer]) -> None:
    ref = loaded["slow"]
    assert ref.vocab_size == 512 + NUM_MERGES + 2
    assert (ref.bos_token_id, ref.eos_token_id, ref.pad_token_id) == (552, 553, 553)
    for tok in loaded.values():
        assert tok.encoder == ref.encoder
        assert tok.bpe_ranks == ref.bpe_ranks
        assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id, tok.context_length) == (
            552,
            553,
            553,
            77,
        )


@pytest.mark.parametrize("fmt", ["slow", "fast", "gz"])
def test_ids_match_transformers(fmt: str, loaded: dict[str, CLIPTokenizer], hf) -> None:
    tok = loaded[fmt]
    for text in SAMPLES:
        assert tok.encode(text) == _hf_ids(hf, text), text
    # the merges are actually exercised: "the" and "photo" are single tokens
    assert len(tok.encode("the photo")) == 2


def test_html_entities_are_unescaped_unlike_hf(loaded: dict[str, CLIPTokenizer], hf) -> None:
    tok = loaded["slow"]
    assert tok.encode("salt &amp; pepper") == tok.encode("salt & pepper")
    assert tok.encode("&amp;amp;") == tok.encode("&")  # unescaped twice, as OpenAI does
    for text in HTML_SAMPLES:
        assert tok.encode(text) == _hf_ids(hf, html.unescape(html.unescape(text))), text


def test_final_sigma_lowercases_like_python_unlike_hf(loaded: dict[str, CLIPTokenizer], hf) -> None:
    """OpenAI lower-cases with ``str.lower`` (final sigma -> "ς"); tokenizers' Lowercase maps every Σ to "σ"."""
    tok = loaded["slow"]
    assert tok.tokenize("ΣΑΣ") == tok.tokenize("σας")
    assert tok.encode("ΣΑΣ") != _hf_ids(hf, "ΣΑΣ")
    assert tok.encode("ΣΑΣ") == _hf_ids(hf, "σας")
    assert tok.encode("ΣΑ Σ") == _hf_ids(hf, "ΣΑ Σ")  # a lone Σ lowers to "σ" in both


def test_long_s_contraction_like_openai_unlike_hf(loaded: dict[str, CLIPTokenizer], hf) -> None:
    """OpenAI's regex is case-insensitive, so "'ſ" (long s) is split off like "'s"; Hugging Face's is not."""
    tok = loaded["slow"]
    assert tok.tokenize("it'ſ") == tok.tokenize("it") + tok.tokenize("'ſ")  # one piece "'ſ", as for "'s"
    assert tok.encode("it'ſ") != _hf_ids(hf, "it'ſ")
    assert tok.encode("it's") == _hf_ids(hf, "it's")


def test_clean_text() -> None:
    assert clean_text("  A  &amp;\tB\n ") == "a & b"
    assert clean_text("e\u0301") == "\u00e9"
    assert clean_text("") == ""


def test_call_padding_and_mask(loaded: dict[str, CLIPTokenizer], hf) -> None:
    tok = loaded["slow"]
    texts = ["a photo of the cat", "", "it's 42 degrees"]
    out = tok(texts, context_length=16)
    ids, mask = out["input_ids"], out["attention_mask"]
    assert ids.shape == mask.shape == (3, 16) and ids.dtype == mask.dtype == torch.long
    ref = hf(texts, padding="max_length", max_length=16, truncation=True, return_tensors="pt")
    assert torch.equal(ids, ref["input_ids"])
    assert torch.equal(mask, ref["attention_mask"])
    n = len(tok.encode(texts[0]))
    assert ids[0, 0] == tok.bos_token_id and ids[0, n + 1] == tok.eos_token_id
    assert (ids[0, n + 2 :] == tok.pad_token_id).all()
    assert mask[0].tolist() == [1] * (n + 2) + [0] * (14 - n)
    assert ids[1, :2].tolist() == [tok.bos_token_id, tok.eos_token_id] and mask[1].sum() == 2
    # a single string gives a batch of one at the default context length
    single = tok("a photo")
    assert single["input_ids"].shape == (1, 77) and single["attention_mask"].shape == (1, 77)


def test_truncation(loaded: dict[str, CLIPTokenizer], hf) -> None:
    tok = loaded["gz"]
    text = "one two three four five six seven eight nine ten"
    full = tok.encode(text)
    assert len(full) > 6
    out = tok([text], context_length=8)
    assert out["input_ids"][0].tolist() == [tok.bos_token_id, *full[:6], tok.eos_token_id]
    assert out["attention_mask"].sum() == 8
    ref = hf([text], padding="max_length", max_length=8, truncation=True)["input_ids"]
    assert out["input_ids"].tolist() == ref
    # exactly fitting is not an error
    fits = tok(["a", "cat"], context_length=len(tok.encode("cat")) + 2, truncate=False)
    assert fits["attention_mask"][1].all()
    with pytest.raises(ValueError, match=r"text 1 has \d+ tokens"):
        tok(["short", text], context_length=8, truncate=False)


def test_decode(loaded: dict[str, CLIPTokenizer], hf) -> None:
    tok = loaded["fast"]
    for text in ["a photo of the cat", "there is the theme then", "x"]:
        assert tok.decode(tok.encode(text)) == text
        row = tok(text, context_length=20)["input_ids"][0]
        assert tok.decode(row) == text
    assert tok.decode(tok.encode("The CAT, sat.")) == "the cat , sat ."  # CLIP's word-level spacing
    assert tok.decode(tok.encode("café 漢字 😀")) == "café 漢字 😀"
    for text in SAMPLES:
        ids = tok(text, context_length=400)["input_ids"][0].tolist()
        assert tok.decode(ids) == hf.decode(ids, skip_special_tokens=True), text
    with_special = tok.decode(tok("cat", context_length=4)["input_ids"][0], skip_special_tokens=False)
    assert with_special == f"{BOS}cat {EOS}{EOS}"
    # with "!" as pad (id 0) the padding goes but a mid-word "!" (also id 0) stays
    bang = CLIPTokenizer(tok.encoder, tok.bpe_ranks, pad_token="!")
    ids = bang("wow!!", context_length=10)["input_ids"][0]
    assert 0 in ids[:5].tolist() and ids[-1] == 0
    assert bang.decode(ids) == "wow !!"
    assert tok.batch_decode(tok(["a cat", "the dog"])["input_ids"]) == ["a cat", "the dog"]


def test_merges_as_strings_in_tokenizer_json(tiny: dict[str, Path], tmp_path: Path, loaded) -> None:
    data = json.loads((tiny["fast"] / "tokenizer.json").read_text(encoding="utf-8"))
    assert isinstance(data["model"]["merges"][0], list)  # what tokenizers writes nowadays
    data["model"]["merges"] = [" ".join(m) for m in data["model"]["merges"]]
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    tok = CLIPTokenizer.from_tokenizer_json(path)
    assert tok.bpe_ranks == loaded["slow"].bpe_ranks
    assert tok.encode(SAMPLES[2]) == loaded["slow"].encode(SAMPLES[2])


def test_bpe_gz_uses_only_clip_merge_count(tiny: dict[str, Path], tmp_path: Path, monkeypatch) -> None:
    src = gzip.open(tiny["gz"] / tokmod.BPE_GZ, "rt", encoding="utf-8").read()
    path = tmp_path / tokmod.BPE_GZ
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write(src + "q z\nqz x</w>\n")  # extra merges beyond the cut-off, as in OpenAI's file
    monkeypatch.setattr(tokmod, "_BPE_GZ_NUM_MERGES", NUM_MERGES)
    tok = CLIPTokenizer.from_bpe_gz(path)
    assert tok.vocab_size == 512 + NUM_MERGES + 2
    assert ("q", "z") not in tok.bpe_ranks and "qz" not in tok.encoder


def test_from_pretrained_detection(tiny: dict[str, Path], tmp_path: Path, loaded) -> None:
    ref = loaded["slow"]
    for fmt in ("slow", "fast", "gz"):
        tok = CLIPTokenizer.from_pretrained(tiny[fmt])
        assert tok.encoder == ref.encoder and tok.encode(SAMPLES[2]) == ref.encode(SAMPLES[2])
    # priority: tokenizer.json over vocab.json + merges.txt over the .gz (broken lower-priority files ignored)
    both = tmp_path / "both"
    shutil.copytree(tiny["fast"], both)
    (both / "vocab.json").write_text("not json", encoding="utf-8")
    (both / "merges.txt").write_text("", encoding="utf-8")
    (both / tokmod.BPE_GZ).write_bytes(b"not gzip")
    assert CLIPTokenizer.from_pretrained(both).encoder == ref.encoder
    (both / "tokenizer.json").unlink()
    shutil.copy(tiny["slow"] / "vocab.json", both / "vocab.json")
    shutil.copy(tiny["slow"] / "merges.txt", both / "merges.txt")
    assert CLIPTokenizer.from_pretrained(both).bpe_ranks == ref.bpe_ranks


def test_from_pretrained_reads_special_tokens(tiny: dict[str, Path], tmp_path: Path, hf) -> None:
    import transformers

    ckpt = tmp_path / "ckpt"
    shutil.copytree(tiny["slow"], ckpt)
    config = {"model_max_length": 12, "pad_token": "<|endoftext|>", "bos_token": BOS, "eos_token": EOS}
    (ckpt / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    # special_tokens_map.json wins, and may hold serialised AddedToken dicts
    (ckpt / "special_tokens_map.json").write_text(
        json.dumps({"pad_token": {"content": "!", "lstrip": False, "normalized": False}}), encoding="utf-8"
    )
    tok = CLIPTokenizer.from_pretrained(ckpt)
    assert tok.context_length == 12 and tok.pad_token == "!" and tok.pad_token_id == tok.encoder["!"] == 0
    assert CLIPTokenizer.from_pretrained(ckpt, context_length=20).context_length == 20
    ids = tok("a cat")["input_ids"]
    assert ids.shape == (1, 12) and ids[0, -1] == 0  # "!" is id 0 in CLIP vocabularies
    ref = transformers.CLIPTokenizer.from_pretrained(str(ckpt))
    assert ref.pad_token == "!"
    assert ids.tolist() == ref(["a cat"], padding="max_length", max_length=12)["input_ids"]


def test_missing_files(tmp_path: Path) -> None:
    (tmp_path / "vocab.json").write_text("{}", encoding="utf-8")  # merges.txt missing: not a usable pair
    with pytest.raises(FileNotFoundError) as err:
        CLIPTokenizer.from_pretrained(tmp_path)
    message = str(err.value)
    assert str(tmp_path) in message
    for name in ("tokenizer.json", "vocab.json", "merges.txt", "bpe_simple_vocab_16e6.txt.gz"):
        assert name in message


def test_unknown_symbols_map_to_unk() -> None:
    vocab = {"a</w>": 0, "c": 1, "a": 2, "t</w>": 3, "ca": 4, BOS: 5, EOS: 6}
    tok = CLIPTokenizer(vocab, [("c", "a")])
    assert tok.encode("a b cat") == [0, 6, 4, 3]
    assert tok.unk_token_id == tok.eos_token_id == 6
    with pytest.raises(ValueError, match="pad token"):
        CLIPTokenizer(vocab, [], pad_token="!")
    with pytest.raises(ValueError, match="not in the vocabulary"):
        CLIPTokenizer(vocab, [("a", "b")])
