"""The types every engine shares: generation parameters, runtime options, figures, the protocols.

They live apart from `engines/__init__.py` so that the implementations can import them without
importing the package that picks between the implementations.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Generator, Protocol

from ..progress import Progress
from ..prompt import Prompt


@dataclass
class GenerationParams:
    max_tokens: int = 512
    temperature: float = 0.0  # 0 means greedy
    top_p: float = 1.0
    top_k: int = 0  # 0 means no top-k cut
    seed: int | None = None
    stop: list[str] = field(default_factory=list)


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
    finish_reason: str = ""  # "stop", "length", "interrupted"

    def to_dict(self) -> dict[str, Any]:
        """The figures as `--json` output and batch result lines show them: token counts, time to the
        first token and decode speed (rounded: more digits would be noise), and the finish reason."""
        data = asdict(self)
        for name in ("prefill_s", "decode_s"):
            del data[name]
        data["ttft_s"] = round(self.ttft_s, 4)
        data["tokens_per_s"] = round(self.tokens_per_s, 2)
        return data


class State(Protocol):
    """Opaque to everyone but the engine that made it; callers read the usage figures, and the
    number of tokens it holds after the turn (what a snapshot of it covers)."""

    stats: Stats

    @property
    def tokens(self) -> int: ...


class Engine(Protocol):
    """What callers may ask of any engine; nobody branches on which one it is."""

    name: str  # "embedded" or "remote": recorded with a session, so a follow-up runs on the same kind
    model_id: str  # what sessions record; a fingerprint of weights+tokenizer for the embedded engine
    model_name: str  # what messages call the model: the catalog name, file name or the server's model id
    base_url: str | None  # the server's OpenAI URL; None for the embedded engine
    context_limit: int
    keeps_snapshots: bool  # True: `save`/`load` KV snapshots so follow-ups prefill only the new turn
    concurrency: int  # documents a batch answers at once unless told otherwise; 1: never more than one

    def count_tokens(self, text: str) -> int: ...

    def prompt_tokens(self, prompt: Prompt) -> int:
        """Tokens the whole prompt takes in the model's chat template, generation header included."""
        ...

    def prefix_tokens(self, prompt: Prompt) -> int:
        """Tokens of the prompt's fixed document part, the share a follow-up can reuse."""
        ...

    def prefill(self, prompt: Prompt, snapshot: Any = None, progress: Progress | None = None) -> State:
        """Process the prompt up to the assistant's answer, reusing `snapshot` (a loaded State) where its tokens match."""
        ...

    def generate(self, state: State, params: GenerationParams) -> Generator[str, None, None]:
        """Stream the answer; afterwards `state.stats` holds the turn's figures and the state includes the answer.
        Closing the generator early stops the answer (the turn then ends "interrupted")."""
        ...

    def save(self, state: State, path: Path) -> int:
        """Write a snapshot atomically (temporary file, then rename); returns bytes written.
        Called only when `keeps_snapshots`."""
        ...

    def load(self, path: Path) -> State:
        """A state saved by `save`; called only when `keeps_snapshots`."""
        ...
