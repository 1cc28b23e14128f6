"""A really full disk: SCOUTDOC_HOME on a 4 MiB tmpfs filled to ENOSPC, not a mocked error.

Reading sessions must keep working, a write must fail with exit 6 saying the disk is full (never
advising to move or delete the database), nothing already stored may be lost, and a KV snapshot
that does not fit leaves no file behind while its turn is still recorded.
"""

from __future__ import annotations

import errno
import json
import sqlite3
import subprocess
from contextlib import closing
from pathlib import Path

import pytest
import torch
from fakes import FakeEngine

from scoutdoc import session as conv
from scoutdoc.engines import GenerationParams
from scoutdoc.errors import SessionError
from scoutdoc.ingest import IngestOptions
from scoutdoc.runtime.config import ModelConfig
from scoutdoc.runtime.kvcache import HybridCache
from scoutdoc.runtime.snapshot import save_snapshot
from scoutdoc.settings import snapshots_dir
from scoutdoc.store import Store

from .runner import env_for, run_cli

PARAMS = GenerationParams(max_tokens=32)
# A dense Llama small enough to build in milliseconds: 3 layers x 2 KV heads x 16 dims, 768 bytes a token.
TINY_LLAMA = {
    "model_type": "llama", "vocab_size": 300, "hidden_size": 64, "intermediate_size": 96,
    "num_hidden_layers": 3, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16,
    "rms_norm_eps": 1e-05, "hidden_act": "silu", "max_position_embeddings": 4096,
    "bos_token_id": 1, "eos_token_id": 2, "tie_word_embeddings": True,
}


@pytest.fixture
def small_disk(tmp_path: Path):
    """A 4 MiB tmpfs, unmounted in teardown whatever the test did."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount_point)],
                              capture_output=True, text=True)
    except FileNotFoundError:
        pytest.skip("no `mount` command here, so no really full disk can be made")
    if done.returncode != 0:
        why = (done.stderr.strip().splitlines() or ["mount failed"])[0]
        pytest.skip(f"mounting a tmpfs is not permitted here (needs root or CAP_SYS_ADMIN): {why}")
    try:
        yield mount_point
    finally:
        if subprocess.run(["umount", str(mount_point)]).returncode != 0:  # a file still open: detach it anyway
            subprocess.run(["umount", "--lazy", str(mount_point)], check=True)


def fill(disk: Path) -> Path:
    """Write a file on `disk` until the kernel says ENOSPC, down to single bytes; returns the file."""
    filler = disk / "filler"
    with open(filler, "wb", buffering=0) as f:
        for size in (1 << 16, 4096, 1):
            while True:
                try:
                    f.write(b"\0" * size)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC, exc
                    break
    with pytest.raises(OSError) as full:
        (disk / "probe").write_bytes(b"x" * 4096)
    assert full.value.errno == errno.ENOSPC
    (disk / "probe").unlink(missing_ok=True)
    return filler


class Notices(list):
    def __call__(self, text: str) -> None:
        self.append(text)


def ask(store: Store, engine: FakeEngine, doc: Path, notices: Notices, **kw) -> conv.TurnResult:
    return conv.start_session(store, engine, paths=[str(doc)], options=IngestOptions(), question="When is the meeting?",
                              params=PARAMS, on_text=lambda piece: None, notice=notices, **kw)


def follow(store: Store, engine: FakeEngine, sid: str, question: str, notices: Notices) -> conv.TurnResult:
    return conv.continue_session(store, engine, session_id=sid, question=question, params=PARAMS,
                                 on_text=lambda piece: None, notice=notices)


def rows(db: Path, sql: str) -> list[tuple]:
    with closing(sqlite3.connect(db)) as conn:  # closed, so the disk can be unmounted
        return conn.execute(sql).fetchall()


@pytest.fixture
def doc(tmp_path: Path) -> Path:
    path = tmp_path / "notes.txt"  # outside the small disk: only scoutdoc's own files live there
    path.write_text("The meeting is on Tuesday in room 4.\n")
    return path


def test_full_disk_reads_work_writes_refuse_and_nothing_is_lost(small_disk, doc, monkeypatch):
    home = small_disk / "home"
    monkeypatch.setenv("SCOUTDOC_HOME", str(home))
    db = home / "scoutdoc.db"
    with Store(db) as store:
        first = ask(store, FakeEngine(), doc, Notices())
        follow(store, FakeEngine(), first.session_id, "Where is it?", Notices())
        sid = first.session_id
        before = store.turns(sid)
    assert len(before) == 4 and list(small_disk.glob("home/snapshots/*.kv"))

    filler = fill(small_disk)
    env = env_for(home)
    listed = run_cli("full disk: sessions list", ["sessions", "list", "--json"], env)
    listed.within_budget()
    assert listed.rc == 0 and [s["id"] for s in json.loads(listed.out)] == [sid], (listed.rc, listed.err)
    shown = run_cli("full disk: sessions show", ["sessions", "show", sid, "--json"], env)
    shown.within_budget()
    assert shown.rc == 0 and first.answer in shown.out, (shown.rc, shown.err)

    deleted = run_cli("full disk: sessions delete", ["sessions", "delete", sid], env)
    deleted.within_budget()
    assert deleted.rc == 6, (deleted.rc, deleted.err)
    line = deleted.err.strip()
    assert len(line.splitlines()) == 1 and "disk" in line and "full" in line and str(db) in line, line
    assert "move" not in line and "delete" not in line.lower(), line

    with Store(db) as store, pytest.raises(SessionError) as refused:
        ask(store, FakeEngine(), doc, Notices(), keep_snapshot=False)
    message = str(refused.value)
    assert "\n" not in message and "disk" in message and "full" in message, message
    assert "move" not in message and "delete" not in message.lower(), message

    filler.unlink()
    assert rows(db, "PRAGMA integrity_check") == [("ok",)]
    with Store(db) as store:
        assert [s["id"] for s in store.sessions()] == [sid]  # the refused session left nothing behind
        assert store.turns(sid) == before
        assert store.latest_snapshot(sid) is not None
    again = run_cli("disk freed: sessions delete", ["sessions", "delete", sid], env)
    assert again.rc == 0, again.err
    assert rows(db, "SELECT COUNT(*) FROM sessions") == [(0,)]


class RealSnapshotEngine(FakeEngine):
    """The fake engine, saving its KV through the runtime's real snapshot writer (temporary file,
    fsync, rename), for a cache of `tokens` tokens of a tiny Llama."""

    def __init__(self, tokens: int):
        super().__init__()
        config = ModelConfig.from_hf(TINY_LLAMA)
        self.cache = HybridCache(config, torch.float32)
        shape = (tokens, config.num_kv_heads, config.head_dim)
        self.cache.load_state(tokens, {i: (torch.ones(shape), torch.ones(shape)) for i in self.cache.global_layers},
                              {i: (torch.ones(shape), torch.ones(shape)) for i in self.cache.local_layers}, mapped=False)

    def save(self, state, path: Path) -> int:
        return save_snapshot(self.cache, list(range(self.cache.length)), {"model": self.model_id}, path)


def test_snapshot_that_does_not_fit_leaves_no_file_and_the_turn_is_kept(small_disk, doc, monkeypatch):
    home = small_disk / "home"
    monkeypatch.setenv("SCOUTDOC_HOME", str(home))
    engine = RealSnapshotEngine(tokens=2048)  # a 1.5 MiB snapshot
    with Store(home / "scoutdoc.db") as store:
        sid = ask(store, engine, doc, Notices(), keep_snapshot=False).session_id
        snapshots = snapshots_dir()
        filler = fill(small_disk)
        with open(filler, "r+b") as f:  # room for the database's few pages, not for the snapshot
            f.truncate(filler.stat().st_size - (256 << 10))

        notices = Notices()
        result = follow(store, engine, sid, "Where is it?", notices)
        assert any("could not save the KV snapshot" in n and "No space left" in n and "recompute" in n
                   for n in notices), notices
        assert result.snapshot == ""
        assert list(snapshots.iterdir()) == []  # neither a partial snapshot nor its temporary file
        assert store.latest_snapshot(sid) is None
        assert [t["role"] for t in store.turns(sid)] == ["user", "assistant"] * 2
        assert store.turns(sid)[-1]["text"] == result.answer

        filler.unlink()
        notices = Notices()
        follow(store, engine, sid, "Who comes?", notices)
        assert "no KV snapshot for this session; recomputing the documents" in notices
        assert len(store.turns(sid)) == 6 and store.latest_snapshot(sid) is not None
    assert rows(home / "scoutdoc.db", "PRAGMA integrity_check") == [("ok",)]
