"""``vitkit`` command line: a thin layer over the Python API.

``vitkit.cli.commands`` assembles the commands (the ``vitkit`` entry point is ``vitkit.cli:app``);
``vitkit.cli.common`` holds what the commands share. ``app`` and ``main`` are loaded on first use, so
importing ``vitkit.cli.common`` from a command module never imports every command.
"""

from __future__ import annotations

import importlib

__all__ = ["app", "main"]


def __getattr__(name: str):
    if name in __all__:
        return getattr(importlib.import_module(".commands", __name__), name)
    raise AttributeError(f"module 'vitkit.cli' has no attribute {name!r}")
