"""Opening the engine a command asked for (`EngineChoice`), with the notices that go with it."""

from dataclasses import asdict

from ..engines import RuntimeOptions, open_engine
from ..settings import DEFAULT_MODEL
from .common import download_bar, err, notice
from .options import EngineChoice


def open_engine_for(choice: EngineChoice):
    """The embedded engine (loaded under a spinner) or a remote one; says which options do not apply."""
    engine = choice.engine or "embedded"
    runtime = choice.runtime
    if engine == "remote":
        if runtime != RuntimeOptions(device=runtime.device, dtype=runtime.dtype, quantize=runtime.quantize):
            notice("--attn, --kv-* and --prefill-chunk apply to the embedded engine; the server manages its own cache")
        remote = open_engine(
            "remote", model=choice.model, base_url=choice.base_url, api_key=choice.api_key, tokenizer=choice.tokenizer,
            context_limit=choice.context_limit, deadlines=choice.deadlines,
        )
        if getattr(remote, "token_count_method", "") == "estimate":
            notice("token counts are estimates (about 4 bytes a token): the server has no tokenize endpoint; "
                   "pass --tokenizer PATH for exact counts")
        return remote
    if choice.deadlines is not None:
        notice("--remote-deadlines applies to the remote engine; the embedded one runs in this process")
    _pull_first(choice.model or DEFAULT_MODEL)
    with err.status(f"loading {choice.model or DEFAULT_MODEL}…"):
        return open_engine(engine, model=choice.model, **asdict(runtime))


def _pull_first(name: str) -> None:
    """A catalog model not on this machine yet is downloaded first, with a byte progress bar (the
    default model is about 100 MB), rather than under the loading spinner with no sign of progress."""
    from .. import models

    if name not in models.CATALOG or models.is_pulled(name):
        return
    bar, progress = download_bar(f"downloading {name} (first use)")
    with bar:
        models.pull(name, progress=progress)
