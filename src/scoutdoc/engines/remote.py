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
backoff (429, 5xx, refused or dropped connections) and the per-request timeout live in `_Http`.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import re
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
from .base import GenerationParams, Stats
from .chat import as_dicts

API_KEY_ENV = "SCOUTDOC_API_KEY"
DEFAULT_TIMEOUT_S = 600.0  # long: a million-token prefill happens before the first byte arrives
DEFAULT_MAX_RETRIES = 4
# Chat templates wrap each message in a few special tokens (role header, end-of-turn) and end with
# an assistant header. Used only when neither a local tokenizer nor the server can render the
# template; generous so that the context check errs on the safe side.
TEMPLATE_TOKENS_PER_MESSAGE = 8
TEMPLATE_TOKENS_GENERATION_HEADER = 4
ESTIMATE_BYTES_PER_TOKEN = 4  # typical for BPE vocabularies on English text and code

_CONTEXT_ERROR = re.compile(
    r"context (length|window|size)|maximum context|max_model_len|exceed_context|too long|exceeds? the",
    re.IGNORECASE,
)


def estimate_tokens(text: str) -> int:
    """A tokenizer-free guess, used only when neither a tokenizer nor the server can count."""
    return math.ceil(len(text.encode("utf-8")) / ESTIMATE_BYTES_PER_TOKEN)


@dataclass(frozen=True)
class ServerURLs:
    """Where the OpenAI routes live (`api`, ending in /v1) and the server root (tokenize, props)."""

    api: str
    root: str


def split_base_url(base_url: str) -> ServerURLs:
    """Accept either the server root (`http://host:8000`) or its OpenAI base URL (`.../v1`)."""
    url = base_url.strip().rstrip("/")
    if not re.match(r"^https?://[^/]+", url):
        raise UsageError(f"--base-url {base_url!r} is not an http(s) URL; use e.g. http://127.0.0.1:8000/v1")
    if url.endswith("/v1"):
        return ServerURLs(api=url, root=url[: -len("/v1")])
    return ServerURLs(api=url + "/v1", root=url)


@dataclass
class ServedModel:
    """One entry of the server's model listing, as `scoutdoc models list --base-url` prints it."""

    id: str
    context_limit: int | None
    owned_by: str = ""


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


def _server_message(response: httpx.Response) -> str:
    """The human part of an error body, whichever of the usual shapes the server uses."""
    try:
        body = response.json()
    except (ValueError, UnicodeDecodeError):
        return response.text.strip()[:300] or response.reason_phrase
    if isinstance(body, dict):
        error = body.get("error", body.get("detail", body.get("message")))
        if isinstance(error, dict):
            error = error.get("message") or error.get("msg") or json.dumps(error)
        if isinstance(error, list):  # pydantic validation errors
            error = "; ".join(str(item.get("msg", item)) if isinstance(item, dict) else str(item) for item in error)
        if error:
            return str(error)[:300]
    return json.dumps(body)[:300]


def _error_for(status: int, message: str, url: str, root: str) -> Exception:
    if status in (401, 403):
        return EngineError(
            f"the server at {root} refused the request ({status}: {message}); "
            f"pass the right key with --api-key or {API_KEY_ENV}"
        )
    if status in (400, 413, 422) and _CONTEXT_ERROR.search(message):
        return ContextTooLongError(
            f"the server says the prompt does not fit the model's context ({message}); "
            "drop some sources or use a model with a longer context"
        )
    if status == 404:
        return EngineError(
            f"{url} answered 404 ({message}); check --base-url (the server root or its /v1 URL) and --model"
        )
    return EngineError(f"the server at {root} answered {status} to {url}: {message}")


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after", "")
    try:
        return min(60.0, max(0.0, float(value)))
    except ValueError:
        return None


def _retryable(status: int) -> bool:
    return status == 429 or (status >= 500 and status != 501)


class _Http:
    """One thread-safe HTTP client with the retry, backoff and timeout policy of every request.

    Retried: refused or dropped connections and 429/5xx answers, with exponential backoff and
    jitter (or the server's Retry-After). Not retried: timeouts (the same request would time out
    again) and the other 4xx answers, which say something about the request itself.
    """

    def __init__(
        self, urls: ServerURLs, api_key: str | None, timeout: float, max_retries: int, backoff_s: float,
        transport: httpx.BaseTransport | None = None,
    ):
        self.urls = urls
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = httpx.Client(
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=16),
            transport=transport,
        )

    def close(self) -> None:
        self.client.close()

    def _sleep(self, attempt: int, hint: float | None) -> None:
        delay = hint if hint is not None else min(30.0, self.backoff_s * 2**attempt) * random.uniform(0.75, 1.25)
        time.sleep(delay)

    def request(
        self, method: str, url: str, *, json_body: Any = None, stream: bool = False, allow: tuple[int, ...] = ()
    ) -> httpx.Response:
        """Send with retries; returns a successful response (or one whose status is in `allow`)."""
        attempt = 0
        while True:
            try:
                request = self.client.build_request(
                    method, url, json=json_body, headers={"Accept": "text/event-stream"} if stream else None
                )
                response = self.client.send(request, stream=stream)
            except httpx.TimeoutException as exc:
                if isinstance(exc, (httpx.ConnectTimeout, httpx.PoolTimeout)) and attempt < self.max_retries:
                    self._sleep(attempt, None)
                    attempt += 1
                    continue
                raise EngineError(
                    f"the server at {self.urls.root} did not answer within {self.timeout:g} s "
                    f"({type(exc).__name__}); raise the timeout or check the server's load"
                ) from exc
            except httpx.TransportError as exc:
                if attempt < self.max_retries:
                    self._sleep(attempt, None)
                    attempt += 1
                    continue
                raise EngineError(
                    f"cannot reach the server at {self.urls.root} ({type(exc).__name__}: {exc}) after "
                    f"{attempt + 1} attempts; check --base-url and that the server is running"
                ) from exc
            if response.status_code < 400 or response.status_code in allow:
                return response
            response.read()
            response.close()
            if _retryable(response.status_code) and attempt < self.max_retries:
                self._sleep(attempt, _retry_after(response))
                attempt += 1
                continue
            raise _error_for(response.status_code, _server_message(response), url, self.urls.root)

    def get_json(self, url: str, allow: tuple[int, ...] = ()) -> Any:
        response = self.request("GET", url, allow=allow)
        return None if response.status_code in allow else _json(response, url)

    def post_json(self, url: str, body: Any, allow: tuple[int, ...] = ()) -> Any:
        response = self.request("POST", url, json_body=body, allow=allow)
        return None if response.status_code in allow else _json(response, url)


def _json(response: httpx.Response, url: str) -> Any:
    try:
        return response.json()
    except ValueError as exc:
        raise EngineError(
            f"{url} did not answer with JSON; is --base-url an OpenAI-compatible server?"
        ) from exc


def _positive_int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _card_context_limit(card: dict) -> int | None:
    """vLLM and SGLang put `max_model_len` on each model card; some servers say `context_length`."""
    for key in ("max_model_len", "context_length", "n_ctx"):
        if limit := _positive_int(card.get(key)):
            return limit
    meta = card.get("meta")
    return _positive_int(meta.get("n_ctx")) if isinstance(meta, dict) else None


def _props_context_limit(http: _Http) -> int | None:
    """llama.cpp's own server reports the slot context it was started with under /props."""
    props = http.get_json(http.urls.root + "/props", allow=(404, 405, 501))
    if not isinstance(props, dict):
        return None
    settings = props.get("default_generation_settings")
    nested = settings.get("n_ctx") if isinstance(settings, dict) else None
    return _positive_int(props.get("n_ctx")) or _positive_int(nested)


def _fetch_models(http: _Http) -> list[ServedModel]:
    url = http.urls.api + "/models"
    listing = http.get_json(url)
    cards = listing.get("data") if isinstance(listing, dict) else None
    if not isinstance(cards, list):
        raise EngineError(f"{url} did not return an OpenAI model listing; is --base-url an OpenAI-compatible server?")
    models = [
        ServedModel(id=str(card["id"]), context_limit=_card_context_limit(card), owned_by=str(card.get("owned_by", "")))
        for card in cards
        if isinstance(card, dict) and card.get("id")
    ]
    if len(models) == 1 and models[0].context_limit is None:
        models[0].context_limit = _props_context_limit(http)
    return models


def list_models(
    base_url: str, api_key: str | None = None, timeout: float = 30.0, max_retries: int = 2,
    transport: httpx.BaseTransport | None = None,
) -> list[ServedModel]:
    """What the server offers, with each model's context limit where the server reports it."""
    key = api_key or os.environ.get(API_KEY_ENV) or None
    http = _Http(split_base_url(base_url), key, timeout, max_retries, 0.5, transport)
    try:
        return _fetch_models(http)
    finally:
        http.close()


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
        timeout: float = DEFAULT_TIMEOUT_S,
        max_retries: int = DEFAULT_MAX_RETRIES,
        backoff_s: float = 0.5,
        transport: httpx.BaseTransport | None = None,
    ):
        urls = split_base_url(base_url)
        key = api_key or os.environ.get(API_KEY_ENV) or None
        self._http = _Http(urls, key, timeout, max_retries, backoff_s, transport)
        self.base_url = urls.api
        try:
            served = _fetch_models(self._http)
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
            count = _token_count(self._http.post_json(self._http.urls.root + "/tokenize", body), "/tokenize")
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
        missing = (400, 404, 405, 422, 501)
        probe = {"model": self.model, "prompt": "Hello", "content": "Hello", "add_special_tokens": False}
        answer = self._http.post_json(root + "/tokenize", probe, allow=missing)
        if isinstance(answer, dict) and isinstance(answer.get("count"), int):
            return "vllm"
        if isinstance(answer, dict) and answer.get("tokens"):
            return "llama.cpp"
        answer = self._http.post_json(root + "/extras/tokenize", {"model": self.model, "input": "Hello"}, allow=missing)
        if isinstance(answer, dict) and isinstance(answer.get("tokens"), list):
            return "llama-cpp-python"
        return None

    def _server_count(self, text: str) -> int:
        root = self._http.urls.root
        if self._dialect == "vllm":
            body = {"model": self.model, "prompt": text, "add_special_tokens": False}
            return _token_count(self._http.post_json(root + "/tokenize", body), "/tokenize")
        if self._dialect == "llama.cpp":
            return _token_count(self._http.post_json(root + "/tokenize", {"content": text}), "/tokenize")
        body = {"model": self.model, "input": text}
        return _token_count(self._http.post_json(root + "/extras/tokenize", body), "/extras/tokenize")

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
        response = self._http.request("POST", url, json_body=body, stream=True)
        pieces: list[str] = []
        first: float | None = None
        finish = ""
        usage: dict | None = None
        try:
            for event in EventSource(response).iter_sse():
                if event.data.strip() == "[DONE]":
                    break
                if not event.data.strip():
                    continue
                chunk = json.loads(event.data)
                if isinstance(chunk, dict) and chunk.get("error"):
                    error = chunk["error"]
                    message = str(error.get("message") if isinstance(error, dict) else error)
                    if _CONTEXT_ERROR.search(message):
                        raise ContextTooLongError(f"the server says the prompt does not fit the model's context ({message})")
                    raise EngineError(f"the server stopped the answer with an error: {message}")
                if isinstance(chunk.get("usage"), dict):
                    usage = chunk["usage"]
                for choice in chunk.get("choices") or []:
                    text = (choice.get("delta") or {}).get("content")
                    if text:
                        if first is None:
                            first = time.perf_counter()
                        pieces.append(text)
                        yield text
                    if choice.get("finish_reason"):
                        finish = str(choice["finish_reason"])
        except httpx.TimeoutException as exc:
            raise EngineError(
                f"the server at {self._http.urls.root} did not answer within {self._http.timeout:g} s "
                f"({'prefilling the prompt' if first is None else 'between two pieces of the answer'}); the "
                "server may be overloaded, or the prompt needs longer than the per-request timeout"
            ) from exc
        except httpx.TransportError as exc:
            raise EngineError(
                f"the answer stream from {self._http.urls.root} broke after {len(pieces)} pieces "
                f"({type(exc).__name__}); the answer is incomplete and was not recorded, ask again"
            ) from exc
        except (SSEError, ValueError, AttributeError) as exc:
            raise EngineError(f"{url} sent a malformed event stream ({exc}); is it an OpenAI-compatible server?") from exc
        finally:
            response.close()
        if not finish:
            raise EngineError(
                f"the answer stream from {self._http.urls.root} ended after {len(pieces)} pieces without a finish "
                "reason (the server stopped or failed: see its log, e.g. for a prompt over its context; "
                "llama-cpp-python also cuts streams for new requests unless started with --interrupt_requests "
                "False); the answer was not recorded, ask again"
            )
        ended = time.perf_counter()
        answer = "".join(pieces)
        self._record(state, usage, answer, started, first, ended, finish, len(pieces))
        state.messages.append({"role": "assistant", "content": answer})

    def _record(
        self, state: RemoteState, usage: dict | None, answer: str, started: float,
        first: float | None, ended: float, finish: str, deltas: int,
    ) -> None:
        stats = state.stats
        state.usage_from_server = usage is not None
        if usage is not None:
            stats.prompt_tokens = int(usage.get("prompt_tokens") or state.counted_prompt_tokens)
            details = usage.get("prompt_tokens_details")
            stats.cached_tokens = int(details.get("cached_tokens") or 0) if isinstance(details, dict) else 0
            stats.generated_tokens = int(usage.get("completion_tokens") or 0)
        else:
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


def _token_count(answer: Any, route: str) -> int:
    """The count in a tokenize answer: vLLM says `count`, llama.cpp servers list the `tokens`."""
    if isinstance(answer, dict) and isinstance(answer.get("count"), int):
        return answer["count"]
    if isinstance(answer, dict) and isinstance(answer.get("tokens"), list):
        return len(answer["tokens"])
    raise EngineError(f"the server's {route} answered without a token count: {json.dumps(answer)[:200]}")


def _wire_messages(prompt: Prompt) -> list[dict[str, str]]:
    """The messages as sent; the prefix part is byte-identical on every turn of a session."""
    return as_dicts(prompt.messages)


def _load_tokenizer(tokenizer: str | Path | Any) -> Any:
    """The served model's own tokenizer (tokenizer.json or model directory), for exact counts."""
    if not isinstance(tokenizer, (str, Path)):
        return tokenizer
    from ..runtime.tokenizer import load_tokenizer

    return load_tokenizer(Path(tokenizer))
