"""The registry of token-reduction methods: what the CLI, the evaluation and :func:`vitkit.load` dispatch on.

A method module (hired.py, evit.py, tome.py) ends with a :class:`Reducer` subclass decorated with
:func:`register_reducer`; code that runs "some method" looks it up by name (:data:`REDUCERS`) or by
its config (:func:`reducer_for`) instead of testing which module it was given.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from torch import Tensor, nn

from ..models.applied import restorer
from ..registry import Registry
from .partitions import TokenSet, encode_partitions, partition
from .wiring import vision_tower


class Reducer:
    """A token-reduction method: its ``config`` dataclass, ``apply(model, cfg)``, ``remove(model)`` and
    ``encode(model, images, grid)``: high-resolution images (B, C, H, W) → the kept tokens of the
    thumbnail and the grid's sub-images as a :class:`TokenSet`, with the method applied. The default
    encodes every partition through the vision tower (what reduces inside the encoder, EViT and ToMe)."""

    name: ClassVar[str] = ""
    config: ClassVar[type]
    apply: ClassVar[Callable[[nn.Module, Any], list[str]]]
    remove: ClassVar[Callable[[nn.Module], list[str]]]

    @staticmethod
    def encode(model: nn.Module, images: Tensor, grid: tuple[int, int]) -> TokenSet:
        vis = vision_tower(model)
        return encode_partitions(model, partition(images, grid, vis.cfg.img_size, vis.patch_size))


REDUCERS: Registry[type[Reducer]] = Registry("token-reduction method")


def register_reducer(name: str) -> Callable[[type[Reducer]], type[Reducer]]:
    """Class decorator: file a :class:`Reducer` under ``name``; :func:`vitkit.load` can then re-apply it."""

    def add(cls: type[Reducer]) -> type[Reducer]:
        cls.name = name
        REDUCERS.register(name)(cls)

        @restorer(name, cls.config)
        def restore(model: nn.Module, cfg: Any, instance: str | None = None) -> None:
            cls.apply(model, cfg)

        return cls

    return add


def reducer_for(cfg: Any) -> type[Reducer]:
    """The registered reducer whose config ``cfg`` is; ValueError for anything else."""
    for cls in REDUCERS.values():
        if isinstance(cfg, cls.config):
            return cls
    raise ValueError(f"{type(cfg).__name__} is not the config of a token-reduction method "
                     f"(registered: {list(REDUCERS)})")
