"""One question about some sources, or a follow-up in an existing session: ingest → prompt → engine → store.

This is the library behind `ask`, `summarize`, `chat` and each item of `batch`; the CLI only adds
rendering. A new session ingests and packs the sources once and stores the packed text (the prompt
prefix); a follow-up rebuilds the prompt from the store without re-ingesting, and hands the engine
the newest KV snapshot so only the new turn is prefilled. A snapshot that is missing, corrupt or
from another model is reported through `notice` and the turn is recomputed from scratch.
"""

from __future__ import annotations

import dataclasses
import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .engines import Engine, GenerationParams, Stats
from .errors import ScoutdocError
from .hashing import sha256_file
from .ingest import IngestOptions, IngestResult, load_sources, pack, require_documents
from .ingest.document import Document
from .ingest.pack import pack_document
from .progress import Progress
from .prompt import Message, Prompt, build_prompt, check_fits, check_size_estimate
from .settings import SNAPSHOT_BUDGET_ENV, snapshots_dir
from .snapshots import prune_snapshots, snapshot_budget
from .store import SourceRecord, Store, TurnRecord, new_session_id, snapshot_file
from .units import format_bytes
from .wording import plural

Notice = Callable[[str], None]
TextSink = Callable[[str], None]


@dataclass
class TurnResult:
    session_id: str
    answer: str
    stats: Stats
    sources: list[dict[str, Any]]
    changed: list[str] = field(default_factory=list)  # sources whose file changed since the session started
    snapshot: str = ""


class Interrupted(Exception):
    """Raised inside generation when a stop event is set (batch Ctrl-C); never reaches the user."""


def options_to_json(options: IngestOptions) -> dict[str, Any]:
    data = dataclasses.asdict(options)
    data.pop("passwords", None)  # never written to disk; --refresh asks for --password again
    return data


def options_from_json(data: dict[str, Any], passwords: tuple[str, ...] = ()) -> IngestOptions:
    from .ingest import ArchiveLimits

    data = dict(data)
    archive = ArchiveLimits(**data.pop("archive", {}))
    for key in ("include", "exclude", "members"):
        data[key] = tuple(data.get(key, ()))
    return IngestOptions(**data, archive=archive, passwords=passwords)


def _abs_path(source: str, inputs: list[Path]) -> str:
    """The file on disk a document was read from, for change detection: the document's own file, or
    for an archive member ("docs.zip!a/b.pdf", nested ones too) the outermost archive."""
    source = source.split("!", 1)[0]
    for base in inputs:
        if base.is_file() and (Path(source) == base or Path(source).resolve() == base.resolve()):
            return str(base.resolve())
        if base.is_dir() and (base / source).is_file():
            return str((base / source).resolve())
    candidate = Path(source)
    return str(candidate.resolve()) if candidate.is_file() else ""


def ingest(paths: list[str], options: IngestOptions, notice: Notice, progress: Progress | None = None) -> IngestResult:
    result = load_sources(paths, options, progress)
    for skip in result.skipped:
        notice(f"skipped {skip.source}: {skip.reason}")
    return require_documents(result)


def source_records(engine: Engine, documents: list[Document], inputs: list[Path]) -> list[SourceRecord]:
    archives: dict[str, str] = {}  # each archive is hashed once, however many members it gave
    records = []
    for d in documents:
        abs_path = _abs_path(d.source, inputs)
        file_sha256 = d.sha256
        if "!" in d.source and abs_path:
            if abs_path not in archives:
                archives[abs_path] = sha256_file(abs_path)
            file_sha256 = archives[abs_path]
        records.append(SourceRecord(path=d.source, sha256=d.sha256, kind=d.kind, abs_path=abs_path,
                                    file_sha256=file_sha256, tokens=engine.count_tokens(pack_document(d))))
    return records


def _sources_json(records: list[SourceRecord] | list[dict]) -> list[dict[str, Any]]:
    out = []
    for r in records:
        r = r if isinstance(r, dict) else dataclasses.asdict(r)
        out.append({"path": r["path"], "kind": r["kind"], "tokens": r["tokens"], "sha256": r["sha256"]})
    return out


def changed_sources(store: Store, session_id: str) -> list[str]:
    """Sources whose file on disk no longer has the sha256 recorded when they were read: a file, or an
    archive (named once, however many of its members the session holds)."""
    changed: list[str] = []
    now: dict[str, str | None] = {}
    for src in store.sources(session_id):
        path = src["abs_path"]
        if not path:
            continue
        if path not in now:
            try:
                now[path] = sha256_file(path)
            except OSError:
                now[path] = None
        name = src["path"].split("!", 1)[0]
        if now[path] != (src["file_sha256"] or src["sha256"]) and name not in changed:
            changed.append(name)
    return changed


def run_turn(
    engine: Engine,
    prompt: Prompt,
    params: GenerationParams,
    on_text: TextSink,
    snapshot: Any = None,
    progress: Progress | None = None,
    stop_event: threading.Event | None = None,
) -> tuple[str, Any]:
    """Prefill and stream one answer; returns the answer text and the engine state after it."""
    check_fits(engine.prompt_tokens(prompt), params.max_tokens, engine.context_limit, engine.model_name or "the model")
    state = engine.prefill(prompt, snapshot=snapshot, progress=progress)
    pieces: list[str] = []
    stream = engine.generate(state, params)
    try:
        for piece in stream:
            if stop_event is not None and stop_event.is_set():
                raise Interrupted()
            pieces.append(piece)
            on_text(piece)
    finally:
        stream.close()
    return "".join(pieces), state


def _save_snapshot(store: Store, engine: Engine, session_id: str, state: Any, turn_no: int, notice: Notice) -> dict | None:
    if not engine.keeps_snapshots:
        return None  # e.g. a remote server keeps its own prefix cache
    name = f"{session_id}-{turn_no:04d}.kv"
    try:
        size = engine.save(state, snapshots_dir() / name)
    except (OSError, ScoutdocError) as exc:
        notice(f"could not save the KV snapshot ({exc}); a follow-up will recompute the documents")
        return None
    return dict(path=name, tokens=state.tokens, fingerprint=engine.model_id, bytes=int(size or 0))


def _turn_records(engine: Engine, question: str, answer: str, state: Any) -> tuple[TurnRecord, TurnRecord]:
    stats: Stats = state.stats
    q = TurnRecord("user", question, prompt_tokens=stats.prompt_tokens, model=engine.model_id)
    a = TurnRecord(
        "assistant", answer, prompt_tokens=stats.prompt_tokens, cached_tokens=stats.cached_tokens,
        prefilled_tokens=stats.prefilled_tokens, generated_tokens=stats.generated_tokens, ttft_s=stats.ttft_s,
        tokens_per_s=stats.tokens_per_s, model=engine.model_id, finish_reason=stats.finish_reason,
    )
    return q, a


def _record(
    store: Store, engine: Engine, session_id: str, question: str, answer: str, state: Any, turn_no: int,
    notice: Notice, keep_snapshot: bool = True,
) -> str:
    snap = _save_snapshot(store, engine, session_id, state, turn_no, notice) if keep_snapshot else None
    store.add_exchange(session_id, *_turn_records(engine, question, answer, state), snapshot=snap)
    if not snap:
        return ""
    keep = store.latest_snapshot(session_id)
    for old in store.drop_snapshots(session_id, keep_id=keep["id"] if keep else None):
        snapshot_file(old).unlink(missing_ok=True)
    return _within_budget(store, snap, notice)


def _within_budget(store: Store, snap: dict, notice: Notice) -> str:
    """Prune the least recently used snapshots to the budget; the new one's path, or "" when it alone is over."""
    budget = snapshot_budget()
    pruned = prune_snapshots(store, budget, protect=snap["path"])
    if snap["path"] in pruned.removed:
        notice(f"the KV snapshot ({format_bytes(snap['bytes'])}) is larger than the snapshot budget "
               f"({format_bytes(budget)}) and was not kept; raise {SNAPSHOT_BUDGET_ENV} to keep it")
        return ""
    if pruned.removed:
        notice(f"removed {plural(len(pruned.removed), 'older KV snapshot')} ({format_bytes(pruned.freed)}) "
               f"to stay within the {format_bytes(budget)} snapshot budget ({SNAPSHOT_BUDGET_ENV})")
    return snap["path"]


def start_session(
    store: Store,
    engine: Engine,
    *,
    paths: list[str],
    options: IngestOptions,
    question: str | Callable[[list[Document]], str],
    params: GenerationParams,
    on_text: TextSink,
    notice: Notice,
    system: str | None = None,
    command: str = "ask",
    model_ref: str = "",
    result: IngestResult | None = None,
    progress: Progress | None = None,
    prefill_progress: Progress | None = None,
    stop_event: threading.Event | None = None,
    keep_snapshot: bool = True,
) -> TurnResult:
    """Ingest `paths` (or use `result`), answer the first question and store the new session.

    `keep_snapshot=False` (`--no-snapshot`, and batch's default) keeps no KV snapshot: a follow-up then
    recomputes the documents."""
    result = result if result is not None else ingest(paths, options, notice, progress)
    documents = result.documents
    question_text = question(documents) if callable(question) else question
    packed = pack(result)
    check_size_estimate(len(packed), engine.context_limit, engine.model_name or "the model")
    prompt = build_prompt(packed, [], question_text, system)
    answer, state = run_turn(engine, prompt, params, on_text, progress=prefill_progress, stop_event=stop_event)
    inputs = [Path(p) for p in paths]
    records = source_records(engine, documents, inputs)
    title = ", ".join(d.source for d in documents[:3]) + (f" +{len(documents) - 3}" if len(documents) > 3 else "")
    session_id = new_session_id()  # the session and its first turn are recorded in one transaction
    snap = _save_snapshot(store, engine, session_id, state, 1, notice) if keep_snapshot else None
    store.create_session(
        title=title, command=command, engine=engine.name, model=model_ref or engine.model_name, model_id=engine.model_id,
        base_url=engine.base_url or "",
        system=system or "", prefix=prompt.prefix[0].content, inputs=[str(p) for p in inputs] + [CWD_MARK + os.getcwd()],
        options=options_to_json(options), prefix_tokens=engine.prefix_tokens(prompt), context_limit=engine.context_limit,
        sources=records, session_id=session_id, exchange=(*_turn_records(engine, question_text, answer, state), snap),
    )
    kept = _within_budget(store, snap, notice) if snap else ""
    return TurnResult(session_id, answer, state.stats, _sources_json(records), snapshot=kept)


CWD_MARK = "cwd:"  # last entry of a session's stored inputs: the directory relative paths were given from


def _stored_inputs(stored: list[str]) -> list[str]:
    """The session's input paths as given when run from the same directory (so the re-read sources
    keep their names in the prompt), else made absolute against the directory they were given from."""
    cwd = next((s[len(CWD_MARK):] for s in stored if s.startswith(CWD_MARK)), os.getcwd())
    paths = [s for s in stored if not s.startswith(CWD_MARK)]
    if Path(cwd) == Path.cwd():
        return paths
    return [str(Path(cwd) / p) for p in paths]


def history(store: Store, session_id: str) -> list[Message]:
    return [Message(t["role"], t["text"]) for t in store.turns(session_id)]


def _refresh(
    store: Store, engine: Engine, session: dict[str, Any], changed: list[str], passwords: tuple[str, ...], notice: Notice
) -> str:
    """Re-read the session's inputs as given (so files added to a directory since count too) and
    record the sources anew; when their text differs, also drop the KV snapshots of the old text.
    Returns the prefix."""
    sid = session["id"]
    inputs = _stored_inputs(json.loads(session["inputs"] or "[]"))
    options = options_from_json(json.loads(session["options"] or "{}"), passwords)
    result = ingest(inputs, options, notice)
    prompt = build_prompt(pack(result), [], "", session["system"] or None)
    prefix = prompt.prefix[0].content
    before = {src["path"] for src in store.sources(sid)}
    records = source_records(engine, result.documents, [Path(p) for p in inputs])
    after = {r.path for r in records}
    store.update_sources(sid, records, prefix, engine.prefix_tokens(prompt))
    if prefix == session["prefix"]:  # e.g. only a file's metadata changed: the saved KV still applies
        notice("re-read the sources: their text is unchanged")
        return prefix
    for old in store.drop_snapshots(sid):
        snapshot_file(old).unlink(missing_ok=True)
    what = [(changed, "changed"), (sorted(after - before), "added"), (sorted(before - after), "removed")]
    notice("re-read the sources: " + ("; ".join(f"{label} {', '.join(names)}" for names, label in what if names)
                                      or "their text changed"))
    return prefix


def continue_session(
    store: Store,
    engine: Engine,
    *,
    session_id: str | None,
    question: str,
    params: GenerationParams,
    on_text: TextSink,
    notice: Notice,
    refresh: bool = False,
    passwords: tuple[str, ...] = (),
    prefill_progress: Progress | None = None,
    keep_snapshot: bool = True,
) -> TurnResult:
    """Answer a follow-up in an existing session, reusing its newest KV snapshot when it can
    (and, unless `keep_snapshot` is False, saving a new one after the answer)."""
    session = store.session(session_id) if session_id else store.latest_session()
    sid = session["id"]
    prefix = session["prefix"]
    changed = changed_sources(store, sid)
    if refresh:
        prefix = _refresh(store, engine, session, changed, passwords, notice)
        changed = []
    elif changed:
        notice(
            f"{plural(len(changed), 'source')} changed since this session started ({', '.join(changed)}); "
            "answering from the text read then — pass --refresh to re-read them"
        )
    prompt = Prompt(prefix=[Message("system", prefix)], turns=[*history(store, sid), Message("user", question)])
    snapshot = None
    record = store.latest_snapshot(sid)
    if engine.keeps_snapshots:
        if record is None:
            notice("no KV snapshot for this session; recomputing the documents")
        else:
            try:
                snapshot = engine.load(snapshot_file(record["path"]))
            except (ScoutdocError, OSError, ValueError, RuntimeError) as exc:
                notice(f"KV snapshot unusable ({exc}); recomputing the documents")
    answer, state = run_turn(engine, prompt, params, on_text, snapshot=snapshot, progress=prefill_progress)
    turn_no = len(store.turns(sid)) // 2 + 1
    snap = _record(store, engine, sid, question, answer, state, turn_no, notice, keep_snapshot)
    return TurnResult(sid, answer, state.stats, _sources_json(store.sources(sid)), changed=changed, snapshot=snap)

