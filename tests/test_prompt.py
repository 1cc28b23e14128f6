"""Prompt layout with the default model's real tokenizer and chat template (SmolLM2, ChatML)."""

import pytest

from scoutdoc.engines.chat import cut_after_last_special, render
from scoutdoc.errors import ContextTooLongError
from scoutdoc.prompt import (
    ANSWER_LENGTH,
    CITATION_RULES,
    CODEBASE_SUMMARY_INSTRUCTION,
    SUMMARY_INSTRUCTION,
    Message,
    build_prompt,
    check_fits,
    question_text,
    summary_instruction,
    summary_text,
)

DOCS = '<document source="contract.pdf" kind="pdf" pages="2">\n[page 1]\nNotice: sixty days.\n</document>'


@pytest.fixture(scope="module")
def tokenizer(smollm2_gguf):
    from scoutdoc.runtime.tokenizer import Tokenizer

    return Tokenizer.from_gguf(smollm2_gguf)


def test_order_system_then_documents_then_conversation():
    prompt = build_prompt(DOCS, [Message("user", "q1"), Message("assistant", "a1")], "q2", system="Be terse.")
    [system] = prompt.prefix
    assert system.role == "system"
    body = system.content
    assert body.index("Be terse.") < body.index(CITATION_RULES) < body.index(DOCS)
    assert [(m.role, m.content) for m in prompt.turns] == [("user", "q1"), ("assistant", "a1"), ("user", "q2")]


@pytest.mark.slow
def test_split_tokenization_equals_whole(tokenizer):
    prompt = build_prompt(DOCS, [Message("user", "q1"), Message("assistant", "a1")], "What is the notice?")
    r = render(tokenizer, prompt)
    assert r.prefix_text.endswith("<|im_end|>")  # cut right after the special token closing the system turn
    assert r.turns_text.startswith("\n<|im_start|>user\n")
    assert r.turns_text.endswith("<|im_start|>assistant\n")
    assert r.ids == tokenizer.encode(r.prefix_text + r.turns_text, special=True)
    assert r.prefix_ids[-1] in tokenizer.eos_ids


@pytest.mark.slow
@pytest.mark.parametrize("tail", ["", "  ", "\n\n", "end.", " \t", "é", "<|im_start|"])
def test_prefix_tokens_never_depend_on_what_follows(tokenizer, tail):
    docs = DOCS + tail
    first = render(tokenizer, build_prompt(docs, [], "Who signed?"))
    later = render(
        tokenizer,
        build_prompt(docs, [Message("user", "Who signed?"), Message("assistant", "Ana and Tom.")], "When? "),
    )
    assert first.prefix_ids == later.prefix_ids
    assert later.ids[: len(first.prefix_ids)] == first.prefix_ids
    assert later.ids == tokenizer.encode(later.prefix_text + later.turns_text, special=True)


@pytest.mark.slow
def test_history_is_a_token_prefix_of_the_next_turn(tokenizer):
    """What the embedded engine relies on: turn N's closed conversation starts turn N+1's prompt."""
    one = render(tokenizer, build_prompt(DOCS, [Message("user", "q1"), Message("assistant", "a1")], "q2"))
    closed = tokenizer.apply_chat_template(
        [{"role": m.role, "content": m.content}
         for m in build_prompt(DOCS, [Message("user", "q1")], "").prefix + [Message("user", "q1"), Message("assistant", "a1")]],
        add_generation_prompt=False,
    )
    assert (one.prefix_text + one.turns_text).startswith(closed.rstrip("\n"))


def test_check_fits_names_both_numbers():
    check_fits(7000, 512, 8192)
    with pytest.raises(ContextTooLongError) as exc:
        check_fits(20_000, 512, 8192, "smollm2-135m")
    message = str(exc.value)
    assert "20,000" in message and "8,192" in message and "--include" in message and "\n" not in message
    with pytest.raises(ContextTooLongError, match="--max-tokens"):
        check_fits(8000, 512, 8192)


def test_summary_instruction_by_kind():
    assert summary_instruction(["code", "code", "text"]) == CODEBASE_SUMMARY_INSTRUCTION
    assert summary_instruction(["pdf"]) == SUMMARY_INSTRUCTION
    assert summary_instruction([]) == SUMMARY_INSTRUCTION


def test_cut_after_last_special_matches_a_full_scan():
    """The windowed search from the end gives what scanning the whole text for every string gives,
    also when the last occurrence lies far from the end or straddles a window boundary."""
    import random

    def full_scan(text, specials):
        return max((text.rfind(s) + len(s) for s in specials if s in text), default=-1)

    specials = ["<|eot|>", "<|header_start|>", "<|x|>", "</s>"]
    rng = random.Random(0)
    filler = "abc <| def |> ghi\n"
    for _ in range(200):
        parts = [filler * rng.randrange(0, 2000)]
        for _ in range(rng.randrange(0, 3)):
            parts += [rng.choice(specials), filler * rng.randrange(0, 3000), "z" * rng.randrange(0, 40)]
        text = "".join(parts)
        assert cut_after_last_special(text, specials) == full_scan(text, specials)
    edge = "y" * (4096 - 3) + "<|header_start|>" + "y" * 4093  # long string across the first window's start
    assert cut_after_last_special(edge, specials) == full_scan(edge, specials) == 4093 + 16
    assert cut_after_last_special("plain text", specials) == -1
    assert cut_after_last_special("", []) == -1


def test_the_question_comes_after_its_passages_and_before_the_clear_winner():
    passages = "[c.pdf, page 2] Notice is given in writing.\n[c.pdf, page 1] Sixty days' notice ends it.\n"
    assert question_text("Notice?") == f"Notice?\n{ANSWER_LENGTH}"
    assert question_text("Notice?", passages) == (
        f"Passages that may hold the answer:\n{passages}\nQuestion: Notice?\n{ANSWER_LENGTH}")
    assert question_text("Notice?", passages, "Sixty days' notice ends it.") == (
        f"Passages that may hold the answer:\n{passages}\nQuestion: Notice?\n"
        f"Most relevant passage: Sixty days' notice ends it.\n{ANSWER_LENGTH}")
    # words that occur nowhere in the documents are named instead
    assert question_text("Governing law?", unmatched=("governing", "law")) == (
        'Governing law?\nNote: The documents do not contain the words "governing" and "law".')
    assert question_text("CEO?", unmatched=("ceo",)).endswith('Note: The documents do not contain the word "ceo".')


def test_summary_text_puts_the_key_sentences_before_the_instruction():
    assert summary_text(SUMMARY_INSTRUCTION) == SUMMARY_INSTRUCTION
    asked = summary_text(SUMMARY_INSTRUCTION, "[a.pdf, page 1] The fee is EUR 2,400.\n")
    assert asked == f"Key sentences from the documents:\n[a.pdf, page 1] The fee is EUR 2,400.\n\n{SUMMARY_INSTRUCTION}"
