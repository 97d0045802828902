"""Base-to-new font data for text-conditioned prompt learning: attribute descriptions, client shards, a
small CLIP trained on attribute captions of the base fonts only.

* :func:`font_attributes` reads ``font_attributes.json`` (in this package): per FRB font a list of short
  visual attributes from one shared vocabulary and a few description sentences, and the base/new split
  (:data:`BASE_FONTS`, 8 fonts; :data:`NEW_FONTS`, the other 7). Nothing ever trains on a new font.
* :func:`train_attribute_clip` trains vitkit's CLIP-style model (:func:`vitkit.frb.clip.build_clip`)
  contrastively on ink crops of base-font pages, each paired with an *attribute caption*
  (:func:`attribute_caption`): one description sentence, a random handful of the font's attributes, or
  the plain font-name caption, so that both attribute words and base font names get meaning. Its BPE
  tokenizer is learnt from base-font captions only; unseen words still encode (sub-words or bytes).
* :func:`client_fonts` shards the base fonts over N clients (overlapping, ``per_client`` fonts each) and
  :data:`CLIENT_STYLES` gives each client its own page style (text size, blur, noise, JPEG) — clients
  differ in classes *and* in how their pages look.
* :func:`fixed_crops` cuts a fixed, seeded set of ink-centred crops per page (grey uint8, to keep the
  cached data small); :func:`crops_to_input` turns them into model input.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import Dataset

from .. import frb
from ..frb.clip import TEMPLATE, FRBClipConfig, build_clip, fit_clip, train_bpe
from ..frb.ink import InkCropDataset, to_model_input
from ..models.clip import CLIP
from ..models.tokenizer import CLIPTokenizer

log = logging.getLogger(__name__)

ATTRIBUTES_FILE = Path(__file__).resolve().parent / "font_attributes.json"
SPLITS = ("base", "new")


@dataclass(frozen=True)
class FontAttributes:
    name: str  # the FRB font name (class name)
    split: str  # "base" (trained on) or "new" (test only)
    attributes: tuple[str, ...]  # short phrases, shared vocabulary across fonts
    description: tuple[str, ...]  # a few sentences: the class's text for FedMVP


@lru_cache(maxsize=4)
def font_attributes(path: str | None = None) -> dict[str, FontAttributes]:
    """{font name: FontAttributes} for all 15 FRB fonts, in FRB label order."""
    p = Path(path) if path else ATTRIBUTES_FILE
    try:
        data = json.loads(p.read_text(encoding="utf-8"))["fonts"]
    except (OSError, ValueError, KeyError) as e:
        raise ValueError(f"{p}: cannot read font attributes ({e}); it must be JSON with a 'fonts' object") from e
    missing = [n for n in frb.FONT_NAMES if n not in data]
    if missing:
        raise ValueError(f"{p}: no attributes for FRB font(s) {missing}")
    out = {}
    for name in frb.FONT_NAMES:
        d = data[name]
        if d.get("split") not in SPLITS or not d.get("attributes") or not d.get("description"):
            raise ValueError(f"{p}: font {name!r} needs 'split' in {SPLITS}, non-empty 'attributes' and 'description'")
        out[name] = FontAttributes(name, d["split"], tuple(d["attributes"]), tuple(d["description"]))
    return out


BASE_FONTS: tuple[str, ...] = tuple(n for n, a in font_attributes().items() if a.split == "base")
NEW_FONTS: tuple[str, ...] = tuple(n for n, a in font_attributes().items() if a.split == "new")


def descriptions(fonts: Sequence[str]) -> list[list[str]]:
    """Description sentences of each font; every font gets the same number S (the shortest list's)."""
    attrs = font_attributes()
    lists = [list(attrs[f].description) for f in fonts]
    s = min(len(x) for x in lists)
    return [x[:s] for x in lists]


def attribute_caption(font: str, rng: random.Random) -> str:
    """One training caption for ``font``: a description sentence (40%), 2-4 of its attributes (40%) or
    the font-name caption (20%)."""
    a = font_attributes()[font]
    u = rng.random()
    if u < 0.4:
        return rng.choice(a.description)
    if u < 0.8:
        picked = rng.sample(list(a.attributes), k=min(len(a.attributes), rng.randint(2, 4)))
        return "a font with " + ", ".join(picked)
    return TEMPLATE.format(font)


def caption_vocabulary(fonts: Sequence[str]) -> list[str]:
    """Words of every caption the given fonts can get, weighted roughly by how often they occur."""
    import regex

    words: list[str] = []
    attrs = font_attributes()
    for f in fonts:
        text = " ".join(attrs[f].description) + " " + " ".join(attrs[f].attributes) * 2 + " " + TEMPLATE.format(f) * 2
        words += regex.findall(r"\p{L}+", text)
    return words + ["a", "font", "with"] * 20


def attribute_tokenizer(fonts: Sequence[str] = BASE_FONTS, merges: int = 300, context_length: int = 40) -> CLIPTokenizer:
    vocab, m = train_bpe(caption_vocabulary(fonts), merges)
    return CLIPTokenizer(vocab, m, context_length=context_length)


@dataclass
class AttributeClipConfig:
    """The small CLIP: sizes (kept tiny so federated clients can run it on one CPU core) and training."""

    crop: int = 64  # crop side in pixels (a few glyphs at FRB's text sizes)
    patch: int = 8  # 8×8 patches → 64 patch tokens
    dim: int = 64  # vision width
    depth: int = 4  # vision blocks
    heads: int = 4
    text_width: int = 64
    text_depth: int = 2
    text_heads: int = 4
    embed_dim: int = 64  # joint embedding width
    context_length: int = 40  # the longest description sentence fits
    bpe_merges: int = 300
    steps: int = 800
    batch_size: int = 64
    lr: float = 2e-3
    seed: int = 0
    progress: bool = False

    def frb_config(self) -> FRBClipConfig:
        return FRBClipConfig(crop=self.crop, patch=self.patch, dim=self.dim, depth=self.depth, heads=self.heads,
                             text_width=self.text_width, text_depth=self.text_depth, text_heads=self.text_heads,
                             embed_dim=self.embed_dim, context_length=self.context_length, bpe_merges=self.bpe_merges,
                             steps=self.steps, batch_size=self.batch_size, lr=self.lr, seed=self.seed,
                             fonts=BASE_FONTS, progress=self.progress)


class AttributeCaptionedCrops(Dataset):
    """Items (crop (3, S, S), font index (), caption ids (L,)); the caption of item i is drawn with a
    generator seeded by (seed, i), so the data depend on the seed only."""

    def __init__(self, crops: InkCropDataset, fonts: Sequence[str], tokenizer: CLIPTokenizer, seed: int) -> None:
        self.crops, self.fonts, self.tok, self.seed = crops, list(fonts), tokenizer, seed

    def __len__(self) -> int:
        return len(self.crops)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor, Tensor]:
        crop, y = self.crops[i]
        caption = attribute_caption(self.fonts[int(y)], random.Random(self.seed * 1_000_003 + i))
        return crop, y, self.tok([caption])["input_ids"][0]


def train_attribute_clip(cfg: AttributeClipConfig, pages: Tensor, labels: Tensor, out_dir: str | Path) -> CLIP:
    """Train on grey pages (P, 1, H, W) whose labels index :data:`BASE_FONTS`; returns the CLIP (eval)."""
    if int(labels.max()) >= len(BASE_FONTS):
        raise ValueError(f"labels must index the {len(BASE_FONTS)} base fonts, got a label {int(labels.max())}")
    torch.manual_seed(cfg.seed)
    tok = attribute_tokenizer(BASE_FONTS, cfg.bpe_merges, cfg.context_length)
    clip = build_clip(cfg.frb_config(), tok)
    crops = InkCropDataset(pages, labels, size=cfg.crop, crops_per_page=max(2, -(-cfg.steps * cfg.batch_size // len(pages))),
                           seed=cfg.seed)
    ds = AttributeCaptionedCrops(crops, BASE_FONTS, tok, cfg.seed)
    return fit_clip(clip, ds, steps=cfg.steps, batch_size=cfg.batch_size, lr=cfg.lr, seed=cfg.seed,
                    progress=cfg.progress, out_dir=out_dir, log_every=max(1, cfg.steps // 10))


@torch.no_grad()
def description_features(clip: CLIP, fonts: Sequence[str]) -> Tensor:
    """(K, S, D) normalised text embeddings of each font's description sentences."""
    desc = descriptions(fonts)
    flat = [s for d in desc for s in d]
    z = clip.encode_text(clip.tokenize(flat).to(clip.logit_scale.device), normalize=True)
    return z.view(len(fonts), len(desc[0]), -1)


# ============================================================================================ clients
#: Page style of client c (``CLIENT_STYLES[c % len]``): keyword arguments of :func:`frb.train_sample`.
CLIENT_STYLES: tuple[dict, ...] = (
    {"size_range": (28, 38), "blur": 0.3, "noise": 2.0, "jpeg_prob": 0.2},  # small, clean text
    {"size_range": (42, 52), "noise": 10.0},  # large, noisy scans
    {"size_range": (30, 50), "blur": 1.6},  # blurred
    {"size_range": (34, 46), "jpeg_prob": 1.0, "jpeg_quality": (30, 60)},  # heavy JPEG
    {},  # FRB's default augmentation
)


def client_fonts(num_clients: int, fonts: Sequence[str] = BASE_FONTS, per_client: int | None = None) -> list[list[str]]:
    """Client c holds ``per_client`` (default half) consecutive fonts from position round(c·F/N), wrapping."""
    F_ = len(fonts)
    if num_clients < 1:
        raise ValueError(f"need at least one client, got {num_clients}")
    k = per_client or max(2, (F_ + 1) // 2)
    return [[fonts[(round(c * F_ / num_clients) + j) % F_] for j in range(min(k, F_))] for c in range(num_clients)]


def client_samples(fonts: Sequence[str], pages_per_font: int, client: int, seed: int) -> list[frb.FRBSample]:
    """Training pages of one client: ``pages_per_font`` pages of each of its fonts, in its page style
    (``frb.train_split`` samples of a client-specific seed, filtered to its fonts)."""
    style = CLIENT_STYLES[client % len(CLIENT_STYLES)]
    need = {f: pages_per_font for f in fonts}
    out: list[frb.FRBSample] = []
    i = 0
    stream_seed = 1000 * (seed + 1) + client
    while any(need.values()):
        # labels are balanced in blocks of 15: the font of sample i is known before rendering it
        s = frb.train_sample(i, stream_seed, split="train", **style)
        if need.get(s.font, 0) > 0:
            out.append(s)
            need[s.font] -= 1
        i += 1
    return out


def fixed_crops(pages: Tensor, per_page: int, size: int, seed: int) -> Tensor:
    """(P, 1, H, W) normalised grey pages → (P·per_page, 1, S, S) uint8 ink-centred crops, page-major."""
    ds = InkCropDataset(pages, torch.zeros(len(pages), dtype=torch.long), size=size, crops_per_page=per_page, seed=seed)
    crops = torch.stack([ds[i][0][:1] for i in range(len(ds))])  # (N, 1, S, S) in [-1, 1]
    return ((crops + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)


def crops_to_input(crops: Tensor) -> Tensor:
    """uint8 grey crops (N, 1, S, S) → model input (N, 3, S, S) in [-1, 1]."""
    return to_model_input(crops.float() / 255.0)


__all__ = [
    "ATTRIBUTES_FILE",
    "AttributeClipConfig",
    "BASE_FONTS",
    "CLIENT_STYLES",
    "FontAttributes",
    "NEW_FONTS",
    "attribute_caption",
    "attribute_tokenizer",
    "caption_vocabulary",
    "client_fonts",
    "client_samples",
    "crops_to_input",
    "description_features",
    "descriptions",
    "fixed_crops",
    "font_attributes",
    "train_attribute_clip",
]
