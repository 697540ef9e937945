"""The progress bar of the commands that read a CSV file (``stock import``, ``catalog import``).

The bar goes to stderr and only on a terminal, so ``--json`` output and scripts see nothing of it.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from invsaga.cli.errors import run

T = TypeVar("T")


def run_reading(file: Path, work: Callable[[Callable[[int], None]], Coroutine[Any, Any, T]]) -> T:
    """Run ``work(on_progress)``, where ``on_progress(rows)`` reports the data rows read so far."""
    console = Console(stderr=True)
    progress = Progress(
        TextColumn("importing"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,
    )
    with progress:
        task = progress.add_task("import", total=None if progress.disable else _count_data_rows(file))
        return run(work(lambda rows: progress.update(task, completed=rows)))


def _count_data_rows(path: Path) -> int | None:
    """A cheap line count for the bar's total; None when the file cannot be read."""
    try:
        with path.open("rb") as file:
            lines = sum(block.count(b"\n") for block in iter(lambda: file.read(1 << 20), b""))
    except OSError:
        return None
    return max(lines - 1, 0)
