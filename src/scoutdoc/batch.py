"""One question (or a summary) per document over many inputs, resumable, with one JSON line each.

Exactly-once bookkeeping: the store is the source of truth. A document counts as answered when a
`batch_items` row with status "ok" exists for its (content sha256, question, model); the row is
committed *before* the result line is appended to the output file. On `--resume` the output file is
rewritten without its truncated or failed lines, answered documents are skipped, and any answer the
store has but the file lacks (a crash between commit and write) is copied from the store, so every
document ends up with exactly one line. Failures are recorded with their reason and retried on resume.

Documents run on a thread pool of `concurrency` workers, each with its own database connection; the
embedded engine asks for one worker, a remote server can take several requests at once.
"""

from __future__ import annotations

import glob
import json
import os
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from .engines import Engine, GenerationParams
from .errors import INTERRUPTED_EXIT_CODE, ScoutdocError, UsageError
from .ingest import IngestOptions, IngestResult, load_sources
from .ingest.document import Document
from .ingest.names import display_name
from .prompt import summary_instruction
from .session import Interrupted, start_session
from .store import Store

SUMMARY_KEY = "<summarize>"


def expand_inputs(inputs: list[str]) -> list[str]:
    """Paths as given, with glob patterns (quoted by the user so the shell left them) expanded."""
    out: list[str] = []
    for item in inputs:
        if any(ch in item for ch in "*?[") and not Path(item).exists():
            matches = sorted(glob.glob(item, recursive=True))
            if not matches:
                raise UsageError(f"the pattern {item!r} matches no files; check the path or quote it differently")
            out.extend(matches)
        else:
            out.append(item)
    return out


@dataclass
class Tally:
    ok: int = 0
    failed: int = 0
    skipped: int = 0  # already answered (--resume)
    seconds: float = 0.0
    failures: list[tuple[str, str]] = field(default_factory=list)


class ResultsFile:
    """The JSONL output: appended line by line (flushed and fsynced), rewritten clean on resume."""

    def __init__(self, path: Path, resume: bool):
        self.path = path
        self.lock = threading.Lock()
        self.keys: set[tuple[str, str, str, str]] = set()
        lines: list[str] = []
        if resume and path.exists():
            for raw in path.read_text(encoding="utf-8", errors="replace").splitlines():
                try:
                    row = json.loads(raw)
                except ValueError:
                    continue  # the line a crash cut short
                if row.get("status") != "ok":
                    continue  # failures are retried
                key = _row_key(row)
                if key in self.keys:
                    continue
                self.keys.add(key)
                lines.append(json.dumps(row, ensure_ascii=False))
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        os.replace(tmp, path)
        self.handle = path.open("a", encoding="utf-8")

    def write(self, row: dict[str, Any]) -> None:
        with self.lock:
            key = _row_key(row)
            if row.get("status") == "ok":
                if key in self.keys:
                    return
                self.keys.add(key)
            self.handle.write(json.dumps(row, ensure_ascii=False) + "\n")
            self.handle.flush()
            os.fsync(self.handle.fileno())

    def close(self) -> None:
        self.handle.close()


def _row_key(row: dict[str, Any]) -> tuple[str, str, str, str]:
    """One line per document: two files with identical contents are two documents, each gets its line."""
    return (row.get("source", ""), row.get("sha256", ""), row.get("question_key", ""), row.get("model", ""))


def _question_for(document: Document, question: str | None) -> tuple[str, str]:
    """(the text asked, the key it is recorded under): summaries key on a marker, not the wording."""
    if question:
        return question, question
    return summary_instruction([document.kind]), SUMMARY_KEY


def _answer_one(
    document: Document, *, engine: Engine, db: Path, question: str | None, params: GenerationParams,
    options: IngestOptions, system: str | None, model_ref: str, resume: bool, out: ResultsFile,
    stop: threading.Event,
) -> str:
    """Answer one document and record it; returns "ok", "skipped" or "failed:<reason>"."""
    asked, key = _question_for(document, question)
    base = {"source": document.source, "sha256": document.sha256, "kind": document.kind,
            "question": asked, "question_key": key, "model": engine.model_id}
    with Store(db) as store:
        if resume:
            done = store.answered_batch_item(document.sha256, key, engine.model_id)
            if done is not None:
                # no-op when the file already has it; a copy with identical contents gets its own line
                out.write({**json.loads(done["result"]), "source": document.source})
                return "skipped"
        started = time.perf_counter()
        try:
            result = start_session(
                store, engine, paths=[], options=options, question=asked, params=params,
                on_text=lambda piece: None, notice=lambda message: None, system=system, command="batch",
                model_ref=model_ref, result=IngestResult(documents=[document]), stop_event=stop,
            )
        except Interrupted:
            raise
        except Exception as exc:  # one bad document must not stop the batch; its reason is recorded
            reason = str(exc) if isinstance(exc, ScoutdocError) else f"{type(exc).__name__}: {exc}"
            row = {**base, "status": "error", "error": reason, "error_type": type(exc).__name__}
            store.record_batch_item(source=document.source, sha256=document.sha256, question=key,
                                    model=engine.model_id, status="error", result=row, error=reason)
            out.write(row)
            return "failed:" + reason
        row = {
            **base, "status": "ok", "answer": result.answer, "session_id": result.session_id,
            "stats": result.stats.to_dict(),
            "wall_s": round(time.perf_counter() - started, 3),
        }
        store.record_batch_item(source=document.source, sha256=document.sha256, question=key, model=engine.model_id,
                                status="ok", result=row, session_id=result.session_id, answer=result.answer)
        out.write(row)
        return "ok"


def run_batch(
    inputs: list[str], *, engine: Engine, db: Path, out: Path, question: str | None, params: GenerationParams,
    options: IngestOptions, system: str | None, resume: bool, concurrency: int, model_ref: str, console: Console,
) -> Tally:
    """Run the whole batch, drawing a progress bar and a summary table on `console` (stderr)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
    from rich.markup import escape
    from rich.table import Table

    paths = expand_inputs(inputs)
    with console.status("reading inputs…"):
        ingested = load_sources(paths, options)
    if not ingested.documents and not ingested.skipped:
        raise UsageError("the inputs hold no files to read; check the paths and selection options")
    results = ResultsFile(out, resume)
    tally = Tally()
    started = time.perf_counter()
    for skip in ingested.skipped:
        # A source that cannot be read is a failed item with its reason; keyed by path, it is
        # reported again (not duplicated) on resume because failed lines are dropped then.
        results.write({"source": skip.source, "sha256": "", "status": "error", "error": skip.reason,
                       "error_type": "IngestError", "question": question or SUMMARY_KEY, "model": engine.model_id})
        tally.failed += 1
        tally.failures.append((skip.source, skip.reason))
    stop = threading.Event()
    total = len(ingested.documents)
    pool = ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="batch")
    progress = Progress(TextColumn("answering"), BarColumn(), MofNCompleteColumn(), TextColumn("documents"),
                        TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=console)
    futures: dict[Future, Document] = {}
    try:
        with progress:
            task = progress.add_task("batch", total=total)
            for document in ingested.documents:
                futures[pool.submit(
                    _answer_one, document, engine=engine, db=db, question=question, params=params, options=options,
                    system=system, model_ref=model_ref, resume=resume, out=results, stop=stop,
                )] = document
            pending = set(futures)
            while pending:
                done, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
                for fut in done:
                    outcome = fut.result()
                    if outcome == "ok":
                        tally.ok += 1
                    elif outcome == "skipped":
                        tally.skipped += 1
                    else:
                        tally.failed += 1
                        tally.failures.append((futures[fut].source, outcome.removeprefix("failed:")))
                    progress.advance(task)
    except (KeyboardInterrupt, Interrupted):
        stop.set()
        pool.shutdown(wait=True, cancel_futures=True)
        results.close()
        console.print(
            f"[yellow]interrupted[/yellow] after {tally.ok} answered; run the same command with --resume to finish",
            markup=True, highlight=False,
        )
        raise SystemExit(INTERRUPTED_EXIT_CODE)
    pool.shutdown(wait=True)
    results.close()
    tally.seconds = time.perf_counter() - started
    table = Table(title=f"batch: {out}", title_justify="left")
    for column in ("answered", "already done", "failed", "documents", "time"):
        table.add_column(column, justify="right")
    table.add_row(str(tally.ok), str(tally.skipped), str(tally.failed), str(total + len(ingested.skipped)),
                  f"{tally.seconds:.1f}s")
    console.print(table)
    for source, reason in tally.failures:
        console.print(f"[red]failed[/red] {escape(display_name(source))}: {escape(display_name(reason))}", markup=True, highlight=False, soft_wrap=True)
    return tally
