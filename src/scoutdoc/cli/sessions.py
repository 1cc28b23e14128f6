"""`scoutdoc sessions`: list, show, search, export and delete stored sessions."""

import json
import sys
from typing import Annotated

import typer

from rich.markup import escape

from .. import grounding
from ..errors import UsageError
from ..settings import DEFAULT_MODEL, SNAPSHOT_BUDGET_ENV
from ..snapshots import snapshot_budget
from ..units import format_bytes, parse_size
from ..wording import plural
from .common import err, open_store, safe
from .options import DbOpt, JsonOpt, check_size

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
        keep = ("id", "created_at", "updated_at", "title", "command", "engine", "model", "model_id", "prefix_tokens",
                "questions", "source_count", "snapshot_bytes")
        sys.stdout.write(json.dumps([{k: r[k] for k in keep} | {"model": _model(r)} for r in rows], ensure_ascii=False) + "\n")
        return
    table = Table(title="sessions", title_justify="left")
    for column in ("id", "updated", "command", "model", "questions", "sources", "snapshot", "title"):
        # an id is copied and grepped: never folded, whatever the width (80 columns in a pipe)
        table.add_column(column, overflow="fold", no_wrap=column == "id",
                         justify="right" if column in ("questions", "sources", "snapshot") else "left")
    for r in rows:
        snapshot = format_bytes(r["snapshot_bytes"]) if r["snapshot_bytes"] else "-"
        table.add_row(r["id"], _when(r["updated_at"]), r["command"], escape(_model(r)), str(r["questions"]),
                      str(r["source_count"]), snapshot, safe(r["title"] or ""))
    err.print(table)
    total = sum(r["snapshot_bytes"] for r in rows)
    if total:
        err.print(f"KV snapshots: {format_bytes(total)} of the {format_bytes(snapshot_budget())} budget "
                  f"({SNAPSHOT_BUDGET_ENV}); `scoutdoc sessions prune` frees space", highlight=False)


def _model(record) -> str:
    """The model as users name it: what they asked for, or (sessions recorded before names were kept) the default."""
    return record["model"] or f"{DEFAULT_MODEL} (default)"


@app.command("prune")
def sessions_prune(
    budget: Annotated[str | None, typer.Option("--budget", callback=check_size, help="Keep at most this much (e.g. 1GiB, 0 for none); default: SCOUTDOC_SNAPSHOT_BUDGET or 4GiB.")] = None,
    as_json: JsonOpt = False,
    db: DbOpt = None,
) -> None:
    """Delete the least recently used KV snapshots beyond the budget, and snapshot files no session refers to.

    Sessions stay; a pruned one recomputes its documents on its next follow-up."""
    from ..snapshots import prune_snapshots

    limit = parse_size(budget, "--budget") if budget is not None else snapshot_budget()
    with open_store(db) as store:
        pruned = prune_snapshots(store, limit, orphans=True)
    if as_json:
        sys.stdout.write(json.dumps({"removed": len(pruned.removed), "orphans": pruned.orphans, "freed_bytes": pruned.freed,
                                     "kept": pruned.kept, "kept_bytes": pruned.kept_bytes, "budget_bytes": limit}) + "\n")
        return
    err.print(f"removed {plural(len(pruned.removed), 'snapshot')} and {plural(pruned.orphans, 'orphan file')}, "
              f"freed {format_bytes(pruned.freed)}; {plural(pruned.kept, 'snapshot')} kept "
              f"({format_bytes(pruned.kept_bytes)} of {format_bytes(limit)})", highlight=False)


def _session_export(store, session_id: str) -> dict:
    record = store.session(session_id)
    sid = record["id"]
    return {
        "id": sid, "created_at": record["created_at"], "updated_at": record["updated_at"], "title": record["title"],
        "command": record["command"], "engine": record["engine"], "model": record["model"], "model_id": record["model_id"],
        "system": record["system"], "prefix_tokens": record["prefix_tokens"],
        "sources": [{k: s[k] for k in ("path", "kind", "sha256", "tokens")} for s in store.sources(sid)],
        "turns": [
            {**{k: t[k] for k in ("role", "text", "prompt_tokens", "cached_tokens", "prefilled_tokens",
                                  "generated_tokens", "ttft_s", "tokens_per_s", "model", "finish_reason", "created_at")},
             "fit": json.loads(t["fit"]) if t.get("fit") else None,
             "unsupported": json.loads(t["unsupported"]) if t.get("unsupported") else []}
            for t in store.turns(sid)
        ],
        "snapshots": [{k: s[k] for k in ("path", "tokens", "fingerprint", "bytes")} for s in store.snapshots(sid)],
    }


def _session_markdown(data: dict) -> str:
    lines = [f"# {data['title']}", "", f"- session: `{data['id']}`", f"- model: {_model(data)}",
             f"- started: {_when(data['created_at'])}", "", "## Sources", ""]
    lines += [f"- `{s['path']}` ({s['kind']}, {s['tokens']:,} tokens, sha256 {s['sha256'][:12]}…)" for s in data["sources"]]
    lines.append("")
    for t in data["turns"]:
        if t["role"] == "user":
            lines += [f"## Q: {t['text']}", ""]
        else:
            cut = ", cut off by --max-tokens" if t["finish_reason"] == "length" else ""
            lines += [t["text"], "", f"*{t['prompt_tokens']:,} prompt tokens, {t['cached_tokens']:,} cached, "
                      f"TTFT {t['ttft_s']:.2f}s, {t['tokens_per_s']:.1f} tokens/s{_fit_note(t['fit'])}{cut}*", ""]
            if t["unsupported"]:
                lines += [f"*Note: {grounding.note(t['unsupported'])}*", ""]
    return "\n".join(lines)


def _fit_note(fit: dict | None) -> str:
    """How the answer's documents met the window, when not whole: ", retrieve: 14 of 63 passages (pages 2-5, 11)"."""
    if not fit or fit["strategy"] == "full":
        return ""
    if fit["strategy"] == "map-reduce":
        return f", map-reduce: {fit['passages_total']:,} passages in {fit['windows']:,} parts"
    where = f" ({fit['where']})" if fit.get("where") else ""
    return f", {fit['strategy']}: {fit['passages_used']:,} of {fit['passages_total']:,} passages{where}"


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
    as_json: JsonOpt = False,
    db: DbOpt = None,
) -> None:
    """Delete a session, its turns and its KV snapshot files."""
    from ..session import one_turn_at_a_time

    with open_store(db) as store:
        sid = store.session(session_id)["id"]
        with one_turn_at_a_time(store, sid, lambda message: err.print(f"note: {message}", highlight=False)):
            removed = store.delete_session(sid)  # after a follow-up under way on it has been recorded
    if as_json:
        sys.stdout.write(json.dumps({"deleted": sid, "snapshot_files_removed": len(removed)}) + "\n")
        return
    err.print(f"deleted session {sid} ({plural(len(removed), 'snapshot file')} removed)", highlight=False)


@app.command("search")
def sessions_search(
    text: Annotated[list[str], typer.Argument(metavar="TEXT", help="Words to find in questions and answers.")],
    limit: Annotated[int, typer.Option("--limit", "-n")] = 20,
    as_json: JsonOpt = False,
    db: DbOpt = None,
) -> None:
    """Full-text search over every question and answer."""
    from rich.table import Table

    query = " ".join(text)
    if not any(c.isalnum() for c in query):  # the words are matched, never punctuation or wildcards
        raise UsageError(f"{query!r} holds no word to search for; e.g. scoutdoc sessions search notice period")
    with open_store(db) as store:
        hits = store.search(query, limit)
    if as_json:  # the matched words between [ and ], as before the marks were control characters
        from ..store import MATCH_END, MATCH_START

        hits = [h | {"snippet": h["snippet"].replace(MATCH_START, "[").replace(MATCH_END, "]")} for h in hits]
        sys.stdout.write(json.dumps(hits, ensure_ascii=False) + "\n")
        return
    table = Table(title=plural(len(hits), "match", "matches"), title_justify="left")
    for column in ("session", "when", "role", "text"):
        table.add_column(column, overflow="fold", no_wrap=column == "session")
    for h in hits:
        table.add_row(h["session_id"], _when(h["created_at"]), h["role"], _highlight(h["snippet"]))
    err.print(table)


def _highlight(snippet: str) -> str:
    """The snippet as rich markup: its own text escaped (brackets in it are words, not markup), the
    matched words (between the store's MATCH_START/MATCH_END marks) in bold."""
    from ..store import MATCH_END, MATCH_START

    return escape(snippet).replace(MATCH_START, "[bold]").replace(MATCH_END, "[/bold]")


# --- batch ---------------------------------------------------------------------------------------
