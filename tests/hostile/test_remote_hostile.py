"""A hostile OpenAI-compatible server on 127.0.0.1 (a thread): keys never reach a message,
credentials in --base-url never reach what a session stores, and no silence or drip holds scoutdoc
past its deadlines (`--remote-deadlines`)."""

import base64
import json
import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from scoutdoc.engines import GenerationParams, RemoteDeadlines
from scoutdoc.engines.remote import RemoteEngine
from scoutdoc.errors import EngineError, UsageError
from scoutdoc.prompt import Message, Prompt

pytestmark = pytest.mark.slow  # seconds per case (real processes, bombs, deadlines): CI runs them, the inner loop does not

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


class _Script(_Endless):
    """Headers, then what `script` writes (each bytes piece, or a float: seconds to sleep)."""

    script: list = []

    def do_POST(self) -> None:  # noqa: N802
        if not self.path.endswith("/chat/completions"):
            return super().do_POST()
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.flush()
        try:
            for step in self.script:
                if isinstance(step, float):
                    time.sleep(step)
                else:
                    self.wfile.write(step)
                    self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass


def _event(text: str) -> bytes:
    return f"data: {json.dumps({'choices': [{'delta': {'content': text}, 'finish_reason': None}]})}\n\n".encode()


def _stopped_by(script: list, deadlines: RemoteDeadlines) -> tuple[str, float, int]:
    """Stream `script` to a RemoteEngine; the error message, the seconds until it came, and the pieces seen."""
    handler = type("Scripted", (_Script,), {"script": script})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    pieces: list[str] = []
    try:
        engine = RemoteEngine(f"http://127.0.0.1:{httpd.server_address[1]}/v1", model="m", max_retries=0,
                              context_limit=4096, deadlines=deadlines)
        state = engine.prefill(Prompt([Message("system", "documents")], [Message("user", "sing")]))
        started = time.monotonic()
        with pytest.raises(EngineError) as caught:
            for piece in engine.generate(state, GenerationParams(max_tokens=1000)):
                pieces.append(piece)
        took = time.monotonic() - started
        engine.close()
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert not state.stats.finish_reason and len(state.messages) == 2  # nothing recorded
    return str(caught.value), took, len(pieces)


def test_one_event_then_silence_stops_after_idle():
    message, took, pieces = _stopped_by([_event("la "), 30.0], RemoteDeadlines(first_byte=20, idle=1))
    assert pieces == 1 and "idle=1 s exceeded" in message and "--remote-deadlines idle=" in message
    assert 0.9 < took < 10


def test_headers_then_nothing_stops_after_first_byte():
    message, took, pieces = _stopped_by([30.0], RemoteDeadlines(first_byte=1.5, idle=20))
    assert pieces == 0 and "first-byte=1.5 s exceeded" in message and "--remote-deadlines first-byte=" in message
    assert 1.4 < took < 10


def test_keep_alive_comments_are_no_events():
    keep_alive = [b": keep-alive\n\n", 0.05] * 400
    message, took, _ = _stopped_by(keep_alive, RemoteDeadlines(first_byte=1, idle=20))
    assert "first-byte=1 s exceeded" in message and 0.9 < took < 10
    message, took, pieces = _stopped_by([_event("la "), *keep_alive], RemoteDeadlines(first_byte=20, idle=1))
    assert pieces == 1 and "idle=1 s exceeded" in message and 0.9 < took < 10
    message, took, _ = _stopped_by(keep_alive, RemoteDeadlines(first_byte=20, answer=1.5))
    assert "answer=1.5 s exceeded" in message and 1.4 < took < 10


def test_slow_drip_stops_at_the_answer_deadline():
    drip = [_event("la "), 0.2] * 200  # never idle for long, never finished
    message, took, pieces = _stopped_by(drip, RemoteDeadlines(first_byte=20, idle=20, answer=1.5))
    assert "answer=1.5 s exceeded" in message and "--remote-deadlines answer=" in message
    assert 3 <= pieces < 100 and 1.4 < took < 10


def test_deadlines_parse_any_subset_and_refuse_the_rest():
    assert RemoteDeadlines.parse("connect=5,first-byte=120,idle=30,answer=600") == RemoteDeadlines(5, 120, 30, 600)
    assert RemoteDeadlines.parse(" idle = 2.5s ") == RemoteDeadlines(idle=2.5)
    assert RemoteDeadlines.parse("first_byte=7") == RemoteDeadlines(first_byte=7)
    for bad in ("idle=0", "answer=-3", "idle=soon", "idle=", "idle=nan", "patience=5", "", "idle=1,idle=2"):
        with pytest.raises(UsageError, match="--remote-deadlines"):
            RemoteDeadlines.parse(bad)


def test_cli_refuses_a_bad_deadline_as_a_usage_error(tmp_path):
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root / "src"), "SCOUTDOC_HOME": str(tmp_path)}
    done = subprocess.run(
        [str(Path(sys.executable).parent / "scoutdoc"), "ask", "--engine", "remote", "--base-url", "http://127.0.0.1:9/v1",
         "--remote-deadlines", "idle=0", str(tmp_path), "question"],
        env=env, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert "--remote-deadlines" in done.stderr and "idle" in done.stderr and "Traceback" not in done.stderr
