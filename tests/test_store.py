"""The session store against a real SQLite file: schema, transactions, FTS, deletion, concurrency."""

import multiprocessing
import sqlite3
import time

import pytest

from scoutdoc.errors import SessionError
from scoutdoc.store import MATCH_END, MATCH_START, SCHEMA_VERSION, SourceRecord, Store, TurnRecord, snapshot_file


def _session(store: Store, **kw) -> str:
    args = dict(
        title="contract", command="ask", engine="embedded", model="m1", system="be brief",
        prefix_tokens=120, context_limit=8192,
        sources=[SourceRecord("contract.pdf", "a" * 64, "pdf", 100, "/abs/contract.pdf")],
    )
    args.update(kw)
    return store.create_session(**args)


def test_pragmas_and_schema_version(tmp_path):
    store = Store(tmp_path / "s.db")
    assert store.schema_version() == SCHEMA_VERSION
    assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.db.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert {"sessions", "sources", "turns", "snapshots", "batch_items", "turns_fts"} <= set(store.db.table_names())


def test_reopen_does_not_migrate_twice(tmp_path):
    Store(tmp_path / "s.db").close()
    store = Store(tmp_path / "s.db")
    assert store.schema_version() == SCHEMA_VERSION


def test_newer_schema_is_refused(tmp_path):
    conn = sqlite3.connect(tmp_path / "s.db")
    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(SessionError, match="newer scoutdoc"):
        Store(tmp_path / "s.db")


def test_not_a_database_is_a_session_error(tmp_path):
    (tmp_path / "s.db").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(SessionError):
        Store(tmp_path / "s.db")


def test_session_roundtrip(tmp_path):
    store = Store(tmp_path / "s.db")
    sid = _session(store)
    turn_id = store.add_exchange(
        sid,
        TurnRecord("user", "What is the notice period?", prompt_tokens=130),
        TurnRecord("assistant", "Thirty days.", prompt_tokens=130, cached_tokens=0, prefilled_tokens=130,
                   generated_tokens=4, ttft_s=0.5, tokens_per_s=20.0, model="m1", finish_reason="stop"),
        snapshot=dict(path=str(tmp_path / "a.kv"), tokens=134, fingerprint="fp", bytes=10),
    )
    assert store.session(sid)["prefix_tokens"] == 120
    assert store.session(sid[:6])["id"] == sid  # unique prefixes work like git's short hashes
    turns = store.turns(sid)
    assert [t["role"] for t in turns] == ["user", "assistant"]
    assert turns[1]["generated_tokens"] == 4 and turns[1]["id"] == turn_id
    assert store.sources(sid)[0]["sha256"] == "a" * 64
    snap = store.latest_snapshot(sid)
    assert snap["turn_id"] == turn_id and snap["tokens"] == 134
    assert store.latest_session()["id"] == sid
    listed = store.sessions()
    assert listed[0]["questions"] == 1 and listed[0]["source_count"] == 1


def test_unknown_session_and_no_sessions(tmp_path):
    store = Store(tmp_path / "s.db")
    with pytest.raises(SessionError, match="sessions list"):
        store.session("nope")
    with pytest.raises(SessionError, match="no session to continue"):
        store.latest_session()


def test_foreign_keys_enforced(tmp_path):
    store = Store(tmp_path / "s.db")
    with pytest.raises(sqlite3.IntegrityError):
        store.add_exchange("missing", TurnRecord("user", "q"), TurnRecord("assistant", "a"))
    assert store.db.execute("SELECT COUNT(*) FROM turns").fetchone()[0] == 0  # rolled back as a whole


def test_transaction_rolls_back_on_interrupt(tmp_path):
    store = Store(tmp_path / "s.db")
    sid = _session(store)
    with pytest.raises(KeyboardInterrupt):
        with store.transaction() as db:
            db.execute("DELETE FROM sources WHERE session_id = ?", [sid])
            raise KeyboardInterrupt
    assert len(store.sources(sid)) == 1


def test_delete_removes_rows_and_snapshot_files(tmp_path, monkeypatch):
    monkeypatch.setenv("SCOUTDOC_HOME", str(tmp_path / "home"))
    store = Store(tmp_path / "s.db")
    sid = _session(store)
    relative = snapshot_file("rel.kv")  # recorded by name, inside the data directory
    moved = snapshot_file("abs.kv")  # recorded with the path of a data directory since moved here
    outside = tmp_path / "outside.kv"  # a record pointing out of the directory deletes nothing there
    for path in (relative, moved, outside):
        path.write_bytes(b"kv")
    for recorded in ("rel.kv", str(tmp_path / "old-home" / "snapshots" / "abs.kv"), str(outside)):
        store.add_exchange(sid, TurnRecord("user", "q"), TurnRecord("assistant", "a"),
                           snapshot=dict(path=recorded, tokens=3, fingerprint="fp", bytes=2))
    assert relative == tmp_path / "home" / "snapshots" / "rel.kv"
    store.delete_session(sid)
    assert not relative.exists() and not moved.exists() and outside.exists()
    for table in ("sessions", "sources", "turns", "snapshots"):
        assert store.db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0] == 0
    assert store.search("q") == []


def test_drop_older_snapshots(tmp_path):
    store = Store(tmp_path / "s.db")
    sid = _session(store)
    store.add_exchange(sid, TurnRecord("user", "q1"), TurnRecord("assistant", "a1"),
                       snapshot=dict(path="/x/1.kv", tokens=3, fingerprint="fp", bytes=2))
    store.add_exchange(sid, TurnRecord("user", "q2"), TurnRecord("assistant", "a2"),
                       snapshot=dict(path="/x/2.kv", tokens=5, fingerprint="fp", bytes=2))
    keep = store.latest_snapshot(sid)
    assert store.drop_snapshots(sid, keep_id=keep["id"]) == ["/x/1.kv"]
    assert [s["path"] for s in store.snapshots(sid)] == ["/x/2.kv"]


def test_search_questions_and_answers(tmp_path):
    store = Store(tmp_path / "s.db")
    sid = _session(store)
    store.add_exchange(sid, TurnRecord("user", "Who pays the invoices?"), TurnRecord("assistant", "The Client pays within 30 days."))
    other = _session(store)
    store.add_exchange(other, TurnRecord("user", "Summarize the meeting"), TurnRecord("assistant", "They chose Postgres."))
    hits = store.search("invoices")
    assert [(h["session_id"], h["role"]) for h in hits] == [(sid, "user")]
    assert f"{MATCH_START}invoices{MATCH_END}" in hits[0]["snippet"]
    assert {h["session_id"] for h in store.search("postgres")} == {other}
    assert store.search('"unbalanced quote AND (') == []  # user text is never parsed as FTS syntax


def test_batch_items_resume_key(tmp_path):
    store = Store(tmp_path / "s.db")
    store.record_batch_item(source="a.pdf", sha256="h1", question="Q", model="m", status="error",
                            result={"error": "x"}, error="x")
    assert store.answered_batch_item("h1", "Q", "m") is None
    store.record_batch_item(source="a.pdf", sha256="h1", question="Q", model="m", status="ok",
                            result={"answer": "y"}, answer="y")
    assert store.answered_batch_item("h1", "Q", "m")["answer"] == "y"
    assert store.answered_batch_item("h1", "Q", "other-model") is None
    assert store.answered_batch_item("h1", "other question", "m") is None
    assert store.answered_batch_item("h1", "Q", "m", settings='{"max_tokens": 8}') is None  # other settings
    store.record_batch_item(source="a.pdf", sha256="h1", question="Q", model="m", status="ok",
                            result={"answer": "z"}, answer="z", settings='{"max_tokens": 8}')
    assert store.answered_batch_item("h1", "Q", "m", settings='{"max_tokens": 8}')["answer"] == "z"


def _writer(path: str, tag: str, n: int) -> None:
    store = Store(path)
    for i in range(n):
        sid = _session(store, title=f"{tag}-{i}")
        store.add_exchange(sid, TurnRecord("user", f"q {tag} {i}"), TurnRecord("assistant", f"a {tag} {i}"))
        store.record_batch_item(source=f"{tag}-{i}", sha256=f"{tag}{i}", question="Q", model="m",
                                status="ok", result={}, session_id=sid)
    store.close()


def test_concurrent_writers_lose_nothing(tmp_path):
    path = str(tmp_path / "s.db")
    ctx = multiprocessing.get_context("spawn")  # fresh processes, like two `scoutdoc batch` runs
    procs = [ctx.Process(target=_writer, args=(path, tag, 40)) for tag in ("x", "y", "z")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    store = Store(path)
    assert len(store.sessions()) == 120
    assert store.db.execute("SELECT COUNT(*) FROM turns").fetchone()[0] == 240
    assert len(store.batch_items()) == 120
    assert store.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def _open_at(path: str, start: float) -> None:
    while time.time() < start:
        pass
    Store(path).close()


def test_processes_opening_a_new_database_together_all_get_in(tmp_path):
    """Two batches started at once on a new database: SQLite refuses a switch to WAL mode at once,
    busy timeout or not, while another process holds the file (25 of 30 such starts failed before
    `store._use_wal` retried it)."""
    ctx = multiprocessing.get_context("spawn")
    for attempt in range(2):
        path = str(tmp_path / f"new{attempt}.db")
        start = time.time() + 3  # after every process has imported scoutdoc
        procs = [ctx.Process(target=_open_at, args=(path, start)) for _ in range(3)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(120)
        assert [p.exitcode for p in procs] == [0, 0, 0]
        assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_version_1_database_gains_the_later_columns(tmp_path):
    """Databases written before sessions recorded their server (v2), sources the digest of their
    file (v3), answers the names the documents lack (v5), batch answers their settings (v6) and
    sessions how the engine ran (v7) are migrated in place, rows kept."""
    import sqlite_utils

    from scoutdoc.store import MIGRATIONS

    path = tmp_path / "old.db"
    db = sqlite_utils.Database(path)
    MIGRATIONS[0](db)
    db["sessions"].insert({"id": "s1", "created_at": 1.0, "updated_at": 1.0, "engine": "remote", "model": "m"})
    db["sources"].insert({"session_id": "s1", "position": 0, "path": "a.zip!x.txt", "sha256": "ab", "abs_path": ""})
    db.execute("PRAGMA user_version=1")
    db.conn.commit()
    db.conn.close()
    with Store(path) as store:
        assert store.schema_version() == SCHEMA_VERSION
        assert store.session("s1")["base_url"] == "" and store.session("s1")["engine"] == "remote"
        assert [(r["path"], r["file_sha256"]) for r in store.sources("s1")] == [("a.zip!x.txt", "")]
        store.add_exchange("s1", TurnRecord("user", "Who?"), TurnRecord("assistant", "Zephyr.", unsupported='["Zephyr"]'))
        assert [t["unsupported"] for t in store.turns("s1")] == ["", '["Zephyr"]']  # v5
        store.record_batch_item(source="a", sha256="h", question="Q", model="m", status="ok", result={}, settings="{}")
        assert store.answered_batch_item("h", "Q", "m", "{}")["settings"] == "{}"  # v6
        assert store.session("s1")["runtime"] == ""  # v7: a session from before runs as a follow-up says
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
