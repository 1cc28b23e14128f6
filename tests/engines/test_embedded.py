"""The embedded engine on the real default model: prefix reuse through snapshots is exact."""

import pytest

from scoutdoc.engines import GenerationParams, Message, Prompt, open_engine
from scoutdoc.errors import SnapshotError
from scoutdoc.prompt import build_prompt, render

DOCS = (
    '<document source="contract.pdf" kind="pdf" pages="2">\n[page 1]\nThe Client pays EUR 2,400 per month. '
    "Either party may terminate with sixty (60) days' written notice.\n[page 2]\nGoverned by the laws of Ireland.\n</document>"
)
PARAMS = GenerationParams(max_tokens=12, temperature=0.0)


@pytest.fixture(scope="module")
def engine(smollm2_gguf):
    return open_engine("embedded", model=str(smollm2_gguf), device="cpu")


def _answer(engine, prompt, snapshot=None):
    state = engine.prefill(prompt, snapshot=snapshot)
    text = "".join(engine.generate(state, PARAMS))
    return text, state


def test_counts_match_rendering(engine):
    prompt = build_prompt(DOCS, [], "How much does the Client pay?")
    r = render(engine.tokenizer, prompt)
    assert engine.prompt_tokens(prompt) == len(r.ids)
    assert engine.prefix_tokens(prompt) == len(r.prefix_ids)
    assert engine.context_limit == 8192


def test_follow_up_from_snapshot_equals_full_recompute(engine, tmp_path):
    first = build_prompt(DOCS, [], "How much does the Client pay?")
    answer1, state1 = _answer(engine, first)
    assert answer1.strip()
    assert state1.stats.cached_tokens == 0 and state1.stats.prefilled_tokens == state1.stats.prompt_tokens
    # After the answer the state holds exactly the closed conversation: the next prompt's prefix.
    follow = Prompt(prefix=first.prefix, turns=[*first.turns, Message("assistant", answer1), Message("user", "Which law governs it?")])
    follow_ids = render(engine.tokenizer, follow).ids
    held = list(state1.session.ids)
    assert follow_ids[: len(held)] == held

    size = engine.save(state1, tmp_path / "s.kv")
    assert size == (tmp_path / "s.kv").stat().st_size > 0
    snapshot = engine.load(tmp_path / "s.kv")
    cached_answer, cached_state = _answer(engine, follow, snapshot=snapshot)
    fresh_answer, fresh_state = _answer(engine, follow)

    assert cached_state.stats.cached_tokens == len(held)
    assert cached_state.stats.prefilled_tokens == len(follow_ids) - len(held)
    assert cached_state.stats.prefilled_tokens < 20  # only the new question and its headers
    assert fresh_state.stats.cached_tokens == 0
    assert cached_answer == fresh_answer


def test_corrupt_or_missing_snapshot_is_a_snapshot_error(engine, tmp_path):
    state = engine.prefill(build_prompt(DOCS, [], "Who pays?"))
    path = tmp_path / "s.kv"
    engine.save(state, path)
    data = bytearray(path.read_bytes())
    data[-100:] = bytes(100)  # damage the payload, keep the length
    path.write_bytes(bytes(data))
    with pytest.raises(SnapshotError):
        engine.load(path)
    with pytest.raises(SnapshotError):
        engine.load(tmp_path / "missing.kv")


def test_interrupted_stream_records_interruption(engine):
    state = engine.prefill(build_prompt(DOCS, [], "Summarize the contract."))
    stream = engine.generate(state, GenerationParams(max_tokens=16))
    next(stream)
    stream.close()
    assert state.stats.finish_reason == "interrupted"
    assert state.stats.generated_tokens >= 1


def test_diverging_history_rewinds_to_the_common_prefix(engine):
    first = build_prompt(DOCS, [], "How much does the Client pay?")
    _, state = _answer(engine, first)
    held = len(state.session.ids)
    # The stored conversation says something else than what the cache holds (an edited answer).
    edited = Prompt(prefix=first.prefix, turns=[*first.turns, Message("assistant", "EUR 2,400 a month."),
                                               Message("user", "And the notice period?")])
    ids = render(engine.tokenizer, edited).ids
    common = next(i for i, (a, b) in enumerate(zip(state.session.ids, ids)) if a != b)
    reused, reused_state = _answer(engine, edited, snapshot=state)
    fresh, _ = _answer(engine, edited)
    assert reused_state.stats.cached_tokens == common < held
    assert reused == fresh
