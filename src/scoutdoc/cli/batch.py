"""`scoutdoc batch`: one question (or a summary) per document, results as JSON lines."""

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..errors import BatchError, UsageError
from ..ingest import IngestOptions
from ..wording import plural
from .common import check_paths, err, notice, open_store
from .engine import open_engine_for
from .options import ENGINE, GENERATION, INGEST, DbOpt, EngineChoice, Generation, expand_options, utf8_text


@expand_options
def batch(
    inputs: Annotated[list[str], typer.Argument(metavar="INPUT...", help="Files, directories, archives or quoted globs; one answer per document.", show_default=False)],
    question: Annotated[Optional[str], typer.Option("--question", "-q", help="The question to ask about each document.")] = None,
    summarize_: Annotated[bool, typer.Option("--summarize", help="Summarize each document instead of asking a question.")] = False,
    out: Annotated[Path, typer.Option("--out", "-o", help="Results file: one JSON line per document.")] = Path("results.jsonl"),
    resume: Annotated[bool, typer.Option("--resume", help="Skip documents already answered (same content, question and model).")] = False,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing --out file (without it, an existing file needs --resume).")] = False,
    snapshot: Annotated[bool, typer.Option("--snapshot/--no-snapshot", help="Keep each document's KV snapshot so its session can be continued (off by default: one per document fills the disk).")] = False,
    concurrency: Annotated[Optional[int], typer.Option("--concurrency", "-j", min=1, help="Documents in flight at once (default 1 embedded, 4 remote).")] = None,
    *,
    gen: Annotated[Generation, GENERATION.with_defaults(max_tokens=256)],
    choice: Annotated[EngineChoice, ENGINE],
    db: DbOpt = None,
    options: Annotated[IngestOptions, INGEST],
) -> None:
    """Ask one question (or summarize) about every document; results go to a JSONL file, one line each."""
    from ..batch import check_out, expand_inputs, run_batch

    if question is not None and not question.strip():
        raise UsageError("--question is empty; give the question to ask about each document")
    if bool(question) == summarize_:
        raise UsageError("give exactly one of --question Q or --summarize")
    question = utf8_text(question, "--question") if question else None
    check_out(out, resume, force)  # before the model loads
    inputs = expand_inputs(check_paths(inputs))
    eng = open_engine_for(choice)
    workers = concurrency or eng.concurrency
    if eng.concurrency == 1 and workers > 1:
        notice("the embedded engine answers one document at a time; --concurrency applies to --engine remote")
        workers = 1
    with open_store(db) as store:
        db_file = store.path
    tally = run_batch(
        inputs, engine=eng, db=db_file, out=out, question=question, params=gen.params, options=options,
        system=gen.system, resume=resume, concurrency=workers, model_ref=choice.model or "", console=err,
        keep_snapshot=snapshot, force=force, fit=gen.fit,
    )
    if tally.failed and not (tally.ok or tally.skipped):  # some answered: the run did its job, failures are in `out`
        raise BatchError(f"no document could be answered ({plural(tally.failed, 'failure')}, listed above and in {out}); "
                         "fix the cause and run the same command with --resume")
