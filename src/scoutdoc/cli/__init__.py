"""The command line: a thin layer of Typer commands over the library, one module per command group.

Results go to stdout (plain text, or one JSON object with `--json`); progress, tables and errors go
to stderr through rich, so `scoutdoc ... --json | jq` always works. Errors a user can cause arrive as
`ScoutdocError`s and become one red line and the family's exit code; tracebacks only with --debug.
"""

import json
import sys
from typing import Annotated

import typer

from .. import __version__
from ..errors import INTERRUPTED_EXIT_CODE, ScoutdocError
from . import answer, batch, inspect, models, sessions
from .common import end_answer_line, err, json_written, safe
from ..units import parse_size  # scoutdoc.cli.parse_size, as before the package split

__all__ = ["app", "main", "parse_size"]

app = typer.Typer(
    name="scoutdoc",
    help="Ask questions about whole documents, codebases, transcripts and archives with a local long-context model.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"scoutdoc {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks for errors.")] = False,
    version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit.")] = False,
) -> None:
    """--debug is read from sys.argv by main, before Typer parses anything; declared here for --help."""


app.command()(inspect.inspect)
app.command()(answer.ask)
app.command()(answer.summarize)
app.command()(answer.chat)
app.command()(batch.batch)
app.add_typer(sessions.app, name="sessions")
app.add_typer(models.app, name="models")

# Usage errors (unknown option or command, missing argument, a value out of range, no arguments) are
# click exceptions. typer re-exports them from the click it runs on, its own bundled copy since typer
# 0.26 and the separate click package before, so their base class is found through typer's export:
# catching the click package's classes instead would miss every one of them.
_ClickException = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")


def _fail(kind: str, message: str, code: int) -> None:
    """End the run: the message on stderr on a line of its own, with --json also as
    `{"error": {...}}` on stdout (where a script reads the result), then exit `code`."""
    end_answer_line()
    colour = "yellow" if code == INTERRUPTED_EXIT_CODE else "red"
    label = "interrupted" if code == INTERRUPTED_EXIT_CODE else ("internal error:" if kind == "InternalError" else "error:")
    err.print(f"[{colour}]{label}[/{colour}] {safe(message)}".rstrip(), highlight=False, markup=True, soft_wrap=True)
    if "--json" in sys.argv and not json_written["done"]:
        error = {"type": kind, "message": message or "interrupted", "exit_code": code}
        sys.stdout.write(json.dumps({"error": error}, ensure_ascii=False) + "\n")
        sys.stdout.flush()
    sys.exit(code)


def main() -> None:
    """Console-script entry point: run the app and turn user errors into one line and an exit code."""
    debug = "--debug" in sys.argv
    try:
        code = app(standalone_mode=False)  # Typer returns (not raises) Exit codes here, 130 for Ctrl-C
        if code == INTERRUPTED_EXIT_CODE:
            _fail("Interrupted", "", code)
        if isinstance(code, int) and code:
            sys.exit(code)
    except ScoutdocError as exc:
        if debug:
            raise
        _fail(type(exc).__name__, str(exc), exc.exit_code)
    except KeyboardInterrupt:
        if debug:
            raise
        _fail("Interrupted", "", INTERRUPTED_EXIT_CODE)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except (typer.Abort, EOFError):  # click turns Ctrl-C into Abort
        _fail("Interrupted", "", INTERRUPTED_EXIT_CODE)
    except _ClickException as exc:  # usage errors: click's message and hints, exit 2
        exc.show()
        if "--json" in sys.argv:
            error = {"type": "UsageError", "message": exc.format_message(), "exit_code": exc.exit_code}
            sys.stdout.write(json.dumps({"error": error}, ensure_ascii=False) + "\n")
        sys.exit(exc.exit_code)
    except Exception as exc:
        if debug:
            raise
        _fail("InternalError", f"{type(exc).__name__}: {exc} (run with --debug for the traceback)", 1)
