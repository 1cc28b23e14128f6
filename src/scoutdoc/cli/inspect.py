"""`scoutdoc inspect`: what would go into the prompt, without a model."""

import json
import sys
from collections.abc import Callable
from typing import Annotated, Optional

import typer

from ..errors import UsageError
from ..ingest import IngestOptions, require_documents
from ..wording import plural
from .common import err, json_written, read_sources, safe, source_paths
from .options import INGEST, expand_options


def token_counter(model: Optional[str]) -> Optional[Callable[[str], int]]:
    """A function counting the model's tokens, or None when no tokenizer is at hand.

    With --model, that model's tokenizer (a catalog model is pulled if missing). Without it, the
    default model's tokenizer only if it is already pulled: inspect never downloads on its own, and
    reports characters (tokens null) instead.
    """
    from .. import models, settings

    if model is None:
        if not models.is_pulled(settings.DEFAULT_MODEL):
            return None
        model = settings.DEFAULT_MODEL
    tokenizer = models.tokenizer_for(model)
    return lambda text: len(tokenizer.encode(text))


@expand_options
def inspect(
    args: Annotated[list[str], typer.Argument(metavar="PATHS...", help="Files, directories (codebases) or archives to read.", show_default=False)],
    *,
    options: Annotated[IngestOptions, INGEST],
    tree: Annotated[bool, typer.Option("--tree", help="Add a per-directory breakdown.")] = False,
    dump: Annotated[bool, typer.Option("--dump", help="Print the exact packed text that would go into the prompt.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as one JSON object.")] = False,
    model: Annotated[Optional[str], typer.Option("--model", help="Count tokens with this model's tokenizer.")] = None,
) -> None:
    """Show what would go into the prompt: sources, sizes, skipped files and why. Nothing is sent to a model."""
    from ..ingest.report import summarize

    paths = source_paths(args)
    if dump and as_json:
        raise UsageError("--dump prints the packed text and --json a report of it; give one of them")
    if dump:  # documents are parked in a temporary file while reading, not all held in memory
        from ..ingest.dump import SpilledPack

        with SpilledPack(sys.stdout) as spilled:
            result = read_sources(paths, options, load=spilled.load)
            spilled.write(result)
        require_documents(result)
        return
    result = read_sources(paths, options, show_skips=as_json)
    if as_json:
        count = token_counter(model)
        sys.stdout.write(json.dumps(summarize(result, count, by_directory=tree), ensure_ascii=False, indent=2) + "\n")
        json_written["done"] = True  # its "skipped" list already says why; no second object after it
    else:
        _print_inspect(summarize(result, token_counter(model), by_directory=tree))
    require_documents(result)


def _print_inspect(report: dict) -> None:
    from rich.table import Table

    table = Table(title="sources", title_justify="left")
    for column, justify in (("source", "left"), ("kind", "left"), ("size", "right"), ("chars", "right"), ("tokens", "right")):
        table.add_column(column, justify=justify, overflow="fold")
    for s in report["sources"]:
        kind = f"{s['kind']} ({s['language']})" if s["language"] else s["kind"]
        table.add_row(safe(s["path"]), kind, s["extent"], f"{s['chars']:,}", "-" if s["tokens"] is None else f"{s['tokens']:,}")
    totals = report["totals"]
    table.add_section()
    table.add_row(f"{plural(totals['sources'], 'source')}, {totals['skipped']} skipped", "", "", f"{totals['chars']:,}", "-" if totals["tokens"] is None else f"{totals['tokens']:,}")
    err.print(table)
    if "directories" in report:
        folders = Table(title="by directory", title_justify="left")
        for column, justify in (("directory", "left"), ("sources", "right"), ("chars", "right"), ("tokens", "right")):
            folders.add_column(column, justify=justify, overflow="fold")
        for row in report["directories"]:
            folders.add_row(safe(row["directory"]), str(row["sources"]), f"{row['chars']:,}", "-" if row["tokens"] is None else f"{row['tokens']:,}")
        err.print(folders)
    if report["skipped"]:
        skipped = Table(title="skipped", title_justify="left")
        skipped.add_column("source", overflow="fold")
        skipped.add_column("reason", overflow="fold")
        for row in report["skipped"]:
            skipped.add_row(safe(row["path"]), safe(row["reason"]))
        err.print(skipped)
    note = "" if totals["tokens"] is not None else " (no tokenizer at hand: pass --model or run `scoutdoc models pull` for token counts)"
    err.print(f"packed prompt text: {totals['packed_chars']:,} characters{note}", highlight=False)
