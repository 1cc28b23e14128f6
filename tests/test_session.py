"""session.py in process: a fake engine (tests/fakes.py), real ingestion and a real SQLite store.

The same flows run end to end with the real model in test_cli.py (marked slow); these cover every
branch of session.py in milliseconds.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import threading
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from fakes import FakeEngine, SaysEngine

from scoutdoc import session as conv
from scoutdoc.engines import Engine, GenerationParams
from scoutdoc.errors import ContextTooLongError, IngestError, SessionError
from scoutdoc.ingest import IngestOptions
from scoutdoc.excerpt import excerpt
from scoutdoc.prompt import Message, Prompt, question_text, summary_instruction
from scoutdoc.store import snapshot_file

PARAMS = GenerationParams(max_tokens=32)


@pytest.fixture
def notes(tmp_path) -> Path:
    path = tmp_path / "notes.txt"
    path.write_text("The meeting is on Tuesday.\n")
    return path


@dataclass
class Run:
    """What one turn showed the user: the streamed text and the notices."""

    streamed: list[str] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)

    def notice(self, text: str) -> None:
        self.notices.append(text)


def ask(store, engine, paths, question="When is the meeting?", run=None, **kw) -> conv.TurnResult:
    run = run or Run()
    return conv.start_session(store, engine, paths=[str(p) for p in paths], options=kw.pop("options", IngestOptions()),
                              question=question, params=kw.pop("params", PARAMS),
                              on_text=kw.pop("on_text", run.streamed.append), notice=run.notice, **kw)


def follow(store, engine, question="And where?", run=None, session_id=None, **kw) -> conv.TurnResult:
    run = run or Run()
    return conv.continue_session(store, engine, session_id=session_id, question=question,
                                 params=kw.pop("params", PARAMS), on_text=run.streamed.append, notice=run.notice, **kw)


def snapshot_paths(store, sid) -> list[Path]:
    return [snapshot_file(r["path"]) for r in store.snapshots(sid)]


def test_the_fake_engine_keeps_the_whole_protocol():
    """A member added to `Engine` fails here until the fake (and so these tests) know about it."""
    fake = FakeEngine()
    for name in Engine.__annotations__:
        assert hasattr(fake, name), name
    for name, member in vars(Engine).items():
        if callable(member) and not name.startswith("_"):
            assert list(inspect.signature(getattr(FakeEngine, name)).parameters) == list(inspect.signature(member).parameters), name


# --- a new session ----------------------------------------------------------------------------------


def test_new_session_streams_the_answer_and_records_everything(store, notes):
    engine, run, reading, prefilling = FakeEngine(), Run(), [], []
    result = ask(store, engine, [notes], run=run, system="Be brief.", progress=lambda *a: reading.append(a),
                 prefill_progress=lambda *a: prefilling.append(a))
    assert result.answer and "".join(run.streamed) == result.answer and run.notices == []
    s = result.stats
    assert reading == [(1, 1, "files")] and prefilling == [(s.prompt_tokens, s.prompt_tokens, "tokens")]
    assert s.cached_tokens == 0 and s.prefilled_tokens == s.prompt_tokens > 0 and s.finish_reason == "stop"

    session = store.session(result.session_id)
    assert (session["command"], session["engine"], session["model_id"]) == ("ask", "fake", engine.model_id)
    assert session["base_url"] == ""
    assert session["context_limit"] == engine.context_limit and session["system"] == "Be brief."
    assert "Tuesday" in session["prefix"] and session["prefix"].startswith("Be brief.")
    assert 0 < session["prefix_tokens"] < s.prompt_tokens
    assert json.loads(session["inputs"]) == [str(notes), conv.CWD_MARK + str(Path.cwd())]

    [source] = store.sources(result.session_id)
    assert source["path"] == str(notes) and source["kind"] == "text" and source["abs_path"] == str(notes.resolve())
    assert source["file_sha256"] == hashlib.sha256(notes.read_bytes()).hexdigest()
    assert result.sources == [{"path": str(notes), "kind": "text", "tokens": source["tokens"], "sha256": source["sha256"]}]

    question, answer = store.turns(result.session_id)
    assert (question["role"], question["text"]) == ("user", "When is the meeting?")
    assert (answer["role"], answer["text"], answer["prompt_tokens"]) == ("assistant", result.answer, s.prompt_tokens)
    assert answer["model"] == engine.model_id and answer["finish_reason"] == "stop"

    [snap] = store.snapshots(result.session_id)
    path = snapshot_file(snap["path"])
    assert snap["path"] == result.snapshot == f"{result.session_id}-0001.kv"  # relative to the data directory
    assert path.is_file() and snap["bytes"] == path.stat().st_size and snap["fingerprint"] == engine.model_id
    assert snap["tokens"] > s.prompt_tokens  # the answer and its end-of-turn marker are in the snapshot


def test_options_are_stored_without_passwords(store, notes):
    options = IngestOptions(exclude=("*.log",), passwords=("s3cret",))
    sid = ask(store, FakeEngine(), [notes], options=options).session_id
    stored = json.loads(store.session(sid)["options"])
    assert "passwords" not in stored and stored["exclude"] == ["*.log"]
    again = conv.options_from_json(stored, passwords=("other",))
    assert again.exclude == ("*.log",) and again.passwords == ("other",) and again.archive == options.archive


def test_question_from_the_documents_and_given_ingest_result(store, tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    for name in ("a.py", "b.py", "c.py", "d.py"):
        (repo / name).write_text(f"def {name[0]}():\n    return 1\n")
    result = conv.ingest([str(repo)], IngestOptions(), notice=pytest.fail)
    out = ask(store, FakeEngine(), [repo], question=lambda docs: summary_instruction(d.kind for d in docs),
              result=result, command="summarize")
    session = store.session(out.session_id)
    assert session["title"] == "a.py, b.py, c.py +1" and session["command"] == "summarize"
    assert store.turns(out.session_id)[0]["text"] == summary_instruction(["code"])
    assert [s["abs_path"] for s in store.sources(out.session_id)] == [str((repo / n).resolve()) for n in ("a.py", "b.py", "c.py", "d.py")]


def test_skipped_sources_are_noticed_and_nothing_usable_is_an_ingest_error(store, notes, tmp_path):
    run = Run()
    ask(store, FakeEngine(), [notes, tmp_path / "missing.pdf"], run=run)
    assert run.notices == [f"skipped {tmp_path / 'missing.pdf'}: no such file or directory; check the path"]
    with pytest.raises(IngestError, match="nothing could be ingested"):
        ask(store, FakeEngine(), [tmp_path / "missing.pdf"])


def test_archive_members_point_at_the_archive_hashed_once(store, tmp_path, monkeypatch):
    inbox = tmp_path / "inbox.zip"
    with zipfile.ZipFile(inbox, "w") as z:
        z.writestr("notes.txt", "The meeting is on Tuesday.\n")
        z.writestr("agenda.txt", "Budget, then hiring.\n")
    hashed = []
    real = conv.sha256_file
    monkeypatch.setattr(conv, "sha256_file", lambda p: hashed.append(p) or real(p))
    sid = ask(store, FakeEngine(), [inbox]).session_id
    sources = store.sources(sid)
    assert sorted(s["path"] for s in sources) == [f"{inbox}!agenda.txt", f"{inbox}!notes.txt"]
    digest = hashlib.sha256(inbox.read_bytes()).hexdigest()
    assert {(s["abs_path"], s["file_sha256"]) for s in sources} == {(str(inbox.resolve()), digest)}
    assert all(s["sha256"] != digest for s in sources) and len(hashed) == 1


def test_context_too_long_is_refused_before_any_work(store, notes):
    """With --fit full (the refusal --fit auto replaces by retrieval: see test_session_fit.py)."""
    engine = FakeEngine(context_limit=40)
    with pytest.raises(ContextTooLongError, match=r"fake \(fake-model-1\) holds 40") as refused:
        ask(store, engine, [notes], fit="full")
    assert refused.value.exit_code == 4
    assert engine.prefills == [] and store.sessions() == []
    needed = ask(store, FakeEngine(), [notes]).stats.prompt_tokens
    short = FakeEngine(context_limit=needed + 10)
    with pytest.raises(ContextTooLongError, match="lower --max-tokens to 10 or less"):  # fits, not with the answer
        ask(store, short, [notes], params=GenerationParams(max_tokens=1000))
    assert short.prefills == [] and len(store.sessions()) == 1


def test_a_stop_event_interrupts_the_stream_and_records_nothing(store, notes):
    stop = threading.Event()
    engine, streamed = FakeEngine(), []

    def on_text(piece: str) -> None:
        streamed.append(piece)
        stop.set()  # Ctrl-C while the first piece is shown

    with pytest.raises(conv.Interrupted):
        ask(store, engine, [notes], on_text=on_text, stop_event=stop)
    assert len(streamed) == 1 and store.sessions() == []
    assert engine.prefills[0].stats.finish_reason == "interrupted"  # the stream was closed


def test_a_stop_event_set_during_the_prompt_interrupts_before_any_answer(store, notes):
    stop = threading.Event()
    engine = FakeEngine(on_prefill=lambda prompt: stop.set())  # Ctrl-C while a long prompt is read
    streamed: list[str] = []
    with pytest.raises(conv.Interrupted):
        ask(store, engine, [notes], on_text=streamed.append, stop_event=stop)
    assert streamed == [] and engine.prefills == [] and store.sessions() == []


def test_generation_params_reach_the_engine(store, notes):
    cut = ask(store, FakeEngine(), [notes], params=GenerationParams(max_tokens=2))
    assert cut.stats.generated_tokens == 2 and cut.stats.finish_reason == "length"
    turn = store.turns(cut.session_id)[1]
    assert (turn["generated_tokens"], turn["finish_reason"]) == (2, "length")
    stopped = ask(store, FakeEngine(), [notes], params=GenerationParams(max_tokens=32, stop=[" to"]))
    assert stopped.answer.startswith("Answer ") and " to" not in stopped.answer and stopped.stats.finish_reason == "stop"


# --- follow-ups and snapshots -----------------------------------------------------------------------


def test_follow_up_reuses_the_snapshot_and_equals_a_full_recompute(store, notes):
    engine = FakeEngine()
    first = ask(store, engine, [notes])
    [snap] = store.snapshots(first.session_id)
    run, prefilling = Run(), []
    cached = follow(store, engine, run=run, prefill_progress=lambda *a: prefilling.append(a))
    assert run.notices == [] and cached.session_id == first.session_id
    s = cached.stats
    assert prefilling == [(s.prompt_tokens, s.prompt_tokens, "tokens")]
    assert s.cached_tokens == snap["tokens"] >= store.session(first.session_id)["prefix_tokens"]
    # only the new turn: the question, the passages it (with the one before it) matches, its length line
    assert 0 < s.prefilled_tokens == s.prompt_tokens - s.cached_tokens < 60
    stored = store.turns(first.session_id)[-1]
    assert (stored["cached_tokens"], stored["prefilled_tokens"]) == (s.cached_tokens, s.prefilled_tokens)
    # only the newest snapshot is kept, and the older file is gone
    [newest] = store.snapshots(first.session_id)
    assert newest["path"] == cached.snapshot == f"{first.session_id}-0002.kv"
    assert not snapshot_file(snap["path"]).exists() and snapshot_file(newest["path"]).is_file()

    # the same question from a copy of the conversation without its snapshot
    snapshot_file(newest["path"]).unlink()
    store.drop_snapshots(first.session_id)
    recompute_run = Run()
    again = follow(store, engine, question="And who?", run=recompute_run)
    assert again.stats.cached_tokens == 0 and "no KV snapshot" in recompute_run.notices[0]
    assert [t["role"] for t in store.turns(first.session_id)] == ["user", "assistant"] * 3


def test_snapshot_answer_equals_recompute_answer(store, notes):
    engine = FakeEngine()
    reused_sid, recomputed_sid = ask(store, engine, [notes]).session_id, ask(store, engine, [notes]).session_id
    for path in snapshot_paths(store, recomputed_sid):
        path.unlink()
    reused = follow(store, engine, session_id=reused_sid)
    recomputed = follow(store, engine, session_id=recomputed_sid)
    assert reused.stats.cached_tokens > 0 and recomputed.stats.cached_tokens == 0
    assert reused.answer == recomputed.answer


@pytest.mark.parametrize("damage", ["missing", "corrupt", "truncated", "other model"])
def test_unusable_snapshot_falls_back_to_recompute_with_a_notice(store, notes, damage):
    engine = FakeEngine()
    sid = ask(store, engine, [notes]).session_id
    expected = follow(store, engine, session_id=ask(store, engine, [notes]).session_id).answer
    path = snapshot_paths(store, sid)[0]
    if damage == "missing":
        path.unlink()
    elif damage == "corrupt":
        path.write_bytes(path.read_bytes().replace(b"Tuesday", b"Tuesdax"))
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[:20])
    run = Run()
    other = FakeEngine(model_id="fake-model-2") if damage == "other model" else engine
    result = follow(store, other, session_id=sid, run=run)
    [line] = run.notices
    assert line.startswith("KV snapshot unusable") and line.endswith("recomputing the documents")
    assert {"missing": "missing", "corrupt": "checksum", "truncated": "truncated", "other model": "different model"}[damage] in line
    assert result.stats.cached_tokens == 0 and result.stats.prefilled_tokens == result.stats.prompt_tokens
    if damage != "other model":
        assert result.answer == expected
    [fresh] = store.snapshots(sid)  # a new snapshot replaces the unusable one
    assert snapshot_file(fresh["path"]).is_file() and fresh["fingerprint"] == other.model_id


def test_a_snapshot_that_cannot_be_saved_is_noticed_and_the_turn_still_recorded(store, notes):
    run = Run()
    result = ask(store, FakeEngine(save_error=OSError("disk full")), [notes], run=run)
    assert run.notices == ["could not save the KV snapshot (disk full); a follow-up will recompute the documents"]
    assert result.snapshot == "" and store.snapshots(result.session_id) == []
    assert len(store.turns(result.session_id)) == 2
    later = Run()
    follow(store, FakeEngine(), run=later)
    assert later.notices == ["no KV snapshot for this session; recomputing the documents"]


def test_an_old_snapshot_that_cannot_be_removed_does_not_end_the_turn(store, notes):
    """Its path turned into a directory: the follow-up recomputes, answers and is recorded, and the
    cleanup after it gives up on that path quietly (it ended in an internal error after the answer)."""
    sid = ask(store, FakeEngine(), [notes]).session_id
    [old] = store.snapshots(sid)
    path = snapshot_file(old["path"])
    path.unlink()
    path.mkdir()
    result = follow(store, FakeEngine())
    assert result.session_id == sid and len(store.turns(sid)) == 4 and path.is_dir()
    assert [r["path"] for r in store.snapshots(sid)] == [result.snapshot]


@pytest.mark.parametrize("damage", ["prefix = NULL", "inputs = '{bad'", "options = '[1]'"])
def test_a_session_record_damaged_by_hand_is_a_session_error_and_can_be_deleted(store, notes, damage):
    sid = ask(store, FakeEngine(), [notes]).session_id
    store.db.execute(f"UPDATE sessions SET {damage} WHERE id = ?", [sid])
    with pytest.raises(SessionError, match="damaged.*sessions delete"):
        follow(store, FakeEngine(), refresh=True)
    store.delete_session(sid)
    assert store.sessions() == []


def test_an_engine_without_snapshots_saves_and_loads_none(store, notes):
    engine = FakeEngine()
    engine.keeps_snapshots = False  # like a server, which keeps its own prefix cache
    first = ask(store, engine, [notes])
    assert first.snapshot == "" and store.snapshots(first.session_id) == []
    assert list((store.path.parent / "snapshots").glob("*")) == []
    run = Run()
    follow(store, engine, run=run)
    assert run.notices == []


def test_follow_up_picks_the_session_and_rejects_unknown_ones(store, notes, tmp_path):
    with pytest.raises(SessionError, match="no session to continue"):
        follow(store, FakeEngine())
    engine = FakeEngine()
    first = ask(store, engine, [notes]).session_id
    second = ask(store, engine, [notes], question="Who?").session_id
    assert follow(store, engine).session_id == second  # the latest
    assert follow(store, engine, session_id=first[:6]).session_id == first  # by a unique prefix
    with pytest.raises(SessionError, match="no session 'nope'"):
        follow(store, engine, session_id="nope")
    history = [m.content for m in conv.history(store, first)]
    assert store.turns(first)[0]["text"] == "When is the meeting?" and len(history) == 4
    found = excerpt(store.session(first)["prefix"], "When is the meeting?", FakeEngine().count_tokens)
    assert history[0] == store.turns(first)[0]["asked"] == question_text("When is the meeting?", found.lines, found.lead)


# --- changed sources and --refresh ------------------------------------------------------------------


def test_a_changed_source_is_noticed_and_the_old_text_answers(store, notes):
    engine = FakeEngine()
    sid = ask(store, engine, [notes]).session_id
    prefix = store.session(sid)["prefix"]
    notes.write_text("The meeting moved to Friday.\n")
    run = Run()
    result = follow(store, engine, run=run)
    assert result.changed == [str(notes)]
    assert run.notices == [f"1 source changed since this session started ({notes}); "
                           "answering from the text read then — pass --refresh to re-read them"]
    assert store.session(sid)["prefix"] == prefix and result.stats.cached_tokens > 0


def test_a_deleted_source_counts_as_changed_and_is_named_gone(store, notes):
    engine = FakeEngine()
    sid = ask(store, engine, [notes]).session_id
    notes.unlink()
    assert conv.changed_sources(store, sid) == [str(notes)]
    run = Run()
    follow(store, engine, run=run)
    assert run.notices[0] == f"1 source gone since this session started ({notes}); answering from the text read then"


def test_deleting_a_session_waits_for_the_follow_up_under_way_on_it(store, notes, tmp_path):
    from scoutdoc.cli.sessions import sessions_delete

    sid = ask(store, FakeEngine(), [notes]).session_id
    done = threading.Event()
    with conv.one_turn_at_a_time(store, sid, lambda message: None):  # a follow-up holds the session
        deleting = threading.Thread(target=lambda: (sessions_delete(sid, db=store.path), done.set()))
        deleting.start()
        assert not done.wait(0.3) and store.session(sid)["id"] == sid
    deleting.join(10)
    assert done.is_set() and not store.sessions(10)


@pytest.mark.parametrize("replacement", ["pipe", "endless"])
def test_a_source_replaced_by_a_pipe_or_an_endless_device_counts_as_changed(store, notes, replacement):
    """Hashing it would wait for a writer, or read /dev/zero for ever: every follow-up hung."""
    import os

    sid = ask(store, FakeEngine(), [notes]).session_id
    notes.unlink()
    if replacement == "pipe":
        os.mkfifo(notes)
    else:
        notes.symlink_to("/dev/zero")
    assert conv.changed_sources(store, sid) == [str(notes)]


def test_refresh_rereads_a_changed_file_and_drops_the_old_snapshots(store, notes):
    engine = FakeEngine()
    sid = ask(store, engine, [notes]).session_id
    old = snapshot_paths(store, sid)
    notes.write_text("The meeting moved to Friday.\n")
    run = Run()
    result = follow(store, engine, run=run, refresh=True)
    assert result.changed == [] and result.session_id == sid
    assert run.notices == [f"re-read the sources: changed {notes}"]  # which says why the documents are read anew
    session = store.session(sid)
    assert "Friday" in session["prefix"] and "Tuesday" not in session["prefix"]
    assert session["prefix_tokens"] == engine.prefix_tokens(Prompt([Message("system", session["prefix"])], []))
    assert not any(p.exists() for p in old) and result.stats.cached_tokens == 0
    [source] = store.sources(sid)
    assert source["file_sha256"] == hashlib.sha256(notes.read_bytes()).hexdigest()
    assert conv.changed_sources(store, sid) == []
    assert "Friday" in engine.prefills[-1].prompt.prefix[0].content  # answered from the new text
    assert follow(store, engine).stats.cached_tokens > 0  # and the next turn reuses the new snapshot


def test_refresh_of_unchanged_text_keeps_the_snapshot(store, tmp_path):
    engine = FakeEngine()
    folder = tmp_path / "minutes"
    folder.mkdir()
    (folder / "monday.txt").write_text("Monday: the budget was approved.\n")
    sid = ask(store, engine, [folder]).session_id
    run = Run()
    same = follow(store, engine, run=run, refresh=True)
    assert run.notices == ["re-read the sources: their text is unchanged"]
    assert same.stats.cached_tokens > 0 and same.session_id == sid


def test_refresh_names_added_and_removed_files(store, tmp_path):
    engine = FakeEngine()
    folder = tmp_path / "minutes"
    folder.mkdir()
    (folder / "monday.txt").write_text("Monday: the budget was approved.\n")
    (folder / "friday.txt").write_text("Friday: nothing happened.\n")
    sid = ask(store, engine, [folder]).session_id
    (folder / "tuesday.txt").write_text("Tuesday: the hiring plan was rejected.\n")
    (folder / "friday.txt").unlink()
    run = Run()
    follow(store, engine, run=run, refresh=True)
    assert "added tuesday.txt; removed friday.txt" in run.notices[0]
    assert [s["path"] for s in store.sources(sid)] == ["monday.txt", "tuesday.txt"]
    assert "hiring plan was rejected" in store.session(sid)["prefix"]


def test_refresh_notices_a_changed_archive_once(store, tmp_path):
    inbox = tmp_path / "inbox.zip"

    def write(notes: str) -> None:
        with zipfile.ZipFile(inbox, "w") as z:
            z.writestr("notes.txt", notes)
            z.writestr("agenda.txt", "Budget, then hiring.\n")

    engine = FakeEngine()
    write("The meeting is on Tuesday.\n")
    sid = ask(store, engine, [inbox]).session_id
    assert follow(store, engine).changed == []
    write("The meeting moved to Friday.\n")
    assert follow(store, engine).changed == [str(inbox)]  # the archive, once for its two members
    run = Run()
    follow(store, engine, run=run, refresh=True)
    assert run.notices[0] == f"re-read the sources: changed {inbox}"
    assert "Friday" in store.session(sid)["prefix"]


def test_refresh_from_another_directory_finds_relative_inputs(store, tmp_path, monkeypatch):
    engine = FakeEngine()
    work = tmp_path / "work"
    work.mkdir()
    (work / "notes.txt").write_text("The meeting is on Tuesday.\n")
    monkeypatch.chdir(work)
    sid = ask(store, engine, ["notes.txt"]).session_id
    assert store.sources(sid)[0]["path"] == "notes.txt"
    (work / "notes.txt").write_text("The meeting moved to Friday.\n")
    monkeypatch.chdir(tmp_path)
    run = Run()
    follow(store, engine, run=run, refresh=True)
    assert "Friday" in store.session(sid)["prefix"]
    assert store.sources(sid)[0]["abs_path"] == str((work / "notes.txt").resolve())
    assert run.notices[0].startswith("re-read the sources: changed notes.txt")
    assert [src["path"] for src in store.sources(sid)] == ["notes.txt"] and Path.cwd() == tmp_path
    again = Run()  # unchanged since: the names in the prompt stay, so does the KV snapshot
    follow(store, engine, run=again, refresh=True)
    assert again.notices == ["re-read the sources: their text is unchanged"]
    assert store.latest_snapshot(sid) is not None


def test_refresh_reads_encrypted_pdfs_with_the_passwords_given_again(store, tmp_path):
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter(clone_from=PdfReader(Path(__file__).resolve().parents[1] / "examples" / "contract.pdf"))
    writer.encrypt(user_password="s3cret", algorithm="AES-128")
    locked = tmp_path / "locked.pdf"
    with locked.open("wb") as f:
        writer.write(f)
    engine = FakeEngine(context_limit=1 << 20)
    options = IngestOptions(passwords=("s3cret",))
    sid = ask(store, engine, [locked], options=options).session_id
    with pytest.raises(IngestError):  # the password is never stored, so a refresh without it reads nothing
        follow(store, engine, refresh=True, run=Run())
    run = Run()
    follow(store, engine, refresh=True, passwords=("s3cret",), run=run)
    assert run.notices == ["re-read the sources: their text is unchanged"]
    assert store.sources(sid)[0]["kind"] == "pdf"


def test_a_question_whose_words_occur_nowhere_is_answered_with_a_notice(store, notes):
    run = Run()
    ask(store, FakeEngine(), [notes], question="Governing law?", run=run)
    assert run.notices == ['the documents do not contain "governing" and "law": the answer may not come from them']
    [asked, _] = store.turns(store.latest_session()["id"])
    assert asked["asked"].endswith('Note: The documents do not contain the words "governing" and "law".')
    quiet = Run()
    ask(store, FakeEngine(), [notes], question="When is the meeting?", run=quiet)
    assert quiet.notices == []


def test_names_and_numbers_the_documents_lack_are_noted_after_the_answer(store, notes):
    run = Run()
    result = ask(store, SaysEngine("The meeting is on Monday, room 12, with Zephyr [notes.txt, L1-1]."), [notes], run=run)
    assert result.answer.startswith("The meeting is on Monday")
    assert run.notices == ['the answer names "Monday", "12" and "Zephyr", which the documents do not contain: '
                           "check it against them"]
    grounded = Run()  # the question's own words, and what the documents say, are no news
    ask(store, SaysEngine("Zephyr asked: it is on Tuesday."), [notes], question="When does Zephyr meet?", run=grounded)
    assert grounded.notices == []
    follow_up = Run()
    follow(store, SaysEngine("Zephyr meets on Tuesday with Ana."), question="And with whom?", run=follow_up)
    assert follow_up.notices == ['the answer names "Ana", which the documents do not contain: check it against them']
    # each answer keeps its names with it, for `sessions show` and for queries of the database
    assert [t["unsupported"] for t in store.turns(result.session_id)] == ["", '["Monday", "12", "Zephyr"]']
    assert [t["unsupported"] for t in store.turns(store.latest_session()["id"])] == ["", "", "", '["Ana"]']


def test_the_locators_scoutdoc_writes_and_its_instructions_are_not_what_the_documents_say(store, tmp_path):
    # [L1-3], a transcript's cue times and the citation rules' examples ([page 3], L10-24) hold
    # numbers the documents never say; the user's own instructions count as asked
    notes, talk = tmp_path / "notes.txt", tmp_path / "talk.vtt"
    notes.write_text("The meeting is on Tuesday.\nIt is short.\nBring tea.\n")
    talk.write_text("WEBVTT\n\n00:00:45.000 --> 00:00:48.000\n<v Ana>We meet on Tuesday.\n")
    run = Run()
    ask(store, SaysEngine("It lasts 45 minutes in room 3, says Ana, for 24 people."), [notes, talk], run=run,
        system="You answer for Zephyr Ltd.")
    assert run.notices == ['the answer names "45", "3" and "24", which the documents do not contain: check it against them']
    zephyr = Run()
    ask(store, SaysEngine("Zephyr meets on Tuesday."), [notes], run=zephyr, system="You answer for Zephyr Ltd.")
    assert zephyr.notices == []


def test_a_last_word_cut_by_the_token_limit_is_not_noted(store, notes):
    cut, whole = Run(), Run()
    says = "It is Zephyr of Bak ery"  # the token limit cuts "Bakery" short
    assert ask(store, SaysEngine(says), [notes], run=cut, params=GenerationParams(max_tokens=5)).answer.endswith("Bak")
    ask(store, SaysEngine(says), [notes], run=whole)
    assert cut.notices[-1] == 'the answer names "Zephyr", which the documents do not contain: check it against them'
    assert whole.notices[-1] == 'the answer names "Zephyr" and "Bak", which the documents do not contain: check it against them'
    lines = Run()  # the last word only, also after a line break: "7777" of a column of numbers
    ask(store, SaysEngine("Fees:\n9999\n8888\n7777\n6666"), [notes], run=lines, params=GenerationParams(max_tokens=4))
    assert lines.notices[-1] == 'the answer names "9999" and "8888", which the documents do not contain: check it against them'


def test_a_second_follow_up_on_one_session_waits_for_the_first_and_sees_its_turn(store, notes):
    from scoutdoc.store import Store

    first = ask(store, FakeEngine(), [notes])
    entered, release = threading.Event(), threading.Event()

    def hold(prompt: Prompt) -> None:
        if "One?" in prompt.turns[-1].content:
            entered.set()
            release.wait(10)

    engine, runs, errors = FakeEngine(on_prefill=hold), {"One?": Run(), "Two?": Run()}, []

    def turn(question: str) -> None:
        try:
            with Store(store.path) as own:  # each process has its own connection
                follow(own, engine, question, run=runs[question], session_id=first.session_id)
        except Exception as exc:  # reported below, not lost in the thread
            errors.append(exc)

    one = threading.Thread(target=turn, args=("One?",))
    one.start()
    assert entered.wait(10)
    two = threading.Thread(target=turn, args=("Two?",))
    two.start()
    for _ in range(500):
        if runs["Two?"].notices:
            break
        threading.Event().wait(0.01)
    assert runs["Two?"].notices == [f"session {first.session_id} is answering another question; this one waits for it"]
    release.set()
    one.join(10), two.join(10)
    assert not errors
    assert [t["text"] for t in store.turns(first.session_id) if t["role"] == "user"] == ["When is the meeting?", "One?", "Two?"]
    assert any("One?" in m.content for m in engine.prefills[-1].prompt.turns[:-1])  # the second saw the first
    assert store.lock_file(first.session_id).exists()
    store.delete_session(first.session_id)
    assert not store.lock_file(first.session_id).exists()
