"""The types every engine shares: generation parameters, runtime options, figures, the protocols.

They live apart from `engines/__init__.py` so that the implementations can import them without
importing the package that picks between the implementations.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Generator, Protocol

from ..errors import EngineError, UsageError
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
    # Small models answering greedily tend to go round in circles; these keep the default answer short
    # and clean (measured in benchmarks/bench_answers.py). The remote engine leaves them to the server.
    repetition_penalty: float = 1.1  # > 1: tokens already in the answer become less likely
    loop_window: int = 32  # stop (finish_reason "repeat") when the answer repeats a 32-token run or a sentence of itself; 0: off


DEADLINES_OPTION = "--remote-deadlines"


@dataclass(frozen=True)
class RemoteDeadlines:
    """How long, in seconds, the remote engine waits; each is a key of `--remote-deadlines`.

    `connect`: to open a connection. `first_byte`: from sending a request to its answer's first
    event (long: a million-token prefill happens before anything arrives; it is also the read
    timeout of every other request). `idle`: between two events of a streamed answer once one
    arrived (SSE keep-alive comments do not count). `answer`: one whole streamed answer.
    """

    connect: float = 10.0
    first_byte: float = 600.0
    idle: float = 60.0
    answer: float = 900.0

    @staticmethod
    def key(name: str) -> str:
        """The option's spelling of a field: `first_byte` is `first-byte`."""
        return name.replace("_", "-")

    @classmethod
    def parse(cls, text: str) -> RemoteDeadlines:
        """`connect=5,first-byte=120,idle=30,answer=600`, any subset; the rest keep their defaults."""
        known = {cls.key(f.name): f.name for f in fields(cls)}
        values: dict[str, float] = {}
        for item in (part.strip() for part in text.split(",")):
            key, _, value = item.partition("=")
            key = cls.key(key.strip().lower())
            if key not in known:
                raise UsageError(
                    f"{DEADLINES_OPTION}: {item!r} names no deadline; use KEY=SECONDS with the keys "
                    f"{', '.join(known)}, e.g. idle=30,answer=600"
                )
            if known[key] in values:
                raise UsageError(f"{DEADLINES_OPTION}: {key} is given twice")
            try:
                seconds = float(value.strip().removesuffix("s"))
            except ValueError:
                seconds = math.nan
            if not (math.isfinite(seconds) and seconds > 0):
                raise UsageError(f"{DEADLINES_OPTION}: {item!r} is not a positive number of seconds")
            values[known[key]] = seconds
        return replace(cls(), **values)

    def describe(self, name: str) -> str:
        """`idle=60 s`, the way messages name a deadline (as the option spells it)."""
        return f"{self.key(name)}={getattr(self, name):g} s"

    def exceeded(self, name: str, what: str) -> EngineError:
        """The one error of an expired deadline: what was waited for, which deadline, and how to raise it."""
        return EngineError(
            f"{what} ({self.describe(name)} exceeded); if the server is only slow, "
            f"raise it with {DEADLINES_OPTION} {self.key(name)}=SECONDS"
        )


@dataclass
class RuntimeOptions:
    """How the embedded engine runs: weights dtype and device, how decoder matrices are held
    (`quantize`: auto, none, int8, int4, fp8; see `runtime.qload`), attention backend, where the KV
    cache may live (byte budgets per tier as sizes like "20GiB", a spill directory, its dtype) and the
    prefill piece size (None: aligned to the model's attention chunk). The remote engine ignores them."""

    # `auto`: bfloat16 where the hardware computes it natively, else float32 (`runtime.dtypes.auto_dtype`)
    dtype: str = "auto"
    device: str = "auto"
    # `auto`: the default model's 4-bit matrices stay 4-bit (decode 3x faster in fp32, 40 % less
    # memory; docs/benchmarks.md). `none` is the dense path, where a follow-up from a KV snapshot
    # equals a full recompute word for word (see README).
    quantize: str = "auto"
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
