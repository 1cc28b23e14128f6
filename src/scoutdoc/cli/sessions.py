"""`scoutdoc sessions`: list, show, search, export and delete stored sessions."""

import json
import sys
from typing import Annotated

import typer

from ..errors import UsageError
from .common import err, open_store, safe
from .options import DbOpt, JsonOpt

app = typer.Typer(help="List, show, search, export and delete stored sessions.", no_args_is_help=True)


def _when(ts: float) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M")


@app.command("list")
def sessions_list(
    limit: Annotated[int, typer.Option("--limit", "-n", help="Show at most this many (newest first).")] = 50,
    as_json: JsonOpt = False,
    db: DbOpt = None,
) -> None:
    """Sessions, newest first."""
    from rich.table import Table

    with open_store(db) as store:
        rows = store.sessions(limit)
    if as_json:
        keep = ("id", "created_at", "updated_at", "title", "command", "engine", "model", "model_id", "prefix_tokens", "questions", "source_count")
        sys.stdout.write(json.dumps([{k: r[k] for k in keep} for r in rows], ensure_ascii=False) + "\n")
        return
    table = Table(title="sessions", title_justify="left")
    for column in ("id", "updated", "command", "questions", "sources", "title"):
        table.add_column(column, overflow="fold")
    for r in rows:
        table.add_row(r["id"], _when(r["updated_at"]), r["command"], str(r["questions"]), str(r["source_count"]), safe(r["title"] or ""))
    err.print(table)


def _session_export(store, session_id: str) -> dict:
    record = store.session(session_id)
    sid = record["id"]
    return {
        "id": sid, "created_at": record["created_at"], "updated_at": record["updated_at"], "title": record["title"],
        "command": record["command"], "engine": record["engine"], "model": record["model"], "model_id": record["model_id"],
        "system": record["system"], "prefix_tokens": record["prefix_tokens"],
        "sources": [{k: s[k] for k in ("path", "kind", "sha256", "tokens")} for s in store.sources(sid)],
        "turns": [
            {k: t[k] for k in ("role", "text", "prompt_tokens", "cached_tokens", "prefilled_tokens", "generated_tokens",
                               "ttft_s", "tokens_per_s", "model", "finish_reason", "created_at")}
            for t in store.turns(sid)
        ],
        "snapshots": [{k: s[k] for k in ("path", "tokens", "fingerprint", "bytes")} for s in store.snapshots(sid)],
    }


def _session_markdown(data: dict) -> str:
    lines = [f"# {data['title']}", "", f"- session: `{data['id']}`", f"- model: {data['model'] or data['model_id']}",
             f"- started: {_when(data['created_at'])}", "", "## Sources", ""]
    lines += [f"- `{s['path']}` ({s['kind']}, {s['tokens']:,} tokens, sha256 {s['sha256'][:12]}…)" for s in data["sources"]]
    lines.append("")
    for t in data["turns"]:
        if t["role"] == "user":
            lines += [f"## Q: {t['text']}", ""]
        else:
            lines += [t["text"], "", f"*{t['prompt_tokens']:,} prompt tokens, {t['cached_tokens']:,} cached, "
                      f"TTFT {t['ttft_s']:.2f}s, {t['tokens_per_s']:.1f} tokens/s*", ""]
    return "\n".join(lines)


@app.command("show")
def sessions_show(
    session_id: Annotated[str, typer.Argument(metavar="ID", help="Session id or a unique prefix.")],
    as_json: JsonOpt = False,
    db: DbOpt = None,
) -> None:
    """A session's sources and conversation."""
    with open_store(db) as store:
        data = _session_export(store, session_id)
    if as_json:
        sys.stdout.write(json.dumps(data, ensure_ascii=False) + "\n")
    else:
        sys.stdout.write(_session_markdown(data) + "\n")


@app.command("export")
def sessions_export(
    session_id: Annotated[str, typer.Argument(metavar="ID", help="Session id or a unique prefix.")],
    fmt: Annotated[str, typer.Option("--format", "-f", help="md or json.")] = "md",
    db: DbOpt = None,
) -> None:
    """Print a session as Markdown or JSON (redirect to a file to keep it)."""
    if fmt not in ("md", "json"):
        raise UsageError(f"--format {fmt!r} is not supported; use md or json")
    with open_store(db) as store:
        data = _session_export(store, session_id)
    sys.stdout.write((json.dumps(data, ensure_ascii=False, indent=2) if fmt == "json" else _session_markdown(data)) + "\n")


@app.command("delete")
def sessions_delete(
    session_id: Annotated[str, typer.Argument(metavar="ID", help="Session id or a unique prefix.")],
    db: DbOpt = None,
) -> None:
    """Delete a session, its turns and its KV snapshot files."""
    with open_store(db) as store:
        sid = store.session(session_id)["id"]
        removed = store.delete_session(sid)
    err.print(f"deleted session {sid} ({len(removed)} snapshot file(s) removed)", highlight=False)


@app.command("search")
def sessions_search(
    text: Annotated[list[str], typer.Argument(metavar="TEXT", help="Words to find in questions and answers.")],
    limit: Annotated[int, typer.Option("--limit", "-n")] = 20,
    as_json: JsonOpt = False,
    db: DbOpt = None,
) -> None:
    """Full-text search over every question and answer."""
    from rich.table import Table

    with open_store(db) as store:
        hits = store.search(" ".join(text), limit)
    if as_json:
        sys.stdout.write(json.dumps(hits, ensure_ascii=False) + "\n")
        return
    table = Table(title=f"{len(hits)} match(es)", title_justify="left")
    for column in ("session", "when", "role", "text"):
        table.add_column(column, overflow="fold")
    for h in hits:
        table.add_row(h["session_id"], _when(h["created_at"]), h["role"], safe(h["snippet"] or ""))
    err.print(table)


# --- batch ---------------------------------------------------------------------------------------
