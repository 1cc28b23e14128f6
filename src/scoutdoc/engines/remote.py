"""The remote engine: the same `Engine` protocol, served by an OpenAI-compatible server.

For users whose documents outgrow one machine, scoutdoc can drive vLLM, SGLang or llama.cpp's
server instead of its own runtime. There is no KV snapshot to keep on our side: every turn resends
the whole conversation, and because the document part of the prompt (`Prompt.prefix`) is sent
byte-identical each time, the server's automatic prefix cache (vLLM APC, SGLang RadixAttention,
llama.cpp's slot cache) recognises it and only the new question is prefilled. The server reports
how many prompt tokens it reused (`usage.prompt_tokens_details.cached_tokens`) and we record that
in `Stats.cached_tokens`, like the embedded engine records what its snapshot saved.

Everything the CLI needs before sending is answered here too: the context limit (from the server's
model listing, e.g. vLLM's `max_model_len` or llama.cpp's `/props`, else the user's
`--context-limit`) and token counts, which come from the model's own tokenizer when the user gives
one, else the server's tokenize endpoint, else a clearly labelled estimate (`token_count_method`).

One `RemoteEngine` is shared by the threads of a concurrent batch: the HTTP client is thread-safe,
all per-turn data lives in the `RemoteState`, and the few caches are guarded by a lock. Retries with
backoff (429, 5xx, refused or dropped connections) live in the HTTP client, and the deadlines
(`RemoteDeadlines`: connect, first byte, idle between events, whole answer) in `openai_client.py`.
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import httpx
from httpx_sse import EventSource, SSEError

from ..errors import ContextTooLongError, EngineError, UsageError
from ..progress import Progress
from ..prompt import Prompt
from .base import GenerationParams, RemoteDeadlines, Stats
from .chat import as_dicts
from .openai_client import (
    CONTEXT_ERROR, DEFAULT_MAX_RETRIES, OpenAIHttp, ServedModel, StreamWatch, fetch_models, redact, split_base_url,
    token_count,
)

# Finish reasons after which the answer is not whole: vLLM and SGLang send "abort" for a cancelled
# request; others "error". Any other reason ("stop", "length", a server's own) ends a whole answer.
UNFINISHED = ("abort", "aborted", "error", "cancelled", "canceled")
AFTER_CAP_EVENTS = 8  # events read past --max-tokens for the finish reason and usage that follow the last piece

# Chat templates wrap each message in a few special tokens (role header, end-of-turn) and end with
# an assistant header. Used only when neither a local tokenizer nor the server can render the
# template; generous so that the context check errs on the safe side.
TEMPLATE_TOKENS_PER_MESSAGE = 8
TEMPLATE_TOKENS_GENERATION_HEADER = 4
ESTIMATE_BYTES_PER_TOKEN = 4  # typical for BPE vocabularies on English text and code


def estimate_tokens(text: str) -> int:
    """A tokenizer-free guess, used only when neither a tokenizer nor the server can count."""
    return math.ceil(len(text.encode("utf-8")) / ESTIMATE_BYTES_PER_TOKEN)


@dataclass
class RemoteState:
    """A turn in flight: the messages to send, and after `generate` the answer and its figures."""

    messages: list[dict[str, str]]
    stats: Stats = field(default_factory=Stats)
    counted_prompt_tokens: int = 0  # our count before sending; the server's usage replaces it
    usage_from_server: bool = False

    @property
    def tokens(self) -> int:
        """The conversation's tokens as the server holds them after the answer."""
        return self.stats.prompt_tokens + self.stats.generated_tokens


def _digest(payload: Any) -> str:
    return hashlib.sha256(json.dumps(payload, ensure_ascii=False, sort_keys=True).encode("utf-8")).hexdigest()


class RemoteEngine:
    """An `Engine` backed by an OpenAI-compatible server; safe to share between threads.

    Construction talks to the server once: it checks that it is reachable and accepts the key,
    that it serves `model` (or picks the only one it serves), learns the context limit and finds
    the best way to count tokens. Each of those can fail with one clear `EngineError`/`UsageError`.
    """

    name = "remote"
    keeps_snapshots = False  # the server's prefix cache holds the reusable part
    concurrency = 4  # a batch's default documents in flight; servers batch these, and queue the rest

    def __init__(
        self,
        base_url: str,
        model: str | None = None,
        api_key: str | None = None,
        tokenizer: str | Path | Any | None = None,
        context_limit: int | None = None,
        deadlines: RemoteDeadlines | None = None,
        max_retries: int = DEFAULT_MAX_RETRIES,
        backoff_s: float = 0.5,
        transport: httpx.BaseTransport | None = None,
    ):
        urls = split_base_url(base_url)
        self.deadlines = deadlines or RemoteDeadlines()
        self._http = OpenAIHttp(urls, api_key, self.deadlines, max_retries, backoff_s, transport)
        self.base_url = urls.api
        try:
            served = fetch_models(self._http)
            self.model = self._pick_model(served, model)
            card = next(m for m in served if m.id == self.model)
            limits = [limit for limit in (card.context_limit, context_limit) if limit]
            if not limits:
                raise UsageError(
                    f"the server at {urls.root} does not report {self.model}'s context length; "
                    "pass --context-limit N (the context the server was started with)"
                )
            self.context_limit = min(limits)
            self.model_id = f"remote:{self.model}"
            self.model_name = self.model
            self._lock = threading.Lock()
            self._content_counts: dict[str, int] = {}
            self._prompt_counts: dict[str, int] = {}
            self._tokenizer = _load_tokenizer(tokenizer) if tokenizer is not None else None
            self._dialect = None if self._tokenizer is not None else self._probe_tokenize()
            self._offset = self._server_count("") if self._dialect else 0
        except BaseException:
            self._http.close()
            raise

    # -- what the CLI reads -------------------------------------------------------------------

    @property
    def token_count_method(self) -> str:
        """"tokenizer" (the model's own files), "server" (its tokenize endpoint) or "estimate"."""
        if self._tokenizer is not None:
            return "tokenizer"
        return "server" if self._dialect else "estimate"

    @property
    def prompt_count_exact(self) -> bool:
        """Whether `prompt_tokens` renders the real chat template, or adds an allowance for it."""
        return self._tokenizer is not None or self._dialect == "vllm"

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> RemoteEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- counting ---------------------------------------------------------------------------------

    def count_tokens(self, text: str) -> int:
        if self._tokenizer is not None:
            return len(self._tokenizer.encode(text, special=False))
        if not self._dialect:
            return estimate_tokens(text)
        key = hashlib.sha256(text.encode("utf-8")).hexdigest()
        with self._lock:
            cached = self._content_counts.get(key)
        if cached is None:
            cached = max(0, self._server_count(text) - self._offset)
            with self._lock:
                if len(self._content_counts) > 4096:
                    self._content_counts.clear()
                self._content_counts[key] = cached
        return cached

    def prompt_tokens(self, prompt: Prompt) -> int:
        return self._template_tokens(_wire_messages(prompt), add_generation_prompt=True)

    def prefix_tokens(self, prompt: Prompt) -> int:
        """Tokens of the session's fixed part, the share the server's prefix cache can reuse."""
        return self._template_tokens(as_dicts(prompt.prefix), add_generation_prompt=False)

    def _template_tokens(self, messages: list[dict[str, str]], add_generation_prompt: bool) -> int:
        """Tokens of `messages` in the chat template: rendered exactly by the local tokenizer or
        vLLM's chat-aware /tokenize, else content counts plus an allowance for the template."""
        key = _digest([messages, add_generation_prompt])
        with self._lock:
            cached = self._prompt_counts.get(key)
        if cached is not None:
            return cached
        if self._tokenizer is not None:
            text = self._tokenizer.apply_chat_template(messages, add_generation_prompt=add_generation_prompt)
            count = len(self._tokenizer.encode(text, special=True))
        elif self._dialect == "vllm":
            body = {"model": self.model, "messages": messages, "add_generation_prompt": add_generation_prompt}
            count = token_count(self._http.post_json(self._http.urls.root + "/tokenize", body), "/tokenize")
        else:
            count = sum(self.count_tokens(m["content"]) + TEMPLATE_TOKENS_PER_MESSAGE for m in messages)
            count += TEMPLATE_TOKENS_GENERATION_HEADER if add_generation_prompt else 0
        with self._lock:
            if len(self._prompt_counts) > 1024:
                self._prompt_counts.clear()
            self._prompt_counts[key] = count
        return count

    def _probe_tokenize(self) -> str | None:
        """Which tokenize endpoint the server has: vLLM's (and SGLang's) `/tokenize` answers with a
        `count`, llama.cpp's `/tokenize` with `tokens`, llama-cpp-python's is `/extras/tokenize`."""
        root = self._http.urls.root
        probe = {"model": self.model, "prompt": "Hello", "content": "Hello", "add_special_tokens": False}
        answer = self._http.probe_json("POST", root + "/tokenize", probe)
        if isinstance(answer, dict) and isinstance(answer.get("count"), int):
            return "vllm"
        if isinstance(answer, dict) and answer.get("tokens"):
            return "llama.cpp"
        answer = self._http.probe_json("POST", root + "/extras/tokenize", {"model": self.model, "input": "Hello"})
        if isinstance(answer, dict) and isinstance(answer.get("tokens"), list):
            return "llama-cpp-python"
        return None

    def _server_count(self, text: str) -> int:
        root = self._http.urls.root
        if self._dialect == "vllm":
            body = {"model": self.model, "prompt": text, "add_special_tokens": False}
            return token_count(self._http.post_json(root + "/tokenize", body), "/tokenize")
        if self._dialect == "llama.cpp":
            return token_count(self._http.post_json(root + "/tokenize", {"content": text}), "/tokenize")
        body = {"model": self.model, "input": text}
        return token_count(self._http.post_json(root + "/extras/tokenize", body), "/extras/tokenize")

    # -- turns ------------------------------------------------------------------------------------

    def prefill(self, prompt: Prompt, snapshot: Any = None, progress: Progress | None = None) -> RemoteState:
        """Check the prompt against the context limit; the server prefills it when `generate` sends it.

        `snapshot` is ignored: the server's prefix cache, not a file of ours, holds the reusable part.
        """
        count = self.prompt_tokens(prompt)
        if count >= self.context_limit:
            how = "" if self.token_count_method != "estimate" else " (estimated: no tokenizer or tokenize endpoint)"
            raise ContextTooLongError(
                f"the prompt takes {count} tokens{how}, more than the {self.context_limit}-token context of "
                f"{self.model}; drop some sources or use a model with a longer context"
            )
        if progress is not None:
            progress(count, count, "tokens")
        return RemoteState(
            messages=_wire_messages(prompt), stats=Stats(prompt_tokens=count), counted_prompt_tokens=count
        )

    def generate(self, state: RemoteState, params: GenerationParams) -> Iterator[str]:
        """Stream the answer over server-sent events.

        Raises `EngineError` when the stream breaks or ends without a finish reason, so the caller
        never records a half-written answer as a complete turn.
        """
        room = self.context_limit - state.counted_prompt_tokens
        body: dict[str, Any] = {
            "model": self.model,
            "messages": state.messages,
            "stream": True,
            "stream_options": {"include_usage": True},
            "max_tokens": max(1, min(params.max_tokens, room)),
            "temperature": params.temperature,
            "top_p": params.top_p,
        }
        if params.top_k > 0:
            body["top_k"] = params.top_k
        if params.seed is not None:
            body["seed"] = params.seed
        if params.stop:
            body["stop"] = params.stop
        url = self._http.urls.api + "/chat/completions"
        started = time.perf_counter()
        clock = time.monotonic()
        response = self._http.request("POST", url, json_body=body, stream=True)
        pieces: list[str] = []
        first: float | None = None
        finish = ""
        usage: dict | None = None
        cap = body["max_tokens"]  # a server that never stops is stopped here: each delta carries a token or more
        watch = StreamWatch(response, self.deadlines, clock)
        past_cap = 0
        try:
            if not response.headers.get("content-type", "").startswith("text/event-stream"):
                raise EngineError(f"{url} answered a streamed request without a stream "
                                  f"({response.headers.get('content-type') or 'no content type'}); scoutdoc needs a "
                                  "server that streams (stream: true), as vLLM, SGLang and llama.cpp do")
            for event in EventSource(response).iter_sse():
                watch.heard()
                if event.data.strip() == "[DONE]":
                    break
                if not event.data.strip():
                    continue
                chunk = json.loads(event.data)
                if isinstance(chunk, dict) and chunk.get("error"):
                    error = chunk["error"]
                    message = redact(str(error.get("message") if isinstance(error, dict) else error), self._http.secrets)
                    if CONTEXT_ERROR.search(message):
                        raise ContextTooLongError(f"the server says the prompt does not fit the model's context ({message})")
                    raise EngineError(f"the server stopped the answer with an error: {message}")
                if isinstance(chunk.get("usage"), dict):
                    usage = chunk["usage"]
                if len(pieces) >= cap:  # the finish reason and usage may still follow; more text may not
                    past_cap += 1
                    if past_cap > AFTER_CAP_EVENTS or any((c.get("delta") or {}).get("content") for c in chunk.get("choices") or []):
                        finish = finish or "length"
                        break
                for choice in chunk.get("choices") or []:
                    text = (choice.get("delta") or {}).get("content")
                    if isinstance(text, str) and text and len(pieces) < cap:
                        if first is None:
                            first = time.perf_counter()
                        pieces.append(text)
                        yield text
                        watch.heard()
                    if choice.get("finish_reason"):
                        finish = str(choice["finish_reason"])
        except httpx.TimeoutException as exc:  # the read timeout can beat the watcher by a hair
            raise self._over_deadline(watch.expired or ("idle" if watch.last_event else "first_byte"), len(pieces)) from exc
        except httpx.TransportError as exc:
            if watch.expired:
                raise self._over_deadline(watch.expired, len(pieces)) from exc
            raise EngineError(
                f"the answer stream from {self._http.urls.root} broke after {len(pieces)} pieces "
                f"({type(exc).__name__}); the answer is incomplete and was not recorded, ask again"
            ) from exc
        except (SSEError, ValueError, AttributeError) as exc:
            if watch.expired:
                raise self._over_deadline(watch.expired, len(pieces)) from exc
            raise EngineError(f"{url} sent a malformed event stream ({exc}); is it an OpenAI-compatible server?") from exc
        except Exception as exc:  # closing the stream under a reader surfaces as httpx's StreamClosed and the like
            if watch.expired:
                raise self._over_deadline(watch.expired, len(pieces)) from exc
            raise
        finally:
            watch.stop()
            response.close()
        if watch.expired:  # a cut connection can also read as the end of a body sent until close
            raise self._over_deadline(watch.expired, len(pieces))
        if not finish:
            raise EngineError(
                f"the answer stream from {self._http.urls.root} ended after {len(pieces)} pieces without a finish "
                "reason (the server stopped or failed: see its log, e.g. for a prompt over its context; "
                "llama-cpp-python also cuts streams for new requests unless started with --interrupt_requests "
                "False); the answer was not recorded, ask again"
            )
        if finish.lower() in UNFINISHED:
            raise EngineError(
                f"the server ended the answer with finish reason {finish!r} after {len(pieces)} pieces (it was cancelled "
                "or failed there: see the server's log); the answer is incomplete and was not recorded, ask again"
            )
        ended = time.perf_counter()
        answer = "".join(pieces)
        self._record(state, usage, answer, started, first, ended, finish, len(pieces))
        state.messages.append({"role": "assistant", "content": answer})

    def _over_deadline(self, name: str, pieces: int) -> EngineError:
        waited = {
            "first_byte": "sent no event after the request",
            "idle": "went silent between two events",
            "answer": "did not finish the answer",
        }[name]
        return self.deadlines.exceeded(
            name, f"the server at {self._http.urls.root} {waited} (after {pieces} pieces; the answer was not recorded)"
        )

    def _record(
        self, state: RemoteState, usage: dict | None, answer: str, started: float,
        first: float | None, ended: float, finish: str, deltas: int,
    ) -> None:
        stats = state.stats
        state.usage_from_server = usage is not None
        prompt_tokens = _count(usage.get("prompt_tokens")) if usage is not None else None
        generated = _count(usage.get("completion_tokens")) if usage is not None else None
        if usage is not None and prompt_tokens is not None and generated is not None:
            stats.prompt_tokens = prompt_tokens
            details = usage.get("prompt_tokens_details")
            cached = _count(details.get("cached_tokens")) if isinstance(details, dict) else None
            stats.cached_tokens = min(cached or 0, prompt_tokens)
            stats.generated_tokens = generated
        else:  # no usage block, or one with wrong types: our own counts
            state.usage_from_server = False
            stats.prompt_tokens = state.counted_prompt_tokens
            stats.cached_tokens = 0
            try:
                stats.generated_tokens = self.count_tokens(answer)
            except EngineError:
                stats.generated_tokens = deltas
        stats.prefilled_tokens = max(0, stats.prompt_tokens - stats.cached_tokens)
        stats.ttft_s = (first if first is not None else ended) - started
        stats.prefill_s = stats.ttft_s
        stats.decode_s = ended - first if first is not None else 0.0
        # Like the embedded engine: the first token belongs to the prefill, the rest to decoding.
        decoded = stats.generated_tokens - 1
        stats.tokens_per_s = decoded / stats.decode_s if stats.decode_s > 0 and decoded > 0 else 0.0
        stats.finish_reason = {"stop": "stop", "length": "length"}.get(finish, finish)

    # -- helpers ----------------------------------------------------------------------------------

    def _pick_model(self, served: list[ServedModel], wanted: str | None) -> str:
        names = [m.id for m in served]
        if wanted and wanted in names:
            return wanted
        offered = ", ".join(names) or "nothing"
        if wanted:
            raise EngineError(f"the server at {self._http.urls.root} does not serve {wanted!r}; it serves: {offered}")
        if len(names) == 1:
            return names[0]
        raise UsageError(f"the server at {self._http.urls.root} serves {offered}; pick one with --model")


def _wire_messages(prompt: Prompt) -> list[dict[str, str]]:
    """The messages as sent; the prefix part is byte-identical on every turn of a session."""
    return as_dicts(prompt.messages)


def _load_tokenizer(tokenizer: str | Path | Any) -> Any:
    """The served model's own tokenizer (tokenizer.json or model directory), for exact counts."""
    if not isinstance(tokenizer, (str, Path)):
        return tokenizer
    from ..runtime.tokenizer import load_tokenizer

    return load_tokenizer(Path(tokenizer))


def _count(value: Any) -> int | None:
    """A token count from a server's usage block, or None when it is not a plain non-negative integer."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None
