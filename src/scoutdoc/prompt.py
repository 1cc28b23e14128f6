"""Laying documents and a conversation into the model's chat template with a stable token prefix.

The order is always: system instructions, then the documents (with their provenance markers), then
the conversation. The first two form one system message, the session's *prefix*; everything after it
is the *turns* part. Because the prefix comes first and never changes, the KV cache saved after one
turn is exactly the state a follow-up needs: only the new question has to be prefilled.

Token-level stability needs one more step. BPE merges across whatever text follows, so tokenizing
"prefix + turns" in one go could tokenize the prefix's last characters differently from tokenizing
the prefix alone. We therefore cut the rendered text right after a special token (the chat template's
end-of-turn marker that closes the system message): special tokens are split out before BPE runs, so
the tokens on either side of one never depend on the other side.

When the prompt does not fit the model's context window we stop before running and say by how much:
silently truncating the sources would produce confident answers about text the model never saw.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Protocol, Sequence

from .engines import Message, Prompt
from .errors import ContextTooLongError

CITATION_RULES = (
    "The documents below are each wrapped in a <document source=...> header, and every passage is "
    "preceded by its location in square brackets: [page 3] in PDFs, [L10-42] line ranges in code and text "
    "files, [00:01:02.500-00:01:05.000] timestamps (with the speaker) in transcripts. Answer from these "
    "documents only. After each claim, cite the source and location it comes from, for example "
    "[contract.pdf, page 2], [src/app.py, L10-24] or [meeting.vtt, 00:03:15]. If the documents do not "
    "contain the answer, say so."
)

DEFAULT_SYSTEM = "You are scoutdoc, a careful assistant that answers questions about the documents the user provided."

SUMMARY_INSTRUCTION = (
    "Summarize these documents: their purpose, the main points, and any obligations, dates, amounts, "
    "decisions or open questions they contain. Cite the markers for each point."
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


def build_prompt(documents: str, history: Sequence[Message], question: str, system: str | None = None) -> Prompt:
    """The prompt for one turn: the fixed prefix, the earlier turns, and the new question."""
    return Prompt(
        prefix=[Message("system", system_text(documents, system))],
        turns=[*history, Message("user", question)],
    )


class ChatTokenizer(Protocol):
    """What prompt rendering needs from a tokenizer (the runtime's tokenizer provides it)."""

    eos_ids: Sequence[int]

    def encode(self, text: str, special: bool = ...) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...

    def apply_chat_template(self, messages: list[dict], add_generation_prompt: bool = ...) -> str: ...


@dataclass
class RenderedPrompt:
    prefix_text: str  # ends right after a special token
    turns_text: str  # everything after it, the assistant header for the answer included
    prefix_ids: list[int]
    turn_ids: list[int]

    @property
    def ids(self) -> list[int]:
        return self.prefix_ids + self.turn_ids


def _as_dicts(messages: Sequence[Message]) -> list[dict]:
    return [{"role": m.role, "content": m.content} for m in messages]


def special_strings(tokenizer: ChatTokenizer) -> list[str]:
    """The text of the tokens that can end a turn, longest first."""
    strings = set(getattr(tokenizer, "special_tokens", None) or ())
    for token_id in tokenizer.eos_ids:
        strings.add(tokenizer.decode([token_id]))
    return sorted((s for s in strings if s), key=len, reverse=True)


def cut_after_last_special(text: str, specials: list[str]) -> int:
    """Where the last occurrence of any of `specials` in `text` ends, or -1.

    Searched in windows growing from the end: a rendered prompt's last special token sits near its
    end, while scanning a many-megabyte document once per special string would take seconds for
    Llama 4's 2,048 of them. A window's answer is final once it ends beyond the longest string's
    reach into the window, so an occurrence straddling the window's start cannot end later.
    """
    reach = max(map(len, specials), default=0)
    window = 1 << 12
    while True:
        start = max(0, len(text) - window)
        tail = text[start:]
        best = max((start + i + len(s) for s in specials if (i := tail.rfind(s)) >= 0), default=-1)
        if start == 0 or best >= start + reach:
            return best
        window *= 8


def render(tokenizer: ChatTokenizer, prompt: Prompt) -> RenderedPrompt:
    """Render `prompt` with the model's chat template and tokenize it as prefix + turns.

    The prefix is the template's rendering of the system message, cut right after the last special
    token in it, so `prefix_ids` is the same for every turn of a session and
    `prefix_ids + turn_ids == encode(whole rendering)`.
    """
    whole = tokenizer.apply_chat_template(_as_dicts(prompt.messages), add_generation_prompt=True)
    alone = tokenizer.apply_chat_template(_as_dicts(prompt.prefix), add_generation_prompt=False)
    # Some templates render a lone system message differently (or add a default one); only the part
    # both renderings share can be a stable prefix.
    shared = 0
    limit = min(len(whole), len(alone))
    while shared < limit and whole[shared] == alone[shared]:
        shared += 1
    cut = cut_after_last_special(whole[:shared], special_strings(tokenizer))
    if cut < 0:
        cut = 0  # no special token to split at: everything is "turns" and nothing is reused
    prefix_text, turns_text = whole[:cut], whole[cut:]
    return RenderedPrompt(
        prefix_text=prefix_text,
        turns_text=turns_text,
        prefix_ids=tokenizer.encode(prefix_text, special=True) if prefix_text else [],
        turn_ids=tokenizer.encode(turns_text, special=True),
    )


MAX_TOKEN_CHARS = 256  # no token of the tokenizers we load spans more characters (BPE merges stop far earlier)


def check_size_estimate(chars: int, max_tokens: int, context_limit: int, model: str = "the model") -> None:
    """Refuse, from the character count alone, a prompt that cannot fit whatever the tokenizer does.

    Every token covers at most MAX_TOKEN_CHARS characters, so `chars / MAX_TOKEN_CHARS` tokens is a
    floor: above the context, tokenizing (40M tokens and 5 GB for a 200 MB log) would only confirm it.
    """
    floor = chars // MAX_TOKEN_CHARS
    if floor + max_tokens > context_limit:
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
