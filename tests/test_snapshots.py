"""Snapshot retention: the disk budget, least-recently-used pruning, orphans, sizes per session."""

import os
import time

import pytest

from scoutdoc.errors import UsageError
from scoutdoc.snapshots import ORPHAN_AGE_S, prune_snapshots, snapshot_budget
from scoutdoc.store import Store, TurnRecord, snapshot_file


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("SCOUTDOC_HOME", str(tmp_path / "home"))
    with Store(tmp_path / "home" / "scoutdoc.db") as s:
        yield s


def _session_with_snapshot(store: Store, name: str, size: int, used_at: float) -> str:
    """A session whose one turn recorded a snapshot file of `size` bytes, last used at `used_at`."""
    sid = store.create_session(title=name, command="ask", engine="embedded", model="m", system="",
                               prefix_tokens=1, context_limit=10, sources=[])
    snapshot_file(f"{name}.kv").write_bytes(b"\0" * size)
    store.add_exchange(sid, TurnRecord("user", "q"), TurnRecord("assistant", "a"),
                       snapshot=dict(path=f"{name}.kv", tokens=3, fingerprint="fp", bytes=size))
    store.db.execute("UPDATE sessions SET updated_at = ? WHERE id = ?", [used_at, sid])
    return sid


def test_least_recently_used_snapshots_go_first(store):
    now = time.time()
    _session_with_snapshot(store, "old", 400, now - 300)
    _session_with_snapshot(store, "mid", 400, now - 200)
    _session_with_snapshot(store, "new", 400, now - 100)
    pruned = prune_snapshots(store, budget=1000)
    assert pruned.removed == ["old.kv"] and pruned.freed == 400
    assert (pruned.kept, pruned.kept_bytes) == (2, 800)
    assert not snapshot_file("old.kv").exists() and snapshot_file("mid.kv").exists()
    assert sorted(r["path"] for r in store.snapshots_by_use()) == ["mid.kv", "new.kv"]
    assert prune_snapshots(store, budget=1000).removed == []  # already within the budget


def test_a_recorded_path_outside_the_snapshot_directory_deletes_nothing_there(store, tmp_path):
    """A database handed over with `--db`, or edited, may name any file: only names are used."""
    victims = [tmp_path / "thesis.tex", snapshot_file("x").parent.parent / "victim2.txt"]
    for victim in victims:
        victim.write_text("mine\n")
    now = time.time()
    _session_with_snapshot(store, "plain", 10, now)
    with store.db.conn:
        store.db.conn.execute("UPDATE snapshots SET path = ? WHERE path = 'plain.kv'", (str(victims[0]),))
    _session_with_snapshot(store, "other", 10, now - 10)
    with store.db.conn:
        store.db.conn.execute("UPDATE snapshots SET path = '../victim2.txt' WHERE path = 'other.kv'")
    assert len(prune_snapshots(store, budget=0).removed) == 2
    assert all(v.read_text() == "mine\n" for v in victims)


def test_the_snapshot_just_written_is_protected_unless_over_the_budget_alone(store):
    now = time.time()
    _session_with_snapshot(store, "recent", 600, now)
    _session_with_snapshot(store, "written", 600, now - 50)
    assert prune_snapshots(store, budget=1000, protect="written.kv").removed == ["recent.kv"]
    assert prune_snapshots(store, budget=500, protect="written.kv").removed == ["written.kv"]
    assert prune_snapshots(store, budget=0).kept == 0


def test_sessions_list_carries_snapshot_bytes(store):
    sid = _session_with_snapshot(store, "one", 123, time.time())
    (row,) = store.sessions()
    assert row["id"] == sid and row["snapshot_bytes"] == 123


def test_orphan_files_are_removed_only_when_old(store):
    _session_with_snapshot(store, "kept", 10, time.time())
    stale = snapshot_file("crashed-0001.kv")
    stale.write_bytes(b"x" * 50)
    old = time.time() - ORPHAN_AGE_S - 60
    os.utime(stale, (old, old))
    fresh = snapshot_file(".being-written.kv.123.tmp")  # another process may be saving it now
    fresh.write_bytes(b"x" * 5)
    pruned = prune_snapshots(store, budget=10**9, orphans=True)
    assert (pruned.orphans, pruned.freed) == (1, 50)
    assert not stale.exists() and fresh.exists() and snapshot_file("kept.kv").exists()


def test_budget_from_the_environment(monkeypatch):
    monkeypatch.delenv("SCOUTDOC_SNAPSHOT_BUDGET", raising=False)
    assert snapshot_budget() == 4 * 2**30
    monkeypatch.setenv("SCOUTDOC_SNAPSHOT_BUDGET", "500M")
    assert snapshot_budget() == 500 * 2**20
    monkeypatch.setenv("SCOUTDOC_SNAPSHOT_BUDGET", "lots")
    with pytest.raises(UsageError, match="SCOUTDOC_SNAPSHOT_BUDGET 'lots' is not a size"):
        snapshot_budget()
