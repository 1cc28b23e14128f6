"""batch.py in process: a fake engine (tests/fakes.py), real ingestion and a real SQLite store.

test_cli_batch.py runs the same flows in subprocesses with the real model (kill -9, Ctrl-C, two
processes on one database; marked slow); these cover batch.py's bookkeeping in milliseconds.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections import Counter
from pathlib import Path

import pytest
from fakes import FakeEngine, SaysEngine
from rich.console import Console

from scoutdoc.batch import SUMMARY_KEY, Tally, expand_inputs, run_batch
from scoutdoc.engines import GenerationParams
from scoutdoc.errors import INTERRUPTED_EXIT_CODE, UsageError
from scoutdoc.ingest import IngestOptions
from scoutdoc.prompt import CODEBASE_SUMMARY_INSTRUCTION, SUMMARY_INSTRUCTION, Prompt
from scoutdoc.store import Store

QUESTION = "Who is mentioned?"


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("SCOUTDOC_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.fixture
def docs(tmp_path) -> Path:
    """Three good notes, one that the engine fails on, one too long for the context and a broken PDF."""
    folder = tmp_path / "docs"
    folder.mkdir()
    for i, name in enumerate(("ana", "priya", "tom")):
        (folder / f"{i}-{name}.txt").write_text(f"Note {i}: {name} orders {i * 7} loaves of bread.\n")
    (folder / "3-explodes.txt").write_text("This note makes the engine fail: KABOOM.\n")
    (folder / "4-long.txt").write_text("word " * 400 + "\n")
    (folder / "5-broken.pdf").write_bytes(b"%PDF-1.7\n1 0 obj << /Type /Catalog >>\nthis is not a real pdf\n")
    return folder


def explode_on_kaboom(prompt: Prompt) -> None:
    if "KABOOM" in prompt.prefix[0].content:
        raise RuntimeError("the device fell over")


def batch(inputs, out: Path, engine: FakeEngine, *, db: Path, question: str | None = QUESTION, resume=False,
          concurrency=1, console: Console | None = None, force=False, fit: str = "full", system: str | None = None,
          max_tokens: int = 8) -> tuple[Tally, str]:
    console = console or Console(file=io.StringIO(), width=200, color_system=None)
    tally = run_batch([str(p) for p in inputs], engine=engine, db=db, out=out, question=question,
                      params=GenerationParams(max_tokens=max_tokens), options=IngestOptions(), system=system, resume=resume,
                      concurrency=concurrency, model_ref="fake", console=console, force=force, fit=fit)
    return tally, console.file.getvalue()


def lines(out: Path) -> list[dict]:
    return [json.loads(line) for line in out.read_text().splitlines() if line.strip()]


def ok_items(db: Path) -> Counter:
    with Store(db) as store:
        return Counter(r["source"] for r in store.batch_items() if r["status"] == "ok")


def test_batch_answers_each_document_and_records_failures_without_stopping(docs, tmp_path):
    db, out = tmp_path / "b.db", tmp_path / "out.jsonl"
    engine = FakeEngine(context_limit=300, on_prefill=explode_on_kaboom)
    tally, shown = batch([docs], out, engine, db=db)
    assert (tally.ok, tally.failed, tally.skipped) == (3, 3, 0)
    rows = {r["source"]: r for r in lines(out)}
    assert len(rows) == len(lines(out)) == 6  # one line per document
    for name in ("0-ana.txt", "1-priya.txt", "2-tom.txt"):
        row = rows[name]
        assert row["status"] == "ok" and row["answer"].startswith("Answer ") and row["question"] == QUESTION
        assert row["stats"]["prompt_tokens"] > 0 and row["stats"]["cached_tokens"] == 0 and row["model"] == engine.model_id
    assert rows["3-explodes.txt"]["error"] == "RuntimeError: the device fell over"
    assert rows["4-long.txt"]["error_type"] == "ContextTooLongError" and "holds 300" in rows["4-long.txt"]["error"]
    assert rows["5-broken.pdf"]["status"] == "error" and rows["5-broken.pdf"]["error_type"] == "IngestError"
    assert "failed 3-explodes.txt: RuntimeError: the device fell over" in shown and "batch:" in shown

    with Store(db) as store:
        items = store.batch_items()
        sessions = store.sessions()
        assert {(r["source"], r["status"]) for r in items} == {
            ("0-ana.txt", "ok"), ("1-priya.txt", "ok"), ("2-tom.txt", "ok"),
            ("3-explodes.txt", "error"), ("4-long.txt", "error")}  # unreadable files never reach the store
        assert len(sessions) == 3 and {s["command"] for s in sessions} == {"batch"}
        for name in ("0-ana.txt", "1-priya.txt", "2-tom.txt"):
            [turn_q, turn_a] = store.turns(rows[name]["session_id"])
            assert turn_q["text"] == QUESTION and turn_a["text"] == rows[name]["answer"]


def test_with_fit_auto_a_long_document_is_answered_from_retrieved_passages(docs, tmp_path):
    db, out = tmp_path / "b.db", tmp_path / "out.jsonl"
    tally, _ = batch([docs / "4-long.txt", docs / "0-ana.txt"], out, FakeEngine(context_limit=300), db=db, fit="auto")
    assert (tally.ok, tally.failed) == (2, 0)
    rows = {Path(r["source"]).name: r for r in lines(out)}
    long = rows["4-long.txt"]["stats"]["fit"]
    assert long["strategy"] == "retrieve" and 0 < long["passages_used"] < long["passages_total"]
    assert rows["0-ana.txt"]["stats"]["fit"]["strategy"] == "full"
    # what `ask` prints as notes goes into the row
    absent = 'the documents do not contain "mentioned": the answer may not come from them'
    assert rows["4-long.txt"]["notes"] == [absent, f"answered from {long['passages_used']} of {long['passages_total']} passages, L1-1"]
    assert rows["0-ana.txt"]["notes"] == [absent]


def test_a_row_notes_the_names_its_answer_takes_from_nowhere(docs, tmp_path):
    out = tmp_path / "out.jsonl"
    tally, _ = batch([docs / "0-ana.txt"], out, SaysEngine("It is Zephyr."), db=tmp_path / "b.db")
    assert tally.ok == 1
    [row] = lines(out)
    assert row["notes"][-1] == 'the answer names "Zephyr", which the documents do not contain: check it against them'


def test_summaries_are_keyed_on_a_marker_and_pick_the_instruction_by_kind(tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "app.py").write_text("def main():\n    return 0\n")
    (folder / "notes.txt").write_text("Budget approved.\n")
    out, db = tmp_path / "out.jsonl", tmp_path / "b.db"
    tally, _ = batch([folder], out, FakeEngine(), db=db, question=None)
    assert tally.ok == 2
    rows = {r["source"]: r for r in lines(out)}
    assert rows["app.py"]["question"] == CODEBASE_SUMMARY_INSTRUCTION
    assert rows["notes.txt"]["question"] == SUMMARY_INSTRUCTION
    assert {r["question_key"] for r in rows.values()} == {SUMMARY_KEY}


def test_resume_reuses_only_answers_made_with_the_same_settings(tmp_path):
    folder, db = tmp_path / "in", tmp_path / "b.db"
    folder.mkdir()
    (folder / "a.txt").write_text("Ana orders bread.\n")
    batch([folder], tmp_path / "first.jsonl", FakeEngine(), db=db, max_tokens=24)
    engine = FakeEngine()  # another results file, another --system: nothing is reused from the store
    tally, _ = batch([folder], tmp_path / "new.jsonl", engine, db=db, resume=True, max_tokens=6, system="Be brief.")
    assert (tally.ok, tally.skipped) == (1, 0) and len(engine.prefills) == 1
    [row] = lines(tmp_path / "new.jsonl")
    assert row["settings"]["system"] == "Be brief." and row["settings"]["max_tokens"] == 6
    again = FakeEngine()  # the same settings again: the stored answer is copied
    tally, _ = batch([folder], tmp_path / "copy.jsonl", again, db=db, resume=True, max_tokens=6, system="Be brief.")
    assert (tally.ok, tally.skipped) == (0, 1) and not again.prefills
    assert lines(tmp_path / "copy.jsonl") == [row]


def test_resume_after_a_document_changed_keeps_one_line_for_it(tmp_path):
    folder, db, out = tmp_path / "in", tmp_path / "b.db", tmp_path / "out.jsonl"
    folder.mkdir()
    (folder / "a.txt").write_text("The vault code is 1111.\n")
    (folder / "b.txt").write_text("The boat is red.\n")
    batch([folder], out, FakeEngine(), db=db)
    first = {r["source"]: r for r in lines(out)}
    (folder / "a.txt").write_text("The vault code is 2222.\n")
    tally, _ = batch([folder], out, FakeEngine(), db=db, resume=True)
    assert (tally.ok, tally.skipped) == (1, 1)
    rows = lines(out)
    assert sorted(r["source"] for r in rows) == ["a.txt", "b.txt"]
    assert {r["source"]: r["sha256"] for r in rows}["a.txt"] != first["a.txt"]["sha256"]


def test_interrupted_batch_resumes_answering_each_document_once(docs, tmp_path):
    db, out = tmp_path / "b.db", tmp_path / "out.jsonl"
    pressed = []

    def ctrl_c_on_the_second(prompt: Prompt) -> None:
        explode_on_kaboom(prompt)
        if "priya" in prompt.prefix[0].content or pressed:
            pressed.append(True)
            raise KeyboardInterrupt

    console = Console(file=io.StringIO(), width=200, color_system=None)
    with pytest.raises(SystemExit) as stopped:
        batch([docs], out, FakeEngine(context_limit=300, on_prefill=ctrl_c_on_the_second), db=db, console=console)
    assert stopped.value.code == INTERRUPTED_EXIT_CODE
    shown = console.file.getvalue()  # "after N answered" counts the results seen before the interrupt's
    assert "interrupted after" in shown and "run the same command with --resume to finish" in shown
    assert [r["source"] for r in lines(out) if r["status"] == "ok"] == ["0-ana.txt"]

    engine = FakeEngine(context_limit=300, on_prefill=explode_on_kaboom)
    tally, shown = batch([docs], out, engine, db=db, resume=True)
    assert (tally.ok, tally.skipped, tally.failed) == (2, 1, 3) and "already done" in shown
    assert len(engine.prefills) == 2  # priya and tom; ana was not asked again
    by_source = Counter(r["source"] for r in lines(out))
    assert set(by_source) == {p.name for p in docs.iterdir()} and set(by_source.values()) == {1}
    assert ok_items(db) == Counter({"0-ana.txt": 1, "1-priya.txt": 1, "2-tom.txt": 1})


def test_resume_repairs_a_file_cut_by_a_crash_from_the_store(docs, tmp_path):
    db, out = tmp_path / "b.db", tmp_path / "out.jsonl"
    batch([docs], out, FakeEngine(context_limit=300, on_prefill=explode_on_kaboom), db=db)
    before = {r["source"]: r for r in lines(out)}
    text = out.read_text().splitlines(keepends=True)
    # killed between the store's commit and the file write (tom's line lost), and in the middle of a
    # line; ana's line twice (an append repeated by hand)
    kept = [line for line in text if '"2-tom.txt"' not in line]
    out.write_text("".join(kept) + text[0] + text[0][: len(text[0]) // 2])
    engine = FakeEngine(context_limit=4096)  # the failures are retried, and now succeed
    tally, _ = batch([docs], out, engine, db=db, resume=True)
    assert (tally.ok, tally.skipped, tally.failed) == (2, 3, 1)  # the broken PDF still fails
    rows = lines(out)
    assert Counter(r["source"] for r in rows) == Counter({name: 1 for name in before})
    after = {r["source"]: r for r in rows}
    for name in ("0-ana.txt", "1-priya.txt", "2-tom.txt"):
        assert after[name] == before[name]  # copied from the store, not answered again
    assert len(engine.prefills) == 2
    assert ok_items(db) == Counter({"0-ana.txt": 1, "1-priya.txt": 1, "2-tom.txt": 1, "3-explodes.txt": 1, "4-long.txt": 1})


def test_an_existing_output_is_kept_unless_forced(docs, tmp_path):
    db, out = tmp_path / "b.db", tmp_path / "out.jsonl"
    engine = FakeEngine(context_limit=300)
    batch([docs / "0-ana.txt"], out, engine, db=db)
    with pytest.raises(UsageError, match="already exists; pass --resume .* --force"):
        batch([docs / "1-priya.txt"], out, engine, db=db)
    assert [r["source"] for r in lines(out)] == [str(docs / "0-ana.txt")]  # untouched
    batch([docs / "1-priya.txt"], out, engine, db=db, force=True)  # --force starts over
    assert [r["source"] for r in lines(out)] == [str(docs / "1-priya.txt")]
    assert len(engine.prefills) == 2


def test_an_output_that_is_not_a_regular_file_is_refused_and_a_link_is_written_through(docs, tmp_path):
    """The results file is renamed into place: a pipe, a device or a directory given as --out would
    be replaced by a plain file (as root, `--out /dev/stdout` once was), and a link by a copy."""
    import os

    db, engine = tmp_path / "b.db", FakeEngine()
    pipe = tmp_path / "pipe.jsonl"
    os.mkfifo(pipe)
    for out in (pipe, tmp_path, Path("/dev/null")):
        with pytest.raises(UsageError, match="is (a directory|not a regular file)"):
            batch([docs / "0-ana.txt"], out, engine, db=db, force=True)
    assert pipe.is_fifo() and Path("/dev/null").is_char_device()
    target, link = tmp_path / "target.jsonl", tmp_path / "link.jsonl"
    target.write_text("")
    link.symlink_to(target)
    batch([docs / "0-ana.txt"], link, engine, db=db)
    assert link.is_symlink() and [r["source"] for r in lines(target)] == [str(docs / "0-ana.txt")]


def test_resume_passes_over_lines_that_are_not_result_objects(docs, tmp_path):
    db, out = tmp_path / "b.db", tmp_path / "out.jsonl"
    out.write_text('[1, 2]\n"text"\nnull\n\x00\x01junk\n')
    tally, _ = batch([docs / "0-ana.txt"], out, FakeEngine(), db=db, resume=True)
    assert tally.ok == 1 and [r["source"] for r in lines(out)] == [str(docs / "0-ana.txt")]


def test_another_model_answers_again(docs, tmp_path):
    db, out = tmp_path / "b.db", tmp_path / "out.jsonl"
    batch([docs / "0-ana.txt"], out, FakeEngine(), db=db)
    other = FakeEngine(model_id="fake-model-2")
    tally, _ = batch([docs / "0-ana.txt"], out, other, db=db, resume=True)
    assert tally.ok == 1 and len(other.prefills) == 1
    assert sorted(r["model"] for r in lines(out)) == ["fake-model-1", "fake-model-2"]


def test_concurrent_workers_answer_each_document_once(tmp_path):
    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(12):
        (folder / f"n{i:02d}.txt").write_text(f"Note {i}: order {i * 7} loaves.\n")
    db, out = tmp_path / "b.db", tmp_path / "out.jsonl"
    engine = FakeEngine()
    tally, _ = batch([folder], out, engine, db=db, concurrency=4)
    assert tally.ok == 12 and len(engine.prefills) == 12
    rows = lines(out)
    assert sorted(r["source"] for r in rows) == sorted(p.name for p in folder.iterdir())
    assert len({r["session_id"] for r in rows}) == 12
    assert ok_items(db) == Counter({p.name: 1 for p in folder.iterdir()})


def test_archive_members_and_globs(tmp_path, monkeypatch):
    inbox = tmp_path / "inbox.zip"
    with zipfile.ZipFile(inbox, "w") as z:
        z.writestr("notes/standup.txt", "Standup: Ana fixed the login bug.\n")
        z.writestr("notes/todo.md", "# Todo\n\n- Priya: import the spreadsheets.\n")
    (tmp_path / "a.txt").write_text("Alpha.\n")
    monkeypatch.chdir(tmp_path)
    db, out = tmp_path / "b.db", tmp_path / "out.jsonl"
    tally, _ = batch(["*.zip", "*.txt"], out, FakeEngine(), db=db)
    assert tally.ok == 3
    assert sorted(r["source"] for r in lines(out)) == ["a.txt", "inbox.zip!notes/standup.txt", "inbox.zip!notes/todo.md"]


def test_expand_inputs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("b.txt", "a.txt", "[x].txt"):
        (tmp_path / name).write_text("x\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.txt").write_text("x\n")
    assert expand_inputs(["*.txt", "sub"]) == ["[x].txt", "a.txt", "b.txt", "sub"]  # sorted
    assert expand_inputs(["[x].txt"]) == ["[x].txt"]  # an existing name is taken literally
    assert expand_inputs(["**/*.txt"]) == ["[x].txt", "a.txt", "b.txt", "sub/c.txt"]
    with pytest.raises(UsageError, match=r"the pattern '\*\.pdf' matches no files"):
        expand_inputs(["*.pdf"])


def test_inputs_with_nothing_to_read_are_a_usage_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="hold no files"):
        batch([tmp_path / "empty"], tmp_path / "out.jsonl", FakeEngine(), db=tmp_path / "b.db")


def test_the_command_exits_9_when_no_document_could_be_answered_and_0_when_some_were(docs, tmp_path, monkeypatch, capsys):
    import sys

    from scoutdoc.cli import batch as batch_cli
    from scoutdoc.cli import main

    def run(engine, *args: str) -> int:
        monkeypatch.setattr(batch_cli, "open_engine_for", lambda choice: engine)
        monkeypatch.setattr(sys, "argv", ["scoutdoc", "batch", *args, "--db", str(tmp_path / "b.db")])
        try:
            main()
        except SystemExit as exc:
            return exc.code or 0
        return 0

    def always_fails(prompt: Prompt) -> None:
        raise RuntimeError("the device fell over")

    out = tmp_path / "all-failed.jsonl"
    assert run(FakeEngine(on_prefill=always_fails), str(docs / "0-ana.txt"), str(docs / "1-priya.txt"), "-q", QUESTION, "-o", str(out)) == 9
    assert "no document could be answered (2 failures" in capsys.readouterr().err
    assert [r["status"] for r in lines(out)] == ["error", "error"]  # each reason kept
    some = tmp_path / "some.jsonl"
    assert run(FakeEngine(context_limit=300, on_prefill=explode_on_kaboom), str(docs), "-q", QUESTION, "-o", str(some),
               "--max-tokens", "8") == 0  # three answered, three failed
