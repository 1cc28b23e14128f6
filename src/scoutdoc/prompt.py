"""Laying documents and a conversation out as messages with a stable prefix.

The order is always: system instructions, then the documents (with their provenance markers), then
the conversation. The first two form one system message, the session's *prefix*; everything after it
is the *turns* part. Because the prefix comes first and never changes, the KV cache saved after one
turn is exactly the state a follow-up needs: only the new question has to be prefilled. Turning the
messages into tokens with the model's chat template is the embedded engine's job (`engines/chat.py`).

When the prompt does not fit the model's context window we stop before running and say by how much:
silently truncating the sources would produce confident answers about text the model never saw.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

from .errors import ContextTooLongError
from .wording import quoted


@dataclass
class Message:
    role: str  # "system", "user", "assistant"
    content: str


@dataclass
class Prompt:
    """`prefix` (system + documents) is identical on every turn of a session; `turns` grow."""

    prefix: list[Message]
    turns: list[Message]

    @property
    def messages(self) -> list[Message]:
        return self.prefix + self.turns

CITATION_RULES = (
    "The documents below are each wrapped in a <document source=...> header, and every passage is "
    "preceded by its location in square brackets: [page 3] in PDFs, [L10-42] line ranges in code and text "
    "files, [00:01:02.500-00:01:05.000] timestamps (with the speaker) in transcripts. Answer from these "
    "documents only. After each claim, cite the source and location it comes from, for example "
    "[contract.pdf, page 2], [src/app.py, L10-24] or [meeting.vtt, 00:03:15]. If the documents do not "
    "contain the answer, say so."
)

DEFAULT_SYSTEM = "You are scoutdoc, a careful assistant that answers questions about the documents the user provided."

# Naming what a summary should hold (in an earlier wording, "their purpose, the main points, and any
# obligations...") made the default model restate that list instead of summarizing; this wording,
# with the key sentences before it (`summary_text`), does so less (docs/benchmarks.md).
SUMMARY_INSTRUCTION = (
    "Summarize these documents in a few sentences: what they are, who and what they name, and their "
    "dates, amounts and decisions. Cite the markers for each point."
)

CODEBASE_SUMMARY_INSTRUCTION = (
    "Give an architecture overview of this codebase: what it does, its modules and what each is "
    "responsible for, its entry points (command line, servers, public functions), and how data flows "
    "from input to output through the modules. Cite file:line markers for each point."
)


def summary_instruction(kinds: Iterable[str]) -> str:
    """A codebase gets an architecture overview; anything else a content summary."""
    kinds = list(kinds)
    if kinds and sum(k == "code" for k in kinds) * 2 >= len(kinds):
        return CODEBASE_SUMMARY_INSTRUCTION
    return SUMMARY_INSTRUCTION


def system_text(documents: str, system: str | None = None) -> str:
    """The whole system message: who the assistant is, how to cite, then the packed documents."""
    head = (system or DEFAULT_SYSTEM).strip()
    return f"{head}\n\n{CITATION_RULES}\n\n{documents.strip()}\n"


def split_system(text: str) -> tuple[str, str]:
    """`system_text`'s two parts back: the instructions (the user's own, or the default) and the
    packed documents."""
    head, _, documents = text.partition(f"\n\n{CITATION_RULES}\n\n")
    return head, documents


ANSWER_LENGTH = "Answer in one or two sentences."


def question_text(question: str, passages: str = "", lead: str = "", unmatched: Sequence[str] = ()) -> str:
    """The user message for a question: the sentences most likely to hold the answer (see
    `excerpt.excerpt`), then the question, then the clearly best of those sentences once more when
    there is one, then how long the answer should be. Repeating them here, next to the question,
    helps small models most: they read the end of the prompt more closely than the middle of a long
    document, and without a length they ramble (measured with benchmarks/bench_answers.py,
    docs/benchmarks.md).

    When none of the question's words (`unmatched`) occurs in the documents, the model is told so:
    asked "Governing law?" about a meeting transcript, the default model otherwise explained "the
    law of the land", although the system instructions say to answer from the documents only. A
    plain note works best: told what to reply as well, it repeated that instruction instead."""
    if unmatched:
        return f"{question}\nNote: The documents do not contain the word{'s' if len(unmatched) > 1 else ''} {quoted(unmatched)}."
    if not passages:
        return f"{question}\n{ANSWER_LENGTH}"
    best = f"Most relevant passage: {lead}\n" if lead else ""
    return f"Passages that may hold the answer:\n{passages}\nQuestion: {question}\n{best}{ANSWER_LENGTH}"


def summary_text(instruction: str, key_sentences: str = "") -> str:
    """The user message for a summary: the documents' central sentences (`excerpt.key_sentences`),
    then the instruction, for the reason `question_text` gives."""
    if not key_sentences:
        return instruction
    return f"Key sentences from the documents:\n{key_sentences}\n{instruction}"


def build_prompt(documents: str, history: Sequence[Message], question: str, system: str | None = None) -> Prompt:
    """The prompt for one turn: the fixed prefix, the earlier turns, and the new question."""
    return Prompt(
        prefix=[Message("system", system_text(documents, system))],
        turns=[*history, Message("user", question)],
    )


MAX_TOKEN_CHARS = 256  # no token of the tokenizers we load spans more characters (BPE merges stop far earlier)


def check_size_estimate(chars: int, context_limit: int, model: str = "the model") -> None:
    """Refuse, from the character count alone, a prompt that cannot fit whatever the tokenizer does.

    Every token covers at most MAX_TOKEN_CHARS characters, so `chars / MAX_TOKEN_CHARS` tokens is a
    floor: above the context, tokenizing (40M tokens and 5 GB for a 200 MB log) would only confirm it.
    """
    floor = chars // MAX_TOKEN_CHARS
    if floor >= context_limit:  # the sources alone overflow; room for the answer is check_fits' business
        raise ContextTooLongError(
            f"the sources hold {chars:,} characters, at least {floor:,} tokens, but {model} holds {context_limit:,}; "
            "select fewer files (--include/--exclude), ask about each file separately with `scoutdoc batch`, "
            "or use a model with a longer context (--model)"
        )


def check_fits(prompt_tokens: int, max_tokens: int, context_limit: int, model: str = "the model") -> None:
    """Refuse, before any work, a prompt that cannot fit together with room for the answer."""
    needed = prompt_tokens + max_tokens
    if needed <= context_limit:
        return
    if prompt_tokens < context_limit:
        raise ContextTooLongError(
            f"the prompt needs {prompt_tokens:,} tokens plus {max_tokens:,} for the answer = {needed:,}, but "
            f"{model} holds {context_limit:,}; lower --max-tokens to {context_limit - prompt_tokens:,} or less, "
            "or select fewer files"
        )
    raise ContextTooLongError(
        f"the sources need {prompt_tokens:,} tokens (plus {max_tokens:,} for the answer) but {model} holds "
        f"{context_limit:,}; select fewer files (--include/--exclude), ask about each file separately with "
        "`scoutdoc batch`, or use a model with a longer context (--model)"
    )
