"""A small CLIP-style model trained on FRB image/text pairs: the frozen CLIP for CoOp and M-Tuning.

Images are ink-centred crops of rendered pages (as the demo's classifier sees them); each crop's
caption names its font — ``"text written in the {font} font"`` or, for half of the crops, the first
words of the page's text before it (``"'{words}' written in the {font} font"``). Training is
contrastive with soft targets: every caption of the same font counts as a positive, since a batch
holds many crops of each font (plain CLIP would push identical captions apart). Only the fonts
passed in are seen (the open-set split trains on ``vitkit.frb.KNOWN_FONTS``).

The tokenizer is a byte-level BPE (CLIP's algorithm, :class:`vitkit.models.tokenizer.CLIPTokenizer`)
with merges learnt here from the caption vocabulary (:func:`train_bpe`), so any word still encodes
(into sub-words or bytes). Pages are embedded by averaging the crop embeddings over their ink tiles
(:func:`page_features`).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..engine import TrainConfig, Trainer
from ..models.clip import CLIP, CLIPConfig, TextConfig
from ..models.tokenizer import BOS_TOKEN, END_OF_WORD, EOS_TOKEN, CLIPTokenizer, bytes_to_unicode
from ..models.vit import ViTConfig
from .classifier import TiledClassifier
from .fontset import FONT_NAMES, KNOWN_FONTS
from .ink import InkCropDataset
from .training import TRAINING_WORDS

log = logging.getLogger(__name__)

TEMPLATE = "text written in the {} font"


@dataclass
class FRBClipConfig:
    crop: int = 96
    patch: int = 12
    dim: int = 96
    depth: int = 4
    heads: int = 3
    text_width: int = 64
    text_depth: int = 2
    text_heads: int = 4
    embed_dim: int = 64
    context_length: int = 32
    bpe_merges: int = 300
    steps: int = 1200
    batch_size: int = 64
    lr: float = 2e-3
    seed: int = 0
    fonts: tuple[str, ...] = field(default_factory=lambda: tuple(KNOWN_FONTS))
    progress: bool = False


def train_bpe(words: Iterable[str], num_merges: int) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Byte-level BPE on a word list (lower-cased): → (vocab, merges) for :class:`CLIPTokenizer`.

    Vocabulary: the 256 byte symbols, the same with ``</w>``, the merge results, then
    ``<|startoftext|>`` and ``<|endoftext|>`` (the largest id, CLIP's convention). Ties between equally
    frequent pairs go to the smallest pair, so the result depends on the words only.
    """
    enc = bytes_to_unicode()
    counts = Counter(w.lower() for w in words if w)
    seqs = {}
    for w, n in counts.items():
        sym = [enc[b] for b in w.encode("utf-8")]
        sym[-1] += END_OF_WORD
        seqs[tuple(sym)] = seqs.get(tuple(sym), 0) + n
    base = list(enc.values())
    vocab_list = base + [b + END_OF_WORD for b in base]
    merges: list[tuple[str, str]] = []
    for _ in range(num_merges):
        pairs: Counter = Counter()
        for s, n in seqs.items():
            for p in zip(s, s[1:], strict=False):
                pairs[p] += n
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], p))
        merges.append(best)
        vocab_list.append(best[0] + best[1])
        new = {}
        for s, n in seqs.items():
            out, i = [], 0
            while i < len(s):
                if i + 1 < len(s) and (s[i], s[i + 1]) == best:
                    out.append(s[i] + s[i + 1])
                    i += 2
                else:
                    out.append(s[i])
                    i += 1
            new[tuple(out)] = new.get(tuple(out), 0) + n
        seqs = new
    vocab_list += [BOS_TOKEN, EOS_TOKEN]
    return {t: i for i, t in enumerate(dict.fromkeys(vocab_list))}, merges


def caption_words() -> list[str]:
    """Words the captions use, about as often as they do: the template (×50), every font name (×20),
    FRB's training words (×1)."""
    import regex

    def words(text: str) -> list[str]:
        return regex.findall(r"\p{L}+", text)

    return (words(TEMPLATE.format("")) * 50 + words(" ".join(FONT_NAMES)) * 20
            + words(" ".join(TRAINING_WORDS)))


def font_tokenizer(cfg: FRBClipConfig) -> CLIPTokenizer:
    vocab, merges = train_bpe(caption_words(), cfg.bpe_merges)
    return CLIPTokenizer(vocab, merges, context_length=cfg.context_length)


def build_clip(cfg, tokenizer: CLIPTokenizer, img_size: int | None = None) -> CLIP:
    """A small CLIP sized by ``cfg`` (:class:`FRBClipConfig` or any config with its tower fields) for
    ``img_size``-px images (default ``cfg.crop``), with ``tokenizer`` attached."""
    size = img_size or cfg.crop
    vision = ViTConfig(img_size=(size, size), patch_size=cfg.patch, embed_dim=cfg.dim, depth=cfg.depth,
                       num_heads=cfg.heads, proj_dim=cfg.embed_dim, pre_norm=True, family="clip")
    text = TextConfig(vocab_size=tokenizer.vocab_size, context_length=cfg.context_length, width=cfg.text_width,
                      depth=cfg.text_depth, num_heads=cfg.text_heads, proj_dim=cfg.embed_dim,
                      eos_token_id=tokenizer.eos_token_id)
    clip = CLIP(CLIPConfig(vision, text))
    clip.tokenizer = tokenizer
    return clip


class CaptionedCrops(InkCropDataset):
    """Items (crop (3, S, S), font index (), caption ids (L,)): even items get the plain caption,
    odd ones the page's first words before it."""

    def __init__(self, pages: Tensor, labels: Tensor, texts: Sequence[str], fonts: Sequence[str],
                 tokenizer: CLIPTokenizer, **kw) -> None:
        super().__init__(pages, labels, **kw)
        if len(texts) != len(pages):
            raise ValueError(f"{len(pages)} pages but {len(texts)} texts")
        plain = [TEMPLATE.format(fonts[int(y)]) for y in labels]
        worded = [f"'{' '.join(t.split()[:3])}' written in the {fonts[int(y)]} font" for t, y in zip(texts, labels, strict=True)]
        self.ids = torch.stack([tokenizer(plain)["input_ids"], tokenizer(worded)["input_ids"]], 1)  # (P, 2, L)

    def __getitems__(self, indices: Sequence[int]) -> list[tuple[Tensor, Tensor, Tensor]]:
        # the base class builds item i (and a whole batch) here; its __getitem__ comes back through this
        crops = super().__getitems__(indices)
        return [(crop, y, self.ids[i // self.k, i % 2]) for (crop, y), i in zip(crops, indices, strict=True)]


def soft_clip_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Symmetric cross-entropy of image↔text logits (B, B) with every same-label pair a positive."""
    same = (labels[:, None] == labels[None, :]).float()
    target = same / same.sum(1, keepdim=True)
    return 0.5 * (torch.sum(-target * logits.log_softmax(1), 1).mean() + torch.sum(-target * logits.t().log_softmax(1), 1).mean())


def train_frb_clip(cfg: FRBClipConfig, pages: Tensor, labels: Tensor, texts: Sequence[str],
                   out_dir: str | Path = "runs/frb_clip") -> CLIP:
    """Train the CLIP-style model on grey pages (P, 1, H, W) whose labels index ``cfg.fonts``."""
    torch.manual_seed(cfg.seed)
    tok = font_tokenizer(cfg)
    clip = build_clip(cfg, tok)
    n = len(pages)
    ds = CaptionedCrops(pages, labels, texts, cfg.fonts, tok, size=cfg.crop,
                        crops_per_page=max(2, -(-cfg.steps * cfg.batch_size // n)), seed=cfg.seed)
    return fit_clip(clip, ds, steps=cfg.steps, batch_size=cfg.batch_size, lr=cfg.lr, seed=cfg.seed,
                    progress=cfg.progress, out_dir=out_dir)


def fit_clip(clip: CLIP, dataset, *, steps: int, batch_size: int, lr: float, seed: int, progress: bool,
             out_dir: str | Path, log_every: int | None = None, epochs: int = 1, ckpt_every: int = 10**9,
             resume: bool = False) -> CLIP:
    """Train ``clip`` with the soft CLIP loss on ``dataset`` items (image (3, S, S), label, token ids (T,));
    AdamW with warm-up and cosine for ``steps`` steps (over up to ``epochs`` passes), the logit scale
    clamped to 100 at the end. Returns it in eval mode."""

    def loss_fn(model: CLIP, batch: Sequence[Tensor]) -> Tensor:
        img, y, ids = batch
        logits, _ = model(img, ids)
        return soft_clip_loss(logits, y)

    tcfg = TrainConfig(epochs=epochs, max_steps=steps, batch_size=batch_size, lr=lr,
                       warmup_steps=max(1, steps // 20), weight_decay=0.05, label_smoothing=0.0,
                       out_dir=str(out_dir), progress=progress, ckpt_every=ckpt_every,
                       log_every=log_every or max(1, steps // 20), seed=seed)
    Trainer(clip, dataset, tcfg, loss_fn=loss_fn).fit(resume=resume)
    with torch.no_grad():
        clip.logit_scale.clamp_(0, np.log(100))
    return clip.eval()


@torch.no_grad()
def page_features(clip: CLIP, pages: Tensor, crop: int | None = None, batch: int = 32) -> Tensor:
    """Pages (P, 3 or 1, H, W) in [0, 1] → (P, D): mean of the ink tiles' image embeddings."""
    crop = crop or clip.visual.cfg.img_size[0]
    tiled = TiledClassifier(clip.visual, size=crop, stride=crop // 2).eval()
    if pages.shape[1] == 1:
        pages = pages.expand(-1, 3, -1, -1)
    return torch.cat([tiled.embed(pages[i : i + batch]) for i in range(0, len(pages), batch)])


__all__ = ["FRBClipConfig", "TEMPLATE", "build_clip", "font_tokenizer", "page_features", "soft_clip_loss",
           "train_bpe", "train_frb_clip"]
