"""The answer commands: `ask`, `summarize` and `chat`, and how an answer streams out.

The answer streams to stdout as it is generated; the prefill bar and the stats line go to stderr,
and with `--json` stdout holds one object instead.
"""

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..errors import UsageError
from ..ingest import IngestOptions, require_documents
from ..ingest.names import display_name
from ..store import usable_session
from ..wording import plural
from .common import end_answer_line, err, mid_line, notice, open_store, read_sources, source_paths
from .engine import open_engine_for
from .options import (
    ENGINE, GENERATION, INGEST, DbOpt, EngineChoice, Generation, JsonOpt, NoSnapshotOpt, expand_options, utf8_text,
)


class _PrefillBar:
    """A transient rich progress bar for prefill: tokens done of the total, tokens/s and time left."""

    def __init__(self) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.bar = Progress(TextColumn("reading the prompt"), BarColumn(), MofNCompleteColumn(), TextColumn("tokens"),
                            TextColumn("{task.fields[rate]}"), TimeRemainingColumn(), console=err, transient=True)
        self.task = None
        self.first: tuple[float, int] = (0.0, 0)  # when the first piece was reported, and its tokens

    def __call__(self, done: int, total: int, unit: str) -> None:
        if not err.is_terminal:  # nobody sees it in a pipe or a log, where stopping it leaves an empty line
            return
        import time

        now = time.perf_counter()
        if self.task is None:
            self.first = (now, done)
            self.bar.start()
            self.task = self.bar.add_task("prefill", total=total, rate="")
        elapsed = now - self.first[0]
        rate = f"{(done - self.first[1]) / elapsed:,.0f} tokens/s" if elapsed > 0 else ""
        self.bar.update(self.task, completed=done, total=total, rate=rate)
        if done >= total:
            self.bar.stop()


def _stream_to_stdout(piece: str) -> None:
    sys.stdout.write(piece)
    sys.stdout.flush()
    if piece:
        mid_line["answer"] = not piece.endswith("\n")


def _emit(result, as_json: bool, max_tokens: int, notes: list[str]) -> None:
    """After the streamed answer: the dim stats line on stderr (and a line saying so when --max-tokens
    cut the answer short), or the one JSON object on stdout, with the `notes` printed on the way."""
    s = result.stats
    cut = s.finish_reason == "length"
    if as_json:
        payload = {
            "answer": result.answer,
            "session_id": result.session_id,
            "sources": result.sources,
            "stats": {**s.to_dict(), "fit": result.fit.as_dict() if result.fit else None},
            "truncated": cut,
        }
        if result.changed:
            payload["changed_sources"] = result.changed
        if notes:
            payload["notes"] = notes
        sys.stdout.write(json.dumps(payload, ensure_ascii=False) + "\n")
        return
    end_answer_line()
    if cut:
        err.print(f"[yellow]the answer was cut off at --max-tokens {max_tokens:,}[/yellow]; ask again with a larger "
                  "--max-tokens for the rest", highlight=False, markup=True, soft_wrap=True)
    speed = f"{s.tokens_per_s:.1f} tokens/s · " if s.tokens_per_s else ""  # none measured from a single token
    err.print(
        f"[dim]{s.prompt_tokens:,} prompt tokens ({s.cached_tokens:,} cached) · {plural(s.generated_tokens, 'token')} "
        f"generated, finish: {s.finish_reason or 'unknown'} · TTFT {s.ttft_s:.2f}s · {speed}"
        f"session {result.session_id}[/dim]",
        highlight=False, markup=True, soft_wrap=True,
    )


def _answer(
    args: list[str], *, command: str, question_for, continue_: bool, session: Optional[str], refresh: bool,
    choice: EngineChoice, gen: Generation, as_json: bool, db: Optional[Path], options: IngestOptions, no_snapshot: bool,
) -> None:
    from .. import session as conv

    sink = (lambda piece: None) if as_json else _stream_to_stdout
    notes: list[str] = []

    def note(message: str) -> None:
        notes.append(message)
        notice(message)

    if continue_ or session:
        question = " ".join(args).strip()
        if not question:
            raise UsageError("give the follow-up question, e.g. scoutdoc ask -c \"And the notice period?\"")
        with open_store(db) as store:
            record = usable_session(store.session(session) if session else store.latest_session())  # before the model loads
            eng = open_engine_for(choice.for_session(record))
            result = conv.continue_session(
                store, eng, session_id=record["id"], question=question, params=gen.params, on_text=sink,
                notice=note, refresh=refresh, passwords=options.passwords, prefill_progress=_PrefillBar(),
                keep_snapshot=not no_snapshot, fit=gen.fit,
            )
    else:
        paths, question = question_for(args)
        result_docs = read_sources(source_paths(paths), options)
        require_documents(result_docs)
        with open_store(db) as store:  # a database that cannot be written fails before the model loads
            eng = open_engine_for(choice)
            result = conv.start_session(
                store, eng, paths=paths, options=options, question=question, params=gen.params, on_text=sink,
                notice=note, system=gen.system, command=command, model_ref=choice.model or "",
                runtime=choice.runtime_record(), result=result_docs,
                prefill_progress=_PrefillBar(), keep_snapshot=not no_snapshot, fit=gen.fit,
                summary=command == "summarize",
            )
    _emit(result, as_json, gen.params.max_tokens, notes)


LEAVE = ("/exit", "/quit", "/bye")  # what a chat user types to leave, never a question for the model


def _split_ask_args(args: list[str]) -> tuple[list[str], str]:
    if len(args) < 2:
        raise UsageError('give one or more paths and then the question, e.g. scoutdoc ask contract.pdf "Who are the parties?"')
    if not args[-1].strip():
        raise UsageError('the question is empty; put it last, in quotes, e.g. scoutdoc ask contract.pdf "Who are the parties?"')
    if not any(c.isspace() for c in args[-1]) and os.path.exists(args[-1]):  # a forgotten question, not a one-word one
        raise UsageError(f"the last argument, {display_name(args[-1])}, is a file, not a question; put the question "
                         'last, in quotes, e.g. scoutdoc ask contract.pdf "Who are the parties?"')
    return args[:-1], utf8_text(args[-1], "the question")


@expand_options
def ask(
    args: Annotated[list[str], typer.Argument(metavar="PATH... QUESTION", help="Files, directories or archives, then the question (with -c/--session: only the question).", show_default=False)],
    continue_: Annotated[bool, typer.Option("--continue", "-c", help="Follow up in the latest session (documents are not re-read).")] = False,
    session: Annotated[Optional[str], typer.Option("--session", help="Follow up in this session (id or unique prefix).")] = None,
    refresh: Annotated[bool, typer.Option("--refresh", help="With -c/--session: re-read sources that changed since the session started.")] = False,
    *,
    gen: Annotated[Generation, GENERATION],
    as_json: JsonOpt = False,
    choice: Annotated[EngineChoice, ENGINE],
    db: DbOpt = None,
    no_snapshot: NoSnapshotOpt = False,
    options: Annotated[IngestOptions, INGEST],
) -> None:
    """Read the sources into one prompt and stream the answer to QUESTION; -c asks a follow-up."""
    _answer(
        args, command="ask", question_for=_split_ask_args, continue_=continue_, session=session, refresh=refresh,
        choice=choice, gen=gen, as_json=as_json, db=db, options=options, no_snapshot=no_snapshot,
    )


@expand_options
def summarize(
    paths: Annotated[list[str], typer.Argument(metavar="PATH...", help="Files, directories or archives to summarize.", show_default=False)],
    instruction: Annotated[Optional[str], typer.Option("--instruction", help="Replace the built-in summary instruction.")] = None,
    *,
    gen: Annotated[Generation, GENERATION.with_defaults(max_tokens=768)],
    as_json: JsonOpt = False,
    choice: Annotated[EngineChoice, ENGINE],
    db: DbOpt = None,
    no_snapshot: NoSnapshotOpt = False,
    options: Annotated[IngestOptions, INGEST],
) -> None:
    """Summarize the sources; a codebase gets an architecture overview (modules, entry points, data flow)."""
    from ..prompt import summary_instruction

    question = utf8_text(instruction, "--instruction") if instruction else (
        lambda documents: summary_instruction(d.kind for d in documents))
    _answer(
        paths, command="summarize", question_for=lambda a: (a, question), continue_=False, session=None,
        refresh=False, choice=choice, gen=gen, as_json=as_json, db=db, options=options, no_snapshot=no_snapshot,
    )


@expand_options
def chat(
    paths: Annotated[Optional[list[str]], typer.Argument(metavar="[PATH...]", help="Sources to chat about (or --session to resume one).", show_default=False)] = None,
    session: Annotated[Optional[str], typer.Option("--session", help="Resume this session instead of reading new sources.")] = None,
    *,
    gen: Annotated[Generation, GENERATION],
    choice: Annotated[EngineChoice, ENGINE],
    db: DbOpt = None,
    no_snapshot: NoSnapshotOpt = False,
    options: Annotated[IngestOptions, INGEST],
) -> None:
    """Ask follow-up after follow-up about the same sources in one session (Ctrl-D to leave)."""
    from .. import session as conv

    if not paths and not session:
        raise UsageError("give the sources to chat about, or --session ID to resume a session")
    interactive = sys.stdin.isatty()
    result_docs = None
    if not session:
        result_docs = require_documents(read_sources(source_paths(paths or []), options))
    with open_store(db) as store:
        record = usable_session(store.session(session)) if session else None
        sid = record["id"] if record else None
        eng = open_engine_for(choice.for_session(record) if record else choice)
        err.print("[dim]ask a question; Ctrl-D or /exit to leave[/dim]", markup=True)
        while True:
            if interactive:
                err.print("[bold]>[/bold] ", end="", markup=True)
            line = sys.stdin.readline()
            if not line:
                break
            question = line.strip()
            if not question:
                continue
            if question.lower() in LEAVE:
                break
            try:
                utf8_text(question, "that line")
            except UsageError as exc:  # one bad line (a pasted binary, a wrong terminal encoding) is not the end
                err.print(f"error: {exc}", markup=False, highlight=False)
                continue
            if sid is None:
                result = conv.start_session(
                    store, eng, paths=list(paths or []), options=options, question=question, params=gen.params,
                    on_text=_stream_to_stdout, notice=notice, system=gen.system, command="chat",
                    model_ref=choice.model or "", runtime=choice.runtime_record(), result=result_docs,
                    prefill_progress=_PrefillBar(),
                    keep_snapshot=not no_snapshot, fit=gen.fit,
                )
                sid = result.session_id
            else:
                result = conv.continue_session(
                    store, eng, session_id=sid, question=question, params=gen.params, on_text=_stream_to_stdout,
                    notice=notice, passwords=options.passwords, prefill_progress=_PrefillBar(),
                    keep_snapshot=not no_snapshot, fit=gen.fit,
                )
            _emit(result, as_json=False, max_tokens=gen.params.max_tokens, notes=[])
    if interactive:
        err.print()
