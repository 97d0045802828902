"""Reading and writing state dicts. safetensors first; ``torch.load`` only with ``weights_only=True``."""

from __future__ import annotations

import json
import logging
import pickle
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

log = logging.getLogger(__name__)

SAFE_SUFFIXES = (".safetensors",)
TORCH_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")
# file names looked for in a checkpoint directory, in order of preference
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "open_clip_model.safetensors",
    "open_clip_pytorch_model.bin",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit the model. The message names the file/keys."""


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Tensors of a checkpoint file (safetensors, sharded index json, or a weights-only torch file)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    name = path.name
    if name.endswith(".index.json"):
        return _read_sharded(path)
    if name.endswith(SAFE_SUFFIXES):
        try:
            return load_file(str(path))
        except Exception as e:  # safetensors raises its own error types
            raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from e
    if name.endswith(TORCH_SUFFIXES):
        return _read_torch(path)
    raise CheckpointError(f"{path}: unknown checkpoint format; use .safetensors (preferred) or a weights-only .bin/.pt")


def _read_torch(path: Path) -> dict[str, Tensor]:
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"{path}: refused to unpickle: the file holds Python objects beyond tensors, and vitkit never runs "
            "pickled code. Convert it to safetensors in an environment you trust "
            "(safetensors.torch.save_file(state_dict, 'model.safetensors'))."
        ) from e
    except Exception as e:
        raise CheckpointError(f"{path}: not a readable torch checkpoint ({e})") from e
    # common wrappers: {"state_dict": ...}, {"model": ...}
    for key in ("state_dict", "model", "module"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: expected a dict of tensors (a state dict), got {type(obj).__name__}")
    return obj


def _read_sharded(index: Path) -> dict[str, Tensor]:
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
    except (json.JSONDecodeError, KeyError) as e:
        raise CheckpointError(f"{index}: not a shard index (needs a 'weight_map' object)") from e
    sd: dict[str, Tensor] = {}
    for shard in sorted(set(weight_map.values())):
        sd.update(read_state_dict(index.parent / shard))
    return sd


def find_weights(directory: Path) -> Path:
    """The weights file of a checkpoint directory (see ``WEIGHT_FILES``)."""
    for name in WEIGHT_FILES:
        if (directory / name).is_file():
            return directory / name
    found = sorted(p.name for p in directory.iterdir() if p.suffix in SAFE_SUFFIXES + TORCH_SUFFIXES)
    if len(found) == 1:
        return directory / found[0]
    raise CheckpointError(
        f"{directory}: no weights file found (looked for {', '.join(WEIGHT_FILES)}"
        + (f"; several candidates: {found}" if found else "")
        + ")"
    )


def save_state_dict(sd: dict[str, Tensor], path: str | Path, metadata: dict[str, str] | None = None) -> None:
    """Write tensors as safetensors (contiguous, shared storage broken up)."""
    # clone: safetensors refuses tensors that share storage (tied or sliced parameters)
    clean = {k: v.detach().clone().contiguous() for k, v in sd.items()}
    save_file(clean, str(path), metadata=metadata)


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: invalid JSON ({e.msg} at line {e.lineno})") from e
