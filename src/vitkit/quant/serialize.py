"""Saving and loading quantized models as safetensors, with their scales.

A quantized checkpoint directory holds ``config.json`` (the model's vitkit config plus a
``"vitkit_quant"`` entry) and ``model.safetensors``:

* ``format = "int8"`` (after :func:`vitkit.quant.int8.to_int8`): every Int8Linear as
  ``<name>.weight_int8`` (N, K) int8, ``<name>.weight_scale`` (N,) float32 and ``<name>.bias``.
* ``format = "fake"`` (after :func:`vitkit.quant.ptq.apply` + calibration, any bit width): every
  QuantLinear as integer codes ``<name>.weight_int`` (int8, int16 for 16 bits) with its
  ``weight_quantizer.scale`` (N, 1) / ``zero_point``; activation and attention-map quantizers'
  scales and clip ratios as they are.

Everything else is the float model's own state dict.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from torch import Tensor, nn

from ..models.applied import record
from ..models.attention import Attention
from ..models.surgery import replace_module
from ..models.visiongru import VisionGRU
from ..models.vit import VisionTransformer
from ..weights.io import CheckpointError, read_json, read_state_dict, save_state_dict
from ..weights.load import ARCHS, FORMAT_VERSION, arch_of, load_into
from . import ptq
from .int8 import METHOD as INT8
from .int8 import Int8Config, Int8Linear
from .quantizers import qrange

QUANT_FORMAT_VERSION = 1
FORMATS = ("int8", "fake")


QUANTIZABLE = (VisionTransformer, VisionGRU)  # the single-tower vision models


def _meta(model: VisionTransformer | VisionGRU) -> dict:
    return {
        "format_version": FORMAT_VERSION,
        "arch": arch_of(model),
        "config": model.cfg.to_dict(),
        "preprocess": model.preprocess.to_dict() if getattr(model, "preprocess", None) is not None else None,
    }


def save_quantized(model: nn.Module, directory: str | Path) -> Path:
    """Write a quantized VisionTransformer (int8 or fake-quantized) to ``directory``; returns it."""
    if not isinstance(model, QUANTIZABLE):
        raise ValueError(f"save_quantized supports VisionTransformer and VisionGRU models, got {type(model).__name__}")
    int8 = [n for n, m in model.named_modules() if isinstance(m, Int8Linear)]
    fake = [n for n, m in model.named_modules() if isinstance(m, ptq.QuantLinear)]
    if int8 and fake:
        raise ValueError("model mixes Int8Linear and QuantLinear layers: convert all of them with to_int8 first")
    if not int8 and not fake:
        raise ValueError("model is not quantized: nothing to save as a quantized checkpoint (use vitkit.save)")
    sd = dict(model.state_dict())
    if int8:
        quant = {"format": "int8", "modules": int8, "config": None}
    else:
        cfg = ptq.config(model)
        if cfg is None:
            raise ValueError("model has QuantLinear layers but no QuantConfig in its record: quantize it with "
                             "vitkit.quant.apply")
        for name in fake:
            mod: ptq.QuantLinear = model.get_submodule(name)
            wq = mod.weight_quantizer
            qmin, qmax = qrange(wq.bits, wq.symmetric)
            codes = torch.clamp(torch.round(mod.base_layer.weight.detach() / wq.scale) + wq.zero_point, qmin, qmax)
            sd[f"{name}.weight_int"] = codes.to(torch.int8 if wq.bits <= 8 and wq.symmetric else torch.int16)
            del sd[f"{name}.base_layer.weight"]
        attn = [n for n, m in model.named_modules() if isinstance(m, Attention) and m.attn_map_fn is not None]
        quant = {"format": "fake", "modules": fake, "attention_maps": attn, "config": cfg.to_dict()}
    quant["quant_format_version"] = QUANT_FORMAT_VERSION
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    meta = _meta(model)
    tmp = directory / "model.safetensors.tmp"
    save_state_dict(sd, tmp, metadata={"vitkit": json.dumps(meta), "vitkit_quant": json.dumps(quant)})
    tmp.replace(directory / "model.safetensors")
    (directory / "config.json").write_text(json.dumps({"vitkit": meta, "vitkit_quant": quant}, indent=2))
    return directory


def _check_scale(sd: dict[str, Tensor], weight_key: str, scale_key: str, where: str) -> None:
    for k in (weight_key, scale_key):
        if k not in sd:
            raise CheckpointError(f"{where}: missing key {k!r} of a quantized layer")
    rows, scale = sd[weight_key].shape[0], sd[scale_key]
    if scale.shape[0] != rows or scale.numel() != rows:
        raise CheckpointError(
            f"{where}: key {scale_key!r} has shape {tuple(scale.shape)} but {weight_key!r} has {rows} output "
            "channels: the scales do not match the weights (one scale per output channel); re-export the model"
        )


def load_quantized(directory: str | Path) -> VisionTransformer | VisionGRU:
    """Rebuild a model written by :func:`save_quantized` (eval mode)."""
    directory = Path(directory)
    cfg_path = directory / "config.json"
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{directory}: no config.json; not a quantized vitkit checkpoint")
    meta = read_json(cfg_path)
    if "vitkit_quant" not in meta or "vitkit" not in meta:
        raise CheckpointError(f"{cfg_path}: no 'vitkit_quant' entry: not a quantized checkpoint (use vitkit.load)")
    quant, vmeta = meta["vitkit_quant"], meta["vitkit"]
    if quant.get("format") not in FORMATS:
        raise CheckpointError(f"{cfg_path}: vitkit_quant.format={quant.get('format')!r}; allowed {FORMATS}")
    if quant.get("quant_format_version", 1) > QUANT_FORMAT_VERSION:
        raise CheckpointError(f"{cfg_path}: quantized format is newer than this vitkit; upgrade")
    arch = vmeta.get("arch", "vit")
    if arch not in ("vit", "visiongru"):
        raise CheckpointError(f"{cfg_path}: vitkit.arch={arch!r}: quantized checkpoints hold 'vit' or 'visiongru'")
    config_cls, model_cls = ARCHS[arch]
    try:
        model = model_cls(config_cls.from_dict(vmeta["config"]))
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{cfg_path}: invalid vitkit config ({e})") from e
    if vmeta.get("preprocess"):
        from ..data.transforms import PreprocessConfig

        model.preprocess = PreprocessConfig.from_dict(vmeta["preprocess"])
    wpath = directory / "model.safetensors"
    sd = read_state_dict(wpath)
    names = list(quant.get("modules") or [])
    if quant["format"] == "int8":
        for name in names:
            _check_scale(sd, f"{name}.weight_int8", f"{name}.weight_scale", str(wpath))
            try:
                base = model.get_submodule(name)
            except AttributeError as e:
                raise CheckpointError(f"{cfg_path}: quantized module {name!r} is not in the model") from e
            if not isinstance(base, nn.Linear):
                raise CheckpointError(f"{cfg_path}: quantized module {name!r} is a {type(base).__name__}, not a Linear")
            replace_module(model, name, Int8Linear(base.in_features, base.out_features, base.bias is not None))
        record(model, INT8, Int8Config("^(" + "|".join(re.escape(n) for n in names) + ")$"))
    else:
        try:
            qcfg = ptq.QuantConfig.from_dict(quant["config"])
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(f"{cfg_path}: invalid vitkit_quant.config ({e})") from e
        touched = ptq.apply(model, qcfg)
        got = [n for n in touched if not n.endswith(".attn_map_fn")]
        if sorted(got) != sorted(names):
            raise CheckpointError(f"{cfg_path}: its quantized modules {names} differ from what its config quantizes "
                                  f"({got})")
        for name in names:
            wkey, skey = f"{name}.weight_int", f"{name}.weight_quantizer.scale"
            _check_scale(sd, wkey, skey, str(wpath))
            zkey = f"{name}.weight_quantizer.zero_point"
            codes = sd.pop(wkey).float()
            base = model.get_submodule(name).base_layer
            if codes.shape != base.weight.shape:
                raise CheckpointError(f"{wpath}: key {wkey!r} has shape {tuple(codes.shape)}, the layer needs "
                                      f"{tuple(base.weight.shape)}")
            sd[f"{name}.base_layer.weight"] = (codes - sd.get(zkey, torch.zeros(()))) * sd[skey]
    load_into(model, sd, str(wpath))
    ptq.mark_calibrated(model)
    return model.eval()
