"""Name → object registries filled by decorators where the object is defined.

    DETECTORS = Registry("OOD detector")

    @DETECTORS.register("msp")
    class MSP(Detector): ...

One kind of registry serves OOD detectors, calibration sources, token reducers and the methods that
:func:`vitkit.load` can re-apply, so "what is there" is never a hand-kept list next to the code and
dispatch is by name or config type, never by module identity.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Mapping[str, T], Generic[T]):
    """An ordered, read-only mapping name → object; entries are added with :meth:`register`."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: file the decorated object under ``name`` and return it unchanged."""
        if not name:
            raise ValueError(f"a {self.kind} needs a non-empty name")

        def add(obj: T) -> T:
            have = self._items.get(name)
            # a module executed again (reloaded) defines the same class or function anew: not a clash
            if have is not None and have is not obj and (_origin(have) is None or _origin(have) != _origin(obj)):
                raise ValueError(f"{self.kind} {name!r} is registered twice ({have!r} and {obj!r})")
            self._items[name] = obj
            return obj

        return add

    def lookup(self, name: str) -> T:
        """The object named ``name``; ``ValueError`` listing the known names otherwise."""
        if name not in self._items:
            raise ValueError(f"unknown {self.kind} {name!r}; choose one of {list(self._items)}")
        return self._items[name]

    def names(self) -> tuple[str, ...]:
        return tuple(self._items)

    def __getitem__(self, name: str) -> T:
        return self._items[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {list(self._items)})"


def _origin(obj: object) -> tuple[str, str] | None:
    qualname = getattr(obj, "__qualname__", None)
    return (getattr(obj, "__module__", ""), qualname) if isinstance(qualname, str) else None
