"""The one base class for layers that wrap an original layer and keep it as ``base_layer`` (as peft does).

LoRA (:class:`~vitkit.adapt.lora.LoraLinear`) and fake quantization
(:class:`~vitkit.quant.ptq.QuantLinear`) subclass :class:`LayerWrapper`; int8 execution and the
quantizer find the layer inside any wrapper through :func:`base_of`. Because the original module
object is kept, removing a method puts back the very object that was there (:func:`unwrap`), and
methods stack: LoRA on a quantized layer wraps the ``QuantLinear``, quantizing a LoRA layer
quantizes its ``base_layer``.
"""

from __future__ import annotations

from torch import Tensor, nn

from .surgery import replace_module


def linear_features(layer: nn.Module) -> tuple[int, int]:
    """(in_features, out_features) of a Linear or of anything that says them (wrappers, Int8Linear)."""
    if isinstance(layer, nn.Linear):
        return layer.in_features, layer.out_features
    i, o = getattr(layer, "in_features", None), getattr(layer, "out_features", None)
    if isinstance(i, int) and isinstance(o, int):
        return i, o
    raise TypeError(f"{type(layer).__name__} is not a Linear layer (no in_features/out_features)")


class LayerWrapper(nn.Module):
    """A layer around ``base_layer`` (the original module object, kept as it is).

    ``weight`` and ``bias`` read through to the base layer (through every wrapper below it), so code
    that reads ``qkv.weight`` (adapters, FLOP counters, converters) works on a wrapped model.
    Subclasses implement ``forward``.
    """

    def __init__(self, base_layer: nn.Module) -> None:
        super().__init__()
        self.base_layer = base_layer
        self.in_features, self.out_features = linear_features(base_layer)

    @property
    def weight(self) -> Tensor:
        return self.base_layer.weight

    @property
    def bias(self) -> Tensor | None:
        return self.base_layer.bias


def base_of(module: nn.Module) -> nn.Module | None:
    """The ``base_layer`` of a wrapper (a :class:`LayerWrapper` or a peft-style foreign one), else None."""
    base = getattr(module, "base_layer", None)
    return base if isinstance(base, nn.Module) else None


def innermost(module: nn.Module) -> nn.Module:
    """Follow ``base_layer`` down to the layer no wrapper wraps."""
    while (base := base_of(module)) is not None:
        module = base
    return module


def unwrap(model: nn.Module, name: str) -> nn.Module:
    """Put the wrapper at ``name`` back to its ``base_layer`` (the original object); returns the wrapper."""
    wrapper = model.get_submodule(name)
    base = base_of(wrapper)
    if base is None:
        raise ValueError(f"{name!r} is a {type(wrapper).__name__}, not a wrapper with a base_layer")
    return replace_module(model, name, base)
