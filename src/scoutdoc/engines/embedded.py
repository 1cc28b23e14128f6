"""The engine that runs our own runtime in this process.

It turns a message-structured `Prompt` into tokens with `prompt.render` (stable document prefix,
split at a special token), reuses a loaded snapshot for as many leading tokens as match, prefills the
rest in pieces, and streams the answer. After the answer it extends the state to exactly the tokens
the *next* turn's rendering will start with (answer re-tokenized as the template renders it, closed
by its end-of-turn token), so a snapshot saved then lets a follow-up prefill only its new question.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from ..errors import ModelError, SnapshotError, UsageError
from ..models import resolve
from ..progress import Progress
from ..units import parse_size
from ..prompt import Message, Prompt
from .base import GenerationParams, RuntimeOptions, Stats
from .chat import as_dicts, cut_after_last_special, render, special_strings


ANSWER_HEADROOM = 1024  # tokens planned beyond the prompt for the answer and a follow-up or two


@dataclass
class EmbeddedState:
    session: object  # runtime.Session: the KV cache and the token ids it holds
    prompt: Prompt | None = None
    ids: list[int] = field(default_factory=list)  # the full prompt's token ids for this turn
    stats: Stats = field(default_factory=Stats)
    prefill_started: float = 0.0
    prefill_s: float = 0.0
    logits: object = None  # the last prompt position's logits: the first answer token needs no extra forward

    @property
    def tokens(self) -> int:
        return len(self.session.ids)


def rewind(session, ids: list[int]) -> int:
    """Cut `session` back to the longest prefix of `ids` its cache can still serve; how many tokens it
    now holds (0: start a fresh session). At least one token of `ids` is always left to run, for the
    forward pass that produces the first answer logits.

    A hybrid cache keeps only the current attention chunk for its chunked layers, so it cannot drop
    back into an earlier chunk (`truncate` returns False); the start of the chunk holding the common
    prefix's end is then the longest usable point, since chunk boundaries can always be restored.
    """
    common = min(session.common_prefix(ids), len(ids) - 1)
    if common == len(session.ids):
        return common
    truncate = getattr(session.cache, "truncate", None)
    if truncate is None:
        return 0
    chunk = getattr(session.cache, "chunk", None)
    points = [common, common - common % chunk] if chunk and common % chunk else [common]
    for point in points:
        if point > 0 and truncate(point) is not False:
            del session.ids[point:]
            return point
    return 0


def locate(model: str) -> tuple[Path, str]:
    """The model's files and the name messages use for it: an existing path as given (named after the
    file or directory), anything else through the catalog (pulled if needed, named as in the catalog)."""
    path = Path(model).expanduser()
    if path.exists():
        return path, path.stem if path.is_file() else path.name
    resolved = resolve(model)
    return resolved.path, resolved.name


class EmbeddedEngine:
    name = "embedded"
    base_url = None
    keeps_snapshots = True
    concurrency = 1  # one model in this process answers one document at a time

    def __init__(
        self,
        model: str,
        dtype: str = RuntimeOptions.dtype,
        device: str = "auto",
        prefill_chunk: int | None = None,
        attn: str = "auto",
        kv_dtype: str | None = None,
        kv_device_budget: str | int | None = None,
        kv_host_budget: str | int | None = None,
        kv_disk: str | Path | None = None,
        quantize: str = RuntimeOptions.quantize,
    ):
        """`attn` and the `kv_*` options are checked before the weights load, so a forced attention
        backend this machine cannot run (ModelError) or an unreadable size (UsageError) fails fast."""
        from ..runtime import load_model
        from ..runtime.attention import select_backend
        from ..runtime.kvcache import resolve_kv_dtype
        from ..runtime.weights import resolve_device, resolve_dtype

        if prefill_chunk is not None and prefill_chunk < 1:
            raise UsageError(f"--prefill-chunk must be a positive number of tokens, not {prefill_chunk}")
        dev = resolve_device(device)
        self.backend = select_backend(attn, dev)
        self.kv_dtype = resolve_kv_dtype(kv_dtype, resolve_dtype(dtype, dev), dev)
        self.kv_device_budget = parse_size(kv_device_budget, "--kv-device-budget") if kv_device_budget is not None else None
        self.kv_host_budget = parse_size(kv_host_budget, "--kv-host-budget") if kv_host_budget is not None else None
        self.kv_disk = Path(kv_disk).expanduser() if kv_disk is not None else None
        self.kv_dtype_name = None if kv_dtype in (None, "model") else kv_dtype  # the planner's name for it
        import torch

        from ..runtime.threads import PROCESS_WATCH

        self.thread_ceiling = torch.get_num_threads()  # what torch (or the caller) set; prompts and decode may use fewer
        self.load_watch = PROCESS_WATCH
        torch.set_num_threads(self._threads())  # loading too: a busy core makes every operation wait
        path, self.model_name = locate(model)
        self.model = load_model(path, dtype=dtype, device=device, quantize=quantize)
        self.tokenizer = self.model.tokenizer
        self.model_id = self.model.fingerprint
        self.context_limit = int(self.model.config.max_position_embeddings)
        self.prefill_chunk = prefill_chunk
        self._last_render: tuple | None = None

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer.encode(text, special=False))

    def _render(self, prompt: Prompt):
        """`render`, remembered for the last prompt: a turn counts, checks and prefills the same
        prompt, and tokenizing a long document prefix once instead of three times matters."""
        key = tuple((m.role, m.content) for m in prompt.messages)
        if self._last_render is None or self._last_render[0] != key:
            self._last_render = (key, render(self.tokenizer, prompt))
        return self._last_render[1]

    def prompt_tokens(self, prompt: Prompt) -> int:
        return len(self._render(prompt).ids)

    def prefix_tokens(self, prompt: Prompt) -> int:
        return len(self._render(prompt).prefix_ids)

    def _threads(self) -> int:
        """Threads for the next prompt piece or decode steps: the cores other processes leave free."""
        return self.load_watch.threads(self.thread_ceiling)

    def _prefill(self, session, ids: list[int], progress: Progress | None):
        """Run the tokens of `ids` the session does not hold yet; the last position's logits."""
        return self.model.prefill(ids, session=session, chunk=self.prefill_chunk, progress=progress,
                                  threads=self._threads)[1]

    def _rewind(self, state: EmbeddedState | None, ids: list[int]) -> tuple[object, int]:
        """A session holding the longest usable prefix of `ids`, and how many tokens it holds."""
        if state is not None:
            session = state.session
            held = rewind(session, ids)
            if held:
                return session, held
        return self._new_session(min(self.context_limit, len(ids) + ANSWER_HEADROOM)), 0

    def _plan(self, tokens: int):
        """The memory plan for a `tokens`-long context with this engine's KV options; MemoryPlanError
        (with the numbers and what would help) when the KV cache and activations cannot fit next to
        the already loaded weights."""
        from ..runtime.generate import default_prefill_chunk
        from ..runtime.memory import plan_memory, require_fit

        plan = plan_memory(
            self.model.config, max(1, tokens), weights_dtype=str(self.model.dtype).removeprefix("torch."),
            kv_dtype=self.kv_dtype_name, weights_bytes=0, device=self.model.device.type,
            kv_device_budget=self.kv_device_budget, kv_host_budget=self.kv_host_budget, kv_disk=self.kv_disk,
            prefill_chunk=self.prefill_chunk or default_prefill_chunk(self.model.config),
        )
        require_fit(plan)
        return plan

    def _cache_options(self, tokens: int):
        """CacheOptions for a `tokens`-long context: the plan's tier budgets, --kv-disk, --kv-dtype and
        the attention backend. Fresh sessions and loaded snapshots both use these."""
        from ..runtime.kvcache import CacheOptions
        from ..runtime.memory import cache_budgets

        plan = self._plan(tokens)
        return CacheOptions(
            **cache_budgets(plan),
            disk_dir=self.kv_disk,
            kv_dtype=self.kv_dtype,
            backend=self.backend,
        )

    def _new_session(self, tokens: int):
        """A session over the hybrid cache (the kind snapshots are written from and read into), its
        tiers sized by the memory planner for `tokens`."""
        return self.model.new_session(self.model.new_cache("hybrid", self._cache_options(tokens)))

    def _fingerprint(self) -> dict:
        return {"model": self.model.fingerprint, "tokenizer": str(getattr(self.tokenizer, "fingerprint", ""))}

    def prefill(self, prompt: Prompt, snapshot: EmbeddedState | None = None, progress: Progress | None = None) -> EmbeddedState:
        ids = self._render(prompt).ids
        started = time.perf_counter()
        session, cached = self._rewind(snapshot, ids)  # always leaves at least one token to run
        logits = self._prefill(session, ids, progress)
        state = EmbeddedState(session=session, prompt=prompt, ids=ids, prefill_started=started, logits=logits)
        state.prefill_s = time.perf_counter() - started
        state.stats = Stats(prompt_tokens=len(ids), cached_tokens=cached, prefilled_tokens=len(ids) - cached)
        return state

    def generate(self, state: EmbeddedState, params: GenerationParams) -> Iterator[str]:
        from ..runtime import Sampling

        sampling = Sampling(temperature=params.temperature, top_p=params.top_p, top_k=params.top_k, seed=params.seed,
                            repetition_penalty=params.repetition_penalty, loop_window=params.loop_window)
        text_gen = self.model.generate_text(
            state.ids, max_new_tokens=params.max_tokens, sampling=sampling, stop=params.stop, session=state.session,
            logits=state.logits, threads=self._threads,
        )
        state.logits = None  # consumed: the session moves on as tokens are generated
        stats = state.stats
        pieces: list[str] = []
        first_at = None
        state.stats.finish_reason = "interrupted"
        try:
            for piece in text_gen:
                if first_at is None:
                    first_at = time.perf_counter()
                pieces.append(piece)
                yield piece
            stats.finish_reason = text_gen.finish_reason
        finally:
            end = time.perf_counter()
            first_at = first_at or end
            stats.generated_tokens = len(text_gen.new_ids)
            stats.ttft_s = first_at - state.prefill_started
            stats.prefill_s = stats.ttft_s
            stats.decode_s = end - first_at
            stats.tokens_per_s = (stats.generated_tokens - 1) / stats.decode_s if stats.decode_s > 0 and stats.generated_tokens > 1 else 0.0
        if stats.finish_reason != "interrupted":
            self._close_turn(state, "".join(pieces))

    def _close_turn(self, state: EmbeddedState, answer: str) -> None:
        """Bring the cache to exactly the tokens the next turn's prompt will start with.

        Those are the template's rendering of the conversation with this answer as an assistant
        turn, cut right after its last special token (the answer's end-of-turn marker). The document
        prefix is the one this turn already tokenized; only the turns part is tokenized again.
        """
        assert state.prompt is not None
        closed = Prompt(prefix=state.prompt.prefix, turns=[*state.prompt.turns, Message("assistant", answer)])
        rendered = self._render(state.prompt)
        text = self.tokenizer.apply_chat_template(as_dicts(closed.messages), add_generation_prompt=False)
        cut = cut_after_last_special(text, special_strings(self.tokenizer))
        if not text.startswith(rendered.prefix_text) or cut <= len(rendered.prefix_text):
            raise ModelError("the chat template does not close an assistant turn with a special token")
        target = rendered.prefix_ids + self.tokenizer.encode(text[len(rendered.prefix_text) : cut], special=True)
        session, held = self._rewind(state, target + [-1])  # the sentinel lets every real token be kept
        if held < len(target):
            self._prefill(session, target, None)
        state.session = session
        state.prompt = closed
        state.ids = list(session.ids)

    def save(self, state: EmbeddedState, path: Path) -> int:
        from ..runtime.snapshot import save_snapshot, store_dtype_setting

        return save_snapshot(state.session.cache, list(state.session.ids), self._fingerprint(), Path(path),
                             store_dtype=store_dtype_setting())

    def load(self, path: Path) -> EmbeddedState:
        """The state saved at `path`; SnapshotError when it is missing, corrupt or from another model."""
        from ..runtime.snapshot import load_snapshot, read_header

        path = Path(path)
        if not path.is_file():
            raise SnapshotError(f"KV snapshot {path} is missing")
        try:
            length = int(read_header(path)[0]["__metadata__"]["length"])
        except (KeyError, TypeError, ValueError) as exc:
            raise SnapshotError(f"KV snapshot {path} has a damaged header ({exc}); recompute the prefix") from exc
        options = self._cache_options(min(self.context_limit, length + ANSWER_HEADROOM))
        cache, ids = load_snapshot(
            path, self._fingerprint(), self.model.config, self.model.dtype, self.model.device, options
        )
        session = self.model.new_session(cache)
        session.ids = list(ids)
        return EmbeddedState(session=session)
