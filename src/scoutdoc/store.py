"""Sessions, their sources, turns, KV snapshot records and batch items, in one SQLite file.

Why these choices:
- WAL mode and a busy timeout, so several scoutdoc processes (two batches, a batch and a `sessions
  list`) can share one database without "database is locked" errors or lost writes.
- Every write is one explicit `BEGIN IMMEDIATE` transaction: the write lock is taken up front, so
  two writers queue instead of failing halfway through, and a crash leaves no half-written session.
- The schema carries a version (`PRAGMA user_version`) and an ordered list of migrations, applied
  inside the same kind of transaction so two processes opening an old database migrate it once.
- Turn texts are indexed with FTS5 (kept in step by triggers) for `sessions search`.

sqlite-utils supplies table creation, introspection and row dictionaries; writes go through plain
SQL in our own transactions because sqlite-utils' insert helpers commit on their own.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import sqlite_utils

from .errors import SessionError
from .store_faults import escape_like, guarded, no_room_for_wal_index, storage_error
from .store_schema import MIGRATIONS, SCHEMA_VERSION
from .settings import snapshots_dir

BUSY_TIMEOUT_MS = 60_000
# Around the matched words in search snippets: control characters no turn text contains, so a
# renderer can mark them up without mistaking the text's own brackets for the match.
MATCH_START, MATCH_END = "\x02", "\x03"




@dataclass
class TurnRecord:
    role: str
    text: str
    prompt_tokens: int = 0
    cached_tokens: int = 0
    prefilled_tokens: int = 0
    generated_tokens: int = 0
    ttft_s: float = 0.0
    tokens_per_s: float = 0.0
    model: str = ""
    finish_reason: str = ""
    fit: str = ""  # JSON of fit.FitStats for an answer
    asked: str = ""  # for a question: the user message the model got, when it differs from `text`
    unsupported: str = ""  # for an answer: JSON list of its names and numbers the documents lack (`grounding`)


@dataclass
class SourceRecord:
    path: str
    sha256: str
    kind: str
    tokens: int = 0
    abs_path: str = ""  # the file on disk it was read from: itself, or the archive it came out of
    file_sha256: str = ""  # that file's sha256 when read (equal to sha256 unless it is an archive member)


def snapshot_file(recorded: str) -> Path:
    """Where a recorded snapshot lives: names are stored relative to the snapshots directory, so a
    data directory can be moved or copied (SCOUTDOC_HOME) without its records pointing elsewhere.

    Only the file name of a record is used: snapshots are deleted by record, and a database handed
    over (`--db`) or edited with "/home/me/thesis.tex" or "../../x" as a path must not reach outside
    the directory (`sessions delete` removed such files)."""
    return snapshots_dir() / Path(recorded).name


def usable_session(row: dict[str, Any]) -> dict[str, Any]:
    """A session row a follow-up can use: its documents are text and its inputs and options JSON of
    the right shape. A database edited by hand (or by another program) gave a TypeError or a
    JSONDecodeError deep in the follow-up."""
    try:
        ok = isinstance(row["prefix"], str) and isinstance(json.loads(row["inputs"] or "[]"), list)
        ok = ok and isinstance(json.loads(row["options"] or "{}"), dict)
    except (ValueError, TypeError, KeyError):
        ok = False
    if not ok:
        raise SessionError(f"session {row.get('id', '?')}'s record in the database is damaged; start a new session "
                           f"(`scoutdoc sessions delete {row.get('id', '?')}` removes it)")
    return row


def remove_snapshot_file(recorded: str) -> None:
    """Delete a recorded snapshot's file, as far as the file system lets: cleanup after a record is
    gone must not end a turn whose answer was already given (a snapshot path turned into a
    directory did)."""
    try:
        snapshot_file(recorded).unlink(missing_ok=True)
    except OSError:
        pass


def new_session_id() -> str:
    return uuid.uuid4().hex[:12]


_OURS = {"sessions", "sources", "turns", "snapshots", "batch_items"}


def _use_wal(conn: sqlite3.Connection) -> None:
    """Switch the file to WAL mode unless it is already (the mode is stored in the file: only its
    first opener switches). SQLite answers a switch with "database is locked" at once, without
    waiting out the busy timeout, while another process holds the file, which is what two batches
    started together on a new database do (25 of 30 such starts failed); so the switch is retried,
    re-reading the mode the other process may just have set, until the busy timeout."""
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc).lower() or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


class Store:
    """One open database. Not shared between threads: each worker thread opens its own `Store`."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        for exclusive in (False, True):
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                conn = sqlite3.connect(str(self.path), isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000)
            except (sqlite3.DatabaseError, OSError) as exc:
                raise storage_error(self.path, exc) from exc
            try:
                self._setup(conn, exclusive)
                return
            except (sqlite3.DatabaseError, OSError) as exc:
                conn.close()
                if exclusive or not no_room_for_wal_index(exc):
                    raise storage_error(self.path, exc) from exc

    def _setup(self, conn: sqlite3.Connection, exclusive: bool) -> None:
        """Pragmas, the foreign-file check and migrations. `exclusive` is the full-disk fallback: with
        the locking mode set before the first read, SQLite keeps the WAL index in memory instead of the
        `-shm` file it could not size, so `sessions list` still reads (holding the lock while it does)."""
        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA foreign_keys=ON")
        if exclusive:
            conn.execute("PRAGMA locking_mode=EXCLUSIVE")
        self._check_ours(conn)
        try:
            _use_wal(conn)
            conn.execute("PRAGMA synchronous=NORMAL")
        except sqlite3.OperationalError as exc:
            if "full" not in str(exc).lower():
                raise  # a full disk still lets `sessions list` read the database in its current mode
        self.db = sqlite_utils.Database(conn)
        self._migrate()

    def _check_ours(self, conn: sqlite3.Connection) -> None:
        """Refuse an SQLite file some other program wrote: migrating it would add our tables to theirs."""
        if conn.execute("PRAGMA user_version").fetchone()[0] != 0:
            return
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        foreign = sorted(t for t in tables - _OURS if not t.startswith(("turns_fts", "sqlite_")))
        if foreign:
            raise SessionError(
                f"{self.path} is an SQLite database of another program (tables {', '.join(foreign[:5])}), "
                "not a scoutdoc session database; it was left untouched. Pass --db with another path"
            )

    def close(self) -> None:
        self.db.conn.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite_utils.Database]:
        """`BEGIN IMMEDIATE` ... `COMMIT`, rolled back on any exception (Ctrl-C included)."""
        conn = self.db.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def schema_version(self) -> int:
        return self.db.execute("PRAGMA user_version").fetchone()[0]

    def _migrate(self) -> None:
        if self.schema_version() == SCHEMA_VERSION:
            return
        with self.transaction() as db:
            version = self.schema_version()  # re-read under the write lock: another process may have migrated
            if version > SCHEMA_VERSION:
                raise SessionError(
                    f"the session database {self.path} was written by a newer scoutdoc (schema {version}); upgrade scoutdoc"
                )
            for migration in MIGRATIONS[version:]:
                migration(db)
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def _insert(self, table: str, row: dict[str, Any]) -> int:
        cols = ", ".join(f"[{c}]" for c in row)
        marks = ", ".join("?" for _ in row)
        cur = self.db.execute(f"INSERT INTO [{table}] ({cols}) VALUES ({marks})", list(row.values()))
        return cur.lastrowid

    # sessions -----------------------------------------------------------------------------------

    def create_session(
        self,
        *,
        title: str,
        command: str,
        engine: str,
        model: str,
        system: str,
        prefix_tokens: int,
        context_limit: int,
        sources: list[SourceRecord],
        model_id: str = "",
        prefix: str = "",
        inputs: list[str] | None = None,
        options: dict[str, Any] | None = None,
        session_id: str | None = None,
        base_url: str = "",
        runtime: dict[str, Any] | None = None,
        exchange: tuple[TurnRecord, TurnRecord, dict[str, Any] | None] | None = None,
    ) -> str:
        """Record a new session with its sources and, given `exchange` (question, answer, snapshot),
        its first turn in the same transaction: a process killed in between leaves neither."""
        sid = session_id or new_session_id()
        now = time.time()
        with self.transaction():
            self._insert(
                "sessions",
                dict(
                    id=sid, created_at=now, updated_at=now, title=title, command=command, engine=engine,
                    model=model, model_id=model_id, system=system, prefix=prefix,
                    inputs=json.dumps(inputs or []), options=json.dumps(options or {}),
                    prefix_tokens=prefix_tokens, context_limit=context_limit, base_url=base_url,
                    runtime=json.dumps(runtime) if runtime else "",
                ),
            )
            self._insert_sources(sid, sources)
            if exchange is not None:
                self._exchange_rows(sid, *exchange, now=now)
        return sid

    def _insert_sources(self, session_id: str, sources: list[SourceRecord]) -> None:
        for i, src in enumerate(sources):
            self._insert("sources", dict(session_id=session_id, position=i, **dataclasses.asdict(src)))

    def add_exchange(
        self,
        session_id: str,
        question: TurnRecord,
        answer: TurnRecord,
        snapshot: dict[str, Any] | None = None,
    ) -> int:
        """Record a question, its answer and (optionally) the KV snapshot taken after it, atomically.

        Returns the answer turn's id. Only the newest snapshot is ever resumed from, so callers then
        `drop_snapshots(keep_id=...)` the older ones and delete their files.
        """
        with self.transaction():
            return self._exchange_rows(session_id, question, answer, snapshot, now=time.time())

    def add_snapshot(self, session_id: str, snapshot: dict[str, Any]) -> None:
        """Record the KV snapshot taken after the session's newest turn (saved once the turn is
        recorded, so that an interrupted or failed save loses the snapshot, never the answer)."""
        with self.transaction():
            turn_id = self.db.execute("SELECT MAX(id) FROM turns WHERE session_id = ?", [session_id]).fetchone()[0]
            self._insert("snapshots", dict(session_id=session_id, turn_id=turn_id, created_at=time.time(), **snapshot))

    def _exchange_rows(
        self, session_id: str, question: TurnRecord, answer: TurnRecord, snapshot: dict[str, Any] | None, *, now: float
    ) -> int:
        position = self.db.execute(
            "SELECT COALESCE(MAX(position), -1) + 1 FROM turns WHERE session_id = ?", [session_id]
        ).fetchone()[0]
        for offset, turn in enumerate((question, answer)):
            turn_id = self._insert(
                "turns",
                dict(session_id=session_id, position=position + offset, created_at=now, **turn.__dict__),
            )
        if snapshot is not None:
            self._insert("snapshots", dict(session_id=session_id, turn_id=turn_id, created_at=now, **snapshot))
        self.db.execute("UPDATE sessions SET updated_at = ? WHERE id = ?", [now, session_id])
        return turn_id

    def session(self, session_id: str) -> dict[str, Any]:
        if not session_id.strip():  # as a prefix "" names every session, and `sessions delete ""` deleted one
            raise SessionError("the session id is empty; see `scoutdoc sessions list`")
        rows = list(self.db.query("SELECT * FROM sessions WHERE id = ?", [session_id]))
        if not rows:
            rows = list(self.db.query("SELECT * FROM sessions WHERE id LIKE ? || '%' ESCAPE '\\'", [escape_like(session_id)]))
            if len(rows) > 1:
                raise SessionError(f"session id '{session_id}' is ambiguous; give more characters (see `scoutdoc sessions list`)")
        if not rows:
            raise SessionError(f"no session '{session_id}'; see `scoutdoc sessions list`")
        return rows[0]

    def latest_session(self) -> dict[str, Any]:
        rows = list(
            self.db.query("SELECT * FROM sessions WHERE command != 'batch' ORDER BY updated_at DESC, rowid DESC LIMIT 1")
        )
        if not rows:
            raise SessionError("there is no session to continue yet; ask a question about some documents first")
        return rows[0]

    def sessions(self, limit: int | None = None) -> list[dict[str, Any]]:
        sql = (
            "SELECT s.*, (SELECT COUNT(*) FROM turns t WHERE t.session_id = s.id AND t.role = 'user') AS questions, "
            "(SELECT COUNT(*) FROM sources r WHERE r.session_id = s.id) AS source_count, "
            "(SELECT COALESCE(SUM(n.bytes), 0) FROM snapshots n WHERE n.session_id = s.id) AS snapshot_bytes "
            "FROM sessions s ORDER BY s.updated_at DESC, s.rowid DESC"
        )
        if limit:
            sql += f" LIMIT {int(limit)}"
        return list(self.db.query(sql))

    def sources(self, session_id: str) -> list[dict[str, Any]]:
        return list(self.db.query("SELECT * FROM sources WHERE session_id = ? ORDER BY position", [session_id]))

    def turns(self, session_id: str) -> list[dict[str, Any]]:
        return list(self.db.query("SELECT * FROM turns WHERE session_id = ? ORDER BY position", [session_id]))

    def latest_snapshot(self, session_id: str) -> dict[str, Any] | None:
        rows = list(
            self.db.query("SELECT * FROM snapshots WHERE session_id = ? ORDER BY id DESC LIMIT 1", [session_id])
        )
        return rows[0] if rows else None

    def snapshots(self, session_id: str) -> list[dict[str, Any]]:
        return list(self.db.query("SELECT * FROM snapshots WHERE session_id = ? ORDER BY id", [session_id]))

    def snapshots_by_use(self) -> list[dict[str, Any]]:
        """Every snapshot record, the most recently used session's first (newest snapshot first within one)."""
        return list(self.db.query(
            "SELECT n.*, s.updated_at FROM snapshots n JOIN sessions s ON s.id = n.session_id "
            "ORDER BY s.updated_at DESC, n.id DESC"
        ))

    def delete_snapshot_records(self, ids: list[int]) -> list[str]:
        """Forget these snapshot records; returns their recorded paths (the caller deletes the files)."""
        paths = []
        with self.transaction():
            for snapshot_id in ids:
                row = self.db.execute("SELECT path FROM snapshots WHERE id = ?", [snapshot_id]).fetchone()
                if row is not None:  # another process may have pruned it already
                    self.db.execute("DELETE FROM snapshots WHERE id = ?", [snapshot_id])
                    paths.append(row[0])
        return paths

    def drop_snapshots(self, session_id: str, keep_id: int | None = None) -> list[str]:
        """Forget a session's snapshot records (all but `keep_id`) and return their file paths."""
        with self.transaction():
            rows = [r for r in self.snapshots(session_id) if r["id"] != keep_id]
            for r in rows:
                self.db.execute("DELETE FROM snapshots WHERE id = ?", [r["id"]])
        return [r["path"] for r in rows]

    def update_sources(self, session_id: str, sources: list[SourceRecord], prefix: str, prefix_tokens: int) -> None:
        """Replace a session's sources and prefix after --refresh re-read them."""
        with self.transaction():
            self.db.execute("DELETE FROM sources WHERE session_id = ?", [session_id])
            self._insert_sources(session_id, sources)
            self.db.execute(
                "UPDATE sessions SET prefix = ?, prefix_tokens = ?, updated_at = ? WHERE id = ?",
                [prefix, prefix_tokens, time.time(), session_id],
            )

    def delete_session(self, session_id: str) -> list[str]:
        """Delete a session and everything that belongs to it; remove its snapshot files afterwards.

        Files are removed after the commit: a crash in between leaves orphan files (harmless), never
        records pointing at missing files.
        """
        sid = self.session(session_id)["id"]
        with self.transaction():
            paths = [r["path"] for r in self.snapshots(sid)]
            self.db.execute("UPDATE batch_items SET session_id = NULL WHERE session_id = ?", [sid])
            for table in ("snapshots", "turns", "sources"):
                self.db.execute(f"DELETE FROM {table} WHERE session_id = ?", [sid])
            self.db.execute("DELETE FROM sessions WHERE id = ?", [sid])
        for p in paths:
            remove_snapshot_file(p)
        try:
            self.lock_file(sid).unlink(missing_ok=True)
        except OSError:
            pass  # an empty file left behind; the session is gone either way
        return paths

    def lock_file(self, session_id: str) -> Path:
        """Where a follow-up holds this session while it is answered (`session.one_turn_at_a_time`)."""
        return self.path.parent / "locks" / f"{session_id}.lock"

    def search(self, text: str, limit: int = 50) -> list[dict[str, Any]]:
        """Full-text search over questions and answers; `text` is taken as plain words, not FTS syntax."""
        words = [w for w in text.replace('"', " ").split() if w]
        if not words:
            return []
        query = " ".join(f'"{w}"' for w in words)
        return list(
            self.db.query(
                "SELECT t.session_id, t.position, t.role, t.created_at, "
                f"snippet(turns_fts, 0, '{MATCH_START}', '{MATCH_END}', '…', 12) AS snippet "
                "FROM turns_fts JOIN turns t ON t.id = turns_fts.rowid "
                "WHERE turns_fts MATCH ? ORDER BY rank LIMIT ?",
                [query, limit],
            )
        )

    # batch --------------------------------------------------------------------------------------

    def record_batch_item(
        self,
        *,
        source: str,
        sha256: str,
        question: str,
        model: str,
        status: str,
        result: dict[str, Any],
        session_id: str | None = None,
        answer: str = "",
        error: str = "",
        settings: str = "",
    ) -> int:
        with self.transaction():
            return self._insert(
                "batch_items",
                dict(source=source, sha256=sha256, question=question, model=model, status=status,
                     session_id=session_id, answer=answer, error=error, result=json.dumps(result),
                     created_at=time.time(), settings=settings),
            )

    def answered_batch_item(self, sha256: str, question: str, model: str, settings: str = "") -> dict[str, Any] | None:
        """The earliest successful answer for this content, question, model and settings, if any."""
        rows = list(
            self.db.query(
                "SELECT * FROM batch_items WHERE sha256 = ? AND question = ? AND model = ? AND settings = ? "
                "AND status = 'ok' ORDER BY id LIMIT 1",
                [sha256, question, model, settings],
            )
        )
        return rows[0] if rows else None

    def batch_items(self) -> list[dict[str, Any]]:
        return list(self.db.query("SELECT * FROM batch_items ORDER BY id"))


# Every public method maps storage faults (damaged file, full disk, permissions) to SessionError.
for _name, _member in list(vars(Store).items()):
    if callable(_member) and not _name.startswith("_") and _name not in ("transaction", "close"):
        setattr(Store, _name, guarded(_member))
