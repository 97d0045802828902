"""The one progress-bar style for long loops (rich)."""

from __future__ import annotations


def progress_bar(enabled: bool = True):
    """A transient rich Progress (description, bar, n/total, ETA); a no-op display when disabled."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(
        TextColumn("{task.description}", style="bold", markup=False),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        disable=not enabled,
        transient=True,
    )
