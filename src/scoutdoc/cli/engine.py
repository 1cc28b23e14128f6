"""Opening the engine a command asked for, and the one a follow-up's session ran on."""

from typing import Optional

from .common import err, notice


def open_engine_for(
    engine: str, model: Optional[str], base_url: Optional[str], api_key: Optional[str], runtime,
    context_limit: Optional[int] = None, tokenizer: Optional[str] = None,
):
    from dataclasses import asdict

    from ..engines import RuntimeOptions, open_engine

    engine = engine or "embedded"
    if engine == "remote":
        if runtime != RuntimeOptions(device=runtime.device, dtype=runtime.dtype):
            notice("--attn, --kv-* and --prefill-chunk apply to the embedded engine; the server manages its own cache")
        remote = open_engine(
            "remote", model=model, base_url=base_url, api_key=api_key, tokenizer=tokenizer, context_limit=context_limit
        )
        if getattr(remote, "token_count_method", "") == "estimate":
            notice("token counts are estimates (about 4 bytes a token): the server has no tokenize endpoint; "
                    "pass --tokenizer PATH for exact counts")
        return remote
    with err.status(f"loading {model or 'the default model'}…"):
        return open_engine(engine, model=model, **asdict(runtime))


def session_engine(
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

