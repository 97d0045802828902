"""What every ``vitkit`` command shares: the consoles, the one-line failure, loading a SOURCE argument.

Command modules (``vitkit.cli.main`` and each package's ``cli.py``) import these names; this module
imports nothing of theirs, so the command line has no import cycle.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.text import Text

#: standard output (tables, paths) and standard error (notes, errors). Without markup: what they print comes
#: from users (paths, class names, error messages) and keeps its brackets ('vitkit[onnx]', 'img[1].png');
#: rich would read those as style tags, drop them, or fail on a stray '[/…]'
out = Console(markup=False)
err = Console(stderr=True, markup=False)

#: user-facing failures: one line, exit code 2, no traceback
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError, ImportError, RuntimeError)


def fail(e: BaseException) -> None:
    """Print ``e`` as one ``error:`` line on standard error and exit with code 2."""
    err.print(Text.assemble(("error:", "bold red"), f" {e}"), highlight=False, soft_wrap=True)
    raise typer.Exit(code=2)


def load_source(source: str):
    """A checkpoint (path, ``hf-hub:org/name``, ``pretrained:NAME``) or a registry name (random weights)."""
    import vitkit

    if source in vitkit.list_models() and not Path(source).exists():
        err.print(Text.assemble(("note:", "yellow"), f" {source} is a registry name: random weights (pass a checkpoint "
                                                     "for real ones)"))
        return vitkit.create_model(source).eval()
    return vitkit.load(source)
