"""A small CLIP trained on scene captions: the text tower that gives VPL its class text prototypes.

Real CLIPs cannot be downloaded here, so vitkit trains its own the way :mod:`vitkit.frb.clip`
does for fonts: scene images (:mod:`vitkit.data.scenes`) paired with captions naming their classes
in a random order ("a photo of a boat and a fish."), a byte-level BPE learnt from the caption
words, and a contrastive loss whose soft targets count every caption of the same class set as a
positive. Text prototypes are then the text embeddings of "a photo of a {class}." (and a few more
templates), as CLIP-based WSSS methods take them. A user's real CLIP (``vitkit.load``) works the same.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from ..frb.clip import build_clip, fit_clip, train_bpe
from ..models.clip import CLIP, text_classifier_weights
from ..models.tokenizer import CLIPTokenizer

log = logging.getLogger(__name__)

TEMPLATES = ("a photo of a {}.", "a picture with a {}.", "a {} in a scene.")


@dataclass
class SceneClipConfig:
    """The small CLIP's size and training; the defaults train in about a minute on one core."""

    patch: int = 8  # image tower patch size (the images are the WSSS run's)
    dim: int = 64  # image tower width
    depth: int = 3
    heads: int = 4
    text_width: int = 64
    text_depth: int = 2
    text_heads: int = 4
    embed_dim: int = 64  # joint embedding size
    context_length: int = 24  # enough for "a photo of a mushroom, a bottle and a lamp."
    bpe_merges: int = 120  # the caption vocabulary is tiny
    steps: int = 300
    batch_size: int = 64
    lr: float = 2e-3
    seed: int = 0


def caption(names: Sequence[str], order: Sequence[int]) -> str:
    """"a photo of a boat, a fish and a tree." with the names in ``order``."""
    items = [f"a {names[i]}" for i in order]
    body = items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]
    return f"a photo of {body}."


def scene_tokenizer(class_names: Sequence[str], cfg: SceneClipConfig) -> CLIPTokenizer:
    """BPE learnt from the caption and template words (each template word ×20, class names ×10)."""
    words = []
    for t in (*TEMPLATES, "a photo of a and"):
        words += t.replace("{}", "").replace(".", " ").replace(",", " ").split() * 20
    for n in class_names:
        words += n.split() * 10
    vocab, merges = train_bpe(words, cfg.bpe_merges)
    return CLIPTokenizer(vocab, merges, context_length=cfg.context_length)


class CaptionedScenes(Dataset):
    """(image float (3, H, W) in [0, 1], label-set id (), caption ids (L,)) over uint8 images (N, H, W, 3)."""

    def __init__(self, images: Tensor, multi_hot: Tensor, class_names: Sequence[str], tokenizer: CLIPTokenizer,
                 seed: int = 0) -> None:
        self.images = images
        rng = np.random.default_rng(seed)
        texts, keys = [], []
        for row in multi_hot.numpy():
            present = np.flatnonzero(row)
            texts.append(caption(class_names, rng.permutation(present).tolist()))
            keys.append(int(sum(1 << int(i) for i in present)))
        self.ids = tokenizer(texts)["input_ids"]
        self.keys = torch.tensor(keys)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return self.images[i].permute(2, 0, 1).float() / 255.0, self.keys[i], self.ids[i]


def train_scene_clip(images: Tensor, multi_hot: Tensor, class_names: Sequence[str], cfg: SceneClipConfig,
                     out_dir: str | Path, *, progress: bool = False, resume: bool = False) -> CLIP:
    """Train the small CLIP on uint8 images (N, H, W, 3) and their multi-hot labels (N, C)."""
    torch.manual_seed(cfg.seed)
    clip = build_clip(cfg, scene_tokenizer(class_names, cfg), img_size=images.shape[1])
    ds = CaptionedScenes(images, multi_hot, class_names, clip.tokenizer, seed=cfg.seed)
    # items are (image, class-set key, caption ids): same-key pairs are positives of the soft CLIP loss
    return fit_clip(clip, ds, steps=cfg.steps, batch_size=cfg.batch_size, lr=cfg.lr, seed=cfg.seed, progress=progress,
                    out_dir=out_dir, log_every=max(1, cfg.steps // 10), epochs=10**6,
                    ckpt_every=max(1, cfg.steps // 4), resume=resume)


@torch.no_grad()
def text_prototypes(clip: CLIP, class_names: Sequence[str], templates: Sequence[str] = TEMPLATES) -> Tensor:
    """(C, E) L2-normalised class text embeddings averaged over ``templates``."""
    return text_classifier_weights(clip, list(class_names), list(templates))
