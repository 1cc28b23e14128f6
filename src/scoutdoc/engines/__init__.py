"""The one interface the CLI uses to run a model, whether it is ours or a remote server's.

The CLI never touches torch: it builds a `Prompt`, asks an engine to prefill it (reusing a
snapshot of an earlier turn when it has one) and streams text from `generate`. The embedded engine
runs `scoutdoc.runtime`; the remote engine talks to an OpenAI-compatible server (vLLM, SGLang,
llama.cpp's server), whose own prefix cache plays the role of our snapshots.
"""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Protocol

from ..progress import Progress


@dataclass
class GenerationParams:
    max_tokens: int = 512
    temperature: float = 0.0  # 0 means greedy
    top_p: float = 1.0
    top_k: int = 0  # 0 means no top-k cut
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    # Small models answering greedily tend to go round in circles; these keep the default answer short
    # and clean (measured in benchmarks/bench_answers.py). The remote engine leaves them to the server.
    repetition_penalty: float = 1.0  # > 1: tokens already in the answer become less likely
    loop_window: int = 32  # stop (finish_reason "repeat") when the answer's last 32 tokens repeat an earlier run; 0: off


@dataclass
class RuntimeOptions:
    """How the embedded engine runs: weights dtype and device, attention backend, where the KV cache
    may live (byte budgets per tier as sizes like "20GiB", a spill directory, its dtype) and the
    prefill piece size (None: aligned to the model's attention chunk). The remote engine ignores them."""

    dtype: str = "float32"
    device: str = "auto"
    attn: str = "auto"
    kv_dtype: str | None = None
    kv_device_budget: str | None = None
    kv_host_budget: str | None = None
    kv_disk: Path | None = None
    prefill_chunk: int | None = None


@dataclass
class Stats:
    """What one turn cost; stored with the turn and printed after the answer."""

    prompt_tokens: int = 0
    cached_tokens: int = 0  # reused from a snapshot or the server's prefix cache
    prefilled_tokens: int = 0
    generated_tokens: int = 0
    ttft_s: float = 0.0
    tokens_per_s: float = 0.0
    prefill_s: float = 0.0
    decode_s: float = 0.0
    finish_reason: str = ""  # "stop", "length", "repeat" (the answer began to repeat itself), "interrupted"


@dataclass
class Message:
    role: str  # "system", "user", "assistant"
    content: str


@dataclass
class Prompt:
    """`prefix` (system + documents) is identical on every turn of a session; `turns` grow."""

    prefix: list[Message]
    turns: list[Message]

    @property
    def messages(self) -> list[Message]:
        return self.prefix + self.turns


class State(Protocol):
    """Opaque to everyone but the engine that made it; the CLI only reads the usage figures."""

    stats: Stats


class Engine(Protocol):
    name: str  # "embedded" or "remote"
    model_id: str  # what sessions record; a fingerprint of weights+tokenizer for the embedded engine
    context_limit: int

    def count_tokens(self, text: str) -> int: ...

    def prompt_tokens(self, prompt: Prompt) -> int:
        """Tokens the whole prompt takes in the model's chat template, generation header included."""
        ...

    def prefill(self, prompt: Prompt, snapshot: Any = None, progress: Progress | None = None) -> State:
        """Process the prompt up to the assistant's answer, reusing `snapshot` (a loaded State) where its tokens match."""
        ...

    def generate(self, state: State, params: GenerationParams) -> Iterator[str]:
        """Stream the answer; afterwards `state.stats` holds the turn's figures and the state includes the answer."""
        ...

    def save(self, state: State, path: Path) -> int:
        """Write a snapshot atomically (temporary file, then rename); returns bytes written."""
        ...

    def load(self, path: Path) -> State: ...


def open_engine(
    kind: str = "embedded",
    model: str | None = None,
    base_url: str | None = None,
    api_key: str | None = None,
    tokenizer: str | None = None,
    context_limit: int | None = None,
    **runtime: Any,
) -> Engine:
    """The engine the user chose; each implementation is imported only when asked for.

    `runtime` options (dtype, device, prefill_chunk, attn, kv_dtype, kv_device_budget, kv_host_budget,
    kv_disk) go to the embedded engine; `base_url`, `api_key`,
    `tokenizer` (for counting tokens locally) and `context_limit` (for servers that do not report
    theirs) to the remote one.
    """
    from ..errors import UsageError
    from ..settings import DEFAULT_MODEL

    if kind == "embedded":
        from .embedded import EmbeddedEngine

        return EmbeddedEngine(model or DEFAULT_MODEL, **runtime)
    if kind == "remote":
        if not base_url:
            raise UsageError("--engine remote needs --base-url (an OpenAI-compatible server, e.g. http://localhost:8000/v1)")
        from .remote import RemoteEngine

        return RemoteEngine(
            base_url=base_url, model=model, api_key=api_key, tokenizer=tokenizer, context_limit=context_limit
        )
    raise UsageError(f"unknown engine {kind!r}; use --engine embedded or --engine remote")
