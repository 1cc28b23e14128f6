"""Rendering a `Prompt` with the model's chat template into prefix and turn tokens.

Token-level stability of the document prefix needs care. BPE merges across whatever text follows,
so tokenizing "prefix + turns" in one go could tokenize the prefix's last characters differently from
tokenizing the prefix alone. We therefore cut the rendered text right after a special token (the chat
template's end-of-turn marker that closes the system message): special tokens are split out before
BPE runs, so the tokens on either side of one never depend on the other side.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

from ..prompt import Message, Prompt


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


def as_dicts(messages: Sequence[Message]) -> list[dict]:
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
    whole = tokenizer.apply_chat_template(as_dicts(prompt.messages), add_generation_prompt=True)
    alone = tokenizer.apply_chat_template(as_dicts(prompt.prefix), add_generation_prompt=False)
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
