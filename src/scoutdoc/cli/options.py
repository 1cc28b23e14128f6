"""The options commands share, each declared once, and the decorator that puts them into commands.

An option group is a function whose parameters are the Typer options and whose return value is the
object a command works with (`IngestOptions`, `EngineChoice`, `Generation`). A command names the
group in its signature, e.g. `ingest: Annotated[IngestOptions, INGEST]`, and `@expand_options`
replaces that parameter with the group's options in `__signature__` (what Typer reads) and builds
the object from the parsed values on each call. A new option goes into its group and appears in
every command using it; defaults come from the library's dataclasses, so the CLI cannot drift from them.
"""

import functools
import json
import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any, Optional, get_args, get_origin

import typer

from ..engines import GenerationParams, RemoteDeadlines, RuntimeOptions
from ..errors import UsageError
from ..ingest import IngestOptions
from ..units import parse_size


@dataclass(frozen=True)
class OptionGroup:
    """Options declared once as the parameters of `build`; `only` narrows them, `defaults` overrides theirs."""

    build: Callable[..., Any]
    only: tuple[str, ...] = ()
    defaults: dict[str, Any] = field(default_factory=dict)

    def subset(self, *names: str) -> "OptionGroup":
        return replace(self, only=names)

    def with_defaults(self, **defaults: Any) -> "OptionGroup":
        return replace(self, defaults={**self.defaults, **defaults})

    def parameters(self) -> list[inspect.Parameter]:
        params = inspect.signature(self.build).parameters.values()
        return [
            p.replace(kind=inspect.Parameter.KEYWORD_ONLY, default=self.defaults.get(p.name, p.default))
            for p in params if not self.only or p.name in self.only
        ]


def _group_of(annotation: Any) -> Optional[OptionGroup]:
    if get_origin(annotation) is Annotated:
        return next((m for m in get_args(annotation)[1:] if isinstance(m, OptionGroup)), None)
    return None


def expand_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """`command` with each parameter annotated with an OptionGroup replaced by that group's options.

    Typer reads the parameters from `__signature__`; the wrapper gathers each group's values and
    passes the built object under the parameter's name. An option declared twice is a TypeError
    at import, so no command can end up with two meanings for one flag.
    """
    signature = inspect.signature(command)
    params: list[inspect.Parameter] = []
    groups: dict[str, tuple[OptionGroup, list[str]]] = {}
    for param in signature.parameters.values():
        group = _group_of(param.annotation)
        if group is None:
            params.append(param.replace(kind=inspect.Parameter.KEYWORD_ONLY))
            continue
        members = group.parameters()
        groups[param.name] = (group, [p.name for p in members])
        params += members
    names = [p.name for p in params]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise TypeError(f"{command.__name__} declares {', '.join(twice)} more than once")

    @functools.wraps(command)
    def run(**values: Any) -> Any:
        for name, (group, members) in groups.items():
            values[name] = group.build(**{m: values.pop(m) for m in members})
        return command(**values)

    run.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]
    run.__annotations__ = {p.name: p.annotation for p in params} | {"return": signature.return_annotation}
    return run


# --- single options several commands share --------------------------------------------------------

JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object (answer, session_id, sources, stats) and nothing else on stdout.")]
NoSnapshotOpt = Annotated[bool, typer.Option("--no-snapshot", help="Keep no KV snapshot of this session (a follow-up then recomputes the documents); see SCOUTDOC_SNAPSHOT_BUDGET.")]
DbOpt = Annotated[Optional[Path], typer.Option("--db", help="Session database file (default: in the data directory; env SCOUTDOC_DB).")]
ApiKeyOpt = Annotated[Optional[str], typer.Option("--api-key", envvar="SCOUTDOC_API_KEY", help="API key for the remote server (env SCOUTDOC_API_KEY).")]


# --- what to read: inspect, ask, summarize, chat, batch -------------------------------------------

def _check_globs(patterns: Optional[list[str]]) -> Optional[list[str]]:
    """--include/--exclude values that pathspec cannot compile are usage errors, before anything is read."""
    from ..ingest.code import gitignore_spec

    for pattern in patterns or ():
        try:
            gitignore_spec([pattern])
        except (ValueError, re.error) as exc:  # pathspec's pattern errors are ValueErrors
            reason = exc.msg if isinstance(exc, re.error) else str(exc)  # re's position is in the regex, not the glob
            raise typer.BadParameter(f"{pattern!r} is not a gitignore-style glob: {reason}") from None
    return patterns


def check_size(text: Optional[str]) -> Optional[str]:
    """A size option (--max-file-size, --kv-*-budget, --context) that is not a size is a usage error
    while parsing, with click's usage line; the value stays text for the dataclasses that hold it."""
    try:
        if text is not None:
            parse_size(text)
    except UsageError as exc:
        raise typer.BadParameter(str(exc)) from None
    return text


def ingest_options(
    include: Annotated[Optional[list[str]], typer.Option("--include", callback=_check_globs, help="Only files matching this gitignore-style glob (repeatable).")] = None,
    exclude: Annotated[Optional[list[str]], typer.Option("--exclude", callback=_check_globs, help="Leave out files matching this gitignore-style glob (repeatable).")] = None,
    no_gitignore: Annotated[bool, typer.Option("--no-gitignore", help="Do not honour .gitignore and .git/info/exclude (default ignores still apply).")] = False,
    max_file_size: Annotated[str, typer.Option("--max-file-size", callback=check_size, help="Skip files found in directories or archives above this size, e.g. 500k, 4M.")] = "4M",
    include_secrets: Annotated[bool, typer.Option("--include-secrets", help="Also read .env files, private keys and credential files.")] = False,
    password: Annotated[Optional[list[str]], typer.Option("--password", help="Password for encrypted PDFs and zip members (repeatable; each is tried).")] = None,
    strict: Annotated[bool, typer.Option("--strict", help="Skip documents whose extracted text is mostly replacement or private-use characters (garbled) instead of warning.")] = False,
) -> IngestOptions:
    """The selection and decoding options of every command that reads sources."""
    return IngestOptions(
        include=tuple(include or ()),
        exclude=tuple(exclude or ()),
        gitignore=not no_gitignore,
        max_file_size=parse_size(max_file_size, "--max-file-size"),
        include_secrets=include_secrets,
        passwords=tuple(password or ()),
        strict=strict,
    )


INGEST = OptionGroup(ingest_options)


# --- which engine and model, and how the embedded runtime runs -----------------------------------


@dataclass(frozen=True)
class EngineChoice:
    """The engine a command asked for; what is None falls back to a follow-up's session, then to the default."""

    engine: Optional[str] = None
    model: Optional[str] = None
    base_url: Optional[str] = None
    api_key: Optional[str] = None
    context_limit: Optional[int] = None
    tokenizer: Optional[str] = None
    runtime: RuntimeOptions = field(default_factory=RuntimeOptions)
    deadlines: Optional[RemoteDeadlines] = None  # None: RemoteDeadlines' defaults

    def for_session(self, record: dict) -> "EngineChoice":
        """A follow-up runs where its session started unless told otherwise: the engine and model,
        for a remote one the server's URL and context limit, and for the embedded one --dtype,
        --quantize and --kv-dtype (else `ask -c` after `--quantize none --dtype float32` ran 4-bit
        bfloat16, and its KV snapshot no longer applied), come from the session record. The API key
        never does (it comes from --api-key or SCOUTDOC_API_KEY, not from the database)."""
        engine = self.engine or record["engine"] or "embedded"
        base_url, context_limit = self.base_url, self.context_limit
        if engine == "remote":
            base_url = base_url or record["base_url"] or None
            context_limit = context_limit or record["context_limit"] or None
        stored = json.loads(record.get("runtime") or "{}")
        defaults = RuntimeOptions()
        runtime = replace(self.runtime, **{key: value for key, value in stored.items()
                                           if key in SESSION_RUNTIME and getattr(self.runtime, key) == getattr(defaults, key)})
        return replace(self, engine=engine, model=self.model or record["model"] or None, base_url=base_url,
                       context_limit=context_limit, runtime=runtime)

    def runtime_record(self) -> dict[str, Any]:
        """What a new session keeps of how the embedded engine runs (see `for_session`)."""
        return {key: getattr(self.runtime, key) for key in SESSION_RUNTIME}


SESSION_RUNTIME = ("dtype", "quantize", "kv_dtype")  # what changes a session's numbers and its KV snapshot


def _check_deadlines(text: Optional[str]) -> Optional[str]:
    """--remote-deadlines that do not parse are a usage error while parsing, before any server is asked."""
    try:
        if text is not None:
            RemoteDeadlines.parse(text)
    except UsageError as exc:  # click names the option itself
        raise typer.BadParameter(str(exc).removeprefix("--remote-deadlines: ")) from None
    return text


def engine_choice(
    model: Annotated[Optional[str], typer.Option("--model", "-m", help="Model: catalog name (default smollm2-135m), a .gguf file, an HF directory, or the served model name with --engine remote.")] = None,
    engine: Annotated[Optional[str], typer.Option("--engine", help="embedded (this process, the default) or remote (an OpenAI-compatible server); a follow-up keeps its session's engine and server.")] = None,
    base_url: Annotated[Optional[str], typer.Option("--base-url", help="The remote server's URL, e.g. http://localhost:8000/v1.")] = None,
    api_key: ApiKeyOpt = None,
    context_limit: Annotated[Optional[int], typer.Option("--context-limit", min=1, help="Remote engine: the served model's context in tokens, for servers that do not report it (llama-cpp-python); never above what the server reports.")] = None,
    tokenizer: Annotated[Optional[str], typer.Option("--tokenizer", help="Remote engine: the served model's tokenizer (tokenizer.json, model directory or .gguf) for exact token counts.")] = None,
    remote_deadlines: Annotated[Optional[str], typer.Option("--remote-deadlines", metavar="KEY=SECONDS,...", callback=_check_deadlines, help="Remote engine: seconds to wait, any of connect=10,first-byte=600,idle=60,answer=900 (to connect; for the first event; between events; for the whole answer).")] = None,
    device: Annotated[str, typer.Option("--device", help="Embedded engine: cpu, cuda, or auto.")] = RuntimeOptions.device,
    dtype: Annotated[str, typer.Option("--dtype", help="Embedded engine: auto (bfloat16 where the hardware computes it natively, else float32), float32, bfloat16 or float16.")] = RuntimeOptions.dtype,
    quantize: Annotated[str, typer.Option("--quantize", help="Embedded engine: decoder matrices auto (as the file keeps them, where a kernel runs them), none (dense), int8, int4 or fp8.")] = RuntimeOptions.quantize,
    attn: Annotated[str, typer.Option("--attn", help="Embedded engine: attention backend auto, sdpa, flex, math or flash (flash needs CUDA and flash-attn).")] = RuntimeOptions.attn,
    kv_dtype: Annotated[Optional[str], typer.Option("--kv-dtype", help="Embedded engine: KV cache dtype: model, float16, bfloat16 or float8.")] = None,
    kv_device_budget: Annotated[Optional[str], typer.Option("--kv-device-budget", callback=check_size, help="Embedded engine: most global-layer KV bytes on the device, e.g. 20GiB; the rest goes to host memory or --kv-disk.")] = None,
    kv_host_budget: Annotated[Optional[str], typer.Option("--kv-host-budget", callback=check_size, help="Embedded engine: most global-layer KV bytes in host memory; the rest goes to --kv-disk.")] = None,
    kv_disk: Annotated[Optional[Path], typer.Option("--kv-disk", help="Embedded engine: directory for KV beyond the device and host budgets (memory-mapped, deleted afterwards).")] = None,
    prefill_chunk: Annotated[Optional[int], typer.Option("--prefill-chunk", min=1, help="Embedded engine: prompt tokens per forward pass (default: 2048, or the attention chunk for chunked models).")] = None,
) -> EngineChoice:
    """The engine options of the answer commands; `models info` plans with the embedded ones."""
    runtime = RuntimeOptions(
        dtype=dtype, device=device, attn=attn, kv_dtype=kv_dtype, kv_device_budget=kv_device_budget,
        kv_host_budget=kv_host_budget, kv_disk=kv_disk, prefill_chunk=prefill_chunk, quantize=quantize,
    )
    deadlines = RemoteDeadlines.parse(remote_deadlines) if remote_deadlines is not None else None
    return EngineChoice(engine, model, base_url, api_key, context_limit, tokenizer, runtime, deadlines)


ENGINE = OptionGroup(engine_choice)


# --- how to answer ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Generation:
    """The system instructions (None: the built-in ones), the sampling settings of an answer, and how
    documents longer than the model's window are fitted into it (`fit.STRATEGIES`)."""

    system: Optional[str]
    params: GenerationParams
    fit: str = "auto"


def _check_fit(value: str) -> str:
    from ..fit import STRATEGIES

    if value not in STRATEGIES:
        raise typer.BadParameter(f"{value!r} is not a fit strategy; use {', '.join(STRATEGIES)}")
    return value


MAX_TEMPERATURE = 2.0  # OpenAI-compatible servers' bound; past it the default model writes noise


def _check_temperature(value: float) -> float:
    if not 0.0 <= value <= MAX_TEMPERATURE:  # also nan and inf
        raise typer.BadParameter(f"{value} is not a temperature; use 0 (greedy) to {MAX_TEMPERATURE:g}")
    return value


def utf8_text(text: str, what: str) -> str:
    """A question or instruction from the command line, which must be text: bytes that are not UTF-8
    reach Python as lone surrogates, and the tokenizer and the database cannot take those."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise UsageError(f"{what} is not valid UTF-8 text; check the terminal's or the script's encoding") from None
    return text


def generation(
    system: Annotated[Optional[str], typer.Option("--system", help="Replace the default system instructions (citation rules and documents are always added).")] = None,
    max_tokens: Annotated[int, typer.Option("--max-tokens", min=1, help="Longest answer, in tokens.")] = GenerationParams.max_tokens,
    temperature: Annotated[float, typer.Option("--temperature", callback=_check_temperature, help="0 = greedy (deterministic); up to 2.")] = GenerationParams.temperature,
    top_p: Annotated[float, typer.Option("--top-p", min=0.0, max=1.0, help="Nucleus sampling cut (with --temperature > 0).")] = GenerationParams.top_p,
    seed: Annotated[Optional[int], typer.Option("--seed", min=0, max=2**64 - 1, help="Random seed for sampling.")] = None,
    fit: Annotated[str, typer.Option("--fit", callback=_check_fit, help="When the documents exceed the model's window: auto (the whole prompt when it fits, else retrieve for questions, map-reduce for summaries), full (refuse, exit 4), retrieve (answer from the best-matching passages) or map-reduce (every part, then combine).")] = "auto",
) -> Generation:
    """The answer options of ask, summarize, chat and batch."""
    system = utf8_text(system, "--system") if system is not None else None
    return Generation(system, GenerationParams(max_tokens=max_tokens, temperature=temperature, top_p=top_p, seed=seed), fit)


GENERATION = OptionGroup(generation)
