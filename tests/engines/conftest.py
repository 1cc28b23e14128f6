"""Fixtures that run llama-cpp-python's OpenAI-compatible server for the remote engine's tests."""

import pytest
from llama_server import LlamaServer


@pytest.fixture(scope="session")
def _llama_server_available() -> None:
    pytest.importorskip("llama_cpp.server", reason="llama-cpp-python[server] (the test extra) is not installed")


@pytest.fixture(scope="session")
def llama_server(smollm2_gguf, _llama_server_available, tmp_path_factory):
    """One shared server for the tests that leave it running."""
    server = LlamaServer(smollm2_gguf, tmp_path_factory.mktemp("llama-server") / "server.log").start()
    yield server
    server.stop()


@pytest.fixture
def own_llama_server(smollm2_gguf, _llama_server_available, tmp_path):
    """A factory for servers a test may stop, kill or protect with a key; all stopped at teardown."""
    servers: list[LlamaServer] = []

    def make(**kwargs) -> LlamaServer:
        server = LlamaServer(smollm2_gguf, tmp_path / f"server{len(servers)}.log", **kwargs)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop(kill=True)


@pytest.fixture(autouse=True)
def _no_ambient_api_key(monkeypatch):
    monkeypatch.delenv("SCOUTDOC_API_KEY", raising=False)
