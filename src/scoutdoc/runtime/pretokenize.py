"""Pre-tokenizer patterns and the byte-level alphabet: how text is cut into pieces before BPE.

HF may chain several pre-tokenizers (SmolLM2: `Digits` then ByteLevel's GPT-2 regex); tiktoken runs
one regex. The chained form is rewritten so that a single left-to-right scan gives the same pieces
(see `gpt2_digits_pattern`). Byte-level vocabularies write each byte as a printable character
(GPT-2's table, `byte_to_unicode`); `symbols_to_bytes` turns their entries back into raw bytes.
"""

from __future__ import annotations

import re
from functools import lru_cache

# The GPT-2 regex that HF's ByteLevel pre-tokenizer applies when `use_regex` is true.
GPT2_PATTERN = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"

LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# Meta's Llama 4 `tokenizer.py` (o200k style); also what llama.cpp calls "llama4"/"gpt-4o".
LLAMA4_PATTERN = (
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
    r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
    r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def gpt2_digits_pattern(individual: bool) -> str:
    """HF `Digits` followed by ByteLevel's GPT-2 regex, as one regex.

    `Digits` first cuts the text into digit pieces (single digits, or whole runs) and non-digit
    pieces; the GPT-2 regex then runs inside each piece. So a digit is never glued to a preceding
    space (` ?\\p{N}+` loses its space), and a whitespace run just before a digit sits at the *end* of
    its piece, where `\\s+(?!\\S)` takes all of it. On the unsplit text the lookahead must therefore
    also succeed before a digit: `(?![^\\s\\p{N}])` instead of `(?!\\S)`.
    """
    digits = r"\p{N}" if individual else r"\p{N}+"
    return rf"'s|'t|'re|'ve|'m|'ll|'d| ?\p{{L}}+|{digits}| ?[^\s\p{{L}}\p{{N}}]+|\s+(?![^\s\p{{N}}])|\s+"


# llama.cpp's `tokenizer.ggml.pre` names → the split they stand for.
GGUF_PRE_PATTERNS = {
    "gpt-2": GPT2_PATTERN,
    "gpt2": GPT2_PATTERN,
    "smollm": gpt2_digits_pattern(True),
    "starcoder": gpt2_digits_pattern(True),
    "llama-bpe": LLAMA3_PATTERN,
    "llama3": LLAMA3_PATTERN,
    "llama-v3": LLAMA3_PATTERN,
    "llama4": LLAMA4_PATTERN,
    "gpt-4o": LLAMA4_PATTERN,
}

@lru_cache(maxsize=1)
def byte_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte → printable character table used by byte-level vocabularies."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    table = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


@lru_cache(maxsize=1)
def _symbols_to_latin1() -> dict[int, int]:
    """A `str.translate` table: each byte symbol becomes the character whose code is its byte, and
    every other character below 256 becomes U+FFFF, which latin-1 cannot encode (as it cannot any
    character left above 255)."""
    table = {ord(c): b for b, c in byte_to_unicode().items()}
    for code in range(256):
        table.setdefault(code, 0xFFFF)
    return table


def symbols_to_bytes(token: str) -> bytes | None:
    """A byte-level vocabulary entry as raw bytes; None if it is not written in the byte alphabet.

    One `translate` and one `encode` in C: a GGUF vocabulary runs this for each of its ~150k
    tokens and merge halves on every start, where a per-character lookup took about 0.1 s."""
    try:
        return token.translate(_symbols_to_latin1()).encode("latin-1")
    except UnicodeEncodeError:
        return None


# tiktoken's regex engine overflows its stack on a run of about a million spaces. Runs longer than
# this are cut (as Meta's Llama tokenizer cuts them, at 25k) — the only place where our split can
# differ from HF's, and only for inputs no real document has.
MAX_RUN = 100_000
_LONG_RUN = re.compile(rf"(?<!\s)\s{{{MAX_RUN + 1},}}|(?<!\S)\S{{{MAX_RUN + 1},}}")  # tried only at run starts: linear


def cut_long_runs(text: str) -> list[str]:
    """`text` cut every MAX_RUN characters inside whitespace or non-whitespace runs longer than that."""
    cuts = [m.start() + k for m in _LONG_RUN.finditer(text) for k in range(MAX_RUN, m.end() - m.start(), MAX_RUN)]
    bounds = [0, *cuts, len(text)]
    return [text[a:b] for a, b in zip(bounds, bounds[1:])]
