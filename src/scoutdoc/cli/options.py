"""The options commands share, and the objects built from them."""

import re
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..errors import UsageError
from ..ingest import IngestOptions

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
    from ..engines import RuntimeOptions

    return RuntimeOptions(
        dtype=dtype, device=device, attn=attn, kv_dtype=kv_dtype, kv_device_budget=kv_device_budget,
        kv_host_budget=kv_host_budget, kv_disk=kv_disk, prefill_chunk=prefill_chunk,
    )



def generation_params(max_tokens: int, temperature: float, top_p: float, seed: Optional[int]):
    from ..engines import GenerationParams

    return GenerationParams(max_tokens=max_tokens, temperature=temperature, top_p=top_p, seed=seed)

