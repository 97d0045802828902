"""LoRA: W x + (alpha / r) · B A x on chosen Linear layers, including q/k/v slices of a fused qkv.

Pure maths first (:func:`lora_delta`, :func:`delta_weight`), then the wrapper :class:`LoraLinear`
(keeps the original layer as ``base_layer``, like peft, so quantization and token reduction still
find it), then the model wiring: :func:`apply` / :func:`remove`, named adapters
(:func:`set_adapter`), :func:`merge` / :func:`unmerge`, and :func:`save_adapter` /
:func:`load_adapter` (safetensors holding the adapter tensors alone, plus the config and the shapes
of the layers they fit).

Choices (written down as SYSTEMS.md asks): on a fused ``qkv`` Linear (out = 3·in, layout [q; k; v])
each selected part p ∈ {q, k, v} gets its own pair A_p (r, in), B_p (in, r), as if q, k and v were
separate projections (what the LoRA paper adapts); the unselected slices are untouched. A is
initialised like peft (Kaiming-uniform, a = √5), B to zero, so a fresh adapter leaves the output
unchanged. Scaling = alpha / rank.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import config_from_dict
from ..models.applied import forget, record, record_of, restorer
from ..models.surgery import replace_module
from ..models.wrapper import LayerWrapper, base_of, linear_features, unwrap

log = logging.getLogger(__name__)

PREFIX = "lora_"  # every adapter parameter's name contains it: freezing and saving are name filters
QKV_PARTS = "qkv"
FORMAT = "vitkit-lora/1"
METHOD = "lora"


@dataclass
class LoraConfig:
    """Which layers get an adapter and how big it is.

    ``targets``: module-name suffixes (a module named ``blocks.3.attn.qkv`` matches ``"qkv"``,
    ``"attn.qkv"`` or the full name); ``"proj"`` also matches a CLIP image/text projection — use
    ``"attn.proj"`` for attention outputs only. ``qkv_parts``: which slices of a fused ``qkv``
    layer are adapted (any of "q", "k", "v"). ``layers``: block indices to restrict to (None = all;
    matched on ``blocks.<i>.`` in the name). ``modules_to_save``: modules trained in full and saved
    with the adapter (e.g. a new ``head``).
    """

    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    targets: tuple[str, ...] = ("qkv",)
    qkv_parts: str = "qv"
    layers: tuple[int, ...] | None = None
    modules_to_save: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if isinstance(self.targets, str):
            self.targets = (self.targets,)
        self.targets = tuple(self.targets)
        self.modules_to_save = tuple(self.modules_to_save)
        if self.layers is not None:
            self.layers = tuple(int(i) for i in self.layers)
        if not isinstance(self.rank, int) or self.rank < 1:
            raise ValueError(f"LoraConfig.rank must be an int ≥ 1, got {self.rank!r}")
        if self.alpha <= 0:
            raise ValueError(f"LoraConfig.alpha must be > 0, got {self.alpha!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"LoraConfig.dropout must be in [0, 1), got {self.dropout!r}")
        if not self.targets:
            raise ValueError("LoraConfig.targets is empty: name at least one layer, e.g. ('qkv',)")
        parts = self.qkv_parts.lower()
        if not parts or set(parts) - set(QKV_PARTS) or len(set(parts)) != len(parts):
            raise ValueError(f"LoraConfig.qkv_parts must be a non-empty subset of 'qkv' (e.g. 'qv'), got {self.qkv_parts!r}")
        self.qkv_parts = "".join(p for p in QKV_PARTS if p in parts)  # canonical order

    @property
    def scaling(self) -> float:
        return self.alpha / self.rank

    def to_dict(self) -> dict:
        d = asdict(self)
        d["targets"] = list(self.targets)
        d["modules_to_save"] = list(self.modules_to_save)
        d["layers"] = None if self.layers is None else list(self.layers)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> LoraConfig:
        return config_from_dict(cls, d)


# ---------------------------------------------------------------------------------------------- maths
def lora_delta(x: Tensor, A: Tensor, B: Tensor, scaling: float) -> Tensor:
    """Low-rank update of P output slices.

    x (..., in); A (P, r, in); B (P, out_p, r) → (..., P · out_p): slice p is scaling · x Aₚᵀ Bₚᵀ.
    """
    P, r, _ = A.shape
    z = F.linear(x, A.reshape(P * r, -1))  # (..., P·r)
    if P == 1:
        return F.linear(z, B[0]) * scaling  # (..., out)
    z = z.unflatten(-1, (P, r)).movedim(-2, 0)  # (P, ..., r)
    out = torch.stack([F.linear(z[p], B[p]) for p in range(P)], -2)  # (..., P, out_p)
    return out.flatten(-2) * scaling


def delta_weight(A: Tensor, B: Tensor, scaling: float) -> Tensor:
    """ΔW (P · out_p, in) of the update above: rows of slice p = scaling · Bₚ Aₚ."""
    return (B @ A).flatten(0, 1) * scaling


# ---------------------------------------------------------------------------------------------- wrapper
class LoraLinear(LayerWrapper):
    """A Linear layer plus named low-rank adapters; ``base_layer`` is the original layer.

    ``forward(x)`` = base_layer(x) + Σ_active Δ_a(x), where an adapter covers either the whole output
    or chosen thirds of a fused qkv output (``slices``: which thirds, in order). With every B = 0
    (fresh adapters) or no active adapter it returns exactly ``base_layer(x)``.
    """

    def __init__(self, base_layer: nn.Module) -> None:
        super().__init__(base_layer)
        self.lora_A = nn.ParameterDict()
        self.lora_B = nn.ParameterDict()
        self.lora_dropout = nn.ModuleDict()
        self.scaling: dict[str, float] = {}
        self.slices: dict[str, tuple[int, ...]] = {}  # adapter → covered output parts (qkv thirds), () = all
        self.active: list[str] = []
        self.merged: list[str] = []

    def add_adapter(self, name: str, rank: int, alpha: float, dropout: float, parts: str | None) -> None:
        """Add adapter ``name``; ``parts`` = subset of "qkv" for a fused qkv layer, None = whole output."""
        if name in self.lora_A:
            raise ValueError(f"adapter {name!r} already exists on this layer; remove it first or pick another name")
        ref = self.base_layer.weight if hasattr(self.base_layer, "weight") else None
        dtype = ref.dtype if ref is not None and ref.is_floating_point() else torch.float32
        device = ref.device if ref is not None else None
        if parts is None:
            slices: tuple[int, ...] = ()
            P, out_p = 1, self.out_features
        else:
            slices = tuple(QKV_PARTS.index(p) for p in parts)
            P, out_p = len(slices), self.out_features // 3
        A = torch.empty(P, rank, self.in_features, dtype=dtype, device=device)
        for p in range(P):
            nn.init.kaiming_uniform_(A[p], a=math.sqrt(5))
        self.lora_A[name] = nn.Parameter(A)
        self.lora_B[name] = nn.Parameter(torch.zeros(P, out_p, rank, dtype=dtype, device=device))
        self.lora_dropout[name] = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.scaling[name] = alpha / rank
        self.slices[name] = slices
        self.active.append(name)

    def delete_adapter(self, name: str) -> None:
        if name in self.merged:
            self.unmerge(name)
        for d in (self.lora_A, self.lora_B, self.lora_dropout):
            del d[name]
        del self.scaling[name], self.slices[name]
        if name in self.active:
            self.active.remove(name)

    @property
    def adapters(self) -> list[str]:
        return list(self.lora_A.keys())

    def _expand(self, name: str, y: Tensor) -> Tensor:
        """Per-slice output (..., P·out_p) → full output (..., out) with zeros outside the slices."""
        slices = self.slices[name]
        if not slices:
            return y
        if len(slices) == 3:
            return y
        out_p = self.out_features // 3
        chunks = list(y.split(out_p, dim=-1))
        zero = y.new_zeros(*y.shape[:-1], out_p)
        full = [zero] * 3
        for c, s in zip(chunks, slices, strict=True):
            full[s] = c
        return torch.cat(full, dim=-1)

    def delta_weight(self, name: str) -> Tensor:
        """ΔW (out, in) of adapter ``name`` (zero rows outside its slices)."""
        dw = delta_weight(self.lora_A[name], self.lora_B[name], self.scaling[name])
        return self._expand(name, dw.t()).t()

    def forward(self, x: Tensor) -> Tensor:
        y = self.base_layer(x)
        for name in self.active:
            if name in self.merged:
                continue
            A, B = self.lora_A[name], self.lora_B[name]
            d = lora_delta(self.lora_dropout[name](x.to(A.dtype)), A, B, self.scaling[name])
            y = y + self._expand(name, d).to(y.dtype)
        return y

    def _base_weight(self) -> Tensor:
        w = getattr(self.base_layer, "weight", None)
        if not isinstance(self.base_layer, nn.Linear) or w is None or not w.is_floating_point():
            raise ValueError(
                f"cannot merge LoRA into a {type(self.base_layer).__name__} base layer: merging needs a float "
                "nn.Linear (merge before quantizing, or keep the adapter unmerged)"
            )
        return w

    @torch.no_grad()
    def merge(self, name: str) -> None:
        if name in self.merged:
            return
        w = self._base_weight()
        w += self.delta_weight(name).to(w.dtype)
        self.merged.append(name)

    @torch.no_grad()
    def unmerge(self, name: str) -> None:
        if name not in self.merged:
            return
        w = self._base_weight()
        w -= self.delta_weight(name).to(w.dtype)
        self.merged.remove(name)

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, adapters={self.adapters}, active={self.active}"


# ---------------------------------------------------------------------------------------------- wiring
def _matches(name: str, target: str) -> bool:
    return name == target or name.endswith("." + target)


def _in_layers(name: str, layers: Sequence[int] | None) -> bool:
    if layers is None:
        return True
    m = re.search(r"(?:^|\.)blocks\.(\d+)\.", name)
    return m is not None and int(m.group(1)) in layers


def _is_qkv(name: str, layer: nn.Module) -> bool:
    i, o = linear_features(layer)
    return name.rsplit(".", 1)[-1] == "qkv" and o == 3 * i


def _linear_like(m: nn.Module) -> bool:
    if isinstance(m, nn.Linear | LoraLinear):
        return True
    return base_of(m) is not None or (isinstance(getattr(m, "in_features", None), int)
                                        and isinstance(getattr(m, "out_features", None), int))


def key(name: str) -> str:
    """The key of adapter ``name`` in the model's applied-methods record."""
    return f"{METHOD}:{name}"


def configs(model: nn.Module) -> dict[str, LoraConfig]:
    """{adapter name: LoraConfig} of the adapters applied to ``model`` (read from its record)."""
    return {k.split(":", 1)[1]: c for k, c in record_of(model).items() if k.startswith(METHOD + ":")}


def lora_layers(model: nn.Module) -> dict[str, LoraLinear]:
    """{module name: LoraLinear} in ``model``."""
    return {n: m for n, m in model.named_modules() if isinstance(m, LoraLinear)}


def apply(model: nn.Module, cfg: LoraConfig | None = None, name: str = "default") -> list[str]:
    """Add adapter ``name`` to every Linear layer ``cfg`` targets; returns the wrapped module names.

    A layer that already carries adapters gets one more (switch with :func:`set_adapter`); the new
    adapter is active. Nothing is frozen here: see :func:`mark_trainable`. Raises ``ValueError``
    (and leaves the model unchanged) when a target matches nothing.
    """
    cfg = cfg or LoraConfig()
    if not name or not re.fullmatch(r"[A-Za-z0-9_-]+", name):
        raise ValueError(f"adapter name must be letters, digits, '_' or '-', got {name!r}")
    existing = tuple(e + "." for e in lora_layers(model))
    # layers inside an existing wrapper are not candidates: the wrapper itself gets the new adapter
    candidates = [(n, m) for n, m in model.named_modules() if _linear_like(m) and not n.startswith(existing)]
    touched: list[str] = []
    unmatched = []
    for t in cfg.targets:
        hits = [(n, m) for n, m in candidates if _matches(n, t) and _in_layers(n, cfg.layers)]
        if not hits:
            unmatched.append(t)
        for n, m in hits:
            if n in touched:
                continue
            wrapper = m if isinstance(m, LoraLinear) else LoraLinear(m)
            parts = cfg.qkv_parts if _is_qkv(n, wrapper.base_layer) else None
            wrapper.add_adapter(name, cfg.rank, cfg.alpha, cfg.dropout, parts)
            if wrapper is not m:
                replace_module(model, n, wrapper)
            touched.append(n)
    if unmatched:
        # undo what this call did so a failed apply leaves the model as it was
        for n in touched:
            _drop(model, n, name)
        sample = [n for n, m in candidates if isinstance(m, nn.Linear | LoraLinear)][:8]
        where = f" in blocks {list(cfg.layers)}" if cfg.layers is not None else ""
        raise ValueError(
            f"LoRA target(s) {unmatched} matched no Linear layer{where}; targets are module-name suffixes, "
            f"e.g. 'qkv', 'attn.proj', 'fc1', 'fc2'. Linear layers here include: {sample}"
        )
    for m in cfg.modules_to_save:
        try:
            model.get_submodule(m)
        except AttributeError as e:
            for n in touched:
                _drop(model, n, name)
            raise ValueError(f"LoraConfig.modules_to_save: no module named {m!r} in the model") from e
    forget(model, key(name))  # re-applying an adapter name replaces its record (as before: one config per name)
    record(model, key(name), cfg)
    log.info("LoRA %r (rank %d, alpha %g) on %d layers: %s", name, cfg.rank, cfg.alpha, len(touched), touched)
    return touched


def _drop(model: nn.Module, module_name: str, name: str) -> None:
    w = model.get_submodule(module_name)
    if isinstance(w, LoraLinear) and name in w.adapters:
        w.delete_adapter(name)
        if not w.adapters:
            unwrap(model, module_name)


def remove(model: nn.Module, name: str | None = None, merge: bool = False) -> list[str]:
    """Remove adapter ``name`` (None = all); with ``merge`` its update is folded into the base weights
    first. Layers left without adapters get their original ``base_layer`` back. Returns the layers."""
    layers = lora_layers(model)
    if not layers:
        raise ValueError("the model has no LoRA adapters to remove")
    names = [name] if name is not None else sorted({a for w in layers.values() for a in w.adapters})
    touched = []
    for n, w in layers.items():
        for a in names:
            if a in w.adapters:
                if merge:
                    w.merge(a)
                    w.merged.remove(a)  # folded in for good: forget it so deleting does not unmerge
                w.delete_adapter(a)
                touched.append(n)
        if not w.adapters:
            unwrap(model, n)
    if not touched:
        raise ValueError(f"no adapter named {name!r}; adapters here: {adapter_names(model)}")
    for a in names:
        forget(model, key(a))
    return sorted(set(touched))


def adapter_names(model: nn.Module) -> list[str]:
    return sorted({a for w in lora_layers(model).values() for a in w.adapters})


def set_adapter(model: nn.Module, names: str | Sequence[str] | None) -> None:
    """Make only ``names`` active (None or [] = none: the plain model)."""
    names = [names] if isinstance(names, str) else list(names or [])
    known = adapter_names(model)
    missing = [n for n in names if n not in known]
    if missing:
        raise ValueError(f"unknown adapter(s) {missing}; adapters here: {known}")
    for w in lora_layers(model).values():
        for a in list(w.merged):
            if a not in names:
                w.unmerge(a)
        w.active = [a for a in names if a in w.adapters]


def merge(model: nn.Module, name: str | None = None) -> list[str]:
    """Fold the active adapters (or ``name``) into the base weights: inference without the extra matmuls."""
    out = []
    for n, w in lora_layers(model).items():
        for a in [name] if name else list(w.active):
            if a in w.adapters:
                w.merge(a)
                out.append(n)
    return out


def unmerge(model: nn.Module, name: str | None = None) -> list[str]:
    """Subtract merged adapters again (restores the original weights up to float rounding)."""
    out = []
    for n, w in lora_layers(model).items():
        for a in [name] if name else list(w.merged):
            if a in w.merged:
                w.unmerge(a)
                out.append(n)
    return out


def mark_trainable(model: nn.Module, name: str | None = None, extra: Iterable[str] = ()) -> int:
    """Freeze everything except adapter ``name``'s parameters (None = all adapters), the adapter's
    ``modules_to_save`` and the modules named in ``extra``. Returns the number of trainable values."""
    keep = set(extra)
    for a, c in configs(model).items():
        if name is None or a == name:
            keep |= set(c.modules_to_save)
    for pname, p in model.named_parameters():
        is_lora = PREFIX in pname and (name is None or pname.endswith("." + name))
        is_kept = any(pname == k or pname.startswith(k + ".") for k in keep)
        p.requires_grad_(is_lora or is_kept)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def count_parameters(model: nn.Module, name: str | None = None) -> tuple[int, int]:
    """(adapter values of ``name`` or all adapters, values of the model without any adapter)."""
    lora = base = 0
    for pname, p in model.named_parameters():
        if PREFIX in pname:
            if name is None or pname.endswith("." + name):
                lora += p.numel()
        else:
            base += p.numel()
    return lora, base


# ---------------------------------------------------------------------------------------------- files
def adapter_state_dict(model: nn.Module, name: str = "default") -> dict[str, Tensor]:
    """``<layer>.lora_A`` / ``<layer>.lora_B`` tensors of adapter ``name`` + its modules_to_save."""
    sd: dict[str, Tensor] = {}
    for n, w in lora_layers(model).items():
        if name in w.adapters:
            sd[f"{n}.lora_A"] = w.lora_A[name].detach()
            sd[f"{n}.lora_B"] = w.lora_B[name].detach()
    if not sd:
        raise ValueError(f"no adapter named {name!r}; adapters here: {adapter_names(model)}")
    cfg = configs(model).get(name)
    for m in (cfg.modules_to_save if cfg else ()):
        for k, v in model.get_submodule(m).state_dict().items():
            sd[f"{m}.{k}"] = v.detach()
    return sd


def _shapes(model: nn.Module, name: str) -> dict[str, list[int]]:
    return {n: [w.in_features, w.out_features] for n, w in lora_layers(model).items() if name in w.adapters}


def save_adapter(model: nn.Module, path: str | Path, name: str = "default") -> Path:
    """Write adapter ``name`` alone (tensors + config + the shapes of the layers it fits) to safetensors."""
    from safetensors.torch import save_file

    path = Path(path)
    if path.suffix != ".safetensors":
        path = path.with_suffix(".safetensors")
    cfg = configs(model).get(name)
    if cfg is None:
        raise ValueError(f"no adapter named {name!r}; adapters here: {adapter_names(model)}")
    sd = {k: v.contiguous().cpu() for k, v in adapter_state_dict(model, name).items()}
    meta = {"format": FORMAT, "name": name, "config": json.dumps(cfg.to_dict()), "layers": json.dumps(_shapes(model, name))}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(sd, str(path), metadata=meta)
    return path


def read_adapter(path: str | Path) -> tuple[LoraConfig, dict[str, list[int]], dict[str, Tensor], str]:
    """(config, {layer: [in, out]}, tensors, saved name) of an adapter file; ValueError if it is not one."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"adapter file {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises its own errors
        raise ValueError(f"{path}: not a readable safetensors file ({e})") from e
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path} is not a vitkit LoRA adapter file (metadata format {meta.get('format')!r}, "
                         f"expected {FORMAT!r}); write one with vitkit.adapt.lora.save_adapter")
    return LoraConfig.from_dict(json.loads(meta["config"])), json.loads(meta["layers"]), tensors, meta.get("name", "default")


def load_adapter(model: nn.Module, path: str | Path, name: str | None = None) -> list[str]:
    """Add the adapter stored in ``path`` to ``model`` (under ``name``, default its saved name) and
    load its tensors. Raises ``ValueError`` naming the file and layer when it was made for another
    backbone (missing layer or other shapes). Returns the wrapped layers."""
    cfg, layers, tensors, saved = read_adapter(path)
    name = name or saved
    modules = dict(model.named_modules())
    for n, (i, o) in layers.items():
        m = modules.get(n)
        if m is None:
            raise ValueError(f"adapter file {path} was made for another backbone: it adapts layer {n!r}, "
                             "which this model lacks")
        base = m.base_layer if isinstance(m, LoraLinear) else m
        try:
            shape = list(linear_features(base))
        except TypeError:
            shape = None
        if shape != [i, o]:
            raise ValueError(f"adapter file {path} was made for another backbone: layer {n!r} is {i}→{o} there "
                             f"but {shape[0]}→{shape[1] if shape else '?'} here" if shape else
                             f"adapter file {path}: layer {n!r} is not a Linear layer in this model")
    touched = apply(model, cfg, name)
    if sorted(touched) != sorted(layers):
        remove(model, name)
        raise ValueError(f"adapter file {path} was made for another backbone: its config adapts {sorted(layers)} "
                         f"but here it matches {sorted(touched)}")
    with torch.no_grad():
        for n in layers:
            w = model.get_submodule(n)
            for part in ("lora_A", "lora_B"):
                t = tensors.get(f"{n}.{part}")
                p = getattr(w, part)[name]
                if t is None or t.shape != p.shape:
                    remove(model, name)
                    raise ValueError(f"adapter file {path}: tensor {n}.{part} is "
                                     f"{None if t is None else tuple(t.shape)}, expected {tuple(p.shape)}")
                p.copy_(t)
        for m in cfg.modules_to_save:
            sub = model.get_submodule(m)
            own = {k[len(m) + 1 :]: v for k, v in tensors.items() if k.startswith(m + ".")}
            try:
                sub.load_state_dict(own)
            except RuntimeError as e:
                remove(model, name)
                raise ValueError(f"adapter file {path}: module {m!r} does not fit this model ({e})") from e
    return touched


@restorer(METHOD, LoraConfig)
def restore(model: nn.Module, cfg: LoraConfig, name: str | None) -> None:
    """Re-apply a saved adapter (fresh tensors; :func:`vitkit.load` loads the saved ones after)."""
    apply(model, cfg, name or "default")


__all__ = [
    "configs",
    "LoraConfig",
    "LoraLinear",
    "adapter_names",
    "adapter_state_dict",
    "apply",
    "count_parameters",
    "delta_weight",
    "load_adapter",
    "lora_delta",
    "lora_layers",
    "mark_trainable",
    "merge",
    "read_adapter",
    "remove",
    "save_adapter",
    "set_adapter",
    "unmerge",
]
