"""`scoutdoc batch`: one question (or a summary) per document, results as JSON lines."""

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..errors import UsageError
from .common import err, notice, open_store
from .engine import open_engine_for
from .options import (
    ApiKeyOpt, AttnOpt, BaseUrlOpt, ContextLimitOpt, DbOpt, DeviceOpt, DtypeOpt, EngineOpt, ExcludeOpt, IncludeOpt,
    IncludeSecretsOpt, KvDeviceBudgetOpt, KvDiskOpt, KvDtypeOpt, KvHostBudgetOpt, MaxFileSizeOpt, MaxTokensOpt, ModelOpt,
    NoGitignoreOpt, PasswordOpt, PrefillChunkOpt, SeedOpt, SystemOpt, TemperatureOpt, TokenizerOpt, TopPOpt,
    generation_params, ingest_options, runtime_options,
)


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
    from ..batch import expand_inputs, run_batch

    if bool(question) == summarize_:
        raise UsageError("give exactly one of --question Q or --summarize")
    options = ingest_options(include, exclude, no_gitignore, max_file_size, include_secrets, password)
    runtime = runtime_options(device, dtype, attn, kv_dtype, kv_device_budget, kv_host_budget, kv_disk, prefill_chunk)
    inputs = expand_inputs(inputs)
    eng = open_engine_for(engine, model, base_url, api_key, runtime, context_limit=context_limit, tokenizer=tokenizer)
    workers = concurrency or (4 if eng.name == "remote" else 1)
    if eng.name == "embedded" and workers > 1:
        notice("the embedded engine answers one document at a time; --concurrency applies to --engine remote")
        workers = 1
    with open_store(db) as store:
        db_file = store.path
    run_batch(
        inputs, engine=eng, db=db_file, out=out, question=question, params=generation_params(max_tokens, temperature, top_p, seed),
        options=options, system=system, resume=resume, concurrency=workers, model_ref=model or "", console=err,
    )
