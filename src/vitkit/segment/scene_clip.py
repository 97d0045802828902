"""A small CLIP trained on scene captions: the text tower that gives VPL its class text prototypes.

Real CLIPs cannot be downloaded here, so vitkit trains its own the way :mod:`vitkit.adapt.frb_clip`
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

from ..adapt.frb_clip import train_bpe
from ..engine import TrainConfig, Trainer
from ..models.clip import CLIP, CLIPConfig, TextConfig, text_classifier_weights
from ..models.tokenizer import CLIPTokenizer
from ..models.vit import ViTConfig

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


def soft_clip_loss(logits: Tensor, keys: Tensor) -> Tensor:
    """Symmetric cross-entropy of image↔text logits (B, B), every pair with the same class set a positive."""
    same = (keys[:, None] == keys[None, :]).float()
    target = same / same.sum(1, keepdim=True)
    return 0.5 * ((-target * logits.log_softmax(1)).sum(1).mean() + (-target * logits.t().log_softmax(1)).sum(1).mean())


def train_scene_clip(images: Tensor, multi_hot: Tensor, class_names: Sequence[str], cfg: SceneClipConfig,
                     out_dir: str | Path, *, progress: bool = False, resume: bool = False) -> CLIP:
    """Train the small CLIP on uint8 images (N, H, W, 3) and their multi-hot labels (N, C)."""
    torch.manual_seed(cfg.seed)
    tok = scene_tokenizer(class_names, cfg)
    size = images.shape[1]
    vision = ViTConfig(img_size=(size, size), patch_size=cfg.patch, embed_dim=cfg.dim, depth=cfg.depth,
                       num_heads=cfg.heads, proj_dim=cfg.embed_dim, pre_norm=True, family="clip")
    text = TextConfig(vocab_size=tok.vocab_size, context_length=cfg.context_length, width=cfg.text_width,
                      depth=cfg.text_depth, num_heads=cfg.text_heads, proj_dim=cfg.embed_dim,
                      eos_token_id=tok.eos_token_id)
    clip = CLIP(CLIPConfig(vision, text))
    clip.tokenizer = tok
    ds = CaptionedScenes(images, multi_hot, class_names, tok, seed=cfg.seed)

    def loss_fn(model: CLIP, batch: Sequence[Tensor]) -> Tensor:
        img, keys, ids = batch
        logits, _ = model(img, ids)
        return soft_clip_loss(logits, keys)

    tcfg = TrainConfig(epochs=10**6, max_steps=cfg.steps, batch_size=cfg.batch_size, lr=cfg.lr,
                       warmup_steps=max(1, cfg.steps // 20), weight_decay=0.05, label_smoothing=0.0,
                       out_dir=str(out_dir), progress=progress, ckpt_every=max(1, cfg.steps // 4),
                       log_every=max(1, cfg.steps // 10), seed=cfg.seed)
    Trainer(clip, ds, tcfg, loss_fn=loss_fn).fit(resume=resume)
    return clip.eval()


@torch.no_grad()
def text_prototypes(clip: CLIP, class_names: Sequence[str], templates: Sequence[str] = TEMPLATES) -> Tensor:
    """(C, E) L2-normalised class text embeddings averaged over ``templates``."""
    return text_classifier_weights(clip, list(class_names), list(templates))
