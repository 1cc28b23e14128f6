"""The embedded engine on the real default model: prefix reuse through snapshots is exact."""

import pytest
import torch

from scoutdoc.engines import GenerationParams, open_engine
from scoutdoc.engines.embedded import rewind
from scoutdoc.errors import ModelError, SnapshotError
from scoutdoc.engines.chat import render
from scoutdoc.prompt import Message, Prompt, build_prompt

DOCS = (
    '<document source="contract.pdf" kind="pdf" pages="2">\n[page 1]\nThe Client pays EUR 2,400 per month. '
    "Either party may terminate with sixty (60) days' written notice.\n[page 2]\nGoverned by the laws of Ireland.\n</document>"
)
PARAMS = GenerationParams(max_tokens=12, temperature=0.0)


@pytest.fixture(scope="module")
def engine(smollm2_gguf):
    """The dense float32 path: there a snapshot follow-up equals a full recompute word for word (the
    default 4-bit kernels and bfloat16 round activations to bf16, where a near-tie can go either way;
    see tests/test_cli.py)."""
    return open_engine("embedded", model=str(smollm2_gguf), device="cpu", quantize="none", dtype="float32")


def _answer(engine, prompt, snapshot=None):
    state = engine.prefill(prompt, snapshot=snapshot)
    text = "".join(engine.generate(state, PARAMS))
    return text, state


@pytest.mark.slow
def test_counts_match_rendering(engine):
    prompt = build_prompt(DOCS, [], "How much does the Client pay?")
    r = render(engine.tokenizer, prompt)
    assert engine.prompt_tokens(prompt) == len(r.ids)
    assert engine.prefix_tokens(prompt) == len(r.prefix_ids)
    assert engine.context_limit == 8192


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
def test_interrupted_stream_records_interruption(engine):
    state = engine.prefill(build_prompt(DOCS, [], "Summarize the contract."))
    stream = engine.generate(state, GenerationParams(max_tokens=16))
    next(stream)
    stream.close()
    assert state.stats.finish_reason == "interrupted"
    assert state.stats.generated_tokens >= 1


@pytest.mark.slow
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


@pytest.fixture(scope="module")
def chunked_model(tmp_path_factory):
    """A tiny random Llama 4 written by transformers: RoPE layers attend within chunks of 8 tokens."""
    from transformers import Llama4ForCausalLM, Llama4TextConfig

    from scoutdoc.runtime import load_model

    torch.manual_seed(0)
    config = Llama4TextConfig(
        vocab_size=64, hidden_size=32, intermediate_size=32, intermediate_size_mlp=64, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, head_dim=16, num_local_experts=2, num_experts_per_tok=1,
        moe_layers=[1], no_rope_layers=[1, 0], attention_chunk_size=8, max_position_embeddings=128,
        initializer_range=0.2, bos_token_id=1, eos_token_id=2, pad_token_id=0, tie_word_embeddings=False,
    )
    path = tmp_path_factory.mktemp("tiny-llama4")
    Llama4ForCausalLM(config).eval().save_pretrained(path)
    return load_model(path, dtype="float32", device="cpu")


def test_rewind_into_an_earlier_chunk_restarts_at_that_chunk(chunked_model):
    m = chunked_model
    ids = list(range(3, 23))  # 20 tokens: chunks 0-7, 8-15, and 16-19 held by the chunked layers
    session, _ = m.prefill(ids)
    assert session.cache.truncate(13) is False  # position 13's chunk is gone from the chunked layers
    edited = ids[:13] + [40, 41, 42, 43]
    assert rewind(session, edited) == 8  # the start of that chunk is the longest usable point
    assert session.ids == edited[:8] and session.cache.length == 8
    _, last = m.prefill(edited, session=session)
    _, fresh = m.prefill(edited, session=m.new_session(m.new_cache("contiguous")))
    assert (last - fresh).abs().max() <= 1e-4

    session, _ = m.prefill(ids)
    assert rewind(session, ids[:18] + [50, 51]) == 18  # inside the current chunk: kept as is
    assert rewind(m.prefill(ids)[0], [9] + ids) == 0  # nothing in common: a fresh session


@pytest.mark.slow
def test_forced_backend_that_cannot_run_fails_before_loading(smollm2_gguf):
    with pytest.raises(ModelError, match="--attn flash"):
        open_engine("embedded", model=str(smollm2_gguf), device="cpu", attn="flash")


@pytest.mark.slow
def test_kv_options_spill_to_disk_and_snapshots_load_with_them(smollm2_gguf, engine, tmp_path):
    spill = tmp_path / "kv"
    tiered = open_engine("embedded", model=str(smollm2_gguf), device="cpu", kv_device_budget="1k", kv_disk=spill,
                         quantize="none", dtype="float32")
    prompt = build_prompt(DOCS, [], "How much does the Client pay?")
    answer, state = _answer(tiered, prompt)
    assert state.session.cache.memory_bytes()["global_disk"] > 0
    assert answer == _answer(engine, prompt)[0]
    tiered.save(state, tmp_path / "s.kv")
    loaded = tiered.load(tmp_path / "s.kv")
    assert loaded.session.cache.options.disk_dir == spill and loaded.session.cache.options.device_budget is not None


@pytest.mark.slow
def test_prompt_and_answer_ask_the_engine_load_watch_for_their_threads(engine, monkeypatch):
    """Each prompt piece and the decode steps run on the cores the engine's `LoadWatch` finds free
    (a busy core shared by two threads makes every operation wait for a time slice)."""
    asked = []
    monkeypatch.setattr(engine.load_watch, "threads", lambda ceiling: asked.append(ceiling) or 1)
    monkeypatch.setattr(engine, "prefill_chunk", 16)
    prompt = build_prompt(DOCS, [], "How much does the Client pay?")
    pieces = -(-engine.prompt_tokens(prompt) // 16)
    before = torch.get_num_threads()
    try:
        state = engine.prefill(prompt)
        assert len(asked) == pieces and torch.get_num_threads() == 1
        "".join(engine.generate(state, PARAMS))
    finally:
        torch.set_num_threads(before)
    # the first decode step, then the piece that closes the turn (its end-of-turn tokens)
    assert len(asked) == pieces + 2 and set(asked) == {engine.thread_ceiling}
