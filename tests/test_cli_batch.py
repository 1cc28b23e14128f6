"""`scoutdoc batch` in real subprocesses: bad documents, kill and resume, two writers on one database."""

import io
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import zipfile
from collections import Counter
from pathlib import Path

import pytest
from pypdf import PdfReader, PdfWriter

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
SCOUTDOC = Path(sys.executable).parent / "scoutdoc"
QUESTION = "Who is mentioned?"


def _env(home: Path, model: Path) -> dict:
    env = {**os.environ, "SCOUTDOC_HOME": str(home), "SCOUTDOC_MODELS": str(model.parent), "NO_COLOR": "1", "COLUMNS": "200"}
    env.pop("SCOUTDOC_DB", None)
    return env


def _batch_args(inputs: list[str], out: Path, *extra: str) -> list[str]:
    return [str(SCOUTDOC), "batch", *inputs, "--question", QUESTION, "--max-tokens", "6", "--out", str(out), *extra]


def _encrypted_pdf() -> bytes:
    writer = PdfWriter(clone_from=PdfReader(EXAMPLES / "contract.pdf"))
    writer.encrypt(user_password="s3cret", algorithm="AES-128")
    buf = io.BytesIO()
    writer.write(buf)
    return buf.getvalue()


@pytest.fixture
def archive(tmp_path) -> Path:
    """Several good documents, one corrupt PDF and one encrypted PDF in one zip."""
    path = tmp_path / "inbox.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("notes/standup.txt", "Standup: Ana fixed the login bug. Tom reviews the invoice module.\n")
        zf.writestr("notes/todo.md", "# Todo\n\n- Priya: import the spreadsheets by 20 March.\n")
        zf.write(EXAMPLES / "meeting.vtt", "meeting.vtt")
        zf.writestr("broken.pdf", b"%PDF-1.7\n1 0 obj << /Type /Catalog >>\nthis is not a real pdf\n")
        zf.writestr("locked.pdf", _encrypted_pdf())
    return path


def _lines(out: Path) -> list[dict]:
    return [json.loads(line) for line in out.read_text().splitlines() if line.strip()]


def _start_until_first_answer(args: list[str], env: dict, out: Path) -> subprocess.Popen:
    """Start a batch and return once its first answer line is complete (or the process ended)."""
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None:
        text = out.read_text() if out.exists() else ""
        if text.endswith("\n") and any(r["status"] == "ok" for r in _lines(out)):
            break
        time.sleep(0.2)
    return proc


@pytest.mark.slow
def test_batch_kill_and_resume_answers_each_document_once(archive, smollm2_gguf, tmp_path):
    home, out = tmp_path / "home", tmp_path / "results.jsonl"
    proc = _start_until_first_answer(_batch_args([str(archive)], out), _env(home, smollm2_gguf), out)
    assert proc.poll() is None, "the batch finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait(60)
    killed_ok = [r for r in _lines(out) if r["status"] == "ok"]
    assert 1 <= len(killed_ok) < 3

    resumed = subprocess.run(_batch_args([str(archive)], out, "--resume"), env=_env(home, smollm2_gguf),
                             capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert resumed.returncode == 0, resumed.stderr
    assert "Traceback" not in resumed.stderr
    rows = _lines(out)
    by_source = Counter(r["source"] for r in rows)
    assert all(n == 1 for n in by_source.values()), by_source  # one line per document
    ok = {r["source"]: r for r in rows if r["status"] == "ok"}
    failed = {r["source"]: r for r in rows if r["status"] == "error"}
    assert sorted(s.rsplit("!", 1)[-1] for s in ok) == ["meeting.vtt", "notes/standup.txt", "notes/todo.md"], rows
    assert sorted(s.rsplit("!", 1)[-1] for s in failed) == ["broken.pdf", "locked.pdf"], rows
    assert all(r["error"] for r in failed.values())
    assert any("password" in r["error"].lower() or "encrypt" in r["error"].lower() for r in failed.values())
    for r in ok.values():
        assert r["answer"].strip() and r["session_id"] and r["stats"]["prompt_tokens"] > 0 and r["wall_s"] > 0
    # answered exactly once: one successful item per document in the store, the killed-before ones not redone
    conn = sqlite3.connect(home / "scoutdoc.db")
    counts = conn.execute("SELECT sha256, COUNT(*) FROM batch_items WHERE status = 'ok' GROUP BY sha256").fetchall()
    assert len(counts) == 3 and all(n == 1 for _, n in counts)
    for r in killed_ok:
        assert ok[r["source"]]["session_id"] == r["session_id"]
    assert "already done" in resumed.stderr


@pytest.mark.slow
def test_two_batches_on_one_database_lose_nothing(smollm2_gguf, tmp_path):
    home = tmp_path / "home"
    dirs = []
    for name in ("a", "b"):
        d = tmp_path / name
        d.mkdir()
        for i in range(2):
            (d / f"{name}{i}.txt").write_text(f"Document {name}{i}: {name.upper()} team meeting number {i}.\n")
        dirs.append(d)
    procs = [
        subprocess.Popen(_batch_args([str(d)], tmp_path / f"{d.name}.jsonl"), env=_env(home, smollm2_gguf),
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=ROOT)
        for d in dirs
    ]
    for p in procs:
        _, err = p.communicate(timeout=900)
        assert p.returncode == 0, err
    for d in dirs:
        rows = _lines(tmp_path / f"{d.name}.jsonl")
        assert sorted(r["source"] for r in rows) == [f"{d.name}0.txt", f"{d.name}1.txt"]
        assert all(r["status"] == "ok" for r in rows)
    conn = sqlite3.connect(home / "scoutdoc.db")
    assert conn.execute("SELECT COUNT(*) FROM batch_items WHERE status = 'ok'").fetchone()[0] == 4
    assert conn.execute("SELECT COUNT(*) FROM sessions WHERE command = 'batch'").fetchone()[0] == 4
    assert conn.execute("SELECT COUNT(*) FROM turns").fetchone()[0] == 8


def test_batch_usage_errors(tmp_path):
    env = _env(tmp_path, tmp_path / "models" / "unused.gguf")  # refused before any model is needed
    both = subprocess.run([str(SCOUTDOC), "batch", str(tmp_path), "--question", "Q", "--summarize"], env=env,
                          capture_output=True, text=True)
    assert both.returncode == 2 and "exactly one" in both.stderr and "Traceback" not in both.stderr
    no_match = subprocess.run([str(SCOUTDOC), "batch", str(tmp_path / "*.nothing"), "--question", "Q"], env=env,
                              capture_output=True, text=True)
    assert no_match.returncode == 2 and "matches no files" in no_match.stderr


@pytest.mark.slow
def test_batch_ctrl_c_stops_cleanly_and_resume_completes(smollm2_gguf, tmp_path):
    home, out, docs = tmp_path / "home", tmp_path / "out.jsonl", tmp_path / "docs"
    docs.mkdir()
    for i in range(3):
        (docs / f"n{i}.txt").write_text(f"Note {i}: order {i * 7} loaves of bread.\n")
    proc = _start_until_first_answer(_batch_args([str(docs)], out), _env(home, smollm2_gguf), out)
    assert proc.poll() is None, "the batch finished before Ctrl-C"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err
    assert "--resume" in err and "Traceback" not in err
    resumed = subprocess.run(_batch_args([str(docs)], out, "--resume"), env=_env(home, smollm2_gguf),
                             capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert resumed.returncode == 0, resumed.stderr
    rows = _lines(out)
    assert sorted(r["source"] for r in rows) == ["n0.txt", "n1.txt", "n2.txt"]
    assert all(r["status"] == "ok" for r in rows)
