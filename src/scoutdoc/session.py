"""One question about some sources, or a follow-up in an existing session: ingest → prompt → engine → store.

This is the library behind `ask`, `summarize`, `chat` and each item of `batch`; the CLI only adds
rendering. A new session ingests and packs the sources once and stores the packed text (the prompt
prefix); a follow-up rebuilds the prompt from the store without re-ingesting, and hands the engine
the newest KV snapshot so only the new turn is prefilled. A snapshot that is missing, corrupt or
from another model is reported through `notice` and the turn is recomputed from scratch.

Every turn goes through `fit.fit` first: a prompt that fits is used unchanged; one that does not is
answered from retrieved passages or by map-reduce (`--fit`), and the user is told how (a notice, and
`TurnResult.fit`, stored with the answer). The session always stores the whole documents, so each
follow-up retrieves again for its own question. Only turns that saw the whole prompt save a KV
snapshot: a retrieved prompt changes with the next question, so its KV would not be reused.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import re
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from . import excerpt as excerpts
from . import fit as fitting
from . import grounding
from .engines import Engine, GenerationParams, Stats
from .errors import ScoutdocError, SessionError
from .hashing import sha256_file
from .ingest import IngestOptions, IngestResult, load_sources, pack, require_documents
from .ingest.document import Document
from .ingest.pack import pack_document, without_locators
from .progress import Progress
from .prompt import Message, Prompt, build_prompt, check_fits, question_text, split_system, summary_text
from .settings import SNAPSHOT_BUDGET_ENV, snapshots_dir
from .snapshots import prune_snapshots, snapshot_budget
from .store import SourceRecord, Store, TurnRecord, new_session_id, remove_snapshot_file, snapshot_file, usable_session
from .units import format_bytes
from .wording import plural, quoted

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
    fit: fitting.FitStats | None = None  # how the documents met the window


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


def _missing_sources(store: Store, session_id: str) -> set[str]:
    """The sources (archives named once) whose file is no longer there at all: deleted or moved."""
    return {src["path"].split("!", 1)[0] for src in store.sources(session_id)
            if src["abs_path"] and not os.path.lexists(src["abs_path"])}


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
    """Prefill and stream one answer; returns the answer text and the engine state after it. A set
    `stop_event` ends it with `Interrupted` between prompt pieces or answer tokens."""
    check_fits(engine.prompt_tokens(prompt), params.max_tokens, engine.context_limit, engine.model_name or "the model")
    state = engine.prefill(prompt, snapshot=snapshot, progress=_stoppable(progress, stop_event))
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


def _stoppable(progress: Progress | None, stop_event: threading.Event | None) -> Progress | None:
    """`progress`, checking `stop_event` first: a batch's Ctrl-C stops a long prompt after its piece
    instead of waiting for the whole prompt (minutes for a long document) and the answer."""
    if stop_event is None:
        return progress

    def report(done: int, total: int, unit: str) -> None:
        if stop_event.is_set():
            raise Interrupted()
        if progress is not None:
            progress(done, total, unit)

    return report


def window(engine: Engine, params: GenerationParams, earlier: list[Message]) -> fitting.Window:
    """The model's window as `fit` sees it: prompts measured by the engine with the earlier turns."""

    def measure(system: str, question: str) -> int:
        return engine.prompt_tokens(Prompt([Message("system", system)], [*earlier, Message("user", question)]))

    return fitting.Window(engine.context_limit, params.max_tokens, engine.count_tokens, measure,
                          engine.model_name or "the model")


def _with_passages(
    engine: Engine, system: str, question: str, notice: Notice, summary: bool = False, earlier: str = "",
) -> str:
    """What the model is asked: a question with its best-matching sentences before it (`earlier`,
    the conversation's previous question, helps choose them), a summary's instruction with the
    documents' central ones. Only the question itself is stored as the turn's text.

    A question none of whose words occurs in the documents is answered all the same (they may say
    it in other words), but the user is told: the default model then mostly invents an answer
    (benchmarks/qa/absent.jsonl)."""
    if summary:
        return summary_text(question, excerpts.key_sentences(system, engine.count_tokens))
    found = excerpts.excerpt(system, question, engine.count_tokens, earlier=earlier)
    if found.unmatched:
        notice(f"the documents do not contain {quoted(found.unmatched)}: the answer may not come from them")
    return question_text(question, found.lines, found.lead, found.unmatched)


def unsupported_names(answer: str, system: str, asked: list[str]) -> list[str]:
    """The names and numbers of the answer that neither the documents (the system message's, without
    the locators scoutdoc wrote) nor what was asked (the questions, the message around the question:
    its passages and instructions, and the system instructions) contain (`grounding`)."""
    instructions, documents = split_system(system)
    return grounding.unsupported(answer, without_locators(documents), [*asked, instructions])


_LAST_WORD = re.compile(r"\S+\s*$")


def _check_answer(answer: str, system: str, asked: list[str], notice: Notice, cut: bool = False) -> list[str]:
    """Tell the user what `unsupported_names` finds: what to check before trusting the answer. An
    answer `cut` by --max-tokens is checked without its last word, which may be cut short ("Bak")."""
    missing = unsupported_names(_LAST_WORD.sub("", answer) if cut else answer, system, asked)
    if missing:
        notice(grounding.note(missing))
    return missing


PART_TOKENS = 128  # the least a map-reduce part may answer in
PART_SHARE = 64  # and otherwise a part answers in up to 1/64 of the window


def part_tokens(max_tokens: int, context_limit: int) -> int:
    """How long one map-reduce part's answer may be: a partial answer only feeds the combining pass,
    which alone gets `max_tokens`. With the whole budget the default model's partial summaries ran
    on until a loop guard or the limit stopped them: the Netflix subtitles (4 parts) took 70 s, 41 s
    with parts of 128 tokens, the facts mentioned unchanged (docs/benchmarks.md)."""
    return min(max_tokens, max(PART_TOKENS, context_limit // PART_SHARE))


def run_fitted(
    engine: Engine,
    fitted: fitting.Fitted,
    earlier: list[Message],
    params: GenerationParams,
    on_text: TextSink,
    notice: Notice,
    snapshot: Any = None,
    progress: Progress | None = None,
    stop_event: threading.Event | None = None,
) -> tuple[str, Any]:
    """Answer what `fit` prepared: one prompt, or each map-reduce part (quietly, with a notice per
    part, in at most `part_tokens`) and then the combining pass, which alone is streamed to `on_text`.

    The turn's stats count every pass: the tokens all parts read and wrote, and the time to the first
    token the user sees, after the parts (the combining pass alone said 656 prompt tokens for a
    19-page PDF read in 2 parts)."""
    step = fitted
    part_params = dataclasses.replace(params, max_tokens=part_tokens(params.max_tokens, engine.context_limit))
    spent: list[Stats] = []
    while step.parts:
        partials = []
        for n, part in enumerate(step.parts, start=1):
            notice(f"reading part {n} of {len(step.parts)} ({part.where})")
            prompt = Prompt([Message("system", part.system)], [Message("user", part.question)])
            answer, state = run_turn(engine, prompt, part_params, lambda piece: None, progress=progress,
                                     stop_event=stop_event)
            partials.append((part.where, answer))
            spent.append(state.stats)
        step = fitting.combine(step, partials, window(engine, params, earlier))
    prompt = Prompt([Message("system", step.system)], [*earlier, Message("user", step.question)])
    answer, state = run_turn(engine, prompt, params, on_text, snapshot=snapshot, progress=progress, stop_event=stop_event)
    total = state.stats
    for part in spent:
        total.prompt_tokens += part.prompt_tokens
        total.cached_tokens += part.cached_tokens
        total.prefilled_tokens += part.prefilled_tokens
        total.generated_tokens += part.generated_tokens
        total.prefill_s += part.prefill_s
        total.decode_s += part.decode_s
        total.ttft_s += part.prefill_s + part.decode_s
    return answer, state


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


def _turn_records(
    engine: Engine, question: str, answer: str, state: Any, fitted: fitting.Fitted, unsupported: list[str],
) -> tuple[TurnRecord, TurnRecord]:
    fit = fitted.stats
    stats: Stats = state.stats
    asked = fitted.question if fitted.question != question and not fitted.parts else ""
    q = TurnRecord("user", question, prompt_tokens=stats.prompt_tokens, model=engine.model_id, asked=asked)
    a = TurnRecord(
        "assistant", answer, prompt_tokens=stats.prompt_tokens, cached_tokens=stats.cached_tokens,
        prefilled_tokens=stats.prefilled_tokens, generated_tokens=stats.generated_tokens, ttft_s=stats.ttft_s,
        tokens_per_s=stats.tokens_per_s, model=engine.model_id, finish_reason=stats.finish_reason,
        fit=json.dumps(fit.as_dict()), unsupported=json.dumps(unsupported, ensure_ascii=False) if unsupported else "",
    )
    return q, a


def _snapshot_if_whole(
    store: Store, engine: Engine, session_id: str, state: Any, turn_no: int, notice: Notice, fitted: fitting.Fitted,
    keep_snapshot: bool,
) -> dict | None:
    """Save and record the KV snapshot of the turn just recorded, only of one that saw the whole
    prompt: a retrieved or map-reduced one's KV holds another prefix, which no follow-up could reuse.
    It comes after the turn's record, so an interrupted or failed save loses the snapshot, never the answer."""
    fit = fitted.stats
    whole = fit.strategy == "full" or fit.passages_used == fit.passages_total and fit.windows == 1
    snap = _save_snapshot(store, engine, session_id, state, turn_no, notice) if whole and keep_snapshot else None
    if snap:
        store.add_snapshot(session_id, snap)
    return snap


def _record(
    store: Store, engine: Engine, session_id: str, question: str, answer: str, state: Any, turn_no: int,
    notice: Notice, fitted: fitting.Fitted, keep_snapshot: bool, unsupported: list[str],
) -> str:
    store.add_exchange(session_id, *_turn_records(engine, question, answer, state, fitted, unsupported))
    snap = _snapshot_if_whole(store, engine, session_id, state, turn_no, notice, fitted, keep_snapshot)
    if not snap:
        return ""
    keep = store.latest_snapshot(session_id)
    for old in store.drop_snapshots(session_id, keep_id=keep["id"] if keep else None):
        remove_snapshot_file(old)
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
    runtime: dict[str, Any] | None = None,
    result: IngestResult | None = None,
    progress: Progress | None = None,
    prefill_progress: Progress | None = None,
    stop_event: threading.Event | None = None,
    keep_snapshot: bool = True,
    fit: str = "auto",
    summary: bool = False,
) -> TurnResult:
    """Ingest `paths` (or use `result`), answer the first question and store the new session.

    `fit` is the strategy for documents longer than the window (`fit.STRATEGIES`); `summary` says the
    question asks for a summary, which `auto` then answers by map-reduce rather than retrieval.
    `keep_snapshot=False` (`--no-snapshot`, and batch's default) keeps no KV snapshot: a follow-up then
    recomputes the documents. `runtime` is how the engine was asked to run (`EngineChoice.runtime_record`),
    kept so that a follow-up runs the same way."""
    if keep_snapshot:
        snapshot_budget()  # a bad SCOUTDOC_SNAPSHOT_BUDGET stops here, not after the answer it would lose
    result = result if result is not None else ingest(paths, options, notice, progress)
    documents = result.documents
    question_text = question(documents) if callable(question) else question
    prompt = build_prompt(pack(result), [], question_text, system)
    whole = prompt.prefix[0].content
    fitted = fitting.fit(whole, _with_passages(engine, whole, question_text, notice, summary), window(engine, params, []),
                         fit, summary)
    if fitted.stats.notice():
        notice(fitted.stats.notice())
    answer, state = run_fitted(engine, fitted, [], params, on_text, notice, progress=prefill_progress,
                               stop_event=stop_event)
    missing = _check_answer(answer, whole, [question_text, fitted.question], notice, state.stats.finish_reason == "length")
    inputs = [Path(p) for p in paths]
    records = source_records(engine, documents, inputs)
    title = ", ".join(d.source for d in documents[:3]) + (f" +{len(documents) - 3}" if len(documents) > 3 else "")
    session_id = new_session_id()  # the session and its first turn are recorded in one transaction
    store.create_session(
        title=title, command=command, engine=engine.name, model=model_ref or engine.model_name, model_id=engine.model_id,
        base_url=engine.base_url or "",
        system=system or "", prefix=prompt.prefix[0].content, inputs=[str(p) for p in inputs] + [CWD_MARK + os.getcwd()],
        options=options_to_json(options), prefix_tokens=engine.prefix_tokens(prompt), context_limit=engine.context_limit,
        sources=records, session_id=session_id, runtime=runtime,
        exchange=(*_turn_records(engine, question_text, answer, state, fitted, missing), None),
    )
    snap = _snapshot_if_whole(store, engine, session_id, state, 1, notice, fitted, keep_snapshot)
    kept = _within_budget(store, snap, notice) if snap else ""
    return TurnResult(session_id, answer, state.stats, _sources_json(records), snapshot=kept, fit=fitted.stats)


CWD_MARK = "cwd:"  # last entry of a session's stored inputs: the directory relative paths were given from


@contextmanager
def _given_from(stored: list[str]) -> Iterator[list[str]]:
    """The session's input paths as given, read from the directory they were given from (so the
    re-read sources keep their names in the prompt, and its KV snapshot still applies, whatever the
    directory of the follow-up); made absolute against it if that directory is gone."""
    cwd = next((s[len(CWD_MARK):] for s in stored if s.startswith(CWD_MARK)), os.getcwd())
    paths = [s for s in stored if not s.startswith(CWD_MARK)]
    here = os.getcwd()
    try:
        os.chdir(cwd)
    except OSError:
        yield [str(Path(cwd) / p) for p in paths]
        return
    try:
        yield paths
    finally:
        os.chdir(here)


def history(store: Store, session_id: str, turns: list[dict[str, Any]] | None = None) -> list[Message]:
    """The conversation as the model saw it (a question with the passages it was given before it);
    `turns`: the session's turns when the caller has read them already."""
    turns = store.turns(session_id) if turns is None else turns
    return [Message(t["role"], t["asked"] or t["text"]) for t in turns]


def _refresh(
    store: Store, engine: Engine, session: dict[str, Any], changed: list[str], passwords: tuple[str, ...], notice: Notice
) -> str:
    """Re-read the session's inputs as given (so files added to a directory since count too) and
    record the sources anew; when their text differs, also drop the KV snapshots of the old text.
    Returns the prefix."""
    sid = session["id"]
    options = options_from_json(json.loads(session["options"] or "{}"), passwords)
    with _given_from(json.loads(session["inputs"] or "[]")) as inputs:
        result = ingest(inputs, options, notice)
        records = source_records(engine, result.documents, [Path(p) for p in inputs])
    prompt = build_prompt(pack(result), [], "", session["system"] or None)
    prefix = prompt.prefix[0].content
    before = {src["path"] for src in store.sources(sid)}
    after = {r.path for r in records}
    store.update_sources(sid, records, prefix, engine.prefix_tokens(prompt))
    if prefix == session["prefix"]:  # e.g. only a file's metadata changed: the saved KV still applies
        notice("re-read the sources: their text is unchanged")
        return prefix
    for old in store.drop_snapshots(sid):
        remove_snapshot_file(old)
    removed = sorted(before - after)
    what = [([c for c in changed if c not in removed], "changed"), (sorted(after - before), "added"), (removed, "removed")]
    notice("re-read the sources: " + ("; ".join(f"{label} {', '.join(names)}" for names, label in what if names)
                                      or "their text changed"))
    return prefix


@contextmanager
def one_turn_at_a_time(store: Store, session_id: str, notice: Notice) -> Iterator[None]:
    """Hold the session while a follow-up is answered: a second `ask -c` on it (another terminal, a
    script) waits and then answers with the first one's turn in its history, where both used to
    answer from the same history and be recorded as one conversation. A lock file per session beside
    the database, locked with flock: the system releases it when its process ends, even killed."""
    path = store.lock_file(session_id)
    try:
        path.parent.mkdir(exist_ok=True)
        handle = open(path, "a+b")
    except OSError as exc:
        raise SessionError(f"cannot lock session {session_id} ({exc}); check that {path.parent} is writable") from exc
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            notice(f"session {session_id} is answering another question; this one waits for it")
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield


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
    fit: str = "auto",
) -> TurnResult:
    """Answer a follow-up in an existing session, reusing its newest KV snapshot when it can (and,
    unless `keep_snapshot` is False, saving a new one after the answer); when the documents do not
    fit (any more, with the conversation so far) the passages are retrieved anew for this question."""
    if keep_snapshot:
        snapshot_budget()  # checked before any work, as in start_session
    sid = usable_session(store.session(session_id) if session_id else store.latest_session())["id"]
    with one_turn_at_a_time(store, sid, notice):
        session = usable_session(store.session(sid))  # as the turn before, if one was under way, left it
        prefix = session["prefix"]
        changed = changed_sources(store, sid)
        if refresh:
            prefix = _refresh(store, engine, session, changed, passwords, notice)
            changed = []
        elif changed:
            gone = _missing_sources(store, sid)
            for names, what in (([n for n in changed if n not in gone], "changed"), ([n for n in changed if n in gone], "gone")):
                if names:
                    notice(
                        f"{plural(len(names), 'source')} {what} since this session started ({', '.join(names)}); "
                        "answering from the text read then"
                        + (" — pass --refresh to re-read them" if what == "changed" else "")
                    )
        turns = store.turns(sid)  # none is added until this turn's own record: the session is held
        earlier = history(store, sid, turns)
        asked_before = next((t["text"] for t in reversed(turns) if t["role"] == "user"), "")
        fitted = fitting.fit(prefix, _with_passages(engine, prefix, question, notice, earlier=asked_before),
                             window(engine, params, earlier), fit)
        if fitted.stats.notice():
            notice(fitted.stats.notice())
        snapshot = None
        record = store.latest_snapshot(sid)
        if engine.keeps_snapshots and fitted.system == prefix:
            if record is None:
                if prefix == session["prefix"]:  # else the notice of the re-read text said why
                    notice("no KV snapshot for this session; recomputing the documents")
            else:
                try:
                    snapshot = engine.load(snapshot_file(record["path"]))
                except (ScoutdocError, OSError, ValueError, RuntimeError) as exc:
                    notice(f"KV snapshot unusable ({exc}); recomputing the documents")
        answer, state = run_fitted(engine, fitted, earlier, params, on_text, notice, snapshot=snapshot,
                                   progress=prefill_progress)
        missing = _check_answer(answer, prefix, [question, asked_before, fitted.question], notice,
                                state.stats.finish_reason == "length")
        turn_no = len(turns) // 2 + 1
        snap = _record(store, engine, sid, question, answer, state, turn_no, notice, fitted, keep_snapshot, missing)
        return TurnResult(sid, answer, state.stats, _sources_json(store.sources(sid)), changed=changed, snapshot=snap,
                          fit=fitted.stats)

