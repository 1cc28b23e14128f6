"""Talking to an OpenAI-compatible server: one HTTP client with retries, and what the server serves.

Retries with backoff (429, 5xx, refused or dropped connections) and the connect and read timeouts
live in `OpenAIHttp`, and `StreamWatch` enforces the deadlines of a streamed answer (`RemoteDeadlines`); `fetch_models` reads the model listing and each model's context limit (vLLM's and
SGLang's `max_model_len` on the model card, llama.cpp's `/props`). `RemoteEngine` builds on both.
"""

from __future__ import annotations

import json
import os
import random
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import httpx

from ..errors import ContextTooLongError, EngineError, UsageError
from .base import RemoteDeadlines

API_KEY_ENV = "SCOUTDOC_API_KEY"
DEFAULT_MAX_RETRIES = 4

CONTEXT_ERROR = re.compile(
    r"context (length|window|size)|maximum context|max_model_len|exceed_context|too long|exceeds? the",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class ServerURLs:
    """Where the OpenAI routes live (`api`, ending in /v1) and the server root (tokenize, props).

    Credentials written into the URL (`https://user:pass@host`) are taken out of both, so they are
    never printed or stored with a session, and kept in `auth` for the HTTP client.
    """

    api: str
    root: str
    auth: tuple[str, str] | None = field(default=None, repr=False, compare=False)


def split_base_url(base_url: str) -> ServerURLs:
    """Accept either the server root (`http://host:8000`) or its OpenAI base URL (`.../v1`)."""
    url = base_url.strip().rstrip("/")
    if not re.match(r"^https?://[^/]+", url):
        raise UsageError("--base-url is not an http(s) URL; use e.g. http://127.0.0.1:8000/v1")
    url, auth = _without_credentials(url)
    if url.endswith("/v1"):
        return ServerURLs(api=url, root=url[: -len("/v1")], auth=auth)
    return ServerURLs(api=url + "/v1", root=url, auth=auth)


def _without_credentials(url: str) -> tuple[str, tuple[str, str] | None]:
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url, None
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc)), (unquote(parts.username or ""), unquote(parts.password or ""))


def redact(text: str, secrets: list[str]) -> str:
    """`text` with every secret and any bearer token replaced, for messages that quote a server or a URL."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[redacted]")
    return _BEARER.sub(r"\1[redacted]", text)


_BEARER = re.compile(r"(?i)(bearer\s+)[^\s\"',;]+")


class StreamWatch:
    """One watcher thread per streamed answer that cuts the connection when a deadline passes.

    A socket read blocks in C, so the streaming thread cannot check a clock itself: the watcher shuts
    the socket down (which wakes a blocked read, where closing the response alone does not) and says
    which deadline it was in `expired`. Deadlines count from `started`, the moment the request was sent:
    `first_byte` until the first event, then `idle` from the latest one; `answer` bounds the whole.
    """

    def __init__(self, response: httpx.Response, deadlines: RemoteDeadlines, started: float):
        self.response = response
        self.deadlines = deadlines
        self.started = started
        self.last_event: float | None = None
        self.expired: str | None = None
        self._stopped = False
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name="scoutdoc-stream-watch", daemon=True)
        self._thread.start()

    def heard(self) -> None:
        """An event arrived (or the caller took its time with the last one: that is not the server's silence)."""
        first = self.last_event is None
        self.last_event = time.monotonic()
        if first:  # `idle` from now may come before the `first_byte` the watcher sleeps towards
            self._wake.set()

    def stop(self) -> None:
        self._stopped = True
        self._wake.set()
        self._thread.join()

    def _next(self) -> tuple[str, float]:
        waiting = ("first_byte", self.started + self.deadlines.first_byte) if self.last_event is None else (
            "idle", self.last_event + self.deadlines.idle)
        whole = ("answer", self.started + self.deadlines.answer)
        return min(waiting, whole, key=lambda pair: pair[1])

    def _run(self) -> None:
        while True:
            self._wake.wait(max(0.0, self._next()[1] - time.monotonic()))
            self._wake.clear()
            if self._stopped:
                return
            name, due = self._next()  # later events move the deadline on while the watcher sleeps
            if due <= time.monotonic():
                self.expired = name
                self._cut()
                return

    def _cut(self) -> None:
        stream = self.response.extensions.get("network_stream")
        sock = stream.get_extra_info("socket") if stream is not None else None
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already closed by the server or the reader
        self.response.close()


@dataclass
class ServedModel:
    """One entry of the server's model listing, as `scoutdoc models list --base-url` prints it."""

    id: str
    context_limit: int | None
    owned_by: str = ""


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
    if status in (400, 413, 422) and CONTEXT_ERROR.search(message):
        return ContextTooLongError(
            f"the server says the prompt does not fit the model's context ({message}); "
            "drop some sources or use a model with a longer context"
        )
    if status == 404:
        return EngineError(
            f"{url} answered 404 ({message}); check --base-url (the server root or its /v1 URL) and --model"
        )
    return EngineError(f"the server at {root} answered {status} to {url}: {message}")


RETRY_AFTER_CAP_S = 10.0  # a server asking for an hour is not waited on for an hour; retries are few anyway


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after", "")
    try:
        return min(RETRY_AFTER_CAP_S, max(0.0, float(value)))
    except ValueError:
        return None


def _retryable(status: int) -> bool:
    return status == 429 or (status >= 500 and status != 501)


class OpenAIHttp:
    """One thread-safe HTTP client with the retry, backoff and timeout policy of every request.

    Retried: refused or dropped connections and 429/5xx answers, with exponential backoff and
    jitter (or the server's Retry-After). Not retried: timeouts (the same request would time out
    again) and the other 4xx answers, which say something about the request itself.
    """

    def __init__(
        self, urls: ServerURLs, api_key: str | None, deadlines: RemoteDeadlines, max_retries: int, backoff_s: float,
        transport: httpx.BaseTransport | None = None,
    ):
        self.urls = urls
        self.deadlines = deadlines
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        api_key = api_key or os.environ.get(API_KEY_ENV) or None
        if api_key and not _HEADER_SAFE.fullmatch(api_key):  # e.g. a line end read from a key file: retried as a network fault
            raise UsageError(f"the API key (--api-key or {API_KEY_ENV}) holds a space, a line end or a character outside "
                             "ASCII, which an HTTP header cannot carry; check how it was copied")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.secrets = [s for s in (api_key, *(urls.auth or ())) if s and len(s) >= 4]
        self.client = httpx.Client(
            headers=headers,
            auth=urls.auth,
            timeout=httpx.Timeout(deadlines.first_byte, connect=deadlines.connect),
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=16),
            transport=transport,
            follow_redirects=True,  # http -> https, a trailing slash; httpx drops the key when the host changes
        )

    def close(self) -> None:
        self.client.close()

    def _sleep(self, attempt: int, hint: float | None) -> None:
        delay = hint if hint is not None else min(30.0, self.backoff_s * 2**attempt) * random.uniform(0.75, 1.25)
        time.sleep(delay)

    def request(
        self, method: str, url: str, *, json_body: Any = None, stream: bool = False, allow: tuple[int, ...] = ()
    ) -> httpx.Response:
        """Send with retries; returns a successful response (or one whose status is in `allow`).

        A stream's reads may also wait `idle` between events (its `StreamWatch` holds the exact deadlines),
        so its read timeout is the longer of the two.
        """
        attempt = 0
        read_s = max(self.deadlines.first_byte, self.deadlines.idle) if stream else self.deadlines.first_byte
        timeout = httpx.Timeout(read_s, connect=self.deadlines.connect)
        while True:
            try:
                request = self.client.build_request(
                    method, url, json=json_body, headers={"Accept": "text/event-stream"} if stream else None,
                    timeout=timeout,
                )
                response = self.client.send(request, stream=stream)
            except httpx.TimeoutException as exc:
                if isinstance(exc, (httpx.ConnectTimeout, httpx.PoolTimeout)) and attempt < self.max_retries:
                    self._sleep(attempt, None)
                    attempt += 1
                    continue
                name = "connect" if isinstance(exc, httpx.ConnectTimeout) else "first_byte"
                raise self.deadlines.exceeded(
                    name, f"the server at {self.urls.root} did not answer {url} in time ({type(exc).__name__})"
                ) from exc
            except httpx.TransportError as exc:
                if attempt < self.max_retries:
                    self._sleep(attempt, None)
                    attempt += 1
                    continue
                raise EngineError(
                    f"cannot reach the server at {self.urls.root} ({type(exc).__name__}: {redact(str(exc), self.secrets)}) after "
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
            raise _error_for(response.status_code, redact(_server_message(response), self.secrets), url, self.urls.root)

    def get_json(self, url: str) -> Any:
        return _json(self.request("GET", url), url)

    def post_json(self, url: str, body: Any) -> Any:
        return _json(self.request("POST", url, json_body=body), url)

    def probe_json(self, method: str, url: str, body: Any = None) -> Any:
        """An optional route's JSON answer (`/props`, `/tokenize`), or None whatever went wrong with it,
        without retries: a gateway that lets only /v1 through answers the other paths with a 403 or an
        HTML page, which said nothing about the key and made the server unusable."""
        try:
            response = self.request(method, url, json_body=body, allow=_ANY_FAILURE)
        except EngineError:
            return None
        if response.status_code >= 300:
            return None
        try:
            return response.json()
        except ValueError:
            return None


_ANY_FAILURE = tuple(range(300, 600))


_HEADER_SAFE = re.compile(r"[\x21-\x7e]+")


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


def _props_context_limit(http: OpenAIHttp) -> int | None:
    """llama.cpp's own server reports the slot context it was started with under /props."""
    props = http.probe_json("GET", http.urls.root + "/props")
    if not isinstance(props, dict):
        return None
    settings = props.get("default_generation_settings")
    nested = settings.get("n_ctx") if isinstance(settings, dict) else None
    return _positive_int(props.get("n_ctx")) or _positive_int(nested)


def fetch_models(http: OpenAIHttp) -> list[ServedModel]:
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


LISTING_DEADLINES = RemoteDeadlines(first_byte=30.0)  # a model listing is quick; a silent server is not waited on


def list_models(
    base_url: str, api_key: str | None = None, deadlines: RemoteDeadlines = LISTING_DEADLINES, max_retries: int = 2,
    transport: httpx.BaseTransport | None = None,
) -> list[ServedModel]:
    """What the server offers, with each model's context limit where the server reports it."""
    http = OpenAIHttp(split_base_url(base_url), api_key, deadlines, max_retries, 0.5, transport)
    try:
        return fetch_models(http)
    finally:
        http.close()


def token_count(answer: Any, route: str) -> int:
    """The count in a tokenize answer: vLLM says `count`, llama.cpp servers list the `tokens`."""
    if isinstance(answer, dict) and isinstance(answer.get("count"), int):
        return answer["count"]
    if isinstance(answer, dict) and isinstance(answer.get("tokens"), list):
        return len(answer["tokens"])
    raise EngineError(f"the server's {route} answered without a token count: {json.dumps(answer)[:200]}")
