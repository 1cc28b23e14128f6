"""The remote engine against a real OpenAI-compatible server (llama-cpp-python's) on loopback.

Prompts are a few hundred tokens and answers a few tokens; the module takes about two minutes on
a loaded 2-core machine, most of it in the fault tests (retries back off for real, servers restart)
and in the `scoutdoc` subprocesses of the command-line tests.
"""

import json
import os
import re
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from scoutdoc.engines import GenerationParams, RemoteDeadlines
from scoutdoc.engines.openai_client import list_models
from scoutdoc.engines.remote import RemoteEngine, estimate_tokens
from scoutdoc.errors import ContextTooLongError, EngineError, UsageError
from scoutdoc.prompt import Message, Prompt

from llama_server import ALIAS, N_CTX, free_port

pytestmark = pytest.mark.slow

DOCUMENT = (
    "Harbor Lights quarterly report.\n"
    "The harbor master is Ines Duarte. The access code for the east gate is 4417.\n"
    "In March the harbor handled 212 ships, up from 187 in February.\n"
    "Dredging of the north channel starts on 3 June and lasts six weeks.\n"
)
SHORT = GenerationParams(max_tokens=8)


def prompt(question: str, history: tuple[Message, ...] = ()) -> Prompt:
    system = "You answer questions about the document below, briefly.\n\n" + DOCUMENT
    return Prompt(prefix=[Message("system", system)], turns=[*history, Message("user", question)])


def ask(engine: RemoteEngine, p: Prompt, params: GenerationParams = SHORT) -> tuple[str, object]:
    state = engine.prefill(p)
    pieces = list(engine.generate(state, params))
    return "".join(pieces), state


@pytest.fixture(scope="module")
def engine(llama_server):
    with RemoteEngine(llama_server.url, context_limit=N_CTX, max_retries=1, backoff_s=0.1) as eng:
        yield eng


# -- connecting ------------------------------------------------------------------------------------


def test_models_list_shows_what_the_server_serves(llama_server):
    models = list_models(llama_server.url)
    assert [m.id for m in models] == [ALIAS]
    assert models[0].context_limit is None  # llama-cpp-python does not report n_ctx
    # The server root works as well as its /v1 URL.
    assert [m.id for m in list_models(llama_server.url.removesuffix("/v1"))] == [ALIAS]


def test_engine_picks_the_only_model_and_takes_the_context_limit_from_the_user(llama_server):
    with pytest.raises(UsageError, match="--context-limit"):
        RemoteEngine(llama_server.url)
    with RemoteEngine(llama_server.url, context_limit=2048) as eng:
        assert (eng.name, eng.model, eng.model_id, eng.context_limit) == ("remote", ALIAS, f"remote:{ALIAS}", 2048)


def test_unknown_model_names_the_served_ones(llama_server):
    with pytest.raises(EngineError, match=rf"does not serve 'llama-4-scout'.*{ALIAS}"):
        RemoteEngine(llama_server.url, model="llama-4-scout", context_limit=N_CTX)


def test_wrong_url_and_unreachable_server_are_clear_errors(llama_server):
    with pytest.raises(EngineError, match="404"):
        RemoteEngine(f"http://127.0.0.1:{llama_server.port}/api/v2", context_limit=N_CTX, max_retries=0)
    started = time.monotonic()
    with pytest.raises(EngineError, match="cannot reach the server.*after 3 attempts"):
        RemoteEngine(f"http://127.0.0.1:{free_port()}", context_limit=N_CTX, max_retries=2, backoff_s=0.05)
    assert time.monotonic() - started < 5
    with pytest.raises(UsageError, match="not an http"):
        RemoteEngine("localhost:8000", context_limit=N_CTX)


# -- counting --------------------------------------------------------------------------------------


def test_token_counts_come_from_the_server_and_agree_with_the_models_tokenizer(engine, smollm2_gguf, llama_server):
    from scoutdoc.runtime.tokenizer import load_tokenizer

    assert engine.token_count_method == "server"
    assert engine.prompt_count_exact is False
    texts = ["Hello world", DOCUMENT, "naïve café — 東京 🚢"]
    reference = load_tokenizer(smollm2_gguf)  # our own tokenizer, independent of llama.cpp's
    assert engine.count_tokens("") == 0
    assert [engine.count_tokens(t) for t in texts] == [len(reference.encode(t, special=False)) for t in texts]
    with RemoteEngine(llama_server.url, tokenizer=smollm2_gguf, context_limit=N_CTX) as local:
        assert local.token_count_method == "tokenizer" and local.prompt_count_exact
        assert [local.count_tokens(t) for t in texts] == [engine.count_tokens(t) for t in texts]
        p = prompt("Who is the harbor master?")
        assert local.prefix_tokens(p) < local.prompt_tokens(p) <= engine.prompt_tokens(p)


def test_prompt_count_errs_on_the_safe_side_of_the_servers_own_count(engine, llama_server):
    p = prompt("Who is the harbor master?")
    answer = httpx.post(
        llama_server.url + "/chat/completions",
        json={"model": ALIAS, "messages": [vars(m) for m in p.messages], "max_tokens": 1},
        timeout=120,
    ).json()
    served = answer["usage"]["prompt_tokens"]
    counted = engine.prompt_tokens(p)
    assert served <= counted <= served + 12
    assert engine.prefix_tokens(p) < counted


def test_estimate_is_only_a_fallback_and_says_so():
    assert estimate_tokens("") == 0
    assert estimate_tokens("abcd" * 100) == 100
    assert estimate_tokens("東京") == 2  # 6 UTF-8 bytes: a byte-based guess never undercounts CJK badly


# -- turns -----------------------------------------------------------------------------------------


def test_ask_streams_the_answer_and_records_usage(engine):
    state = engine.prefill(prompt("What is the access code for the east gate?"))
    counted = state.stats.prompt_tokens
    pieces = list(engine.generate(state, GenerationParams(max_tokens=12)))
    answer = "".join(pieces)
    assert len(pieces) > 1  # streamed, not one block
    stats = state.stats
    assert stats.finish_reason in ("stop", "length")
    assert 0 < stats.generated_tokens <= 12
    assert stats.generated_tokens == engine.count_tokens(answer)
    assert stats.prompt_tokens == counted and not state.usage_from_server  # llama-cpp-python streams no usage
    assert stats.cached_tokens == 0 and stats.prefilled_tokens == stats.prompt_tokens
    assert stats.ttft_s > 0 and stats.decode_s >= 0 and stats.tokens_per_s >= 0
    assert state.messages[-1] == {"role": "assistant", "content": answer}


def test_greedy_answer_is_deterministic_and_follow_up_hits_the_prefix_cache(engine, llama_server):
    first_prompt = prompt("Who is the harbor master?")
    answer, state = ask(engine, first_prompt)
    again, _ = ask(engine, first_prompt)
    assert again == answer
    follow = prompt("And how many ships came in March?", (*first_prompt.turns, Message("assistant", answer)))
    assert follow.prefix == first_prompt.prefix
    mark = len(llama_server.log_text())
    follow_answer, follow_state = ask(engine, follow)
    assert follow_answer and follow_state.stats.finish_reason
    # The server reuses at least the whole document part (llama-cpp-python logs its prefix hits).
    hits = [int(n) for n in re.findall(r"(\d+) prefix-match hit", llama_server.log_text()[mark:])]
    assert hits and hits[-1] >= engine.prefix_tokens(follow) - 2


def test_concurrent_turns_from_threads_match_sequential_ones(engine):
    questions = ["Who is the harbor master?", "When does dredging start?", "What is the gate code?"]
    sequential = [ask(engine, prompt(q))[0] for q in questions]
    with ThreadPoolExecutor(max_workers=3) as pool:
        concurrent = list(pool.map(lambda q: ask(engine, prompt(q))[0], questions))
    assert concurrent == sequential


def test_prompt_over_the_context_limit_is_refused_before_sending(llama_server):
    with RemoteEngine(llama_server.url, context_limit=64) as small:
        with pytest.raises(ContextTooLongError, match=r"takes \d+ tokens, more than the 64-token context"):
            small.prefill(prompt("Who is the harbor master?"))


def test_the_server_keeps_the_cache_so_no_snapshots_and_the_state_counts_the_conversation(engine):
    assert not engine.keeps_snapshots and engine.base_url.endswith("/v1") and engine.concurrency > 1
    _, state = ask(engine, prompt("Who is the harbor master?"))
    assert state.tokens == state.stats.prompt_tokens + state.stats.generated_tokens > state.stats.prompt_tokens


# -- faults ----------------------------------------------------------------------------------------


def test_api_key_is_sent_and_a_wrong_one_is_a_clear_error(own_llama_server, monkeypatch):
    server = own_llama_server(api_key="s3cret").start()
    with pytest.raises(EngineError, match="401.*--api-key"):
        RemoteEngine(server.url, api_key="wrong", context_limit=N_CTX)
    with pytest.raises(EngineError, match="401"):
        list_models(server.url)
    monkeypatch.setenv("SCOUTDOC_API_KEY", "s3cret")
    with RemoteEngine(server.url, context_limit=N_CTX) as eng:
        assert eng.token_count_method == "server"
        assert ask(eng, prompt("Who is the harbor master?"))[1].stats.finish_reason


def test_requests_are_retried_until_the_server_is_back(own_llama_server):
    server = own_llama_server().start()
    with RemoteEngine(server.url, context_limit=N_CTX, max_retries=8, backoff_s=0.25) as eng:
        state = eng.prefill(prompt("Who is the harbor master?"))
        server.stop()
        restart = threading.Timer(1.0, server.start)
        restart.start()
        try:
            answer = "".join(eng.generate(state, SHORT))
        finally:
            restart.join()
        assert answer and state.stats.finish_reason


def test_a_stream_cut_by_the_server_raises_and_leaves_no_answer(own_llama_server):
    server = own_llama_server().start()
    with RemoteEngine(server.url, context_limit=N_CTX, max_retries=0) as eng:
        state = eng.prefill(prompt("Write a long poem about the harbor, verse after verse."))
        stream = eng.generate(state, GenerationParams(max_tokens=2000))
        assert next(stream)
        server.stop(kill=True)
        with pytest.raises(EngineError, match="broke after|without a finish reason"):
            for _ in stream:
                pass
        assert state.messages[-1]["role"] == "user"
        assert state.stats.finish_reason == ""
        with pytest.raises(EngineError, match="cannot reach"):
            list(eng.generate(eng.prefill(prompt("Who is the harbor master?")), SHORT))


# -- other servers' wire formats, replayed ---------------------------------------------------------
# llama-cpp-python reports no context length, no usage while streaming and no cached tokens; vLLM
# does. These tests replay vLLM's documented responses through httpx's MockTransport (a stand-in
# for the third-party server only; everything of ours runs for real).

VLLM_MODEL = "meta-llama/Llama-4-Scout-17B-16E-Instruct"


def vllm_server(calls: list, chat=None, fail_first: dict | None = None):
    """A replayed vLLM: model card with max_model_len, chat-aware /tokenize, SSE with usage."""
    failures = dict(fail_first or {})

    def handle(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        calls.append(path)
        body = json.loads(request.content) if request.content else {}
        if failures.get(path):
            status, headers = failures[path].pop(0)
            if not failures[path]:
                del failures[path]
            return httpx.Response(status, headers=headers, json={"error": {"message": "busy", "code": status}})
        if path == "/v1/models":
            card = {"id": VLLM_MODEL, "object": "model", "owned_by": "vllm", "max_model_len": 1_000_000}
            return httpx.Response(200, json={"object": "list", "data": [card]})
        if path == "/tokenize":
            if "messages" in body:
                count = sum(len(m["content"].split()) + 4 for m in body["messages"]) + (
                    3 if body.get("add_generation_prompt") else 0
                )
            else:
                count = len(body["prompt"].split())
            return httpx.Response(200, json={"count": count, "max_model_len": 1_000_000, "tokens": [0] * count})
        if path == "/v1/chat/completions":
            assert body["stream"] and body["stream_options"] == {"include_usage": True}
            return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=(chat or sse_answer)(body))
        return httpx.Response(404, json={"detail": "Not Found"})

    return httpx.MockTransport(handle)


def sse(*events: object) -> bytes:
    return b"".join(f"data: {e if isinstance(e, str) else json.dumps(e)}\n\n".encode() for e in events)


def chunk(content=None, finish=None, usage=None, choices=True):
    delta = {"content": content} if content is not None else {}
    data = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "model": VLLM_MODEL, "usage": usage}
    data["choices"] = [{"index": 0, "delta": delta, "finish_reason": finish}] if choices else []
    return data


def sse_answer(body: dict) -> bytes:
    usage = {"prompt_tokens": 900_000, "completion_tokens": 3, "total_tokens": 900_003,
             "prompt_tokens_details": {"cached_tokens": 899_840}}  # fmt: skip
    return sse(chunk(""), chunk("The"), chunk(" code"), chunk(" is 4417."), chunk(finish="stop"),
               chunk(usage=usage, choices=False), "[DONE]")  # fmt: skip


def test_vllm_context_limit_exact_counts_and_cached_tokens_from_usage():
    calls: list = []
    transport = vllm_server(calls)
    assert [(m.id, m.context_limit) for m in list_models("http://gpu:8000/v1", transport=transport)] == [
        (VLLM_MODEL, 1_000_000)
    ]
    with RemoteEngine("http://gpu:8000", transport=transport) as eng:
        assert eng.context_limit == 1_000_000 and eng.model == VLLM_MODEL
        assert (eng.token_count_method, eng.prompt_count_exact) == ("server", True)
        assert eng.count_tokens("three little words") == 3
        p = prompt("What is the code?")
        expected = len(p.prefix[0].content.split()) + 4 + len("What is the code?".split()) + 4 + 3
        assert eng.prompt_tokens(p) == expected
        state = eng.prefill(p)
        assert "".join(eng.generate(state, SHORT)) == "The code is 4417."
    s = state.stats
    assert state.usage_from_server
    assert (s.prompt_tokens, s.cached_tokens, s.prefilled_tokens, s.generated_tokens, s.finish_reason) == (
        900_000, 899_840, 160, 3, "stop"
    )
    with RemoteEngine("http://gpu:8000", context_limit=8192, transport=transport) as eng:
        assert eng.context_limit == 8192  # the user may lower the limit, never raise it past the server's


def test_vllm_busy_answers_are_retried_with_backoff_and_then_reported():
    calls: list = []
    busy = {"/v1/chat/completions": [(429, {"retry-after": "0"}), (503, {})]}
    with RemoteEngine("http://gpu:8000/v1", transport=vllm_server(calls, fail_first=busy), backoff_s=0.01) as eng:
        assert "".join(eng.generate(eng.prefill(prompt("Code?")), SHORT)) == "The code is 4417."
    assert calls.count("/v1/chat/completions") == 3
    always_busy = {"/v1/chat/completions": [(503, {})] * 10}
    transport = vllm_server([], fail_first=always_busy)
    with RemoteEngine("http://gpu:8000/v1", transport=transport, max_retries=2, backoff_s=0.01) as eng:
        with pytest.raises(EngineError, match="answered 503"):
            list(eng.generate(eng.prefill(prompt("Code?")), SHORT))


def test_vllm_errors_map_to_clear_messages():
    too_long = (
        "This model's maximum context length is 1000000 tokens. However, you requested 1000512 tokens "
        "(1000000 in the messages, 512 in the completion)."
    )

    def reject(body: dict) -> bytes:
        raise AssertionError("not reached")

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/chat/completions":
            return httpx.Response(400, json={"object": "error", "message": too_long, "type": "BadRequestError"})
        return vllm_server([], chat=reject).handle_request(request)

    with RemoteEngine("http://gpu:8000", transport=httpx.MockTransport(handle)) as eng:
        with pytest.raises(ContextTooLongError, match="maximum context length"):
            list(eng.generate(eng.prefill(prompt("Code?")), SHORT))

    def error_mid_stream(body: dict) -> bytes:
        return sse(chunk("The"), {"error": {"message": "engine dead", "code": 500}})

    with RemoteEngine("http://gpu:8000", transport=vllm_server([], chat=error_mid_stream)) as eng:
        state = eng.prefill(prompt("Code?"))
        with pytest.raises(EngineError, match="engine dead"):
            list(eng.generate(state, SHORT))
        assert state.messages[-1]["role"] == "user"

    def no_tokenize(request: httpx.Request) -> httpx.Response:
        if request.url.path in ("/tokenize", "/extras/tokenize"):
            return httpx.Response(404, json={"detail": "Not Found"})
        return vllm_server([]).handle_request(request)

    with RemoteEngine("http://gpu:8000", transport=httpx.MockTransport(no_tokenize)) as eng:
        assert (eng.token_count_method, eng.prompt_count_exact) == ("estimate", False)
        assert eng.count_tokens("abcd" * 10) == 10


def test_what_real_servers_and_gateways_do_that_must_not_break_an_answer(monkeypatch):
    """A key echoed in a streamed error is redacted; optional routes behind a gateway's 403 page or a
    redirect do not stop the engine; the finish reason and usage after the last allowed piece are
    read; an aborted answer is not taken as whole; a server that does not stream says so."""
    key = "sk-test-0123456789abcdef"

    def leaking(body: dict) -> bytes:
        return sse(chunk("The"), {"error": {"message": f"OOM; headers: Authorization: Bearer {key}"}})

    with RemoteEngine("http://gpu:8000", api_key=key, transport=vllm_server([], chat=leaking)) as eng:
        with pytest.raises(EngineError) as caught:
            list(eng.generate(eng.prefill(prompt("Code?")), SHORT))
    assert key not in str(caught.value) and "[redacted]" in str(caught.value)

    def gateway(request: httpx.Request) -> httpx.Response:
        if not request.url.path.startswith("/v1/"):
            return httpx.Response(403, headers={"content-type": "text/html"}, text="<html>Forbidden</html>")
        if request.url.path == "/v1/models" and request.url.params.get("r") != "1":
            return httpx.Response(307, headers={"location": "http://gpu:8000/v1/models?r=1"})
        return vllm_server([]).handle_request(request)

    with RemoteEngine("http://gpu:8000", transport=httpx.MockTransport(gateway)) as eng:
        assert eng.token_count_method == "estimate" and eng.context_limit == 1_000_000
        state = eng.prefill(prompt("Code?"))
        assert "".join(eng.generate(state, GenerationParams(max_tokens=3))) == "The code is 4417."  # 3 pieces, then stop
    assert state.stats.finish_reason == "stop" and state.stats.cached_tokens == 899_840  # read after the last piece

    def aborted(body: dict) -> bytes:
        return sse(chunk("The"), chunk(finish="abort"), "[DONE]")

    with RemoteEngine("http://gpu:8000", transport=vllm_server([], chat=aborted)) as eng:
        with pytest.raises(EngineError, match="finish reason 'abort'"):
            list(eng.generate(eng.prefill(prompt("Code?")), SHORT))

    def not_streaming(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/chat/completions":
            return httpx.Response(200, json={"choices": [{"message": {"content": "The code is 4417."}, "finish_reason": "stop"}]})
        return vllm_server([]).handle_request(request)

    with RemoteEngine("http://gpu:8000", transport=httpx.MockTransport(not_streaming)) as eng:
        with pytest.raises(EngineError, match="without a stream"):
            list(eng.generate(eng.prefill(prompt("Code?")), SHORT))

    monkeypatch.setenv("SCOUTDOC_API_KEY", key + "\r")  # read from a key file with Windows line ends
    with pytest.raises(UsageError, match="an HTTP header cannot carry"):
        RemoteEngine("http://gpu:8000", transport=vllm_server([]))


# -- the command line ------------------------------------------------------------------------------

FACTS = {
    "harbor.txt": "The harbor master is Ines Duarte. The east gate code is 4417.",
    "mill.txt": "The old mill grinds rye on Tuesdays. Its keeper is Tomas Berg.",
    "school.txt": "The village school has 41 pupils and one blue bus.",
    "bakery.txt": "The bakery opens at six and sells cardamom buns.",
    "ferry.txt": "The ferry leaves at 7:15 and 16:40 and carries twelve cars.",
}


def scoutdoc(*args: str, home, check: bool = True, background: bool = False):
    env = {**os.environ, "SCOUTDOC_HOME": str(home), "NO_COLOR": "1", "COLUMNS": "200"}
    env.pop("SCOUTDOC_DB", None)
    command = [sys.executable, "-c", "from scoutdoc.cli import main; main()", *args]
    if background:
        return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    if check:
        assert done.returncode == 0, done.stderr
    return done


def remote_args(server, *extra: str) -> list[str]:
    return ["--engine", "remote", "--base-url", server.url, "--context-limit", str(N_CTX), *extra]


@pytest.fixture
def documents(tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    for name, text in FACTS.items():
        (folder / name).write_text(text + "\n")
    return folder


def test_cli_models_list_from_the_server(llama_server, tmp_path):
    done = scoutdoc("models", "list", "--base-url", llama_server.url, "--json", home=tmp_path)
    assert json.loads(done.stdout) == [{"id": ALIAS, "context_limit": None, "owned_by": "me"}]
    assert ALIAS in scoutdoc("models", "list", "--base-url", llama_server.url, home=tmp_path).stdout


def test_cli_ask_and_follow_up_against_the_server(llama_server, documents, tmp_path):
    first = scoutdoc("ask", str(documents / "harbor.txt"), "What is the east gate code?",
                     *remote_args(llama_server, "--max-tokens", "12", "--json"), home=tmp_path)  # fmt: skip
    answer = json.loads(first.stdout)
    assert answer["answer"] and answer["stats"]["generated_tokens"] > 0
    assert answer["stats"]["finish_reason"] in ("stop", "length")
    mark = len(llama_server.log_text())
    # no --engine, --base-url or --context-limit: a follow-up goes to the server its session started on
    follow = scoutdoc("ask", "-c", "Who is the harbor master?", "--max-tokens", "12", "--json", home=tmp_path)
    follow_up = json.loads(follow.stdout)
    assert follow_up["session_id"] == answer["session_id"] and follow_up["answer"]
    hits = [int(n) for n in re.findall(r"(\d+) prefix-match hit", llama_server.log_text()[mark:])]
    assert hits and max(hits) > answer["stats"]["prompt_tokens"] // 2  # the documents were not prefilled again


def test_cli_faults_are_one_line_errors(llama_server, documents, tmp_path):
    doc = str(documents / "harbor.txt")
    down = scoutdoc("ask", doc, "Code?", "--engine", "remote", "--base-url", f"http://127.0.0.1:{free_port()}/v1",
                    "--context-limit", "4096", home=tmp_path, check=False)  # fmt: skip
    assert down.returncode == EngineError.exit_code
    assert "cannot reach the server" in down.stderr and "Traceback" not in down.stderr
    wrong_model = scoutdoc("ask", doc, "Code?", *remote_args(llama_server, "--model", "gpt-9"), home=tmp_path, check=False)
    assert wrong_model.returncode == EngineError.exit_code and "does not serve 'gpt-9'" in wrong_model.stderr
    no_limit = scoutdoc("ask", doc, "Code?", "--engine", "remote", "--base-url", llama_server.url,
                        home=tmp_path, check=False)  # fmt: skip
    assert no_limit.returncode == UsageError.exit_code and "--context-limit" in no_limit.stderr
    too_long = scoutdoc("ask", doc, "Code?", "--engine", "remote", "--base-url", llama_server.url,
                        "--context-limit", "64", home=tmp_path, check=False)  # fmt: skip
    assert too_long.returncode == ContextTooLongError.exit_code


def read_rows(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_cli_batch_with_concurrency(llama_server, documents, tmp_path):
    out = tmp_path / "results.jsonl"
    scoutdoc("batch", str(documents), "-q", "What does the text say?", "-j", "3", "--out", str(out),
             *remote_args(llama_server, "--max-tokens", "8"), home=tmp_path)  # fmt: skip
    rows = read_rows(out)
    assert sorted(Path(r["source"]).name for r in rows) == sorted(FACTS)
    assert all(r["status"] == "ok" and r["answer"] and r["stats"]["generated_tokens"] > 0 for r in rows)


def test_cli_batch_survives_a_server_stop_and_resumes(own_llama_server, documents, tmp_path):
    server = own_llama_server().start()
    out = tmp_path / "results.jsonl"
    args = ["batch", str(documents), "-q", "Describe the text in detail.", "-j", "2", "--out", str(out),
            *remote_args(server, "--max-tokens", "128")]  # fmt: skip
    run = scoutdoc(*args, home=tmp_path, background=True)
    deadline = time.monotonic() + 120
    while not (out.exists() and read_rows(out)) and time.monotonic() < deadline:
        time.sleep(0.05)
    server.stop(kill=True)
    _, stderr = run.communicate(timeout=240)
    rows = read_rows(out)
    failed = [r for r in rows if r["status"] == "error"]
    assert failed and len(rows) == len(FACTS), stderr  # every document has a line; the failed ones say why
    assert all(r["error_type"] == "EngineError" for r in failed)
    assert "failed" in stderr

    server.start()
    scoutdoc(*args, "--resume", home=tmp_path)
    rows = read_rows(out)
    assert sorted(Path(r["source"]).name for r in rows) == sorted(FACTS)  # exactly one line each
    assert all(r["status"] == "ok" for r in rows)


def test_a_request_that_outlasts_the_timeout_is_a_clear_error(own_llama_server):
    server = own_llama_server().start()
    with RemoteEngine(server.url, context_limit=N_CTX, deadlines=RemoteDeadlines(first_byte=1.0), max_retries=0) as eng:
        # A fresh ~3000-token document: its prefill takes longer than 1 s before the first byte.
        long_prompt = Prompt([Message("system", " ".join(f"item{i}" for i in range(700)))], [Message("user", "Hi")])
        with pytest.raises(EngineError, match=r"first-byte=1 s exceeded.*--remote-deadlines first-byte="):
            list(eng.generate(eng.prefill(long_prompt), SHORT))
