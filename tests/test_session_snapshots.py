"""Sessions with snapshots (the fake engine writes real files): --no-snapshot keeps none, the budget prunes."""

import pytest
from fakes import FakeEngine

from scoutdoc.engines import GenerationParams
from scoutdoc.ingest import IngestOptions
from scoutdoc.session import continue_session, start_session
from scoutdoc.store import Store, snapshot_file

PARAMS = GenerationParams(max_tokens=4, temperature=0.0)


@pytest.fixture
def engine():
    return FakeEngine()


@pytest.fixture
def setup(tmp_path, monkeypatch):
    monkeypatch.setenv("SCOUTDOC_HOME", str(tmp_path / "home"))
    doc = tmp_path / "note.txt"
    doc.write_text("The office moves to Leeds in May.\n")
    with Store(tmp_path / "home" / "scoutdoc.db") as store:
        yield store, doc


def _ask(store, engine, doc, notices, **kwargs):
    return start_session(store, engine, paths=[str(doc)], options=IngestOptions(), question="Where?", params=PARAMS,
                         on_text=lambda piece: None, notice=notices.append, **kwargs)


def test_no_snapshot_keeps_none_and_a_follow_up_recomputes(engine, setup):
    store, doc = setup
    notices: list[str] = []
    first = _ask(store, engine, doc, notices, keep_snapshot=False)
    assert first.snapshot == "" and store.snapshots(first.session_id) == []
    follow = continue_session(store, engine, session_id=first.session_id, question="When?", params=PARAMS,
                              on_text=lambda piece: None, notice=notices.append, keep_snapshot=False)
    assert "no KV snapshot for this session; recomputing the documents" in notices
    assert follow.stats.cached_tokens == 0 and store.snapshots(first.session_id) == []


def test_budget_prunes_the_least_recently_used_session(engine, setup, monkeypatch):
    store, doc = setup
    notices: list[str] = []
    first = _ask(store, engine, doc, notices)
    size = store.latest_snapshot(first.session_id)["bytes"]
    monkeypatch.setenv("SCOUTDOC_SNAPSHOT_BUDGET", str(size + size // 2))  # room for one snapshot, not two
    second = _ask(store, engine, doc, notices)
    assert store.snapshots(first.session_id) == [] and not snapshot_file(first.snapshot).exists()
    assert snapshot_file(second.snapshot).exists()
    assert any(n.startswith("removed 1 older KV snapshot (") for n in notices), notices
    monkeypatch.setenv("SCOUTDOC_SNAPSHOT_BUDGET", str(size // 2))  # the new one alone is over it
    third = _ask(store, engine, doc, notices)
    assert third.snapshot == "" and store.snapshots_by_use() == []
    assert "is larger than the snapshot budget" in notices[-1] and "SCOUTDOC_SNAPSHOT_BUDGET" in notices[-1]


def test_a_bad_budget_stops_before_any_work_and_records_nothing(engine, setup, monkeypatch):
    from scoutdoc.errors import UsageError

    store, doc = setup
    first = _ask(store, engine, doc, [])
    monkeypatch.setenv("SCOUTDOC_SNAPSHOT_BUDGET", "lots")
    with pytest.raises(UsageError, match="SCOUTDOC_SNAPSHOT_BUDGET"):
        _ask(store, engine, doc, [])
    with pytest.raises(UsageError, match="SCOUTDOC_SNAPSHOT_BUDGET"):
        continue_session(store, engine, session_id=first.session_id, question="When?", params=PARAMS,
                         on_text=lambda piece: None, notice=lambda text: None)
    assert len(engine.prefills) == 1 and len(store.sessions(10)) == 1 and len(store.turns(first.session_id)) == 2
    assert _ask(store, engine, doc, [], keep_snapshot=False).snapshot == ""  # no snapshot kept: no budget needed


def test_a_session_records_the_model_by_the_name_users_know(engine, setup):
    store, doc = setup
    sid = _ask(store, engine, doc, []).session_id  # no --model: the default, recorded by its catalog name
    assert store.session(sid)["model"] == engine.model_name


def test_an_interrupt_while_the_snapshot_is_saved_keeps_the_answer(engine, setup):
    """The answer is on the screen by then: it is recorded before the snapshot is written, so Ctrl-C
    (or a crash) during a long save loses the snapshot, not the turn."""
    store, doc = setup
    first = _ask(store, engine, doc, [])

    def interrupted(state, path):
        raise KeyboardInterrupt

    engine.save = interrupted
    with pytest.raises(KeyboardInterrupt):
        continue_session(store, engine, session_id=first.session_id, question="When?", params=PARAMS,
                         on_text=lambda piece: None, notice=lambda text: None)
    assert [t["text"] for t in store.turns(first.session_id) if t["role"] == "user"] == ["Where?", "When?"]
    with pytest.raises(KeyboardInterrupt):
        _ask(store, engine, doc, [])
    assert len(store.sessions(10)) == 2 and len(store.turns(store.latest_session()["id"])) == 2
