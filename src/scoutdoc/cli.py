"""The command line: a thin layer of Typer commands over the library.

Results go to stdout (plain text, or one JSON object with `--json`); progress, tables and errors go
to stderr through rich, so `scoutdoc ... --json | jq` always works. Errors a user can cause arrive as
`ScoutdocError`s and become one red line and the family's exit code; tracebacks only with --debug.
"""

import os
import sys

import typer
from rich.console import Console

from .errors import INTERRUPTED_EXIT_CODE, ScoutdocError

app = typer.Typer(
    name="scoutdoc",
    help="Ask questions about whole documents, codebases, transcripts and archives with a local long-context model.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err = Console(stderr=True, no_color=bool(os.environ.get("NO_COLOR")) or None)
state = {"debug": False}


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="Show full tracebacks for errors.")) -> None:
    state["debug"] = debug


def main() -> None:
    """Console-script entry point: run the app and turn user errors into one line and an exit code."""
    debug = "--debug" in sys.argv
    try:
        app(standalone_mode=False)
    except ScoutdocError as exc:
        if debug:
            raise
        err.print(f"[red]error:[/red] {exc}", highlight=False, markup=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        if debug:
            raise
        err.print("[yellow]interrupted[/yellow]")
        sys.exit(INTERRUPTED_EXIT_CODE)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except (typer.Abort, EOFError):
        sys.exit(INTERRUPTED_EXIT_CODE)
    except Exception as exc:  # click usage errors carry their own exit code
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        if debug:
            raise
        err.print(f"[red]internal error:[/red] {type(exc).__name__}: {exc} (run with --debug for the traceback)")
        sys.exit(1)
