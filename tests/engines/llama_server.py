"""A real OpenAI-compatible server on loopback: llama-cpp-python's server with the default model.

The remote engine is tested against this server, not a fake: `LlamaServer` starts
`python -m llama_cpp.server` on a free 127.0.0.1 port, waits until `/v1/models` answers, and can
be stopped (gracefully or with SIGKILL, to cut a stream) and started again on the same port.

The server runs without llama.cpp's extra CPU buffer types (AMX tiles and weight repacking): on
machines that report AMX but fault on its first tile instruction (some VMs and sandboxes, this
project's CI among them) they kill the server at its first batch. These tests check the remote
engine's protocol handling, not llama.cpp's speed, so the plain buffers serve everywhere.
"""

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ALIAS = "smollm2"
_MAIN = """
import runpy
import llama_cpp.llama_cpp as low
default = low.llama_model_default_params
def plain_buffers():
    params = default()
    params.use_extra_bufts = False
    return params
low.llama_model_default_params = plain_buffers
runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)
"""
N_CTX = 4096


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LlamaServer:
    """One llama-cpp-python server process; `log` holds its output (it reports prefix-cache hits)."""

    def __init__(self, gguf: Path, log: Path, api_key: str | None = None, port: int | None = None):
        self.gguf = gguf
        self.log = log
        self.api_key = api_key
        self.port = port or free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self, wait: bool = True) -> "LlamaServer":
        command = [
            sys.executable, "-c", _MAIN,
            "--model", str(self.gguf), "--model_alias", ALIAS,
            "--host", "127.0.0.1", "--port", str(self.port),
            "--n_ctx", str(N_CTX), "--n_threads", "1", "--n_threads_batch", "1",
            "--interrupt_requests", "False",
        ]  # fmt: skip
        if self.api_key:
            command += ["--api_key", self.api_key]
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 120.0) -> None:
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"llama_cpp.server exited with {self.process.returncode}; see {self.log}")
            try:
                if httpx.get(self.url + "/models", headers=headers, timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"llama_cpp.server did not answer within {timeout} s; see {self.log}")

    def stop(self, kill: bool = False) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")
