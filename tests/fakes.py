"""A fake `Engine` for fast, in-process tests of session.py and batch.py.

It keeps the contract the embedded engine keeps, on words instead of a model:
- a prompt renders to "tokens" (words and punctuation between chat-template markers) as a stable
  document prefix followed by the turns, so `count_tokens`, `prompt_tokens` and `prefix_tokens` agree
  with what `prefill` runs;
- `prefill` reuses a snapshot for as many leading tokens as match (at least one token is always run),
  and reports cached and prefilled tokens in `state.stats` as the embedded engine does;
- `generate` streams a deterministic answer that depends on every prompt token (so an answer from a
  snapshot equals the answer of a full recompute, and a changed document changes it), honours
  `max_tokens` and `stop`, marks an abandoned stream "interrupted", and after a finished answer
  extends the state to exactly the tokens the next turn's prompt starts with;
- `save` writes a real file atomically (temporary file, then rename) with a checksum and the model
  id; `load` refuses a missing, corrupt or other-model file with `SnapshotError`.

Tests inject failures through `on_prefill` (called with the prompt before any work) and `save_error`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Generator

from scoutdoc.engines import GenerationParams, Stats
from scoutdoc.errors import SnapshotError
from scoutdoc.progress import Progress
from scoutdoc.prompt import Message, Prompt

START, END = "<|im_start|>", "<|im_end|>"
SNAPSHOT_FORMAT = "scoutdoc-fake-kv"
_WORD = re.compile(r"\w+|[^\w\s]")


def tokenize(text: str) -> list[str]:
    return _WORD.findall(text)


def render_message(message: Message) -> list[str]:
    return [START, message.role, *tokenize(message.content), END]


@dataclass
class FakeState:
    held: list[str]  # the tokens "in the KV cache": this turn's prompt, then its answer once finished
    prompt: Prompt | None = None
    ids: list[str] = field(default_factory=list)  # this turn's whole prompt
    stats: Stats = field(default_factory=Stats)

    @property
    def tokens(self) -> int:
        """Tokens the state holds: after an answer, what a snapshot of it covers."""
        return len(self.held)


class FakeEngine:
    name = "fake"
    base_url = None
    keeps_snapshots = True
    concurrency = 1

    def __init__(
        self,
        model_id: str = "fake-model-1",
        context_limit: int = 4096,
        on_prefill: Callable[[Prompt], None] | None = None,
        save_error: Exception | None = None,
    ):
        self.model_id = model_id
        self.model_name = f"fake ({model_id})"
        self.context_limit = context_limit
        self.on_prefill = on_prefill
        self.save_error = save_error
        self.prefills: list[FakeState] = []  # every state prefilled, in order (batch workers share the engine)
        self.asked: list[GenerationParams] = []  # the parameters of every answer, in order
        self._lock = threading.Lock()

    # counting ------------------------------------------------------------------------------------

    def count_tokens(self, text: str) -> int:
        return len(tokenize(text))

    def _prefix_ids(self, prompt: Prompt) -> list[str]:
        return [t for m in prompt.prefix for t in render_message(m)]

    def _ids(self, prompt: Prompt) -> list[str]:
        turns = [t for m in prompt.turns for t in render_message(m)]
        return self._prefix_ids(prompt) + turns + [START, "assistant"]

    def prompt_tokens(self, prompt: Prompt) -> int:
        return len(self._ids(prompt))

    def prefix_tokens(self, prompt: Prompt) -> int:
        return len(self._prefix_ids(prompt))

    # running -------------------------------------------------------------------------------------

    def prefill(self, prompt: Prompt, snapshot: FakeState | None = None, progress: Progress | None = None) -> FakeState:
        if self.on_prefill is not None:
            self.on_prefill(prompt)
        ids = self._ids(prompt)
        cached = 0
        if snapshot is not None:
            held = snapshot.held
            while cached < min(len(held), len(ids) - 1) and held[cached] == ids[cached]:
                cached += 1
        if progress is not None:
            progress(len(ids), len(ids), "tokens")
        stats = Stats(prompt_tokens=len(ids), cached_tokens=cached, prefilled_tokens=len(ids) - cached)
        state = FakeState(held=list(ids), prompt=prompt, ids=ids, stats=stats)
        with self._lock:
            self.prefills.append(state)
        return state

    def answer(self, state: FakeState, params: GenerationParams) -> tuple[list[str], str]:
        """The answer's pieces and finish reason: a digest of every prompt token, then the question's
        first words, cut at `max_tokens` pieces ("length") or before the first `stop` string."""
        # a word, never a number (8 hex digits are all decimal about 1 time in 43), which `grounding` would note
        digest = "x" + hashlib.sha256("\x00".join(state.ids).encode()).hexdigest()[:8]
        words = ["Answer", digest, "to", *tokenize(state.prompt.turns[-1].content)[:6], "."]
        pieces = [w if i == 0 else " " + w for i, w in enumerate(words)][: params.max_tokens]
        finish = "length" if len(pieces) < len(words) else "stop"
        text = "".join(pieces)
        cut = min((i for s in params.stop if (i := text.find(s)) >= 0), default=-1)
        if cut < 0:
            return pieces, finish
        kept: list[str] = []
        for piece in pieces:
            room = cut - sum(map(len, kept))
            if room <= 0:
                break
            kept.append(piece[:room])
        return kept, "stop"

    def generate(self, state: FakeState, params: GenerationParams) -> Generator[str, None, None]:
        self.asked.append(params)
        started = time.perf_counter()
        stats = state.stats
        stats.finish_reason = "interrupted"
        pieces, finish = self.answer(state, params)
        sent = 0
        try:
            for piece in pieces:
                sent += 1
                yield piece
            stats.finish_reason = finish
        finally:
            stats.generated_tokens = sent
            stats.ttft_s = stats.prefill_s = time.perf_counter() - started
        answer = "".join(pieces)
        state.prompt = Prompt(state.prompt.prefix, [*state.prompt.turns, Message("assistant", answer)])
        state.held = state.ids + tokenize(answer) + [END]

    # snapshots -----------------------------------------------------------------------------------

    def save(self, state: FakeState, path: Path) -> int:
        if self.save_error is not None:
            raise self.save_error
        body = json.dumps({"ids": state.held})
        data = json.dumps({"format": SNAPSHOT_FORMAT, "model": self.model_id, "body": body,
                           "sha256": hashlib.sha256(body.encode()).hexdigest()}).encode()
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)
        return len(data)

    def load(self, path: Path) -> FakeState:
        path = Path(path)
        if not path.is_file():
            raise SnapshotError(f"KV snapshot {path} is missing")
        try:
            meta = json.loads(path.read_bytes())
            body = meta["body"]
        except (ValueError, KeyError, TypeError) as exc:
            raise SnapshotError(f"KV snapshot {path} is truncated or not a snapshot; recompute the prefix") from exc
        if meta.get("format") != SNAPSHOT_FORMAT or hashlib.sha256(body.encode()).hexdigest() != meta.get("sha256"):
            raise SnapshotError(f"KV snapshot {path} is corrupt (checksum mismatch); recompute the prefix")
        if meta.get("model") != self.model_id:
            raise SnapshotError(f"KV snapshot {path} was made for a different model ({meta.get('model')}); recompute the prefix")
        return FakeState(held=json.loads(body)["ids"])


class SaysEngine(FakeEngine):
    """A fake engine whose every answer is `says`, a word a token: cut at `max_tokens` ("length")."""

    def __init__(self, says: str, **kw):
        super().__init__(**kw)
        self.says = says

    def answer(self, state, params):
        pieces = re.findall(r"\s*\S+", self.says)
        return pieces[: params.max_tokens], "length" if len(pieces) > params.max_tokens else "stop"
