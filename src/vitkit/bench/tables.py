"""Console tables and byte counts for benchmark output (rich when installed, plain text otherwise)."""

from __future__ import annotations

import io
from collections.abc import Sequence

__all__ = ["fmt_bytes", "render_table", "text_table"]


def fmt_bytes(n: float) -> str:
    """1536 → "1.5 KiB" (bytes as a whole number, larger units with one decimal, up to GiB)."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def text_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """``title``, then the columns left-aligned to the widest cell, a dashed rule and the rows."""
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(columns)]
    lines = [title, "  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(lines)


def render_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[str]], width: int = 140) -> str:
    """The table as rich draws it for a console ``width`` wide (first column left, the rest right-aligned);
    :func:`text_table` after a blank line when rich is not installed."""
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        return "\n" + text_table(title, columns, rows)
    table = Table(title=title, title_justify="left")
    for i, c in enumerate(columns):
        table.add_column(c, justify="left" if i == 0 else "right")
    for r in rows:
        table.add_row(*r)
    console = Console(width=width, record=True, file=io.StringIO())
    console.print(table)
    return console.export_text().rstrip("\n")
