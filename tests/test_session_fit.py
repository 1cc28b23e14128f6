"""session.py with documents longer than the window: retrieval, map-reduce, and nothing changed when they fit.

A fake engine (tests/fakes.py) counts words as tokens; ingestion and the store are real.
"""

from __future__ import annotations

import json
import random

import pytest
from fakes import FakeEngine

from scoutdoc import session as conv
from scoutdoc.engines import GenerationParams
from scoutdoc.errors import ContextTooLongError
from scoutdoc.ingest import IngestOptions
from scoutdoc.prompt import SUMMARY_INSTRUCTION, build_prompt

PARAMS = GenerationParams(max_tokens=32)
WORDS = "river ledger copper lantern meadow signal harbor orchard quarry timber valley summit".split()


@pytest.fixture
def long_notes(tmp_path):
    """About 12,000 word-tokens of filler with two facts far apart."""
    rng = random.Random(7)
    lines = [" ".join(rng.choice(WORDS) for _ in range(12)) + "." for _ in range(1000)]
    lines[612] = "The vault combination is 4417 PELICAN."
    lines[87] = "The courier arrives on Thursday at noon."
    path = tmp_path / "long.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


class Notices(list):
    def __call__(self, text: str) -> None:
        self.append(text)


def ask(store, engine, paths, question, **kw):
    notices = kw.pop("notices", Notices())
    return conv.start_session(store, engine, paths=[str(p) for p in paths], options=IngestOptions(), question=question,
                              params=kw.pop("params", PARAMS), on_text=lambda piece: None, notice=notices, **kw)


def system_of(state) -> str:
    return state.prompt.prefix[0].content


def test_a_question_about_a_document_ten_times_the_window_is_answered_from_retrieved_passages(store, long_notes):
    engine, notices = FakeEngine(context_limit=1200), Notices()
    result = ask(store, engine, [long_notes], "What is the vault combination?", notices=notices)
    [state] = engine.prefills
    system = system_of(state)
    assert "The vault combination is 4417 PELICAN." in system and "[L" in system
    assert state.stats.prompt_tokens + PARAMS.max_tokens <= engine.context_limit
    assert result.fit.strategy == "retrieve" and 0 < result.fit.passages_used < result.fit.passages_total
    assert notices[0].startswith(f"answered from {result.fit.passages_used} of {result.fit.passages_total} passages, L")
    [question, answer] = store.turns(result.session_id)
    assert json.loads(answer["fit"]) == result.fit.as_dict() and question["fit"] == ""
    # the session keeps all of the documents, for follow-ups to retrieve from; no KV snapshot of a partial prompt
    assert "The courier arrives on Thursday at noon." in store.session(result.session_id)["prefix"]
    assert result.snapshot == "" and store.snapshots(result.session_id) == []


def test_a_follow_up_retrieves_again_for_its_own_question(store, long_notes):
    engine = FakeEngine(context_limit=1200)
    first = ask(store, engine, [long_notes], "What is the vault combination?")
    later = conv.continue_session(store, engine, session_id=first.session_id, question="When does the courier arrive?",
                                  params=PARAMS, on_text=lambda piece: None, notice=Notices())
    system = system_of(engine.prefills[-1])
    assert "The courier arrives on Thursday at noon." in system
    assert later.fit.strategy == "retrieve"
    assert engine.prefills[-1].stats.prompt_tokens + PARAMS.max_tokens <= engine.context_limit


def test_a_follow_up_naming_its_subject_by_a_pronoun_retrieves_with_the_question_before_it(store, long_notes):
    engine = FakeEngine(context_limit=1200)
    first = ask(store, engine, [long_notes], "When does the courier arrive?")
    conv.continue_session(store, engine, session_id=first.session_id, question="And who signs for it?",
                          params=PARAMS, on_text=lambda piece: None, notice=Notices())
    # "signs" matches nothing: the earlier question's passage is still the one retrieved and repeated
    assert "The courier arrives on Thursday at noon." in system_of(engine.prefills[-1])
    [_, _, again, _] = store.turns(first.session_id)
    assert again["text"] == "And who signs for it?" and "courier arrives" in again["asked"]
    assert "Most relevant passage" not in again["asked"]  # a lead only for the question's own clear winner


def test_auto_leaves_a_fitting_prompt_byte_identical_and_the_follow_up_reuses_the_snapshot(store, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("The meeting is on Tuesday in room 4.\n")
    engine = FakeEngine()
    result = ask(store, engine, [notes], "When is the meeting?")
    full = ask(store, FakeEngine(), [notes], "When is the meeting?", fit="full")
    assert system_of(engine.prefills[0]) == system_of(FakeEngine().prefill(
        build_prompt(store.session(full.session_id)["prefix"].split("\n\n", 2)[2].rstrip("\n"), [], "q")))
    assert system_of(engine.prefills[0]) == store.session(full.session_id)["prefix"]
    assert result.fit.strategy == "full" and result.snapshot
    later = conv.continue_session(store, engine, session_id=result.session_id, question="Where?", params=PARAMS,
                                  on_text=lambda piece: None, notice=Notices())
    assert later.stats.cached_tokens > 0 and later.fit.strategy == "full"


def test_full_still_refuses_a_document_longer_than_the_window(store, long_notes):
    engine = FakeEngine(context_limit=1200)
    with pytest.raises(ContextTooLongError, match="holds 1,200") as refused:
        ask(store, engine, [long_notes], "What is the vault combination?", fit="full")
    assert refused.value.exit_code == 4 and engine.prefills == []


def test_a_summary_of_a_long_document_reads_every_part_then_combines(store, long_notes):
    engine, notices = FakeEngine(context_limit=4000), Notices()
    result = ask(store, engine, [long_notes], "Summarize these documents.", summary=True, notices=notices)
    parts, final = engine.prefills[:-1], engine.prefills[-1]
    assert result.fit.strategy == "map-reduce" and result.fit.windows == len(parts) >= 3
    assert sum("reading part" in n for n in notices) == len(parts)
    seen = "".join(system_of(p).split('kind="text">\n', 1)[1].rsplit("</document>", 1)[0] for p in parts)
    assert "The vault combination" in seen and "The courier arrives" in seen
    combined = system_of(final)
    assert 'source="partial answers"' in combined and combined.count("\n[L") == len(parts)
    assert result.answer.startswith("Answer ")
    read = sum(len(p.ids) for p in engine.prefills)  # every pass's prompt counts, not the combining one's alone
    assert result.stats.prompt_tokens == read > len(final.ids)
    # each part answers in at most 128 tokens (1/64 of a window of 4,000 is less); the combining pass in all 1,000
    long = ask(store, engine, [long_notes], "Summarize these documents.", summary=True,
               params=GenerationParams(max_tokens=1000))
    budgets = [p.max_tokens for p in engine.asked[-long.fit.windows - 1:]]
    assert long.fit.windows > 1 and budgets == [128] * long.fit.windows + [1000]


def test_a_part_answers_in_a_64th_of_the_window_at_least_128_tokens_and_at_most_the_budget():
    assert conv.part_tokens(512, 8192) == 128
    assert conv.part_tokens(512, 131_072) == 512
    assert conv.part_tokens(4096, 131_072) == 2048
    assert conv.part_tokens(64, 8192) == 64


def test_a_summary_is_asked_with_the_key_sentences_and_recorded_as_the_instruction(store, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("Minutes of the harbour board.\nThe harbour board approved the new crane for the harbour.\n"
                     "Lunch was served.\nThe crane for the harbour costs 2 million.\n")
    engine = FakeEngine()
    result = ask(store, engine, [notes], SUMMARY_INSTRUCTION, summary=True)
    [state] = engine.prefills
    asked = [m.content for m in state.prompt.turns if m.role == "user"][-1]
    assert asked.startswith("Key sentences from the documents:\n[notes.txt, L1-1] Minutes of the harbour board.\n")
    assert "[notes.txt, L4-4] The crane for the harbour costs 2 million." in asked
    assert asked.endswith("\n" + SUMMARY_INSTRUCTION) and "Lunch" not in asked
    assert store.turns(result.session_id)[0]["text"] == SUMMARY_INSTRUCTION


def test_map_reduce_on_request_for_a_question(store, long_notes):
    engine = FakeEngine(context_limit=4000)
    result = ask(store, engine, [long_notes], "What is the vault combination?", fit="map-reduce")
    assert result.fit.strategy == "map-reduce" and len(engine.prefills) == result.fit.windows + 1
