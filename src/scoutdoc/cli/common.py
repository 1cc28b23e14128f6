"""What every command group shares: the stderr console, notices, the session store and reading sources.

Results go to stdout (plain text, or one JSON object with `--json`); progress, tables and errors go
to stderr through this console, so `scoutdoc ... --json | jq` always works.
"""

import os
from collections.abc import Callable
from pathlib import Path
from typing import Optional

from rich.console import Console

from ..errors import UsageError
from ..ingest import IngestOptions, IngestResult, load_sources
from ..ingest.names import display_name

# soft_wrap: a message is one line however narrow the terminal or pipe (80 columns), so it can be grepped
err = Console(stderr=True, soft_wrap=True, no_color=bool(os.environ.get("NO_COLOR")) or None)
# Whether a streamed answer left stdout in the middle of a line, so that a message (Ctrl-C's
# "interrupted", an error) starts on a line of its own.
mid_line = {"answer": False}
# Whether a command already wrote its one JSON object to stdout, so an error after it adds no second one.
json_written = {"done": False}


def end_answer_line() -> None:
    import sys

    if mid_line["answer"]:
        sys.stdout.write("\n")
        sys.stdout.flush()
        mid_line["answer"] = False


def download_bar(label: str):
    """A rich byte-progress bar on stderr and the progress callback that drives it."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    # drawn on a terminal only: in a pipe or a log, stopping it would leave an empty line
    bar = Progress(TextColumn(label), BarColumn(), DownloadColumn(), TransferSpeedColumn(), console=err, transient=True,
                   disable=not err.is_terminal)
    task = bar.add_task(label, total=None)
    return bar, lambda done, total, unit: bar.update(task, completed=done, total=total or None)


def safe(text: str) -> str:
    """Text from files or archives as rich markup that shows it literally: controls escaped, brackets inert."""
    from rich.markup import escape

    return escape(display_name(text))


def notice(message: str) -> None:
    end_answer_line()  # a note on the answer comes after it, on a line of its own
    err.print(f"[yellow]note:[/yellow] {safe(message)}", highlight=False, markup=True, soft_wrap=True)


def open_store(db: Optional[Path]):
    from ..settings import db_path
    from ..store import Store

    return Store(db or db_path())


def check_paths(args: list[str]) -> list[str]:
    """The sources named on the command line, refusing an empty one: an unset "$FILE" in a script
    would be the working directory, read whole."""
    if any(not arg for arg in args):
        raise UsageError('an empty path was given (an unset variable in a script?); name the files, or "." for '
                         "the current directory")
    return args


def source_paths(args: list[str]) -> list[Path]:
    return [Path(arg) for arg in check_paths(args)]


def read_sources(paths: list[Path], options: IngestOptions, show_skips: bool = True, load: Callable[..., IngestResult] = load_sources) -> IngestResult:
    """load_sources (or `load`, taking the same arguments) with a rich progress bar on stderr (on a terminal) and one line per skipped source."""
    if not err.is_terminal:  # nobody sees a bar in a pipe or log, and updating it costs time per file
        result = load(paths, options)
    else:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        with Progress(TextColumn("reading"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=err, transient=True) as bar:
            task = bar.add_task("ingest", total=None)
            result = load(paths, options, progress=lambda done, total, unit: bar.update(task, completed=done, total=total))
    if show_skips:
        for skip in result.skipped:
            err.print(f"[yellow]skipped[/yellow] {safe(skip.source)}: {safe(skip.reason)}", highlight=False, markup=True, soft_wrap=True)
    for document in result.documents:
        if document.meta.get("failed_pages"):
            pages = ", ".join(map(str, document.meta["failed_pages"]))
            warn(f"{document.source}: text extraction failed on {'page' if len(document.meta['failed_pages']) == 1 else 'pages'} {pages}; the other pages were kept")
        for warning in document.meta.get("warnings", ()):
            warn(f"{document.source}: {warning}")
    return result


def warn(message: str) -> None:
    err.print(f"[yellow]warning[/yellow] {safe(message)}", highlight=False, markup=True, soft_wrap=True)
