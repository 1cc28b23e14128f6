"""One question (or a summary) per document over many inputs, resumable, with one JSON line each.

Exactly-once bookkeeping: the store is the source of truth. A document counts as answered when a
`batch_items` row with status "ok" exists for its (content sha256, question, model, settings), the
settings being all else an answer depends on (`job_settings`); the row is committed *before* the
result line is appended to the output file. On `--resume` the output file is rewritten without its
truncated or failed lines and without the answers this job now makes anew (a document whose file
changed, other settings: `Job.stale`), answered documents are skipped, and any answer the store has
but the file lacks (a crash between commit and write) is copied from the store, so every document
ends up with exactly one line. Failures are recorded with their reason and retried on resume.

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
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from rich.console import Console

from .engines import Engine, GenerationParams
from .errors import INTERRUPTED_EXIT_CODE, ScoutdocError, UsageError
from .ingest import IngestOptions, IngestResult, load_sources
from .ingest.document import Document
from .ingest.names import display_name
from .ingest.sniff import archive_suffix
from .prompt import summary_instruction
from .session import Interrupted, start_session
from .store import Store

SUMMARY_KEY = "<summarize>"


def _is_pattern(item: str) -> bool:
    return any(ch in item for ch in "*?[") and not Path(item).exists()


def expand_inputs(inputs: list[str]) -> list[str]:
    """Paths as given, with glob patterns (quoted by the user so the shell left them) expanded.

    A pattern that matches nothing on disk is kept as it is when an archive is among the inputs:
    it then selects that archive's members (`scoutdoc batch inbox.zip 'contracts/*.pdf'`).
    """
    has_archive = any(archive_suffix(item) and Path(item).is_file() for item in inputs)
    out: list[str] = []
    for item in inputs:
        if _is_pattern(item):
            matches = sorted(glob.glob(item, recursive=True))
            if not matches and not has_archive:
                raise UsageError(f"the pattern {item!r} matches no files; check the path or quote it differently")
            out.extend(matches or [item])
        else:
            out.append(item)
    return out


def split_member_patterns(inputs: list[str]) -> tuple[list[str], tuple[str, ...]]:
    """(paths, archive member patterns) from `expand_inputs`' result."""
    patterns = tuple(item for item in inputs if _is_pattern(item))
    return [item for item in inputs if item not in patterns], patterns


def check_out(out: Path, resume: bool, force: bool) -> None:
    """Refuse a results path that is not a regular file, and an existing results file unless
    --resume (continue it) or --force (replace it).

    The file is written next to itself and renamed over the old one (`ResultsFile`), which would
    replace a device, a pipe or a directory with a plain file: `--out /dev/stdout` run as root once
    turned /dev/stdout into one. A link is followed: its target is the file written."""
    target = out.resolve()
    if target.exists() and not target.is_file():
        kind = "a directory" if target.is_dir() else "not a regular file (a device, pipe or socket)"
        raise UsageError(f"--out {out} is {kind}; give the path of a results file (.jsonl)")
    if not resume and not force and target.exists() and target.stat().st_size > 0:
        raise UsageError(f"the results file {out} already exists; pass --resume to continue it, --force to overwrite it, "
                         "or choose another --out")


def _unmatched(patterns: tuple[str, ...], ingested: IngestResult) -> list[str]:
    """Member patterns that selected no member of any archive."""
    from .ingest.code import gitignore_spec

    members = [s.rsplit("!", 1)[-1] for s in [d.source for d in ingested.documents] + [k.source for k in ingested.skipped] if "!" in s]
    return [p for p in patterns if not any(gitignore_spec([p]).match_file(m) for m in members)]


@dataclass
class Tally:
    ok: int = 0
    failed: int = 0
    skipped: int = 0  # already answered (--resume)
    excluded: int = 0  # sources left out on purpose (secrets, over the size cap, binary...): not retried
    seconds: float = 0.0
    failures: list[tuple[str, str]] = field(default_factory=list)


# Skip codes of sources left out on purpose: reading them again cannot give another outcome, so they
# are "skipped", kept on --resume and not counted as failures. The other codes (damaged, encrypted,
# no text...) are failures the user can fix, e.g. with --password, and are retried on resume.
EXCLUDED_CODES = frozenset({"secret", "too_large", "binary", "empty", "not_regular", "link", "unsafe", "limit",
                            "repository"})


def _row_key(row: dict[str, Any]) -> tuple[str, ...] | None:
    """What makes a kept line unique: an answer by document (source), content, question and model, so
    two files with identical contents each keep their line; a skip by source."""
    if row.get("status") == "ok":
        return (row.get("source", ""), row.get("sha256", ""), row.get("question_key", ""), row.get("model", ""))
    if row.get("status") == "skipped":
        return ("skipped", row.get("source", ""), row.get("question_key", ""))
    return None


def job_settings(system: str | None, params: GenerationParams, fit: str) -> dict[str, Any]:
    """What an answer depends on besides its document, question and model: a stored answer is reused
    on --resume only when all of it is the same (another --system or --max-tokens answers anew)."""
    return {"system": system or "", "fit": fit, **asdict(params)}


@dataclass(frozen=True)
class Job:
    """This run's question key, model and settings, and the contents of the documents it reads."""

    question_key: str
    model: str
    settings: dict[str, Any]
    contents: dict[str, str]  # source -> sha256

    def stale(self, row: dict[str, Any]) -> bool:
        """An answer of this job's question and model to one of its documents, made from other
        contents (the file changed since) or with other settings: its new answer replaces it."""
        return (row.get("status") == "ok" and row.get("source") in self.contents
                and row.get("question_key") == self.question_key and row.get("model") == self.model
                and (row.get("sha256") != self.contents[row["source"]] or row.get("settings") != self.settings))


class ResultsFile:
    """The JSONL output: appended line by line (flushed and fsynced), rewritten clean on resume."""

    def __init__(self, path: Path, resume: bool, job: Job | None = None):
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
                if not isinstance(row, dict):
                    continue  # not a line this command writes
                key = _row_key(row)
                if key is None or key in self.keys or (job is not None and job.stale(row)):
                    continue  # failures are retried, stale answers made anew
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
            if key is not None:
                if key in self.keys:
                    return
                self.keys.add(key)
            self.handle.write(json.dumps(row, ensure_ascii=False) + "\n")
            self.handle.flush()
            os.fsync(self.handle.fileno())

    def close(self) -> None:
        self.handle.close()


def _question_for(document: Document, question: str | None) -> tuple[str, str]:
    """(the text asked, the key it is recorded under): summaries key on a marker, not the wording."""
    if question:
        return question, question
    return summary_instruction([document.kind]), SUMMARY_KEY


def _answer_one(
    document: Document, *, engine: Engine, db: Path, question: str | None, params: GenerationParams,
    options: IngestOptions, system: str | None, model_ref: str, resume: bool, out: ResultsFile,
    stop: threading.Event, keep_snapshot: bool = False, fit: str = "auto",
) -> str:
    """Answer one document and record it; returns "ok", "skipped" or "failed:<reason>"."""
    asked, key = _question_for(document, question)
    settings = job_settings(system, params, fit)
    stored = json.dumps(settings, sort_keys=True)
    base = {"source": document.source, "sha256": document.sha256, "kind": document.kind,
            "question": asked, "question_key": key, "model": engine.model_id}
    with Store(db) as store:
        if resume:
            done = store.answered_batch_item(document.sha256, key, engine.model_id, stored)
            if done is not None:
                # no-op when the file already has it; a copy with identical contents gets its own line
                out.write({**json.loads(done["result"]), "source": document.source})
                return "skipped"
        started = time.perf_counter()
        notes: list[str] = []  # what `ask` would print as notes ("the documents do not contain ...")
        try:
            result = start_session(
                store, engine, paths=[], options=options, question=asked, params=params,
                on_text=lambda piece: None, notice=notes.append, system=system, command="batch",
                model_ref=model_ref, result=IngestResult(documents=[document]), stop_event=stop, keep_snapshot=keep_snapshot,
                fit=fit, summary=question is None,
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
            "stats": {**result.stats.to_dict(), "fit": result.fit.as_dict() if result.fit else None},
            "wall_s": round(time.perf_counter() - started, 3), **({"notes": notes} if notes else {}),
            "settings": settings,
        }
        store.record_batch_item(source=document.source, sha256=document.sha256, question=key, model=engine.model_id,
                                status="ok", result=row, session_id=result.session_id, answer=result.answer,
                                settings=stored)
        out.write(row)
        return "ok"


def run_batch(
    inputs: list[str], *, engine: Engine, db: Path, out: Path, question: str | None, params: GenerationParams,
    options: IngestOptions, system: str | None, resume: bool, concurrency: int, model_ref: str, console: Console,
    keep_snapshot: bool = False, force: bool = False, fit: str = "auto",
) -> Tally:
    """Run the whole batch, drawing a progress bar and a summary table on `console` (stderr); `fit` is
    the strategy for documents longer than the model's window (questions retrieve, summaries map-reduce).

    Batch documents keep no KV snapshot unless `keep_snapshot` (`--snapshot`): one per document would
    fill the disk, and batch sessions are rarely continued."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
    from rich.markup import escape
    from rich.table import Table

    check_out(out, resume, force)
    paths, patterns = split_member_patterns(expand_inputs(inputs))
    with console.status("reading inputs…"):
        ingested = load_sources(paths, replace(options, members=options.members + patterns))
    unmatched = _unmatched(patterns, ingested)
    if unmatched:
        raise UsageError(f"the pattern {unmatched[0]!r} matches no file on disk and no member of the archives given; "
                         "check it (member paths start at the archive's top folder)")
    if not ingested.documents and not ingested.skipped:
        raise UsageError("the inputs hold no files to read; check the paths and selection options")
    question_key = question or SUMMARY_KEY
    job = Job(question_key, engine.model_id, job_settings(system, params, fit),
              {d.source: d.sha256 for d in ingested.documents})
    results = ResultsFile(out.resolve(), resume, job)
    tally = Tally()
    started = time.perf_counter()
    for skip in ingested.skipped:
        # Sources left out on purpose are "skipped"; the others failed with their reason. Keyed by
        # path, a failure is reported again (not duplicated) on resume because failed lines are
        # dropped then, while a skipped line is kept and not written twice.
        excluded = skip.code in EXCLUDED_CODES
        results.write({"source": skip.source, "sha256": "", "status": "skipped" if excluded else "error",
                       "error": skip.reason, "error_type": "IngestError", "code": skip.code,
                       "question": question_key, "question_key": question_key, "model": engine.model_id})
        if excluded:
            tally.excluded += 1
        else:
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
                    system=system, model_ref=model_ref, resume=resume, out=results, stop=stop, keep_snapshot=keep_snapshot,
                    fit=fit,
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
    for column in ("answered", "already done", "skipped", "failed", "documents", "time"):
        table.add_column(column, justify="right")
    table.add_row(str(tally.ok), str(tally.skipped), str(tally.excluded), str(tally.failed),
                  str(total + len(ingested.skipped)), f"{tally.seconds:.1f}s")
    console.print(table)
    for source, reason in tally.failures:
        console.print(f"[red]failed[/red] {escape(display_name(source))}: {escape(display_name(reason))}", markup=True, highlight=False, soft_wrap=True)
    return tally
