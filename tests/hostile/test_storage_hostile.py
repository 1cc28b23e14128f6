"""Storage faults and hostile session ids: exit 6 with the path and what to do, never an internal
error, never advice to delete the user's database; a session and its first turn land together."""

import sqlite3
from pathlib import Path

import pytest

from scoutdoc.store import SourceRecord, Store, TurnRecord

from .runner import env_for, run_cli


def _session(db: Path) -> str:
    with Store(db) as store:
        return store.create_session(title="t", command="ask", engine="embedded", model="m", system="", prefix_tokens=1,
                                    context_limit=10, sources=[SourceRecord("a.txt", "0" * 64, "text")],
                                    exchange=(TurnRecord("user", "q"), TurnRecord("assistant", "a"), None))


def _exit6(run, *needles: str) -> None:
    run.within_budget()
    assert run.rc == 6, (run.rc, run.err)
    for needle in needles:
        assert needle in run.err, run.err
    assert "move it away" not in run.err and "delete" not in run.err.lower()


def test_home_is_a_file(tmp_path):
    home = tmp_path / "home"
    home.write_text("not a directory")
    _exit6(run_cli("SCOUTDOC_HOME is a file (sessions list)", ["sessions", "list"], env_for(home)), str(home))
    doc = tmp_path / "doc.txt"
    doc.write_text("some text\n")
    run = run_cli("SCOUTDOC_HOME is a file (new ask, before the model loads)", ["ask", str(doc), "what?"], env_for(home))
    _exit6(run, str(home))
    assert run.peak_rss_mb < 400  # the store is opened before any model is loaded


def test_db_in_uncreatable_directory(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    db = blocker / "sub" / "s.db"
    _exit6(run_cli("--db under a file", ["sessions", "list", "--db", str(db)], env_for(tmp_path / "home")), str(db))


def test_scribbled_database(tmp_path):
    db = tmp_path / "s.db"
    _session(db)
    data = bytearray(db.read_bytes())
    data[100:4096 * 3] = b"\xa5" * (4096 * 3 - 100)  # header tail, schema and first pages
    db.write_bytes(bytes(data))
    for args in (["sessions", "list"], ["sessions", "show", "abc"]):
        _exit6(run_cli(f"scribbled database ({args[1]})", [*args, "--db", str(db)], env_for(tmp_path / "home")), str(db), "recover")


def test_foreign_sqlite_file_left_untouched(tmp_path):
    db = tmp_path / "other.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE customers (id INTEGER, name TEXT)")
    before = db.read_bytes()
    _exit6(run_cli("foreign SQLite file", ["sessions", "list", "--db", str(db)], env_for(tmp_path / "home")), "another program")
    assert db.read_bytes() == before


@pytest.mark.parametrize("prefix", ["%", "_", "%%", "_%"])
def test_like_wildcards_in_session_prefix(tmp_path, prefix):
    db = tmp_path / "s.db"
    sid = _session(db)
    with Store(db) as store:
        assert store.session(sid[:4])["id"] == sid
    run = run_cli(f"session prefix {prefix!r}", ["sessions", "show", prefix, "--db", str(db)], env_for(tmp_path / "home"))
    _exit6(run, "no session")


def test_session_and_first_turn_in_one_transaction(tmp_path):
    db = tmp_path / "s.db"
    with Store(db) as store:
        with pytest.raises(sqlite3.IntegrityError):  # a snapshot row the schema refuses: the whole session rolls back
            store.create_session(title="t", command="ask", engine="e", model="m", system="", prefix_tokens=1,
                                 context_limit=10, sources=[], exchange=(TurnRecord("user", "q"), TurnRecord("assistant", "a"),
                                                                         {"path": None}))
        assert store.sessions() == []
    sid = _session(db)
    with Store(db) as store:
        assert [t["role"] for t in store.turns(sid)] == ["user", "assistant"]
