"""Opening llama.cpp (llama-cpp-python) for the benchmarks on machines whose kernel refuses AMX tiles.

llama.cpp built natively on a CPU that reports AMX puts matrix weights in its AMX buffer type; some
sandboxes and VMs report AMX but fault on the first tile instruction (`ldtilecfg`: a general
protection fault that kills the process). A short evaluation in a child process tells whether
this machine is one of them; if so, llama.cpp's extra buffer types (AMX, and the weight repacking
that shares the switch) are turned off, which costs llama.cpp speed, and `amx_off` says so in the
benchmark's output. Run as a script, it starts llama-cpp-python's server that way (the remote
engine's tests use it).
"""

from __future__ import annotations

import contextlib
import functools
import runpy
import subprocess
import sys

_PROBE = """
import sys
from llama_cpp import Llama
llm = Llama(model_path=sys.argv[1], n_ctx=128, n_threads=1, verbose=False)
llm.eval(llm.tokenize(b"hello world " * 16, special=True))  # a batch: one token alone takes another path
"""


@functools.lru_cache(maxsize=None)
def extra_buffers_crash(model_path: str) -> bool:
    """True when llama.cpp dies (by a signal) evaluating a few tokens with its default buffer types."""
    proc = subprocess.run([sys.executable, "-c", _PROBE, model_path], capture_output=True, timeout=300)
    return proc.returncode < 0


@contextlib.contextmanager
def plain_buffers():
    """Within the block, models llama-cpp-python opens use only llama.cpp's plain CPU buffers."""
    import llama_cpp.llama_cpp as low

    default = low.llama_model_default_params

    def without_extra_buffers():
        params = default()
        params.use_extra_bufts = False
        return params

    low.llama_model_default_params = without_extra_buffers
    try:
        yield
    finally:
        low.llama_model_default_params = default


def open_llama(model_path: str, **kwargs):
    """`llama_cpp.Llama(model_path, **kwargs)`, without extra buffer types where they crash.

    Returns the model and whether the extra buffer types were turned off."""
    from llama_cpp import Llama

    if not extra_buffers_crash(model_path):
        return Llama(model_path=model_path, **kwargs), False
    with plain_buffers():
        return Llama(model_path=model_path, **kwargs), True


if __name__ == "__main__":
    # `python benchmarks/llama_compat.py ARGS...` is `python -m llama_cpp.server ARGS...` on plain
    # buffers, for tests that want a server on every machine and do not measure llama.cpp's speed.
    with plain_buffers():
        runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)
