"""The one record of what is applied to a model: ``module.applied``, method key → config dataclass.

Every method that wires itself into a model (LoRA, visual prompts, fake quantization, int8
execution, token reduction) files its config here on ``apply`` and takes it out on ``remove``; the
record lives on the module the method was applied to (the model, or a CLIP's vision tower for the
methods that work on it). Keys are the method name, with the instance after a colon where a method
can be applied several times (``"lora:default"``). :func:`vitkit.save` writes the record as JSON
(:func:`to_json`) and :func:`vitkit.load` replays it on the freshly built model before loading the
tensors (:func:`restore`), through the restorers methods file with :func:`restorer`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, is_dataclass
from typing import Any

from torch import nn

from ..config import config_from_dict
from ..registry import Registry

ATTR = "applied"


class AppliedMethods(dict):
    """{method key: config} in the order the methods were applied. ``undo`` holds, per key, what a
    method needs to take itself out again (saved hooks); it is run-time state and is not saved."""

    def __init__(self) -> None:
        super().__init__()
        self.undo: dict[str, Any] = {}

    def methods(self) -> list[str]:
        """Method names (keys without their instance), in order."""
        return [split_key(k)[0] for k in self]

    def __repr__(self) -> str:
        return f"AppliedMethods({dict(self)!r})"


def split_key(key: str) -> tuple[str, str | None]:
    """``"lora:default"`` → ("lora", "default"); ``"quant"`` → ("quant", None)."""
    method, _, instance = key.partition(":")
    return method, instance or None


def record_of(module: nn.Module) -> AppliedMethods:
    """The record on ``module`` (an empty one, not attached, if nothing was ever applied to it)."""
    rec = module.__dict__.get(ATTR)
    return rec if isinstance(rec, AppliedMethods) else AppliedMethods()


def record(module: nn.Module, key: str, cfg: Any, undo: Any = None) -> None:
    """File ``cfg`` under ``key`` on ``module`` (``ValueError`` if the key is already there)."""
    rec = module.__dict__.get(ATTR)
    if not isinstance(rec, AppliedMethods):
        rec = AppliedMethods()
        module.applied = rec  # a plain attribute (nn.Module only registers modules, parameters, buffers)
    if key in rec:
        raise ValueError(f"{key} is already applied to this {type(module).__name__}; remove it first")
    rec[key] = cfg
    if undo is not None:
        rec.undo[key] = undo


def forget(module: nn.Module, key: str) -> tuple[Any, Any]:
    """Take ``key`` out of ``module``'s record; returns (config, undo) or (None, None) if absent."""
    rec = record_of(module)
    return rec.pop(key, None), rec.undo.pop(key, None)


def walk(model: nn.Module) -> Iterator[tuple[str, str, Any]]:
    """(module path, key, config) of every record inside ``model`` ("" = the model itself)."""
    for path, m in model.named_modules():
        for key, cfg in record_of(m).items():
            yield path, key, cfg


def describe(model: nn.Module) -> list[str]:
    """One line per applied method, e.g. ``"lora:default (rank=8, alpha=16.0, …)"``, for reports and info."""
    out = []
    for path, key, cfg in walk(model):
        fields = asdict(cfg) if is_dataclass(cfg) else {}
        opts = ", ".join(f"{k}={v}" for k, v in fields.items() if k != "targets" or len(str(v)) < 40)
        out.append(f"{key}{f' on {path}' if path else ''} ({opts})")
    return out


# ------------------------------------------------------------------------------------- save / load
@dataclass(frozen=True)
class Restorer:
    """How :func:`vitkit.load` re-applies a method: ``config`` (its dataclass), ``restore(module, cfg,
    instance)`` wires it into a freshly built model (before the tensors are loaded), ``loaded(module)``
    runs after the tensors are in (e.g. marks quantizers calibrated)."""

    config: type
    restore: Callable[[nn.Module, Any, str | None], Any]
    loaded: Callable[[nn.Module], Any] | None = None


RESTORERS: Registry[Restorer] = Registry("saved method")


def restorer(name: str, config: type, loaded: Callable[[nn.Module], Any] | None = None):
    """Decorator on a ``restore(module, cfg, instance)`` function: files it for method ``name``."""

    def register(fn: Callable[[nn.Module, Any, str | None], Any]):
        RESTORERS.register(name)(Restorer(config, fn, loaded))
        return fn

    return register


def config_dict(cfg: Any) -> dict:
    to_dict = getattr(cfg, "to_dict", None)
    return to_dict() if callable(to_dict) else asdict(cfg)


def to_json(model: nn.Module) -> list[dict]:
    """The records inside ``model`` as JSON-ready dicts {"module", "method", "config"}."""
    return [{"module": path, "method": key, "config": config_dict(cfg)} for path, key, cfg in walk(model)]


def restore(model: nn.Module, entries: list[dict], where: str) -> list[tuple[nn.Module, Restorer]]:
    """Replay saved records on ``model``; returns (module, restorer) pairs for :func:`finish_restore`.

    ``ValueError`` naming ``where`` for a method this vitkit does not know or a config that does not fit.
    """
    done = []
    for e in entries:
        try:
            path, key, raw = e.get("module", ""), e["method"], e["config"]
        except (KeyError, AttributeError, TypeError) as err:
            raise ValueError(f"{where}: malformed applied-method entry {e!r}") from err
        method, instance = split_key(key)
        if method not in RESTORERS:
            raise ValueError(f"{where}: the model was saved with method {method!r}, which this vitkit cannot "
                             f"re-apply (known: {list(RESTORERS)})")
        spec = RESTORERS[method]
        try:
            cfg = config_from_dict(spec.config, raw)
            module = model.get_submodule(path) if path else model
        except (AttributeError, TypeError, ValueError) as err:
            raise ValueError(f"{where}: cannot re-apply {key} ({err})") from err
        spec.restore(module, cfg, instance)
        done.append((module, spec))
    return done


def finish_restore(done: list[tuple[nn.Module, Restorer]]) -> None:
    for module, spec in done:
        if spec.loaded is not None:
            spec.loaded(module)
