"""``vitkit.load(source)``: build the right model from a checkpoint of any supported format.

Formats, detected from the files: vitkit's own (``config.json`` with a ``"vitkit"`` entry, or a
single safetensors file carrying that config in its metadata), Hugging Face transformers
(``config.json`` with ``model_type``), timm (``config.json`` with ``architecture``, or a bare timm
state dict), open_clip (``open_clip_config.json``, or a bare open_clip state dict).
"""

from __future__ import annotations

import json
import logging
from dataclasses import fields
from pathlib import Path

from torch import Tensor, nn

from ..data.transforms import PreprocessConfig
from ..frb.classifier import PagePolicy
from ..models import applied
from ..models.clip import CLIP, CLIPConfig
from ..models.hybrid import HybridCNNTransformer, HybridConfig
from ..models.visiongru import VisionGRU, VisionGRUConfig
from ..models.vit import VisionTransformer, ViTConfig
from . import hf, openclip, timm
from . import onnx as onnx_export
from .cache import PRETRAINED_PREFIX, resolve_pretrained
from .io import CheckpointError, find_weights, read_json, read_state_dict, save_state_dict

log = logging.getLogger(__name__)

HUB_PREFIX = "hf-hub:"
FORMAT_VERSION = 1
_HUB_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.txt.gz", "*.model"]


def _apply_overrides(cfg, overrides: dict, where: str):
    if not overrides:
        return cfg
    if isinstance(cfg, CLIPConfig):
        allowed = {"vision", "text"}
        bad = sorted(set(overrides) - allowed)
        if bad:
            raise ValueError(f"{where}: CLIP overrides must be given as vision={{...}} and text={{...}}, got {bad}")
        d = cfg.to_dict()
        for part in ("vision", "text"):
            d[part].update(overrides.get(part, {}))
        return CLIPConfig.from_dict(d)
    kind = type(cfg)
    known = {f.name for f in fields(kind)}
    bad = sorted(set(overrides) - known)
    if bad:
        raise ValueError(f"{where}: unknown config overrides {bad}; allowed: {sorted(known)}")
    return kind.from_dict({**cfg.to_dict(), **overrides})


# architecture name in a vitkit checkpoint → (config class, model class)
ARCHS = {
    "vit": (ViTConfig, VisionTransformer),
    "clip": (CLIPConfig, CLIP),
    "hybrid": (HybridConfig, HybridCNNTransformer),
    "visiongru": (VisionGRUConfig, VisionGRU),
}


def build(arch: str, cfg: ViTConfig | CLIPConfig | HybridConfig | VisionGRUConfig) -> nn.Module:
    if arch not in ARCHS:
        raise CheckpointError(f"unknown architecture {arch!r} (expected one of {sorted(ARCHS)})")
    return ARCHS[arch][1](cfg)  # type: ignore[arg-type]


def arch_of(model: nn.Module) -> str:
    """The checkpoint architecture name of a vitkit model (ValueError for anything else)."""
    for arch, (_, cls) in ARCHS.items():
        if type(model) is cls:
            return arch
    for arch, (_, cls) in ARCHS.items():
        if isinstance(model, cls):
            return arch
    raise ValueError(f"vitkit.save writes vitkit models ({', '.join(c.__name__ for _, c in ARCHS.values())}), "
                     f"got {type(model).__name__}")


def load_into(model: nn.Module, sd: dict[str, Tensor], where: str, strict: bool = True) -> None:
    """Copy a vitkit-layout state dict into ``model``, naming every key that does not fit."""
    own = model.state_dict()
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    misshaped = [f"{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
                 for k in own if k in sd and sd[k].shape != own[k].shape]
    if misshaped or (strict and (missing or unexpected)):
        parts = []
        if missing:
            parts.append(f"missing keys ({len(missing)}): {missing[:12]}")
        if unexpected:
            parts.append(f"unexpected keys ({len(unexpected)}): {unexpected[:12]}")
        if misshaped:
            parts.append(f"mis-shaped keys ({len(misshaped)}): {misshaped[:12]}")
        raise CheckpointError(f"{where} does not fit the model: " + "; ".join(parts))
    model.load_state_dict({k: v for k, v in sd.items() if k in own}, strict=False)


def _native(meta: dict, where: str) -> tuple[str, ViTConfig | CLIPConfig, dict | None, dict | None, list]:
    version = meta.get("format_version", FORMAT_VERSION)
    if version > FORMAT_VERSION:
        raise CheckpointError(f"{where}: vitkit format {version} is newer than this vitkit ({FORMAT_VERSION}); upgrade")
    arch = meta.get("arch", "vit")
    if arch not in ARCHS:
        raise CheckpointError(f"{where}: unknown architecture {arch!r} (expected one of {sorted(ARCHS)}); upgrade vitkit")
    try:
        cfg = ARCHS[arch][0].from_dict(meta["config"])
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{where}: invalid vitkit config ({e})") from e
    entries = meta.get("applied") or []
    if not isinstance(entries, list):
        raise CheckpointError(f"{where}: 'applied' must be a list of method entries, got {type(entries).__name__}")
    return arch, cfg, meta.get("preprocess"), meta.get("pipeline"), entries


def _resolve(source: str | Path) -> Path:
    s = str(source)
    if s.startswith(PRETRAINED_PREFIX):
        return resolve_pretrained(s)
    if s.startswith(HUB_PREFIX):
        repo = s[len(HUB_PREFIX):]
        try:
            from huggingface_hub import snapshot_download
        except ImportError as e:
            raise ImportError("loading from the Hugging Face hub needs the 'hf' extra: pip install 'vitkit[hf]'") from e
        log.info("downloading %s from the Hugging Face hub", repo)
        return Path(snapshot_download(repo, allow_patterns=_HUB_PATTERNS))
    path = Path(s).expanduser()
    if not path.exists():
        raise FileNotFoundError(
            f"{path}: no such file or directory. A source is a checkpoint directory, a weights file "
            f"(.safetensors preferred, or .onnx), "
            f"'{HUB_PREFIX}org/name' or '{PRETRAINED_PREFIX}NAME'; see `vitkit models` for built-in names."
        )
    return path


def read_checkpoint(
    source: str | Path, **overrides
) -> tuple[str, ViTConfig | CLIPConfig, dict, dict | None, Path, dict | None, list[dict]]:
    """(arch, config, vitkit state dict, preprocess kwargs or None, directory, page pipeline or None,
    applied-method entries) of any supported checkpoint; only vitkit's own format carries a page
    pipeline and applied methods (LoRA, prompts, quantization, token reduction)."""
    path = _resolve(source)
    directory = path if path.is_dir() else path.parent
    wfile = find_weights(path) if path.is_dir() else path
    where = str(wfile)
    if wfile.suffix == ".onnx":
        cfg, sd = onnx_export.read(wfile, num_heads=overrides.get("num_heads"))
        return "vit", _apply_overrides(cfg, overrides, where), sd, None, directory, None, []
    cfg_json = read_json(directory / "config.json") if path.is_dir() and (directory / "config.json").is_file() else {}
    oc_path = directory / "open_clip_config.json"
    oc_json = read_json(oc_path) if path.is_dir() and oc_path.is_file() else None
    sd = read_state_dict(wfile)
    pp = pipeline = None
    entries: list[dict] = []

    meta = _safetensors_meta(wfile)
    if "vitkit" in cfg_json or "vitkit" in meta:
        native = cfg_json.get("vitkit") or json.loads(meta["vitkit"])
        arch, cfg, pp, pipeline, entries = _native(native, where)
    elif "model_type" in cfg_json:
        arch, cfg, sd = hf.convert(cfg_json, sd, where)
        pp_path = directory / "preprocessor_config.json"
        size = (cfg.vision if isinstance(cfg, CLIPConfig) else cfg).img_size
        pp = hf.preprocess_dict(read_json(pp_path), size) if pp_path.is_file() else None
    elif oc_json is not None or openclip.is_openclip_layout(sd):
        arch = "clip"
        cfg = openclip.infer_config(sd, oc_json, where)
        sd = openclip.convert(sd, where)
        pp = openclip.preprocess_dict(oc_json, cfg.vision.img_size)
    elif timm.is_timm_layout(sd):
        arch = "vit"
        cfg = timm.infer_config(sd, cfg_json, where)
        sd = timm.convert(sd, cfg)
        pp = timm.preprocess_dict(cfg_json)
    else:
        raise CheckpointError(
            f"{where}: cannot tell the checkpoint format: no vitkit/Hugging Face/timm/open_clip config and the "
            f"keys match no known layout (first keys: {list(sd)[:5]})"
        )
    cfg = _apply_overrides(cfg, overrides, where)
    return arch, cfg, sd, pp, directory, pipeline, entries


def _safetensors_meta(path: Path) -> dict:
    if path.suffix != ".safetensors":
        return {}
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        return f.metadata() or {}


def load(source: str | Path, *, strict: bool = True, **overrides) -> nn.Module:
    """Build and load a model from a checkpoint directory, a weights file (``.onnx`` included),
    ``hf-hub:org/name``, or ``pretrained:NAME`` (fetched once with ``vitkit weights get NAME``).

    ``overrides`` replace config fields the checkpoint cannot tell (e.g. ``num_heads=6``); for CLIP
    give them as ``vision={...}``, ``text={...}``. The model comes in eval mode with ``.preprocess``
    (and ``.tokenizer`` for CLIP when the checkpoint has tokenizer files). A crop classifier saved
    with its page pipeline (e.g. ``vitkit demo``'s model) gets it back as ``.pipeline``, a
    :class:`~vitkit.frb.classifier.PagePolicy` that :func:`vitkit.predict.classify_images` follows.
    A model saved with methods applied (LoRA, visual prompts, fake or int8 quantization, token
    reduction) comes back with them re-applied, in the saved order, and its ``applied`` record.
    """
    arch, cfg, sd, pp, directory, pipeline, entries = read_checkpoint(source, **overrides)
    model = build(arch, cfg)
    try:
        done = applied.restore(model, entries, str(source))
    except ValueError as e:
        raise CheckpointError(str(e)) from e
    load_into(model, sd, str(source), strict=strict)
    applied.finish_restore(done)
    size = (cfg.vision if isinstance(cfg, CLIPConfig) else cfg).img_size
    model.preprocess = PreprocessConfig.from_dict(pp) if pp else default_preprocess(cfg, size)
    if pipeline is not None:
        try:
            model.pipeline = PagePolicy.from_dict(pipeline)
        except (TypeError, ValueError) as e:
            raise CheckpointError(f"{source}: invalid page pipeline in the vitkit config ({e})") from e
    if isinstance(model, CLIP):
        model.tokenizer = _find_tokenizer(directory, cfg.text.context_length)
    log.info("loaded %s (%s) from %s", type(model).__name__, arch, source)
    return model.eval()


def default_preprocess(cfg: ViTConfig | CLIPConfig | VisionGRUConfig, size: tuple[int, int]) -> PreprocessConfig:
    family = cfg.vision.family if isinstance(cfg, CLIPConfig) else cfg.family
    if family == "clip":
        return PreprocessConfig(**openclip.preprocess_dict(None, size))
    if family in ("deit", "dinov2", "visiongru"):  # VisionGRU trains with DeiT's ImageNet recipe
        return PreprocessConfig(input_size=size, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
                                crop_pct=0.875)
    return PreprocessConfig(input_size=size, crop_pct=0.9)


def _find_tokenizer(directory: Path, context_length: int):
    from ..models.tokenizer import CLIPTokenizer

    try:
        return CLIPTokenizer.from_pretrained(directory, context_length=context_length)
    except FileNotFoundError:
        log.info("no tokenizer files in %s: model.tokenizer is None", directory)
        return None


def save(model: nn.Module, directory: str | Path) -> Path:
    """Write a vitkit checkpoint: ``config.json`` + ``model.safetensors`` (+ tokenizer files).

    The methods applied to the model (its ``applied`` records) are written with it as
    ``"applied"``: [{"module", "method", "config"}], so :func:`load` re-applies them.
    """
    arch = arch_of(model)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    meta = {
        "format_version": FORMAT_VERSION,
        "arch": arch,
        "config": model.cfg.to_dict(),
        "preprocess": model.preprocess.to_dict() if getattr(model, "preprocess", None) is not None else None,
    }
    if getattr(model, "pipeline", None) is not None:
        meta["pipeline"] = model.pipeline.to_dict()
    entries = applied.to_json(model)
    if entries:
        meta["applied"] = entries
    tmp = directory / "model.safetensors.tmp"
    save_state_dict(model.state_dict(), tmp, metadata={"vitkit": json.dumps(meta)})
    tmp.replace(directory / "model.safetensors")
    (directory / "config.json").write_text(json.dumps({"vitkit": meta}, indent=2))
    tok = getattr(model, "tokenizer", None)
    if tok is not None:
        tok.save(directory)
    return directory
