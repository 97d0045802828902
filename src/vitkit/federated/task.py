"""What a federated site computes, in plain PyTorch (no Flower here): the run's config, the data bundle,
local training and evaluation for FedMVP, FedCoOp and local-only prompts.

The *bundle* is a folder written once before a run (:func:`prepare_bundle`): the frozen CLIP (trained on
attribute captions of the base fonts, :func:`vitkit.adapt.fedfonts.train_attribute_clip`), each client's
training crops in its own fonts and page style, with the frozen CLIP's features of the crops and of their
horizontal flips (the CLIP never changes, so a site computes them once), the description embeddings of all
15 fonts and the test crops (FRB easy + hard pages, ``test_crops`` ink crops each). Every process of a run
(simulation actors, SuperNode ClientApps, the ServerApp) reads the same bundle from disk.

Metrics (FedTPG / FedMVP's base-to-new protocol): **local** = a client's test pages of its own fonts,
classified among its own fonts; **base** = test pages of all base fonts among the base fonts; **new** =
test pages of the new fonts among the new fonts (never trained on); **hm** = harmonic mean of the three.
A page's prediction is the argmax of its crops' mean softmax.
"""

from __future__ import annotations

import copy
import json
import logging
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from .. import frb
from ..adapt import fedfonts as ff
from ..adapt.promptformer import FedMVP, MomentumSGD, PromptFormerConfig, cosine_lr, train_fedmvp
from ..adapt.prompts import CoOp, CoOpConfig
from ..models.clip import CLIP

log = logging.getLogger(__name__)

METHODS = ("fedmvp", "fedcoop", "local")
STRATEGIES = ("fedavg", "fedmedian", "fedtrimmedavg", "krum")


@dataclass
class FedConfig:
    """One federated run. Serialised to JSON and read by every process of the run."""

    bundle: str = "runs/federated/bundle"  # folder written by prepare_bundle
    out: str = "runs/federated/run"  # where the ServerApp writes result.json
    method: str = "fedmvp"  # fedmvp | fedcoop (CoOp context averaged) | local (FedMVP generator, never shared)
    strategy: str = "fedavg"  # Flower strategy: fedavg | fedmedian | fedtrimmedavg | krum
    clients: int = 5
    rounds: int = 10
    local_steps: int = 10  # optimiser steps per round (one pass over ≈ 300 crops at batch 32)
    batch_size: int = 32
    lr: float = 0.003  # SGD learning rate (paper: 0.003, momentum 0.9, cosine over all rounds)
    momentum: float = 0.9
    seed: int = 0
    n_ctx: int = 4  # FedCoOp context tokens
    lora_rank: int = 0  # FedMVP: rank-8 LoRA on the cross-attention when > 0
    alpha: float = 10.0  # FedMVP: weight of the flip-consistency loss (paper: 10)
    trimmed_beta: float = 0.2  # FedTrimmedAvg: fraction cut at each end
    krum_malicious: int = 1  # Krum: assumed number of malicious clients
    dropout: float = 0.0  # probability that a client drops out of a round (fails before training)
    kill_client: int = -1  # partition id of a client that dies mid-round (-1 = none)
    kill_round: int = 0  # the round in which it dies (it stays dead)
    poison_client: int = -1  # partition id of a poisoned client (-1 = none)
    poison_scale: float = 1.0  # it returns global + scale · (its update); −4 = sign-flipped and scaled
    round_timeout: float = 600.0  # seconds the server waits for a round's replies (a dead site never answers)
    processes: bool = False  # set by the process runner: the kill is done from outside (SIGKILL)
    extra: dict = field(default_factory=dict)  # free-form notes carried into result.json

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"FedConfig.method must be one of {METHODS}, got {self.method!r}")
        if self.strategy not in STRATEGIES:
            raise ValueError(f"FedConfig.strategy must be one of {STRATEGIES}, got {self.strategy!r}")
        for name in ("clients", "rounds", "local_steps", "batch_size", "n_ctx"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"FedConfig.{name} must be ≥ 1, got {getattr(self, name)!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"FedConfig.dropout must be in [0, 1), got {self.dropout!r}")

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(self), indent=1))
        return path

    @classmethod
    def load(cls, path: str | Path) -> FedConfig:
        try:
            d = json.loads(Path(path).read_text())
        except (OSError, ValueError) as e:
            raise ValueError(f"{path}: not a readable federated run config ({e})") from e
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"{path}: unknown keys {sorted(unknown)} in the federated run config")
        return cls(**d)


@dataclass
class BundleConfig:
    """Sizes of the data bundle (kept small: a shared 2-core CPU runs every client)."""

    clients: int = 5
    pages_per_font: int = 16  # training pages per font per client
    crops_per_page: int = 12  # fixed training crops per page
    test_crops: int = 4  # ink crops per test page (page prediction = mean softmax)
    clip: ff.AttributeClipConfig = field(default_factory=ff.AttributeClipConfig)
    clip_pages_per_font: int = 40  # base-font pages the CLIP is trained on (its own seed stream)
    test_pages_per_font: int = 0  # 0 = all 25 FRB easy + hard pages per font; fewer for quick tests
    seed: int = 0
    clip_source: str = ""  # where a CLIP passed to prepare_bundle came from ("" = the small CLIP trained here)


# ============================================================================================ bundle
def _pages(samples: list[frb.FRBSample], fonts: tuple[str, ...] | list[str]) -> tuple[Tensor, Tensor]:
    """Grey normalised pages (P, 1, H, W) and labels (indices into ``fonts``). The benchmark's pages are cut to
    their text and differ in size, so they are padded to one canvas around their ink (the crops are ink-centred)."""
    from ..frb.pages import frb_pages

    return frb_pages(samples, list(fonts))


@torch.no_grad()
def _features(clip: CLIP, crops: Tensor, flip: bool = False, batch: int = 256) -> Tensor:
    out = []
    for i in range(0, len(crops), batch):
        x = ff.crops_to_input(crops[i : i + batch])
        out.append(clip.encode_image(x.flip(-1) if flip else x))
    return torch.cat(out)


def prepare_bundle(cfg: BundleConfig, out: str | Path, clip: CLIP | None = None) -> Path:
    """Write the bundle folder (CLIP + data.pt); returns ``out``. A given ``clip`` (e.g. from :func:`load_clip`)
    is saved into the bundle; without one, a CLIP already saved there is reused, else the small one is trained."""
    import vitkit

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    clip_dir = out / "clip"
    if clip is not None:
        # every process of a run loads the CLIP from the bundle, so it must be the one the features came from
        clip = clip.eval()
        vitkit.save(clip, clip_dir)
        log.info("bundle: CLIP %s saved to %s", cfg.clip_source or "(given)", clip_dir)
    elif (clip_dir / "model.safetensors").exists():
        clip = vitkit.load(clip_dir).eval()
        log.info("bundle: CLIP reused from %s", clip_dir)
    else:
        samples = ff.client_samples(ff.BASE_FONTS, cfg.clip_pages_per_font, client=len(ff.CLIENT_STYLES) - 1,
                                    seed=10_000 + cfg.seed)  # FRB's default style, a stream no client uses
        pages, labels = _pages(samples, ff.BASE_FONTS)
        clip = ff.train_attribute_clip(cfg.clip, pages, labels, out / "clip_train")
        vitkit.save(clip, clip_dir)
    clip.requires_grad_(False)
    S = cfg.clip.crop
    clients = []
    for c, fonts in enumerate(ff.client_fonts(cfg.clients)):
        samples = ff.client_samples(fonts, cfg.pages_per_font, c, cfg.seed)
        pages, labels = _pages(samples, fonts)
        crops = ff.fixed_crops(pages, cfg.crops_per_page, S, seed=cfg.seed * 100 + c)
        clients.append({"fonts": fonts, "crops": crops, "labels": labels.repeat_interleave(cfg.crops_per_page),
                        "features": _features(clip, crops), "flip_features": _features(clip, crops, flip=True)})
        log.info("bundle: client %d: %d pages of %s → %d crops", c, len(samples), fonts, len(crops))
    if cfg.test_pages_per_font:  # the first easy sentences (then font names) of every font, rendered as FRB does
        texts = (frb.EASY_SENTENCES + frb.FONT_NAMES)[: cfg.test_pages_per_font]
        test = [frb.FRBSample(frb.render_text(t, y), y, name, t, "test") for y, name in enumerate(frb.FONT_NAMES)
                for t in texts]
    else:
        test = frb.easy_split() + frb.hard_split()
    pages, labels = _pages(test, frb.FONT_NAMES)
    crops = ff.fixed_crops(pages, cfg.test_crops, S, seed=99)
    data = {
        "clients": clients,
        "test": {"crops": crops, "labels": labels, "per_page": cfg.test_crops, "features": _features(clip, crops)},
        "text": ff.description_features(clip, frb.FONT_NAMES),  # (15, S, D), FRB label order
        "fonts": list(frb.FONT_NAMES),
        "base": list(ff.BASE_FONTS),
        "new": list(ff.NEW_FONTS),
        "config": {k: v for k, v in asdict(cfg).items() if k != "clip"} | {"clip": asdict(cfg.clip)},
    }
    torch.save(data, out / "data.pt")
    return out


def load_clip(source: str, crop: int = 64) -> CLIP:
    """A frozen CLIP for a bundle from anything :func:`vitkit.load` accepts (a saved folder, a weights file,
    ``hf-hub:org/name``, ``pretrained:NAME``). Raises a one-line ``ValueError`` naming ``source`` when it cannot
    be loaded, is not a CLIP with a tokenizer, or cannot encode a ``crop``-pixel crop and a font description."""
    import vitkit

    try:
        clip = vitkit.load(source)
    except (OSError, ValueError, RuntimeError, ImportError) as e:
        raise ValueError(f"CLIP source {source!r} cannot be loaded: {e}") from e
    if not isinstance(clip, CLIP):
        raise ValueError(f"CLIP source {source!r} is a {type(clip).__name__}, not a CLIP (image and text towers): "
                         "pass a CLIP checkpoint (a folder saved by vitkit.save, a Hugging Face or open_clip CLIP)")
    if clip.tokenizer is None:
        raise ValueError(f"CLIP source {source!r} has no tokenizer files, so the font descriptions cannot be encoded: "
                         "pass a checkpoint folder that has them (vitkit.save writes a CLIP's tokenizer)")
    clip.requires_grad_(False)
    try:  # the two things a bundle asks of it, on the smallest input, so a misfit fails here and not mid-bundle
        with torch.no_grad():
            clip.encode_image(ff.crops_to_input(torch.zeros(1, 1, crop, crop, dtype=torch.uint8)))
            ff.description_features(clip, ff.BASE_FONTS[:1])
    except (RuntimeError, ValueError, KeyError) as e:
        raise ValueError(f"CLIP source {source!r} cannot encode {crop}-px font crops and font descriptions ({e}): "
                         f"pass a CLIP whose patch size is at most {crop}") from e
    return clip


def bundle_config(path: str | Path) -> BundleConfig:
    """The :class:`BundleConfig` a bundle folder was written with (without loading its CLIP)."""
    p = Path(path) / "data.pt"
    try:
        d = dict(torch.load(p, weights_only=True)["config"])
    except (OSError, KeyError, RuntimeError) as e:
        raise ValueError(f"{p}: not a federated data bundle ({e}): write one with prepare_bundle") from e
    clip = ff.AttributeClipConfig(**d.pop("clip"))
    return BundleConfig(**{k: v for k, v in d.items() if k in BundleConfig.__dataclass_fields__}, clip=clip)


@lru_cache(maxsize=2)
def load_bundle(path: str) -> tuple[CLIP, dict]:
    """(frozen CLIP, data dict) of a bundle folder; cached per process (Flower reuses simulation actors)."""
    import vitkit

    p = Path(path)
    if not (p / "data.pt").exists() or not (p / "clip").exists():
        raise ValueError(f"{p} is not a federated data bundle (no data.pt / clip): write one with prepare_bundle "
                         "or `vitkit federated run --bundle DIR`")
    clip = vitkit.load(p / "clip").eval()
    clip.requires_grad_(False)
    return clip, torch.load(p / "data.pt", weights_only=True)


# ============================================================================================ models
def text_for(data: dict, fonts: list[str]) -> Tensor:
    """(K, S, D) description embeddings of ``fonts``."""
    idx = [data["fonts"].index(f) for f in fonts]
    return data["text"][idx]


def build_model(cfg: FedConfig, clip: CLIP, data: dict):
    """A fresh model of the run's method, seeded by ``cfg.seed`` (every site and the server build the same
    initial parameters). FedMVP/local → :class:`FedMVP`; fedcoop → :class:`CoOp` over the base fonts."""
    torch.manual_seed(cfg.seed)
    if cfg.method == "fedcoop":
        return CoOp(clip, data["base"], CoOpConfig(n_ctx=cfg.n_ctx))
    # own copy: the bundle's CLIP is cached per process and may serve several models (server and clients)
    return FedMVP(copy.deepcopy(clip), cfg=PromptFormerConfig(lora_rank=cfg.lora_rank, alpha=cfg.alpha))


def get_state(model) -> dict[str, Tensor]:
    """The tensors that travel: the prompt generator (FedMVP) or the context vectors (CoOp)."""
    if isinstance(model, FedMVP):
        return model.generator_state()
    return {"ctx": model.ctx.detach().cpu().clone()}


def set_state(model, state: dict[str, Tensor]) -> None:
    if isinstance(model, FedMVP):
        model.load_generator_state(state)
    else:
        with torch.no_grad():
            model.ctx.copy_(state["ctx"])


def local_train(cfg: FedConfig, model, client: dict, server_round: int, partition: int,
                stop_after: int | None = None) -> list[float]:
    """``cfg.local_steps`` SGD steps on the client's crops (cosine schedule across all rounds). With
    ``stop_after`` the training raises after that many steps (a site that dies mid-round)."""
    steps, total = cfg.local_steps, cfg.local_steps * cfg.rounds
    offset = (server_round - 1) * steps
    seed = cfg.seed * 100_003 + server_round * 101 + partition

    def die(step: int, loss: float) -> None:
        if stop_after is not None and step + 1 >= stop_after:
            raise RuntimeError(f"client {partition} died during round {server_round} (fault injection)")

    if isinstance(model, FedMVP):
        model.set_classes(client["text"])
        images = ff.crops_to_input(client["crops"])
        return train_fedmvp(model, images, client["labels"], client["flip_features"], steps=steps, lr=cfg.lr,
                            batch_size=cfg.batch_size, momentum=cfg.momentum, seed=seed, total_steps=total,
                            step_offset=offset, on_step=die)
    # CoOp: the prompts of the client's classes only; features of the frozen tower are cached
    model.set_classnames(client["fonts"])
    opt = MomentumSGD([model.ctx], lr=cfg.lr, momentum=cfg.momentum)
    g = torch.Generator().manual_seed(seed)
    losses = []
    for s in range(steps):
        opt.lr = cosine_lr(cfg.lr, offset + s, total)
        idx = torch.randint(len(client["features"]), (min(cfg.batch_size, len(client["features"])),), generator=g)
        loss = F.cross_entropy(model.logits(client["features"][idx]), client["labels"][idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        die(s, losses[-1])
    return losses


# ============================================================================================ evaluation
@torch.no_grad()
def page_accuracy(model, data: dict, fonts: list[str], batch: int = 256) -> float:
    """Accuracy on the test pages of ``fonts``, classified among ``fonts``."""
    test = data["test"]
    names = data["fonts"]
    T = test["per_page"]
    keep = [i for i, y in enumerate(test["labels"].tolist()) if names[y] in fonts]
    if not keep:
        raise ValueError(f"no test pages in fonts {fonts}")
    rows = torch.tensor([i * T + t for i in keep for t in range(T)])
    target = torch.tensor([fonts.index(names[int(test["labels"][i])]) for i in keep])
    if isinstance(model, FedMVP):
        model.set_classes(text_for(data, fonts))
        logits = torch.cat([model(ff.crops_to_input(test["crops"][rows[i : i + batch]]))
                            for i in range(0, len(rows), batch)])
    else:
        model.set_classnames(fonts)
        logits = model.logits(test["features"][rows])
    prob = logits.softmax(-1).view(len(keep), T, -1).mean(1)
    return float((prob.argmax(-1) == target).float().mean())


def harmonic_mean(values: list[float]) -> float:
    return 0.0 if min(values) <= 0 else len(values) / sum(1 / v for v in values)


def client_view(data: dict, partition: int) -> dict:
    """The client's own data plus its fonts' description embeddings."""
    c = dict(data["clients"][partition])
    c["text"] = text_for(data, c["fonts"])
    return c


__all__ = [
    "BundleConfig",
    "FedConfig",
    "METHODS",
    "STRATEGIES",
    "build_model",
    "bundle_config",
    "client_view",
    "get_state",
    "harmonic_mean",
    "load_bundle",
    "load_clip",
    "local_train",
    "page_accuracy",
    "prepare_bundle",
    "set_state",
    "text_for",
]
