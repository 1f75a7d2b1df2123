"""One progress bar for every long piece of work: label, bar, done/total, elapsed, ETA, and a status text."""

from __future__ import annotations

from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


def progress_bar(label: str) -> Any:
    """A rich `Progress` with the columns memrl uses everywhere; add tasks with `info=""` for the status text."""
    return Progress(
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
        transient=False,
    )
