"""Usage errors from the real console script: exit 2 with click's message and hints, never an internal error.

No model is needed: every case stops while the arguments are parsed, before anything is loaded.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

import scoutdoc

SCOUTDOC = Path(sys.executable).parent / "scoutdoc"


def run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "SCOUTDOC_HOME": str(tmp_path / "home"), "NO_COLOR": "1", "COLUMNS": "200"}
    env.pop("SCOUTDOC_DB", None)
    return subprocess.run([str(SCOUTDOC), *args], env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path)


@pytest.fixture
def notes(tmp_path: Path) -> str:
    (tmp_path / "notes.txt").write_text("The meeting is on Tuesday.\n")
    return "notes.txt"


def usage_error(proc: subprocess.CompletedProcess, quiet_stdout: bool = True) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "internal error" not in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stdout == "" or not quiet_stdout
    return proc.stderr


@pytest.mark.parametrize(
    "args, expected",
    [
        (("inspect",), "Missing argument"),
        (("models", "info"), "Missing argument"),
        (("aks",), "No such command 'aks'. Did you mean 'ask'?"),
        (("ask", "--temprature", "1", "notes.txt", "Q?"), "No such option: --temprature (Possible options: --temperature)"),
        (("ask", "--max-tokens", "0", "notes.txt", "Q?"), "Invalid value for '--max-tokens'"),
        (("ask", "--max-tokens", "many", "notes.txt", "Q?"), "Invalid value for '--max-tokens'"),
        (("ask", "--temperature", "-1", "notes.txt", "Q?"), "Invalid value for '--temperature'"),
        (("ask", "--temperature", "inf", "notes.txt", "Q?"), "inf is not a temperature; use 0 (greedy) to 2"),
        (("ask", "--temperature", "nan", "notes.txt", "Q?"), "nan is not a temperature"),
        (("ask", "--top-p", "2", "notes.txt", "Q?"), "Invalid value for '--top-p'"),
        (("ask", "--prefill-chunk", "0", "notes.txt", "Q?"), "Invalid value for '--prefill-chunk'"),
        (("summarize", "--max-tokens", "0", "notes.txt"), "Invalid value for '--max-tokens'"),
        (("chat", "--top-p", "1.5", "notes.txt"), "Invalid value for '--top-p'"),
        (("batch", "--temperature", "-0.5", "notes.txt", "-q", "Q?"), "Invalid value for '--temperature'"),
        (("models", "info", "smollm2-135m", "--prefill-chunk", "0"), "Invalid value for '--prefill-chunk'"),
        (("inspect", "--exclude", "[z-a]", "notes.txt"), "'[z-a]' is not a gitignore-style glob"),
        (("ask", "--include", "!", "notes.txt", "Q?"), "'!' is not a gitignore-style glob"),
        (("inspect", "--max-file-size", "4Q", "notes.txt"), "'4Q' is not a size"),
        (("ask", "--kv-device-budget", "lots", "notes.txt", "Q?"), "Invalid value for '--kv-device-budget': 'lots' is not a size"),
        (("models", "info", "smollm2-135m", "--context", "10 million"), "Invalid value for '--context'"),
        (("ask", "--fit", "guess", "notes.txt", "Q?"), "Invalid value for '--fit': 'guess' is not a fit strategy"),
        (("ask", "--dtype", "foo", "notes.txt", "Q?"), "error: unknown dtype 'foo'"),
        (("ask", "--kv-dtype", "foo", "notes.txt", "Q?"), "error: unknown --kv-dtype 'foo'"),
        (("ask", "--attn", "foo", "notes.txt", "Q?"), "error: unknown attention backend 'foo'"),
    ],
)
def test_usage_errors_exit_2_with_clicks_message(tmp_path, notes, args, expected):
    stderr = usage_error(run(tmp_path, *args))
    assert expected in stderr


@pytest.mark.parametrize("args", [(), ("sessions",), ("models",)])
def test_no_arguments_show_the_help_as_a_usage_error(tmp_path, args):
    proc = run(tmp_path, *args)
    usage_error(proc, quiet_stdout=False)  # typer's rich help prints on stdout
    assert f"Usage: {' '.join(('scoutdoc', *args))} [OPTIONS] COMMAND" in proc.stdout + proc.stderr


@pytest.mark.parametrize(
    "args, expected",
    [
        (("ask", "notes.txt", "   "), "error: the question is empty"),
        (("ask", "notes.txt", ""), "error: the question is empty"),
        (("batch", "notes.txt", "--question", " "), "error: --question is empty"),
        (("ask", "notes.txt", "notes.txt"), "error: the last argument, notes.txt, is a file, not a question"),
    ],
)
def test_blank_question_on_a_new_session_is_a_usage_error(tmp_path, notes, args, expected):
    stderr = usage_error(run(tmp_path, *args))
    assert expected in stderr
    assert not (tmp_path / "home" / "scoutdoc.db").exists()  # refused before any session was recorded


def test_version(tmp_path):
    proc = run(tmp_path, "--version")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"scoutdoc {scoutdoc.__version__}\n"


def test_help_still_exits_0(tmp_path):
    proc = run(tmp_path, "ask", "--help")
    assert proc.returncode == 0 and "--max-tokens" in proc.stdout


def test_a_long_question_without_spaces_is_a_question_not_a_path():
    from scoutdoc.cli.answer import _split_ask_args

    question = "这份合同的终止通知期是多久" * 25 + "？"  # over 255 bytes: no file name can be that long
    assert _split_ask_args(["contract.pdf", question]) == (["contract.pdf"], question)
