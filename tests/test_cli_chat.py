"""`scoutdoc chat` and `scoutdoc summarize` in real subprocesses with the real default model."""

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCOUTDOC = Path(sys.executable).parent / "scoutdoc"

pytestmark = pytest.mark.slow  # every test runs the real default model


def _env(home: Path, model: Path) -> dict:
    env = {**os.environ, "SCOUTDOC_HOME": str(home), "SCOUTDOC_MODELS": str(model.parent), "NO_COLOR": "1"}
    env.pop("SCOUTDOC_DB", None)
    return env


def test_chat_keeps_one_session_and_reuses_the_cache(smollm2_gguf, tmp_path):
    proc = subprocess.run(
        [str(SCOUTDOC), "chat", "examples/meeting.vtt", "--max-tokens", "8"],
        input="Which database was chosen?\n\nWho writes the import script?\n/exit\nNever asked?\n", env=_env(tmp_path, smollm2_gguf),
        capture_output=True, text=True, timeout=600, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr  # /exit leaves cleanly (as the end of input, Ctrl-D, does)
    assert "Traceback" not in proc.stderr
    conn = sqlite3.connect(tmp_path / "scoutdoc.db")
    [(sid, command)] = conn.execute("SELECT id, command FROM sessions").fetchall()
    assert command == "chat"
    turns = conn.execute(
        "SELECT role, text, cached_tokens, prefilled_tokens FROM turns WHERE session_id = ? ORDER BY position", [sid]
    ).fetchall()
    assert [t[0] for t in turns] == ["user", "assistant", "user", "assistant"]
    assert turns[0][1] == "Which database was chosen?" and turns[2][1] == "Who writes the import script?"
    assert turns[1][2] == 0 and turns[3][2] > turns[3][3]  # the second question reuses the first turn's cache
    assert proc.stderr.count(f"session {sid}") == 2


def test_summarize_codebase_uses_architecture_instruction(smollm2_gguf, tmp_path):
    proc = subprocess.run(
        [str(SCOUTDOC), "summarize", "examples/tinyrepo", "--max-tokens", "8", "--json"],
        env=_env(tmp_path, smollm2_gguf), capture_output=True, text=True, timeout=600, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["answer"].strip()
    assert {s["kind"] for s in out["sources"]} >= {"code"}
    conn = sqlite3.connect(tmp_path / "scoutdoc.db")
    [question] = conn.execute("SELECT text FROM turns WHERE role = 'user'").fetchone()
    assert "architecture overview" in question and "entry points" in question


def test_a_chat_line_that_is_not_utf8_is_refused_and_the_chat_goes_on(smollm2_gguf, tmp_path):
    proc = subprocess.run(
        [str(SCOUTDOC), "chat", "examples/meeting.vtt", "--max-tokens", "4"],
        input=b"\xff\xfe bad\nWhich database was chosen?\n", env=_env(tmp_path, smollm2_gguf),
        capture_output=True, timeout=600, cwd=ROOT,
    )
    assert proc.returncode == 0 and b"Traceback" not in proc.stderr and b"internal error" not in proc.stderr
    assert b"that line is not valid UTF-8" in proc.stderr and proc.stdout.strip()
    conn = sqlite3.connect(tmp_path / "scoutdoc.db")
    assert [r[0] for r in conn.execute("SELECT text FROM turns WHERE role = 'user'")] == ["Which database was chosen?"]
