"""The one interface callers use to run a model, whether it is ours or a remote server's.

The CLI never touches torch: it builds a `Prompt`, asks an engine to prefill it (reusing a
snapshot of an earlier turn when it has one) and streams text from `generate`. The embedded engine
runs `scoutdoc.runtime`; the remote engine talks to an OpenAI-compatible server (vLLM, SGLang,
llama.cpp's server), whose own prefix cache plays the role of our snapshots.
"""

from typing import Any

from ..errors import UsageError
from ..prompt import Message, Prompt
from ..settings import DEFAULT_MODEL
from .base import Engine, GenerationParams, RemoteDeadlines, RuntimeOptions, State, Stats

__all__ = [
    "Engine", "GenerationParams", "Message", "Prompt", "RemoteDeadlines", "RuntimeOptions", "State", "Stats", "open_engine",
]


def open_engine(
    kind: str = "embedded",
    model: str | None = None,
    base_url: str | None = None,
    api_key: str | None = None,
    tokenizer: str | None = None,
    context_limit: int | None = None,
    deadlines: RemoteDeadlines | None = None,
    **runtime: Any,
) -> Engine:
    """The engine the user chose; each implementation is imported only when asked for.

    `runtime` options (dtype, device, prefill_chunk, attn, kv_dtype, kv_device_budget, kv_host_budget,
    kv_disk) go to the embedded engine; `base_url`, `api_key`,
    `tokenizer` (for counting tokens locally), `context_limit` (for servers that do not report
    theirs) and `deadlines` (a `RemoteDeadlines`; None: the defaults) to the remote one.
    """
    if kind == "embedded":
        from .embedded import EmbeddedEngine

        return EmbeddedEngine(model or DEFAULT_MODEL, **runtime)
    if kind == "remote":
        if not base_url:
            raise UsageError("--engine remote needs --base-url (an OpenAI-compatible server, e.g. http://localhost:8000/v1)")
        from .remote import RemoteEngine

        return RemoteEngine(
            base_url=base_url, model=model, api_key=api_key, tokenizer=tokenizer, context_limit=context_limit,
            deadlines=deadlines,
        )
    raise UsageError(f"unknown engine {kind!r}; use --engine embedded or --engine remote")
