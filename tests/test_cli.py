"""`scoutdoc ask`, follow-ups and `sessions` in real subprocesses with the real default model."""

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from scoutdoc.excerpt import EXCERPT_TOKENS

ROOT = Path(__file__).resolve().parents[1]
CONTRACT = ROOT / "examples" / "contract.pdf"
SCOUTDOC = Path(sys.executable).parent / "scoutdoc"


def run(home: Path, *args: str, model: Path | None = None, timeout: int = 600, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "SCOUTDOC_HOME": str(home), "NO_COLOR": "1", "COLUMNS": "200"}
    env.pop("SCOUTDOC_DB", None)
    if model is not None:
        env["SCOUTDOC_MODELS"] = str(model.parent)
    cmd = [str(SCOUTDOC), *args]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    if check and proc.returncode != 0:
        raise AssertionError(f"{cmd} exited {proc.returncode}\nstdout: {proc.stdout}\nstderr: {proc.stderr}")
    return proc


def db(home: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(home / "scoutdoc.db")
    conn.row_factory = sqlite3.Row
    return conn


@pytest.fixture(scope="module")
def asked(smollm2_gguf, tmp_path_factory):
    """One session created by the README's first command (default model, shared weights cache)."""
    home = tmp_path_factory.mktemp("home")
    proc = run(home, "ask", str(CONTRACT), "What is the termination notice period?", "--max-tokens", "16", "--json",
               model=smollm2_gguf)
    return home, json.loads(proc.stdout), proc


# Word-for-word equality with another computation of the same prompt (a full recompute, attention
# over KV split into tiers) holds on the dense float32 path. The default 4-bit kernels (and the
# default dtype on a CPU with native bfloat16) round activations to bfloat16, which turns the last-bit
# differences of a differently split computation into bf16 steps, so there a near-tie between two
# tokens can go either way.
DENSE = ("--quantize", "none", "--dtype", "float32")


@pytest.fixture(scope="module")
def asked_dense(smollm2_gguf, tmp_path_factory):
    """The README's first command on the dense float32 path."""
    home = tmp_path_factory.mktemp("home-dense")
    proc = run(home, "ask", str(CONTRACT), "What is the termination notice period?", "--max-tokens", "16", "--json",
               *DENSE, model=smollm2_gguf)
    return home, json.loads(proc.stdout), proc


@pytest.mark.slow
def test_ask_answers_and_records_session_and_snapshot(asked):
    home, out, proc = asked
    assert "60" in out["answer"] or "sixty" in out["answer"]  # the notice period, not the 14-day breach period
    assert proc.stdout.count("\n") == 1  # --json: one object, nothing else on stdout
    assert out["sources"] == [{"path": str(CONTRACT), "kind": "pdf", "tokens": out["sources"][0]["tokens"],
                               "sha256": out["sources"][0]["sha256"]}]
    stats = out["stats"]
    for key in ("prompt_tokens", "cached_tokens", "prefilled_tokens", "generated_tokens", "ttft_s", "tokens_per_s"):
        assert key in stats
    assert stats["cached_tokens"] == 0 and stats["prefilled_tokens"] == stats["prompt_tokens"] > 0
    assert 0 < stats["generated_tokens"] <= 16
    conn = db(home)
    session = conn.execute("SELECT * FROM sessions WHERE id = ?", [out["session_id"]]).fetchone()
    assert session is not None and session["prefix_tokens"] > 0
    snap = conn.execute("SELECT * FROM snapshots WHERE session_id = ?", [out["session_id"]]).fetchone()
    snap_path = home / "snapshots" / snap["path"]  # recorded relative to the data directory
    assert snap is not None and snap_path.is_file() and snap["bytes"] == snap_path.stat().st_size
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_plain_output_streams_answer_then_stats_line(asked, smollm2_gguf):
    home, first, _ = asked
    proc = run(home, "ask", "--session", first["session_id"], "Who is the Client?", "--max-tokens", "8",
               "--model", str(smollm2_gguf))
    assert proc.stdout.strip()
    assert f"session {first['session_id']}" in proc.stderr and "cached" in proc.stderr
    assert "\x1b[" not in proc.stderr  # NO_COLOR


@pytest.mark.slow
def test_follow_up_reuses_snapshot_and_matches_full_recompute(asked_dense, smollm2_gguf, tmp_path):
    home, first, _ = asked_dense
    # A second home with the same database but no snapshot files forces a full recompute.
    recompute_home = tmp_path / "recompute"
    shutil.copytree(home, recompute_home)
    for snap in (recompute_home / "snapshots").iterdir():
        snap.unlink()
    args = ("ask", "--session", first["session_id"], "Which law governs the agreement?", "--max-tokens", "16",
            "--json", "--model", str(smollm2_gguf), *DENSE)
    conn = db(home)
    snap_tokens = conn.execute("SELECT tokens FROM snapshots WHERE session_id = ? ORDER BY id DESC", [first["session_id"]]).fetchone()[0]
    prefix_tokens = conn.execute("SELECT prefix_tokens FROM sessions WHERE id = ?", [first["session_id"]]).fetchone()[0]
    conn.close()

    cached = run(home, *args)
    fresh = run(recompute_home, *args)
    c, f = json.loads(cached.stdout), json.loads(fresh.stdout)
    assert c["stats"]["cached_tokens"] == snap_tokens >= prefix_tokens  # documents and earlier turns reused
    # only the new turn: the question, the sentences repeated before it (excerpt.excerpt) and the length line
    assert c["stats"]["prefilled_tokens"] == c["stats"]["prompt_tokens"] - snap_tokens < EXCERPT_TOKENS + 40
    assert f["stats"]["cached_tokens"] == 0 and "recomputing" in fresh.stderr
    assert c["answer"] == f["answer"]
    stored = db(home).execute(
        "SELECT cached_tokens, prefilled_tokens FROM turns WHERE session_id = ? AND role = 'assistant' ORDER BY position DESC",
        [first["session_id"]],
    ).fetchone()
    assert (stored["cached_tokens"], stored["prefilled_tokens"]) == (c["stats"]["cached_tokens"], c["stats"]["prefilled_tokens"])


def stored_prefix(home, session_id: str) -> str:
    return db(home).execute("SELECT prefix FROM sessions WHERE id = ?", [session_id]).fetchone()[0]


@pytest.mark.slow
def test_changed_source_is_reported_and_refresh_rereads(smollm2_gguf, tmp_path):
    home = tmp_path / "home"
    notes = tmp_path / "notes.txt"
    notes.write_text("The meeting is on Tuesday.\n")
    first = json.loads(run(home, "ask", str(notes), "When is the meeting?", "--max-tokens", "8", "--json",
                           "--model", str(smollm2_gguf)).stdout)
    notes.write_text("The meeting moved to Friday.\n")
    stale = run(home, "ask", "-c", "When is it?", "--max-tokens", "8", "--json", "--model", str(smollm2_gguf))
    assert "changed since this session started" in stale.stderr and "--refresh" in stale.stderr
    assert json.loads(stale.stdout)["changed_sources"] == [str(notes)]
    fresh = run(home, "ask", "-c", "--refresh", "When is it?", "--max-tokens", "8", "--json", "--model", str(smollm2_gguf))
    out = json.loads(fresh.stdout)
    assert out["session_id"] == first["session_id"] and "changed_sources" not in out
    prefix = stored_prefix(home, first["session_id"])
    assert "Friday" in prefix and "Tuesday" not in prefix


@pytest.mark.slow
def test_refresh_notices_a_changed_archive(smollm2_gguf, tmp_path):
    import zipfile

    home = tmp_path / "home"
    inbox = tmp_path / "inbox.zip"

    def write(notes: str) -> None:
        with zipfile.ZipFile(inbox, "w") as z:
            z.writestr("notes.txt", notes)
            z.writestr("agenda.txt", "Budget, then hiring.\n")

    write("The meeting is on Tuesday.\n")
    ask = ["--max-tokens", "4", "--json", "--model", str(smollm2_gguf)]
    first = json.loads(run(home, "ask", str(inbox), "When is the meeting?", *ask).stdout)
    same = json.loads(run(home, "ask", "-c", "And the agenda?", *ask).stdout)
    assert "changed_sources" not in same
    write("The meeting moved to Friday.\n")
    stale = run(home, "ask", "-c", "When is it?", *ask)
    assert json.loads(stale.stdout)["changed_sources"] == [str(inbox)]  # the archive, once for its two members
    fresh = json.loads(run(home, "ask", "-c", "--refresh", "When is it?", *ask).stdout)
    assert fresh["session_id"] == first["session_id"] and "changed_sources" not in fresh
    prefix = stored_prefix(home, first["session_id"])
    assert "Friday" in prefix and "Tuesday" not in prefix


@pytest.mark.slow
def test_refresh_rereads_a_directory_with_a_new_file_and_keeps_the_cache_when_nothing_changed(smollm2_gguf, tmp_path):
    home = tmp_path / "home"
    folder = tmp_path / "minutes"
    folder.mkdir()
    (folder / "monday.txt").write_text("Monday: the budget was approved.\n")
    ask = ["--max-tokens", "4", "--json", "--model", str(smollm2_gguf)]
    first = json.loads(run(home, "ask", str(folder), "What was approved?", *ask).stdout)
    same = run(home, "ask", "-c", "--refresh", "Anything else?", *ask)
    assert "text is unchanged" in same.stderr and json.loads(same.stdout)["stats"]["cached_tokens"] > 0
    (folder / "tuesday.txt").write_text("Tuesday: the hiring plan was rejected.\n")
    fresh = run(home, "ask", "-c", "--refresh", "What was rejected?", *ask)
    assert "added tuesday.txt" in fresh.stderr
    prefix = stored_prefix(home, first["session_id"])
    assert "hiring plan was rejected" in prefix
    paths = db(home).execute("SELECT path FROM sources WHERE session_id = ? ORDER BY position", [first["session_id"]])
    assert [r[0] for r in paths] == ["monday.txt", "tuesday.txt"]


@pytest.mark.slow
def test_kv_budget_spilling_to_disk_gives_the_default_answer(asked_dense, smollm2_gguf, tmp_path):
    home, first, _ = asked_dense
    spill = tmp_path / "kv"
    proc = run(tmp_path / "home", "ask", str(CONTRACT), "What is the termination notice period?", "--max-tokens", "16",
               "--json", "--kv-device-budget", "1k", "--kv-disk", str(spill), "--attn", "sdpa", "--model", str(smollm2_gguf),
               *DENSE)
    assert json.loads(proc.stdout)["answer"] == first["answer"]
    assert spill.is_dir() and not any(spill.iterdir())  # the disk tier was used, and its files are gone


@pytest.mark.slow
def test_sessions_commands(asked, tmp_path):
    home, first, _ = asked
    sid = first["session_id"]
    listed = json.loads(run(home, "sessions", "list", "--json").stdout)
    assert sid in [s["id"] for s in listed]
    shown = run(home, "sessions", "show", sid[:6]).stdout
    assert "What is the termination notice period?" in shown
    exported = json.loads(run(home, "sessions", "export", sid, "--format", "json").stdout)
    assert exported["id"] == sid and exported["turns"][0]["role"] == "user"
    assert run(home, "sessions", "export", sid, "--format", "md").stdout.startswith("# ")
    hits = json.loads(run(home, "sessions", "search", "termination", "--json").stdout)
    assert any(h["session_id"] == sid and h["role"] == "user" for h in hits)
    # delete on a copy so the other tests keep their session
    copy = tmp_path / "copy"
    shutil.copytree(home, copy)
    snap_files = list((copy / "snapshots").glob(f"{sid}-*"))
    assert snap_files
    run(copy, "sessions", "delete", sid)
    assert not any(p.exists() for p in snap_files)
    gone = run(copy, "sessions", "show", sid, check=False)
    assert gone.returncode == 6


# --- error paths: one clear line, the documented exit code, no traceback ---------------------------


def _one_error_line(proc: subprocess.CompletedProcess, code: int) -> str:
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, proc.stderr
    return lines[0]


def test_usage_error_exit_2(tmp_path):
    _one_error_line(run(tmp_path, "ask", "just-a-question", check=False), 2)
    _one_error_line(run(tmp_path, "sessions", "export", "x", "--format", "pdf", check=False), 2)


def test_nothing_ingested_exit_3(tmp_path):
    line = _one_error_line(run(tmp_path, "ask", str(tmp_path / "missing.pdf"), "Q?", check=False), 3)
    assert "nothing could be ingested" in line


@pytest.mark.slow
def test_context_too_long_exit_4(smollm2_gguf, tmp_path):
    big = tmp_path / "big.txt"
    big.write_text("".join(f"Line {i}: the quick brown fox jumps over the lazy dog.\n" for i in range(1500)))
    # --fit full keeps the refusal (the default, --fit auto, would answer from retrieved passages)
    line = _one_error_line(run(tmp_path, "ask", str(big), "Q?", "--fit", "full", "--model", str(smollm2_gguf),
                               check=False), 4)
    assert "8,192" in line and "tokens" in line


def test_model_error_exit_5(tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a gguf file")
    _one_error_line(run(tmp_path, "ask", str(CONTRACT), "Q?", "--model", str(bad), check=False), 5)


@pytest.mark.slow
def test_forced_attention_backend_unavailable_exit_5(smollm2_gguf, tmp_path):
    line = _one_error_line(run(tmp_path, "ask", str(CONTRACT), "Q?", "--attn", "flash", "--device", "cpu",
                               "--model", str(smollm2_gguf), check=False), 5)
    assert "--attn flash" in line


@pytest.mark.slow
def test_memory_plan_refusal_exit_8(smollm2_gguf, tmp_path):
    proc = run(tmp_path, "ask", str(CONTRACT), "Q?", "--kv-device-budget", "1k", "--kv-host-budget", "1k",
               "--device", "cpu", "--model", str(smollm2_gguf), check=False)
    line = _one_error_line(proc, 8)
    assert "does not fit" in line and "--kv-disk" in line
    conn = sqlite3.connect(tmp_path / "scoutdoc.db")
    assert conn.execute("SELECT COUNT(*) FROM sessions").fetchone()[0] == 0  # nothing half-recorded


def test_no_session_to_continue_exit_6(tmp_path):
    line = _one_error_line(run(tmp_path, "ask", "-c", "And then?", check=False), 6)
    assert "no session" in line


@pytest.mark.slow
def test_interrupt_exit_130(smollm2_gguf, tmp_path):
    env = {**os.environ, "SCOUTDOC_HOME": str(tmp_path), "NO_COLOR": "1"}
    proc = subprocess.Popen(
        [str(SCOUTDOC), "ask", str(CONTRACT), "Summarize everything in detail.", "--max-tokens", "400",
         "--model", str(smollm2_gguf)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    # wait until the answer starts streaming, then press Ctrl-C
    os.set_blocking(proc.stdout.fileno(), False)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and not proc.stdout.read(1):
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "interrupted" in stderr
    conn = sqlite3.connect(tmp_path / "scoutdoc.db")
    assert conn.execute("SELECT COUNT(*) FROM sessions").fetchone()[0] == 0  # nothing half-recorded
