"""The session database's schema as an ordered list of migrations; `PRAGMA user_version` counts
those applied, and `Store` applies the rest inside one write transaction."""

from __future__ import annotations

from typing import Callable

import sqlite_utils


def _v1(db: sqlite_utils.Database) -> None:
    db["sessions"].create(
        {
            "id": str,
            "created_at": float,
            "updated_at": float,
            "title": str,
            "command": str,  # ask, summarize, chat, batch
            "engine": str,
            "model": str,  # what the user asked for (catalog name, file, or served model name)
            "model_id": str,  # the engine's fingerprint of weights and tokenizer
            "system": str,  # the user's --system text, empty for the default
            "prefix": str,  # the whole system message (instructions + packed documents), reused by -c
            "inputs": str,  # JSON: the paths as given, then "cwd:<dir>" they were given from, for --refresh
            "options": str,  # JSON: the ingestion options, for --refresh
            "prefix_tokens": int,
            "context_limit": int,
        },
        pk="id",
        not_null={"id", "created_at", "updated_at"},
    )
    db["sources"].create(
        {
            "id": int,
            "session_id": str,
            "position": int,
            "path": str,
            "abs_path": str,  # where to re-read the file for --refresh; empty for archive members
            "sha256": str,
            "kind": str,
            "tokens": int,
        },
        pk="id",
        foreign_keys=[("session_id", "sessions", "id")],
        not_null={"session_id", "path", "sha256"},
    )
    db["turns"].create(
        {
            "id": int,
            "session_id": str,
            "position": int,
            "role": str,
            "text": str,
            "prompt_tokens": int,
            "cached_tokens": int,
            "prefilled_tokens": int,
            "generated_tokens": int,
            "ttft_s": float,
            "tokens_per_s": float,
            "model": str,
            "finish_reason": str,
            "created_at": float,
        },
        pk="id",
        foreign_keys=[("session_id", "sessions", "id")],
        not_null={"session_id", "role", "text"},
    )
    db["snapshots"].create(
        {
            "id": int,
            "session_id": str,
            "turn_id": int,
            "path": str,
            "tokens": int,
            "fingerprint": str,
            "bytes": int,
            "created_at": float,
        },
        pk="id",
        foreign_keys=[("session_id", "sessions", "id"), ("turn_id", "turns", "id")],
        not_null={"session_id", "path"},
    )
    db["batch_items"].create(
        {
            "id": int,
            "source": str,
            "sha256": str,
            "question": str,  # the question, or the summary instruction for --summarize
            "model": str,
            "status": str,  # ok, error
            "session_id": str,
            "answer": str,
            "error": str,
            "result": str,  # the JSON line written to the output file
            "created_at": float,
        },
        pk="id",
        foreign_keys=[("session_id", "sessions", "id")],
        not_null={"source", "question", "model", "status"},
    )
    for table, cols in [
        ("sources", ["session_id"]),
        ("turns", ["session_id", "position"]),
        ("snapshots", ["session_id"]),
        ("sessions", ["updated_at"]),
        ("batch_items", ["sha256", "question", "model"]),
    ]:
        db[table].create_index(cols)
    # External-content FTS5 index over turn texts, kept in step by triggers.
    db.execute("CREATE VIRTUAL TABLE turns_fts USING fts5(text, content='turns', content_rowid='id')")
    db.execute(
        "CREATE TRIGGER turns_ai AFTER INSERT ON turns BEGIN "
        "INSERT INTO turns_fts(rowid, text) VALUES (new.id, new.text); END"
    )
    db.execute(
        "CREATE TRIGGER turns_ad AFTER DELETE ON turns BEGIN "
        "INSERT INTO turns_fts(turns_fts, rowid, text) VALUES ('delete', old.id, old.text); END"
    )
    db.execute(
        "CREATE TRIGGER turns_au AFTER UPDATE ON turns BEGIN "
        "INSERT INTO turns_fts(turns_fts, rowid, text) VALUES ('delete', old.id, old.text); "
        "INSERT INTO turns_fts(rowid, text) VALUES (new.id, new.text); END"
    )


def _v2(db: sqlite_utils.Database) -> None:
    """The remote server's URL, so a follow-up finds the server its session was started on."""
    db["sessions"].add_column("base_url", str, not_null_default="")


def _v3(db: sqlite_utils.Database) -> None:
    """The digest of the file a source was read from (an archive, for its members), so --refresh
    notices a changed archive; empty for rows written before (their members stay unchecked)."""
    db["sources"].add_column("file_sha256", str, not_null_default="")


def _v4(db: sqlite_utils.Database) -> None:
    """How an answer's documents met the model's window (`fit`: JSON of `fit.FitStats`), and what the
    model was asked for a question when that was more than its text (`asked`: the question with the
    passages repeated before it), so a follow-up renders the conversation exactly as it was run."""
    db["turns"].add_column("fit", str, not_null_default="")
    db["turns"].add_column("asked", str, not_null_default="")


def _v5(db: sqlite_utils.Database) -> None:
    """The names and numbers of an answer that the documents do not contain (`unsupported`: a JSON
    list, `grounding.unsupported`), so the note `ask` printed stays with the answer."""
    db["turns"].add_column("unsupported", str, not_null_default="")


def _v6(db: sqlite_utils.Database) -> None:
    """What a batch answer was made with besides its document, question and model (`settings`: the
    system instructions, generation parameters and fit strategy as JSON), so `batch --resume` reuses
    only an answer the same command would give. Rows from before have none and are answered again."""
    db["batch_items"].add_column("settings", str, not_null_default="")


def _v7(db: sqlite_utils.Database) -> None:
    """How the embedded engine ran a session (`runtime`: --dtype, --quantize and --kv-dtype as JSON),
    so a follow-up runs the same way and its KV snapshot still applies. Sessions from before have none."""
    db["sessions"].add_column("runtime", str, not_null_default="")


MIGRATIONS: list[Callable[[sqlite_utils.Database], None]] = [_v1, _v2, _v3, _v4, _v5, _v6, _v7]
SCHEMA_VERSION = len(MIGRATIONS)
