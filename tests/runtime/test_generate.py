"""Generation: chunked prefill, stop ids/strings, max tokens, UTF-8-safe streaming, seeded sampling."""

import pytest
import torch

from scoutdoc.runtime import Sampling, load_model
from scoutdoc.runtime.generate import StopMatcher, TextGeneration, TextStream, sample


@pytest.fixture(scope="module")
def model(tiny, tmp_path_factory, byte_tokenizer):
    hf = tiny.llama4(vocab_size=257, eos_token_id=256)
    m = load_model(tiny.save(hf, tmp_path_factory.mktemp("gen")), dtype="float32", device="cpu")
    m._tokenizer = byte_tokenizer  # the tiny model speaks bytes
    return m


PROMPT = list("The sea, the wind".encode())


def test_max_new_tokens_and_finish_reason(model):
    tokens = list(model.generate(PROMPT, max_new_tokens=7, stop_ids=[]))
    assert len(tokens) == 7
    gen = model.generate_text(PROMPT, max_new_tokens=7)
    text = "".join(gen)
    if gen.finish_reason == "length":
        assert len(gen.new_ids) == 7
    assert text.encode("utf-8", errors="replace")  # decodes without raising


def test_stop_id_ends_generation_without_yielding_it(model):
    free = list(model.generate(PROMPT, max_new_tokens=12, stop_ids=[]))
    stop = free[4]
    first = free.index(stop)
    assert list(model.generate(PROMPT, max_new_tokens=12, stop_ids=[stop])) == free[:first]


def test_stop_string_truncates_text(model):
    gen = model.generate_text(PROMPT, max_new_tokens=24)
    full = "".join(gen)
    stop = full[6:9]
    assert len(stop) == 3
    stopped = model.generate_text(PROMPT, max_new_tokens=24, stop=[stop, "never-appears"])
    assert "".join(stopped) == full[: full.index(stop)]
    assert stopped.finish_reason == "stop"


def test_seeded_sampling_is_reproducible(model):
    s = Sampling(temperature=1.0, top_p=0.95, top_k=50, seed=1234)
    a = list(model.generate(PROMPT, max_new_tokens=16, sampling=s, stop_ids=[]))
    b = list(model.generate(PROMPT, max_new_tokens=16, sampling=s, stop_ids=[]))
    c = list(model.generate(PROMPT, max_new_tokens=16, sampling=Sampling(1.0, 0.95, 50, seed=99), stop_ids=[]))
    assert a == b
    assert a != c


def test_greedy_equals_argmax_of_full_forward(model):
    tokens = list(model.generate(PROMPT, max_new_tokens=10, stop_ids=[], prefill_chunk=3))
    logits = model.logits(PROMPT + tokens[:-1])
    assert tokens == logits[len(PROMPT) - 1 :].argmax(-1).tolist()


def test_prefill_progress_and_session_continuation(model):
    calls = []
    session, _ = model.prefill(PROMPT, chunk=4, progress=lambda d, t, u: calls.append((d, t, u)))
    assert calls == [(min(i, len(PROMPT)), len(PROMPT), "tokens") for i in range(4, len(PROMPT) + 4, 4)]
    more = PROMPT + list(" and the shore".encode())
    _, continued = model.prefill(more, session=session)
    _, fresh = model.prefill(more)
    assert session.ids == more and session.cache.length == len(more)
    assert (continued - fresh).abs().max() <= 1e-5
    with pytest.raises(ValueError):
        model.prefill(list(b"different start"), session=session)


def test_sampling_filters():
    logits = torch.tensor([0.0, 3.0, 2.9, -1.0, 1.0])
    gen = torch.Generator().manual_seed(0)
    assert sample(logits, Sampling(), None) == 1
    tied = torch.tensor([0.0, 3.0, -1.0, 3.0] * 20000)  # greedy takes the first of equal logits, as argmax does
    assert sample(tied, Sampling(), None) == 1 == int(torch.argmax(tied))
    assert {sample(logits, Sampling(temperature=5.0, top_k=1), gen) for _ in range(50)} == {1}
    assert {sample(logits, Sampling(temperature=5.0, top_k=2), gen) for _ in range(200)} == {1, 2}
    assert {sample(logits, Sampling(temperature=1.0, top_p=0.01), gen) for _ in range(50)} == {1}
    assert {sample(logits, Sampling(temperature=100.0), gen) for _ in range(500)} == {0, 1, 2, 3, 4}


TEXT = "héllo 🙂 漢字, naïve café — ok"


@pytest.mark.parametrize("byte_level", [True, False])
def test_streaming_never_splits_utf8(byte_tokenizer, byte_level):
    class TextOnly:  # a tokenizer without byte access exercises the fallback path
        decode = staticmethod(byte_tokenizer.decode)

    stream = TextStream(byte_tokenizer if byte_level else TextOnly())
    pieces = [stream.push(t) for t in byte_tokenizer.encode(TEXT)] + [stream.flush()]
    assert "".join(pieces) == TEXT
    assert all("\ufffd" not in p for p in pieces)
    assert "🙂" in pieces and "漢" in pieces  # 4- and 3-byte characters emitted whole, once complete


def test_text_generation_streams_over_stop_string_across_pieces(byte_tokenizer):
    ids = byte_tokenizer.encode("abc STOP def")
    gen = TextGeneration(lambda: iter(ids), byte_tokenizer, stop=["STOP"], max_new_tokens=100)
    pieces = list(gen)
    assert "".join(pieces) == "abc " and gen.finish_reason == "stop"
    gen = TextGeneration(lambda: iter(ids), byte_tokenizer, stop=["STOPX"], max_new_tokens=len(ids))
    assert "".join(gen) == "abc STOP def" and gen.finish_reason == "length"


def test_stop_matcher_holds_back_partial_matches():
    m = StopMatcher(["</end>"])
    assert m.feed("answer </e") == "answer "
    assert m.feed("xtra") == "</extra"
    assert m.feed(" </en") == " "
    assert m.feed("d> tail") == "" and m.stopped


def test_default_prefill_pieces_are_aligned_to_the_attention_chunk(model, tiny):
    from scoutdoc.runtime.config import ModelConfig
    from scoutdoc.runtime.generate import DEFAULT_PREFILL_CHUNK, default_prefill_chunk

    assert default_prefill_chunk(ModelConfig.from_hf(tiny.LLAMA)) == DEFAULT_PREFILL_CHUNK  # dense
    assert default_prefill_chunk(ModelConfig.from_hf({**tiny.LLAMA4, "attention_chunk_size": 8192})) == 8192
    small_chunk = ModelConfig.from_hf({**tiny.LLAMA4, "attention_chunk_size": 300})
    assert default_prefill_chunk(small_chunk) == 300 * -(-DEFAULT_PREFILL_CHUNK // 300)  # smallest multiple >= default
    assert default_prefill_chunk(model.config) % model.config.attention_chunk_size == 0


def test_prefill_reports_tokens_done_of_total(model):
    seen = []
    session = model.new_session()
    model.prefill(PROMPT * 3, session=session, chunk=20, progress=lambda done, total, unit: seen.append((done, total, unit)))
    n = len(PROMPT) * 3
    assert seen == [(min(d, n), n, "tokens") for d in range(20, n + 20, 20)]


def test_new_cache_is_hybrid_unless_contiguous_is_asked_for(model):
    from scoutdoc.runtime.kvcache import HybridCache
    from scoutdoc.runtime.reference import ContiguousCache

    assert isinstance(model.new_cache(), HybridCache) and isinstance(model.new_session().cache, HybridCache)
    assert isinstance(model.new_cache("contiguous"), ContiguousCache)
    with pytest.raises(ValueError):
        model.new_cache("paged")


@pytest.mark.parametrize("kind", ["hybrid", "contiguous"])
def test_cache_buffers_are_sized_once_for_prompt_and_answer(model, kind):
    """Prefill in pieces and then decode: every layer's KV buffer is allocated once, for the whole
    context, instead of growing (and being copied) by doubling."""
    cache = model.new_cache(kind)
    layer = 0 if kind == "contiguous" else cache.global_layers[0]
    buffers = (lambda: cache.k[layer]) if kind == "contiguous" else (lambda: cache.dev_k[layer])
    seen = []
    prompt, answer = PROMPT * 20, 7  # past one 256-token block
    steps = model.generate(prompt, max_new_tokens=answer, session=model.new_session(cache), stop_ids=[],
                           prefill_chunk=64, progress=lambda *_: seen.append(buffers().data_ptr()))
    for _ in steps:
        seen.append(buffers().data_ptr())
    assert len(set(seen)) == 1
    capacity = buffers().shape[0]
    needed = len(prompt) + answer - 1
    assert capacity == needed if kind == "contiguous" else needed <= capacity < needed + cache.options.block_size


def looping(byte_tokenizer, intro: str, unit: str, consumed: list[int]):
    """A token source that says `intro`, then `unit` forever, counting what is taken from it."""

    def source():
        yield from byte_tokenizer.encode(intro)
        while True:
            for token in byte_tokenizer.encode(unit):
                consumed.append(token)
                yield token

    return source


def test_loop_guard_stops_a_repeating_answer_after_its_first_round(byte_tokenizer):
    consumed: list[int] = []
    gen = TextGeneration(looping(byte_tokenizer, "Intro. ", "The fee is EUR 2,400. ", consumed), byte_tokenizer,
                         stop=[], max_new_tokens=10_000, loop_window=16)
    assert "".join(gen) == "Intro. The fee is EUR 2,400. "
    assert gen.finish_reason == "repeat"
    assert len(consumed) < 3 * len("The fee is EUR 2,400. ")


def test_loop_guard_lets_short_repeats_through(byte_tokenizer):
    text = "| a | b |\n| a | c |\n" + "na " * 4 + "end"
    gen = TextGeneration(lambda: iter(byte_tokenizer.encode(text)), byte_tokenizer, stop=[], max_new_tokens=1000,
                         loop_window=16)
    assert "".join(gen) == text and gen.finish_reason == "stop"


def test_loop_guard_releases_held_text_before_a_stop_string(byte_tokenizer):
    text = "ab ab ab ab STOP tail"
    gen = TextGeneration(lambda: iter(byte_tokenizer.encode(text)), byte_tokenizer, stop=["STOP"], max_new_tokens=1000,
                         loop_window=32)
    assert "".join(gen) == "ab ab ab ab " and gen.finish_reason == "stop"


def test_greedy_loop_on_a_real_model_stops_cleanly(model):
    """The tiny seeded model, greedy and without its end token, repeats itself within 200 tokens after
    this prompt; the guard ends the answer there, a prefix of the unguarded one."""
    prompt = list(b"la la la la ")

    def run(window: int) -> TextGeneration:
        return TextGeneration(lambda: model.generate(prompt, 200, Sampling(), stop_ids=[]), model.tokenizer, [], 200,
                              loop_window=window)

    free = run(0)
    free_text = "".join(free)
    assert free.finish_reason == "length"
    guarded = run(8)
    text = "".join(guarded)
    assert guarded.finish_reason == "repeat" and len(guarded.new_ids) < 200
    assert free_text.startswith(text) and len(text) < len(free_text)


def test_repetition_penalty_touches_only_the_answers_tokens():
    from scoutdoc.runtime.generate import penalize

    logits = torch.tensor([2.0, -1.0, 3.0, 0.5])
    out = penalize(logits, [0, 1, 0], 2.0)
    assert out.tolist() == [1.0, -2.0, 3.0, 0.5]
    assert penalize(logits, [], 2.0) is logits and penalize(logits, [2], 1.0) is logits


def test_loop_guard_stops_at_a_whole_sentence_said_again(byte_tokenizer):
    """A sentence shorter than the window, said a second time, ends the answer before it; a
    sentence's tail said again, or a short one, does not."""
    text = ("The court decides. The fee is paid by the client. Then the dispute goes on. "
            "The fee is paid by the client. More.")
    gen = guarded(byte_tokenizer, text)
    assert "".join(gen) == "The court decides. The fee is paid by the client. Then the dispute goes on. "
    assert gen.finish_reason == "repeat"
    fine = "Yes. Really. Yes. The fee is paid by the client. So it is paid by the client. End."
    gen = guarded(byte_tokenizer, fine)
    assert "".join(gen) == fine and gen.finish_reason == "stop"


def test_a_list_item_said_again_ends_the_answer_without_its_number(byte_tokenizer):
    text = ("Points:\n1. The fee is paid by the client.\n2. The court decides disputes.\n"
            "3. The fee is paid by the client.\n4. More.")
    gen = guarded(byte_tokenizer, text)
    assert "".join(gen) == "Points:\n1. The fee is paid by the client.\n2. The court decides disputes.\n"
    assert gen.finish_reason == "repeat"
    listed = "1. One.\n- Two\n12) Three\n- "  # a number or bullet at the very end is still shown
    gen = guarded(byte_tokenizer, listed)
    assert "".join(gen) == listed and gen.finish_reason == "stop"


def guarded(byte_tokenizer, text: str) -> TextGeneration:
    """`text` streamed token by token through the loop guard, as a model would say it."""
    return TextGeneration(lambda: iter(byte_tokenizer.encode(text)), byte_tokenizer, stop=[], max_new_tokens=1000,
                          loop_window=64)
