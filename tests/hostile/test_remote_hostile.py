"""A hostile OpenAI-compatible server on 127.0.0.1 (a thread): keys never reach a message, and
credentials in --base-url never reach what a session stores."""

import base64
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from scoutdoc.engines.remote import RemoteEngine
from scoutdoc.errors import EngineError

KEY = "sk-test-0123456789abcdefSECRET"


class _EchoAuth(BaseHTTPRequestHandler):
    """401 for every request, with a body that echoes the Authorization header (as some proxies do)."""

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        seen = self.headers.get("Authorization", "")
        if seen.startswith("Basic "):  # credentials from the URL arrive as basic auth
            user_pass = base64.b64decode(seen[6:]).decode()
            if user_pass == "alice:pa55word":
                return self._json(200, {"object": "list", "data": [{"id": "m", "object": "model", "max_model_len": 4096}]})
            seen += f" ({user_pass})"
        self._json(401, {"error": {"message": f"invalid credentials: Authorization: {seen}"}})

    do_POST = do_GET

    def _json(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _EchoAuth)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_api_key_echoed_by_the_server_is_redacted(server):
    with pytest.raises(EngineError) as caught:
        RemoteEngine(server + "/v1", model="m", api_key=KEY, max_retries=0)
    assert "401" in str(caught.value) and KEY not in str(caught.value) and "[redacted]" in str(caught.value)


def test_password_in_base_url_is_used_but_not_kept_or_shown(server):
    url = server.replace("http://", "http://alice:pa55word@") + "/v1"
    try:
        engine = RemoteEngine(url, model="m", max_retries=0, context_limit=4096)
    except EngineError as exc:  # the server may lack other routes; the message must still be clean
        assert "pa55word" not in str(exc)
    else:
        assert "pa55word" not in engine.base_url and "alice" not in engine.base_url
    wrong = server.replace("http://", "http://alice:wrongpass1@") + "/v1"
    with pytest.raises(EngineError) as caught:
        RemoteEngine(wrong, model="m", max_retries=0)
    assert "wrongpass1" not in str(caught.value)


class _Endless(BaseHTTPRequestHandler):
    """Serves one model, and an answer stream that never finishes, with a usage block of wrong types."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802
        if self.path.endswith("/models"):
            return _EchoAuth._json(self, 200, {"object": "list", "data": [{"id": "m", "object": "model", "max_model_len": 4096}]})
        _EchoAuth._json(self, 404, {"error": "no such route"})

    def do_POST(self) -> None:  # noqa: N802
        if not self.path.endswith("/chat/completions"):
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            return _EchoAuth._json(self, 404, {"error": "no such route"})
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Connection", "close")
        self.end_headers()
        usage = {"prompt_tokens": "many", "completion_tokens": [1], "prompt_tokens_details": {"cached_tokens": True}}
        try:
            for _ in range(100_000):
                chunk = {"choices": [{"delta": {"content": "la "}, "finish_reason": None}], "usage": usage}
                self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
        except (BrokenPipeError, ConnectionResetError):
            pass

    def log_message(self, *args) -> None:
        pass


def test_endless_stream_is_capped_and_bad_usage_ignored():
    from scoutdoc.engines import GenerationParams
    from scoutdoc.prompt import Message, Prompt

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Endless)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        engine = RemoteEngine(f"http://127.0.0.1:{httpd.server_address[1]}/v1", model="m", max_retries=0, context_limit=4096)
        state = engine.prefill(Prompt([Message("system", "documents")], [Message("user", "sing")]))
        pieces = list(engine.generate(state, GenerationParams(max_tokens=20)))
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert len(pieces) == 20 and state.stats.finish_reason == "length"
    assert isinstance(state.stats.prompt_tokens, int) and state.stats.prompt_tokens > 0


class _KeepAlive(_Endless):
    """Headers, then SSE keep-alive comments forever: no read ever times out, no event ever arrives."""

    def do_POST(self) -> None:  # noqa: N802
        if not self.path.endswith("/chat/completions"):
            return super().do_POST()
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Connection", "close")
        self.end_headers()
        try:
            for _ in range(600):
                self.wfile.write(b": keep-alive\n\n")
                self.wfile.flush()
                time.sleep(0.05)
        except (BrokenPipeError, ConnectionResetError):
            pass


def test_endless_keep_alive_stops_at_the_answer_deadline():
    from scoutdoc.engines import GenerationParams
    from scoutdoc.prompt import Message, Prompt

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _KeepAlive)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        engine = RemoteEngine(f"http://127.0.0.1:{httpd.server_address[1]}/v1", model="m", max_retries=0,
                              context_limit=4096, answer_deadline_s=1.5)
        state = engine.prefill(Prompt([Message("system", "documents")], [Message("user", "sing")]))
        started = time.monotonic()
        with pytest.raises(EngineError, match="longer than 1.5 s"):
            list(engine.generate(state, GenerationParams(max_tokens=20)))
        assert time.monotonic() - started < 10
    finally:
        httpd.shutdown()
        httpd.server_close()
