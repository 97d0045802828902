"""Weakly supervised semantic segmentation on rendered scenes: train, localise, pseudo-label, segment.

One run (:func:`run_wsss`, ``vitkit segment wsss``):

1. render ``train`` + ``val`` scenes of ``seed`` (:mod:`vitkit.data.scenes`; val = the indices after
   train), image-level labels only for training;
2. train the method's model (``cam`` baseline, ``more``, ``vpl``) on a backbone (vitkit's ViT from
   scratch, or any ``vitkit.load`` source, fine-tuned), with the house Trainer (resumable);
3. localisation maps of the train images with their image labels (CAM, MoRe's LAM, VPL's
   prototype maps; all with the same scales + flip), pseudo-label = best present class above
   ``bg_threshold``, else background; ``pseudo_miou`` against the exact masks (and the best over a
   threshold sweep, ``pseudo_miou_best``, the convention of CAM papers);
4. a light head (:mod:`.head`) on the frozen backbone's patch features trained on the
   pseudo-labels with the ``high``/``low`` ignore band; ``val_miou`` on the val scenes.

Writes ``OUT/metrics.json`` and ``OUT/report.html`` (overlays: image, truth, CAM, method map,
pseudo-label, head prediction).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data.scenes import SceneConfig, render_many, scene_classes
from ..engine import TrainConfig, Trainer
from ..progress import progress_bar
from .cam import PatchClassifier, pseudo_label
from .head import HeadConfig, patch_features, predict, train_head
from .metrics import IoUMeter
from .more import MoRe, MoReConfig
from .scene_clip import SceneClipConfig, text_prototypes, train_scene_clip
from .vpl import VPL, VPLConfig

log = logging.getLogger(__name__)

METHODS = ("cam", "more", "vpl")
SWEEP = tuple(round(0.1 + 0.05 * i, 2) for i in range(15))  # background thresholds 0.10 … 0.80


@dataclass
class WSSSConfig:
    """One WSSS run. Defaults: the ≤ 20-minute CPU run of ``vitkit segment wsss``."""

    method: str = "cam"  # cam | more | vpl
    backbone: str | None = None  # None = vitkit ViT from scratch; else a vitkit.load source (fine-tuned)
    train: int = 1200  # training scenes (image labels only)
    val: int = 200  # validation scenes (exact masks, for val_miou)
    seed: int = 0  # scenes, initialisation and training order
    size: int = 96  # scene side in pixels (a loaded backbone sees it resized to whole patches)
    patch: int = 12  # from-scratch ViT: patch size (8 × 8 patches at 96 px), width, depth, heads
    dim: int = 64
    depth: int = 4
    heads: int = 4
    steps: int = 1000  # optimiser steps
    batch_size: int = 32
    lr: float | None = None  # None = 1e-3 from scratch, 1e-4 for a loaded backbone
    pooling: str = "gmp"  # the CAM classifier's pooling (MoRe code: gmp)
    scales: tuple[float, ...] = (1.0, 0.75, 1.25)  # test-time scales of every map (and flip)
    flip: bool = True
    bg_threshold: float = 0.5  # pseudo-label background threshold (MoRe's bkg_thre)
    high: float = 0.7  # pseudo-label ignore band for the segmentation head
    low: float = 0.25
    scene: SceneConfig = field(default_factory=SceneConfig)
    more: MoReConfig = field(default_factory=MoReConfig)
    vpl: VPLConfig = field(default_factory=VPLConfig)
    clip: SceneClipConfig = field(default_factory=SceneClipConfig)
    clip_source: str | None = None  # a real CLIP (vitkit.load source) for VPL's text prototypes
    head: HeadConfig = field(default_factory=HeadConfig)
    out_dir: str = "runs/wsss"
    progress: bool = True

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        for name in ("train", "val", "steps", "batch_size", "size"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be ≥ 1, got {getattr(self, name)}")
        if self.train < self.batch_size:
            raise ValueError(f"--train {self.train} is smaller than one batch ({self.batch_size})")
        if not 0 <= self.low <= self.high <= 1 or not 0 <= self.bg_threshold <= 1:
            raise ValueError("thresholds need 0 ≤ low ≤ high ≤ 1 and 0 ≤ bg_threshold ≤ 1")
        if self.seed < 0:
            raise ValueError(f"--seed must be ≥ 0, got {self.seed}")

    def to_dict(self) -> dict:
        return asdict(self)


def build_backbone(cfg: WSSSConfig) -> tuple[nn.Module, int]:
    """(backbone, input side): vitkit's ViT from scratch, or ``cfg.backbone`` loaded (a CLIP's image tower)."""
    from ..models.vit import VisionTransformer

    if cfg.backbone is None:
        vit = VisionTransformer(img_size=(cfg.size, cfg.size), patch_size=cfg.patch, embed_dim=cfg.dim,
                                depth=cfg.depth, num_heads=cfg.heads, num_classes=0)
        return vit, cfg.size
    import vitkit

    model = vitkit.load(cfg.backbone)
    vit = getattr(model, "visual", model)
    p = vit.patch_size
    side = max(p, round(cfg.size / p) * p)
    return vit, side


def make_prepare(backbone: nn.Module, side: int):
    """uint8 (B, H, W, 3) → the backbone's float input (B, 3, side, side), normalised as it expects."""
    pp = getattr(backbone, "preprocess", None)
    mean = torch.tensor(pp.mean if pp is not None else (0.5, 0.5, 0.5)).view(1, 3, 1, 1)
    std = torch.tensor(pp.std if pp is not None else (0.5, 0.5, 0.5)).view(1, 3, 1, 1)

    def prepare(images: Tensor) -> Tensor:
        x = images.permute(0, 3, 1, 2).float() / 255.0
        if x.shape[-1] != side or x.shape[-2] != side:
            x = F.interpolate(x, size=(side, side), mode="bilinear", align_corners=False)
        return (x - mean) / std

    return prepare


def build_model(cfg: WSSSConfig, backbone: nn.Module, num_classes: int, class_names, train_data: dict,
                out: Path, resume: bool) -> nn.Module:
    classifier = PatchClassifier(backbone, num_classes=num_classes, pooling=cfg.pooling)
    if cfg.method == "cam":
        return classifier
    if cfg.method == "more":
        return MoRe(classifier, cfg.more)
    if cfg.clip_source:
        import vitkit

        clip = vitkit.load(cfg.clip_source)
        if not hasattr(clip, "encode_text"):
            raise ValueError(f"--clip {cfg.clip_source} is not a CLIP model (no text tower)")
    else:
        clip = train_scene_clip(torch.from_numpy(train_data["image"]), torch.from_numpy(train_data["multi_hot"]),
                                class_names, cfg.clip, out / "clip", progress=cfg.progress, resume=resume)
    return VPL(classifier, text_prototypes(clip, class_names), cfg.vpl)


def flip_images(x: Tensor) -> Tensor:
    """Mirror half of a uint8 batch (B, H, W, 3) left-right (the width axis, 2; not the channels)."""
    flip = torch.rand(x.shape[0]) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(2), x)


def train_model(model: nn.Module, cfg: WSSSConfig, prepare, images: Tensor, labels: Tensor, out: Path,
                resume: bool) -> list[dict]:
    """Train with the house Trainer (checkpoints in OUT/train; ``resume`` continues)."""
    lr = cfg.lr if cfg.lr is not None else (1e-3 if cfg.backbone is None else 1e-4)
    tcfg = TrainConfig(epochs=10**6, max_steps=cfg.steps, batch_size=cfg.batch_size, lr=lr,
                       warmup_steps=max(1, cfg.steps // 15), weight_decay=0.05, label_smoothing=0.0,
                       out_dir=str(out / "train"), progress=cfg.progress, ckpt_every=max(1, cfg.steps // 5),
                       log_every=max(1, cfg.steps // 30), seed=cfg.seed)
    trainer: Trainer | None = None

    def loss_fn(m: nn.Module, batch) -> Tensor:
        x, y = batch
        progress = trainer.step / max(1, trainer.total_steps) if trainer else 0.0
        loss, _ = m.loss(prepare(flip_images(x)), y.float(), progress)
        return loss

    ds = torch.utils.data.TensorDataset(images, labels)
    trainer = Trainer(model, ds, tcfg, loss_fn=loss_fn)
    return trainer.fit(resume=resume).history


@torch.no_grad()
def localise(model: nn.Module, cfg: WSSSConfig, prepare, images: Tensor, labels: Tensor,
             batch: int = 64) -> tuple[Tensor, Tensor]:
    """Normalised method maps and the classifier's own CAM, both (N, C, H, W) at the scene size, float16."""
    model.eval()
    classifier = model if isinstance(model, PatchClassifier) else model.classifier
    maps, cams = [], []
    size = images.shape[1:3]
    with progress_bar(cfg.progress) as bar:
        task = bar.add_task("localisation maps", total=len(images))
        for i in range(0, len(images), batch):
            x, y = prepare(images[i : i + batch]), labels[i : i + batch].float()
            m = model.maps(x, y, cfg.scales, cfg.flip)
            c = m if model is classifier else classifier.maps(x, y, cfg.scales, cfg.flip)
            maps.append(F.interpolate(m, size=size, mode="bilinear", align_corners=False).half())
            cams.append(F.interpolate(c, size=size, mode="bilinear", align_corners=False).half())
            bar.advance(task, len(x))
    return torch.cat(maps), torch.cat(cams)


def pseudo_scores(maps: Tensor, labels: Tensor, truth: Tensor, num_classes: int,
                  thresholds=SWEEP) -> dict[float, IoUMeter]:
    """IoU meters of the pseudo-labels at each background threshold. maps (N, C, H, W), truth (N, H, W)."""
    meters = {t: IoUMeter(num_classes + 1) for t in thresholds}
    for i in range(0, len(maps), 64):
        m = maps[i : i + 64].float() * labels[i : i + 64, :, None, None]
        score, cls = m.max(1)
        for t, meter in meters.items():
            meter.update(torch.where(score > t, cls + 1, 0), truth[i : i + 64])
    return meters


def run_wsss(cfg: WSSSConfig, *, resume: bool = False) -> dict:
    """The whole run (module docstring); returns the metrics also written to OUT/metrics.json."""
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    timing: dict[str, float] = {}
    t0 = time.perf_counter()
    torch.manual_seed(cfg.seed)
    names = scene_classes(cfg.scene)
    C = len(names)
    tr = render_many(cfg.train, seed=cfg.seed, size=cfg.size, config=cfg.scene, progress=cfg.progress)
    va = render_many(cfg.val, seed=cfg.seed, size=cfg.size, config=cfg.scene, start=cfg.train, progress=cfg.progress)
    timing["render_s"] = time.perf_counter() - t0

    t = time.perf_counter()
    backbone, side = build_backbone(cfg)
    prepare = make_prepare(backbone, side)
    model = build_model(cfg, backbone, C, names, tr, out, resume)
    timing["clip_s"] = time.perf_counter() - t
    images, labels = torch.from_numpy(tr["image"]), torch.from_numpy(tr["multi_hot"])
    t = time.perf_counter()
    history = train_model(model, cfg, prepare, images, labels, out, resume)
    timing["train_s"] = time.perf_counter() - t

    t = time.perf_counter()
    maps, cams = localise(model, cfg, prepare, images, labels)
    truth = torch.from_numpy(tr["semantic"])
    meters = pseudo_scores(maps, labels, truth, C)
    cam_meters = pseudo_scores(cams, labels, truth, C, (cfg.bg_threshold,))
    best_t = max(meters, key=lambda k: meters[k].miou)
    at = meters.get(round(cfg.bg_threshold, 2)) or pseudo_scores(maps, labels, truth, C, (cfg.bg_threshold,))[cfg.bg_threshold]
    train_pl = torch.cat([pseudo_label(maps[i : i + 64].float(), labels[i : i + 64], cfg.high, cfg.low)
                          for i in range(0, len(maps), 64)])
    timing["maps_s"] = time.perf_counter() - t

    t = time.perf_counter()
    hcfg = cfg.head
    feats, grid = patch_features(backbone, images, hcfg.layers, prepare=prepare)
    head = train_head(feats, grid, train_pl, C + 1, hcfg)
    vfeats, _ = patch_features(backbone, torch.from_numpy(va["image"]), hcfg.layers, prepare=prepare)
    pred = predict(head, vfeats, grid, (cfg.size, cfg.size))
    val_meter = IoUMeter(C + 1)
    val_meter.update(pred, torch.from_numpy(va["semantic"]))
    timing["head_s"] = time.perf_counter() - t

    with torch.no_grad():
        logits = torch.cat([model(prepare(torch.from_numpy(va["image"][i : i + 64]))) for i in range(0, cfg.val, 64)])
    cls_pred = (logits > 0).float()
    vy = torch.from_numpy(va["multi_hot"])
    tp = float((cls_pred * vy).sum())
    f1 = 2 * tp / max(1.0, float(cls_pred.sum() + vy.sum()))
    exact = float((cls_pred == vy).all(1).float().mean())
    timing["total_s"] = time.perf_counter() - t0

    all_names = ("background", *names)
    metrics = {
        "method": cfg.method, "seed": cfg.seed, "backbone": cfg.backbone or "vit-scratch",
        "pseudo_miou": round(at.miou, 4), "pseudo_miou_best": round(meters[best_t].miou, 4),
        "best_threshold": best_t, "bg_threshold": cfg.bg_threshold,
        "cam_pseudo_miou": round(cam_meters[cfg.bg_threshold].miou, 4),
        "val_miou": round(val_meter.miou, 4),
        "val_cls_f1": round(f1, 4), "val_cls_exact_match": round(exact, 4),
        "pseudo_per_class_iou": at.per_class(all_names),
        "per_class_iou": val_meter.per_class(all_names),
        "pseudo_label_ignored": round(float((train_pl == 255).float().mean()), 4),
        "sweep": {str(k): round(v.miou, 4) for k, v in meters.items()},
        "final_loss": history[-1].get("loss") if history else None,
        "timing": {k: round(v, 1) for k, v in timing.items()},
        "config": cfg.to_dict(),
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2), encoding="utf-8")
    from .report import write_wsss_report

    write_wsss_report(out / "report.html", metrics, tr, maps, cams, train_pl, va, pred, names)
    log.info("wsss %s seed %d: pseudo mIoU %.3f (best %.3f at %.2f), val mIoU %.3f", cfg.method, cfg.seed,
             metrics["pseudo_miou"], metrics["pseudo_miou_best"], best_t, metrics["val_miou"])
    return metrics


def load_metrics(out_dir: str | Path) -> dict:
    path = Path(out_dir) / "metrics.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run `vitkit segment wsss --out {out_dir}` first")
    return json.loads(path.read_text(encoding="utf-8"))


def scenes_seed_note(cfg: WSSSConfig) -> str:
    return f"train scenes {cfg.seed}:0..{cfg.train - 1}, val scenes {cfg.seed}:{cfg.train}..{cfg.train + cfg.val - 1}"


__all__ = ["METHODS", "WSSSConfig", "build_backbone", "load_metrics", "localise", "make_prepare", "pseudo_scores",
           "run_wsss", "scenes_seed_note", "train_model"]

