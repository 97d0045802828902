"""CLIP byte-level BPE tokenizer that reads a checkpoint's own tokenizer files (never the network).

Implements the algorithm of OpenAI CLIP's ``SimpleTokenizer`` (the reference that Hugging Face's
``CLIPTokenizer`` reproduces): clean the text, lower-case it, split it with CLIP's regular expression,
map every UTF-8 byte to a printable unicode character, then apply byte-pair merges by rank with
``"</w>"`` marking the end of each word.

Supported file layouts:

* Hugging Face slow files: ``vocab.json`` + ``merges.txt`` (:meth:`CLIPTokenizer.from_files`);
* Hugging Face fast file: ``tokenizer.json`` (:meth:`CLIPTokenizer.from_tokenizer_json`);
* OpenAI / open_clip: ``bpe_simple_vocab_16e6.txt.gz`` (:meth:`CLIPTokenizer.from_bpe_gz`);
* a checkpoint directory holding any of the above (:meth:`CLIPTokenizer.from_pretrained`).

Text cleaning: OpenAI runs ``ftfy.fix_text`` first. ftfy is not a dependency, so only its Unicode NFC
normalisation is kept (Hugging Face's fast tokenizer also applies NFC); mojibake repair is skipped.
"""

from __future__ import annotations

import functools
import gzip
import html
import json
import logging
import os
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import regex
import torch

__all__ = ["CLIPTokenizer", "bytes_to_unicode", "clean_text"]

logger = logging.getLogger(__name__)

BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"
END_OF_WORD = "</w>"
DEFAULT_CONTEXT_LENGTH = 77
# OpenAI's bpe_simple_vocab_16e6.txt.gz holds more merges than CLIP uses: lines 1 .. 48894 only.
_BPE_GZ_NUM_MERGES = 49152 - 256 - 2
_MAX_CACHE = 100_000
# Hugging Face writes a huge sentinel (1e30) as model_max_length when none was set.
_MAX_SANE_CONTEXT = 1_000_000

_PRETOKENIZE = regex.compile(
    r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
    regex.IGNORECASE,
)
_WHITESPACE = regex.compile(r"\s+")

TOKENIZER_JSON = "tokenizer.json"
VOCAB_JSON = "vocab.json"
MERGES_TXT = "merges.txt"
BPE_GZ = "bpe_simple_vocab_16e6.txt.gz"
TOKENIZER_CONFIG_JSON = "tokenizer_config.json"
SPECIAL_TOKENS_MAP_JSON = "special_tokens_map.json"


@functools.cache
def bytes_to_unicode() -> dict[int, str]:
    """Map each byte 0..255 to a printable unicode character (GPT-2 / CLIP byte-level alphabet).

    Printable Latin-1 bytes map to themselves; the remaining 68 bytes map to ``chr(256 + k)`` in byte order.
    The dict's insertion order is the order of the first 256 ids in CLIP's vocabulary.
    """
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("\xa1"), ord("\xac") + 1),
        *range(ord("\xae"), ord("\xff") + 1),
    ]
    mapping = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + extra)
            extra += 1
    return mapping


def clean_text(text: str) -> str:
    """CLIP text cleaning: NFC, unescape HTML twice, collapse whitespace, strip, lower-case."""
    text = unicodedata.normalize("NFC", text)
    text = html.unescape(html.unescape(text)).strip()
    return _WHITESPACE.sub(" ", text).strip().lower()


def _token_content(value: Any) -> str | None:
    """A special token from a config file: a plain string or a serialised ``AddedToken`` dict."""
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping) and isinstance(value.get("content"), str):
        return value["content"]
    return None


def _read_json(path: Path) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _parse_merge(item: str | Sequence[str], where: str) -> tuple[str, str]:
    parts = item.split() if isinstance(item, str) else list(item)
    if len(parts) != 2 or not all(isinstance(p, str) for p in parts):
        raise ValueError(f"malformed merge {item!r} in {where}")
    return parts[0], parts[1]


class CLIPTokenizer:
    """CLIP byte-level BPE tokenizer.

    Args:
        vocab: token string -> id.
        merges: merge pairs, highest priority first.
        context_length: default padded length for :meth:`__call__`.
        bos_token, eos_token, pad_token, unk_token: special token strings; all must be in ``vocab``.
    """

    def __init__(
        self,
        vocab: Mapping[str, int],
        merges: Iterable[tuple[str, str]],
        *,
        context_length: int = DEFAULT_CONTEXT_LENGTH,
        bos_token: str = BOS_TOKEN,
        eos_token: str = EOS_TOKEN,
        pad_token: str = EOS_TOKEN,
        unk_token: str = EOS_TOKEN,
    ) -> None:
        if context_length < 2:
            raise ValueError(f"context_length must be >= 2 (bos + eos), got {context_length}")
        self.encoder: dict[str, int] = dict(vocab)
        self.decoder: dict[int, str] = {i: t for t, i in self.encoder.items()}
        self.bpe_ranks: dict[tuple[str, str], int] = {}
        for pair in merges:
            self.bpe_ranks.setdefault((pair[0], pair[1]), len(self.bpe_ranks))
        missing = [a + b for a, b in self.bpe_ranks if a + b not in self.encoder]
        if missing:
            raise ValueError(
                f"{len(missing)} merge results are not in the vocabulary (first: {missing[0]!r}); "
                "vocab and merges do not belong together"
            )
        for role, token in (("bos", bos_token), ("eos", eos_token), ("pad", pad_token), ("unk", unk_token)):
            if token not in self.encoder:
                raise ValueError(f"{role} token {token!r} is not in the vocabulary")
        self.bos_token = bos_token
        self.eos_token = eos_token
        self.pad_token = pad_token
        self.unk_token = unk_token
        self.bos_token_id = self.encoder[bos_token]
        self.eos_token_id = self.encoder[eos_token]
        self.pad_token_id = self.encoder[pad_token]
        self.unk_token_id = self.encoder[unk_token]
        self.context_length = int(context_length)
        self.byte_encoder = bytes_to_unicode()
        self.byte_decoder = {c: b for b, c in self.byte_encoder.items()}
        # As in OpenAI's tokenizer the two CLIP special strings are whole tokens when they occur in text.
        self._special_words = {t: (t,) for t in (BOS_TOKEN, EOS_TOKEN) if t in self.encoder}
        self._cache: dict[str, tuple[str, ...]] = {}

    # ------------------------------------------------------------------ loaders

    @classmethod
    def from_files(
        cls,
        vocab_json: str | os.PathLike[str],
        merges_txt: str | os.PathLike[str],
        *,
        context_length: int = DEFAULT_CONTEXT_LENGTH,
        **special_tokens: str,
    ) -> CLIPTokenizer:
        """Load Hugging Face slow-tokenizer files ``vocab.json`` + ``merges.txt``."""
        vocab = _read_json(Path(vocab_json))
        with open(merges_txt, encoding="utf-8") as f:
            lines = f.read().split("\n")
        if lines and lines[0].startswith("#version"):
            lines = lines[1:]
        merges = [_parse_merge(line, str(merges_txt)) for line in lines if line.strip()]
        logger.debug(
            "loaded %d tokens and %d merges from %s, %s", len(vocab), len(merges), vocab_json, merges_txt
        )
        return cls(vocab, merges, context_length=context_length, **special_tokens)

    @classmethod
    def from_tokenizer_json(
        cls,
        path: str | os.PathLike[str],
        *,
        context_length: int = DEFAULT_CONTEXT_LENGTH,
        **special_tokens: str,
    ) -> CLIPTokenizer:
        """Load a Hugging Face fast-tokenizer ``tokenizer.json`` (BPE model).

        Merges may be ``"a b"`` strings or ``[a, b]`` pairs. Special tokens not given explicitly are taken
        from the file's post-processor (cls/sep) and padding settings when present.
        """
        data = _read_json(Path(path))
        model = data.get("model") or {}
        if model.get("type", "BPE") != "BPE" or "vocab" not in model or "merges" not in model:
            raise ValueError(f"{path} does not hold a BPE model with vocab and merges")
        suffix = model.get("end_of_word_suffix")
        if suffix not in (None, END_OF_WORD):
            logger.warning("%s uses end_of_word_suffix %r; CLIP expects %r", path, suffix, END_OF_WORD)
        merges = [_parse_merge(m, str(path)) for m in model["merges"]]
        found: dict[str, str] = {}
        post = data.get("post_processor") or {}
        if post.get("type") in ("RobertaProcessing", "BertProcessing"):
            if post.get("cls"):
                found["bos_token"] = post["cls"][0]
            if post.get("sep"):
                found["eos_token"] = post["sep"][0]
        padding = data.get("padding") or {}
        if isinstance(padding.get("pad_token"), str):
            found["pad_token"] = padding["pad_token"]
        if isinstance(model.get("unk_token"), str):
            found["unk_token"] = model["unk_token"]
        found.update(special_tokens)
        logger.debug("loaded %d tokens and %d merges from %s", len(model["vocab"]), len(merges), path)
        return cls(model["vocab"], merges, context_length=context_length, **found)

    @classmethod
    def from_bpe_gz(
        cls,
        path: str | os.PathLike[str],
        *,
        context_length: int = DEFAULT_CONTEXT_LENGTH,
        **special_tokens: str,
    ) -> CLIPTokenizer:
        """Load OpenAI / open_clip ``bpe_simple_vocab_16e6.txt.gz`` (header line, then merges)."""
        with gzip.open(path, "rt", encoding="utf-8") as f:
            lines = f.read().split("\n")
        raw = [line for line in lines[1 : _BPE_GZ_NUM_MERGES + 1] if line.strip()]
        merges = [_parse_merge(line, str(path)) for line in raw]
        base = list(bytes_to_unicode().values())
        tokens = base + [c + END_OF_WORD for c in base] + [a + b for a, b in merges] + [BOS_TOKEN, EOS_TOKEN]
        vocab = {t: i for i, t in enumerate(tokens)}
        logger.debug("loaded %d merges from %s", len(merges), path)
        return cls(vocab, merges, context_length=context_length, **special_tokens)

    @classmethod
    def from_pretrained(
        cls, directory: str | os.PathLike[str], *, context_length: int | None = None
    ) -> CLIPTokenizer:
        """Load from a checkpoint directory.

        Looks for ``tokenizer.json``, else ``vocab.json`` + ``merges.txt``, else
        ``bpe_simple_vocab_16e6.txt.gz``. Special tokens and ``model_max_length`` come from
        ``tokenizer_config.json`` and ``special_tokens_map.json`` when present (the latter wins, as in
        transformers). An explicit ``context_length`` overrides ``model_max_length``.
        """
        root = Path(directory)
        special: dict[str, str] = {}
        max_length: int | None = None
        config_path = root / TOKENIZER_CONFIG_JSON
        if config_path.is_file():
            config = _read_json(config_path)
            special.update(_special_tokens_from(config))
            value = config.get("model_max_length")
            if isinstance(value, int | float) and 2 <= value <= _MAX_SANE_CONTEXT:
                max_length = int(value)
        map_path = root / SPECIAL_TOKENS_MAP_JSON
        if map_path.is_file():
            special.update(_special_tokens_from(_read_json(map_path)))
        length = context_length or max_length or DEFAULT_CONTEXT_LENGTH

        if (root / TOKENIZER_JSON).is_file():
            tok = cls.from_tokenizer_json(root / TOKENIZER_JSON, context_length=length, **special)
        elif (root / VOCAB_JSON).is_file() and (root / MERGES_TXT).is_file():
            tok = cls.from_files(root / VOCAB_JSON, root / MERGES_TXT, context_length=length, **special)
        elif (root / BPE_GZ).is_file():
            tok = cls.from_bpe_gz(root / BPE_GZ, context_length=length, **special)
        else:
            raise FileNotFoundError(
                f"no CLIP tokenizer files in {str(root)!r}: looked for {TOKENIZER_JSON}, "
                f"{VOCAB_JSON} + {MERGES_TXT}, {BPE_GZ}"
            )
        logger.info("loaded CLIP tokenizer from %s (vocab %d, context %d)", root, tok.vocab_size, length)
        return tok

    def save(self, directory: str | os.PathLike[str]) -> None:
        """Write ``vocab.json``, ``merges.txt`` and ``tokenizer_config.json`` (Hugging Face layout)."""
        root = Path(directory)
        root.mkdir(parents=True, exist_ok=True)
        (root / VOCAB_JSON).write_text(json.dumps(self.encoder, ensure_ascii=False), encoding="utf-8")
        merges = sorted(self.bpe_ranks, key=self.bpe_ranks.__getitem__)
        lines = ["#version: 0.2"] + [f"{a} {b}" for a, b in merges]
        (root / MERGES_TXT).write_text("\n".join(lines) + "\n", encoding="utf-8")
        config = {
            "bos_token": self.bos_token,
            "eos_token": self.eos_token,
            "pad_token": self.pad_token,
            "unk_token": self.unk_token,
            "model_max_length": self.context_length,
        }
        (root / TOKENIZER_CONFIG_JSON).write_text(json.dumps(config, indent=2), encoding="utf-8")

    # ------------------------------------------------------------------ encoding

    @property
    def vocab_size(self) -> int:
        return len(self.encoder)

    def __len__(self) -> int:
        return len(self.encoder)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(vocab_size={self.vocab_size}, context_length={self.context_length}, "
            f"bos={self.bos_token!r}, eos={self.eos_token!r}, pad={self.pad_token!r})"
        )

    def bpe(self, word: str) -> tuple[str, ...]:
        """Split one byte-encoded word into BPE symbols (the last one carries ``"</w>"``)."""
        cached = self._cache.get(word)
        if cached is not None:
            return cached
        special = self._special_words.get(word)
        if special is not None:
            return special
        symbols = [*word[:-1], word[-1] + END_OF_WORD]
        ranks = self.bpe_ranks
        while len(symbols) > 1:
            pairs = set(zip(symbols, symbols[1:], strict=False))
            best = min(pairs, key=lambda p: ranks.get(p, len(ranks)))
            if best not in ranks:
                break
            first, second = best
            merged: list[str] = []
            i = 0
            while i < len(symbols):
                if i + 1 < len(symbols) and symbols[i] == first and symbols[i + 1] == second:
                    merged.append(first + second)
                    i += 2
                else:
                    merged.append(symbols[i])
                    i += 1
            symbols = merged
        result = tuple(symbols)
        if len(self._cache) >= _MAX_CACHE:
            self._cache.clear()
        self._cache[word] = result
        return result

    def tokenize(self, text: str) -> list[str]:
        """Clean ``text`` and return its BPE token strings."""
        tokens: list[str] = []
        for piece in _PRETOKENIZE.findall(clean_text(text)):
            word = "".join(self.byte_encoder[b] for b in piece.encode("utf-8"))
            tokens.extend(self.bpe(word))
        return tokens

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` without bos/eos; unknown symbols map to the unk id."""
        unk = self.unk_token_id
        return [self.encoder.get(t, unk) for t in self.tokenize(text)]

    def __call__(
        self,
        texts: str | Sequence[str],
        context_length: int | None = None,
        truncate: bool = True,
    ) -> dict[str, torch.Tensor]:
        """Encode a text or a batch to fixed-length ``input_ids`` and ``attention_mask`` (both ``(B, L)`` int64).

        Each row is ``bos + tokens + eos`` padded with the pad id. With ``truncate`` long texts keep bos, the
        first ``L - 2`` tokens and eos; otherwise a text that does not fit raises ``ValueError``.
        """
        if isinstance(texts, str):
            texts = [texts]
        length = self.context_length if context_length is None else int(context_length)
        if length < 2:
            raise ValueError(f"context_length must be >= 2 (bos + eos), got {length}")
        input_ids = torch.full((len(texts), length), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(texts), length), dtype=torch.long)
        for row, text in enumerate(texts):
            ids = self.encode(text)
            if len(ids) + 2 > length:
                if not truncate:
                    raise ValueError(
                        f"text {row} has {len(ids)} tokens + bos/eos = {len(ids) + 2} > context length {length}"
                    )
                ids = ids[: length - 2]
            row_ids = [self.bos_token_id, *ids, self.eos_token_id]
            input_ids[row, : len(row_ids)] = torch.tensor(row_ids, dtype=torch.long)
            attention_mask[row, : len(row_ids)] = 1
        return {"input_ids": input_ids, "attention_mask": attention_mask}

    # ------------------------------------------------------------------ decoding

    def decode(self, ids: Sequence[int] | torch.Tensor, skip_special_tokens: bool = True) -> str:
        """Ids back to text; ``"</w>"`` becomes a space.

        With ``skip_special_tokens`` trailing pad ids and every bos/eos id are dropped. A pad token that is a
        regular symbol (``"!"``) is kept inside the text: a word's last symbol always ends in ``"</w>"``, so
        trailing copies of it can only be padding.
        """
        if isinstance(ids, torch.Tensor):
            ids = ids.reshape(-1).tolist()
        ids = [int(i) for i in ids]
        if skip_special_tokens:
            while ids and ids[-1] == self.pad_token_id:
                ids.pop()
            ids = [i for i in ids if i not in (self.bos_token_id, self.eos_token_id)]
        out = bytearray()
        for i in ids:
            token = self.decoder.get(i)
            if token is None:
                raise ValueError(f"id {i} is outside the vocabulary (size {self.vocab_size})")
            end_of_word = token.endswith(END_OF_WORD)
            if end_of_word:
                token = token[: -len(END_OF_WORD)]
            for ch in token:
                b = self.byte_decoder.get(ch)
                out.extend(ch.encode("utf-8") if b is None else bytes((b,)))
            if end_of_word:
                out.extend(b" ")
        return out.decode("utf-8", errors="replace").strip()

    def batch_decode(
        self, ids: Sequence[Sequence[int]] | torch.Tensor, skip_special_tokens: bool = True
    ) -> list[str]:
        """:meth:`decode` for each row."""
        return [self.decode(row, skip_special_tokens=skip_special_tokens) for row in ids]


def _special_tokens_from(config: Mapping[str, Any]) -> dict[str, str]:
    out = {}
    for key in ("bos_token", "eos_token", "pad_token", "unk_token"):
        token = _token_content(config.get(key))
        if token is not None:
            out[key] = token
    return out
