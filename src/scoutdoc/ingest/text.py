"""Plain text, Markdown, reST, CSV, JSON, logs and source code: decoded text cut into line ranges.

Segments are fixed runs of lines so every piece carries an `L10-42` locator the model can cite; the
line numbers are those of the original file.
"""

import hashlib
import re
from functools import lru_cache

from .document import Document, Segment, Unreadable
from .sniff import decode_text


@lru_cache(maxsize=8)
def _chunker(chunk: int) -> re.Pattern:
    return re.compile(rf"((?:[^\n]*\n){{0,{chunk - 1}}}[^\n]*)\n")  # group 1: the run without its last newline


def normalize_newlines(text: str) -> str:
    """Line numbers count "\n" as editors do; CRLF and lone CR files are brought to that form."""
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text


def line_segments(text: str, chunk: int) -> tuple[list[Segment], int]:
    """Runs of `chunk` lines labelled L<first>-<last>, and the number of lines.

    One regex pass cuts the runs straight out of the text; splitting into lines and joining them
    back costs twice as much on large codebases.
    """
    if not text.endswith("\n"):
        text += "\n"
    pieces = _chunker(chunk).findall(text)
    total = text.count("\n")
    # greedy matching: every run but the last has exactly `chunk` lines
    segments = [Segment(piece, f"L{i * chunk + 1}-{(i + 1) * chunk}") for i, piece in enumerate(pieces[:-1])]
    if pieces:
        segments.append(Segment(pieces[-1], f"L{(len(pieces) - 1) * chunk + 1}-{total}"))
    return segments, total


def decode_or_skip(data: bytes) -> str:
    if not data:
        raise Unreadable("empty file, nothing to read", "empty")
    text = decode_text(data)
    if text is None:
        raise Unreadable("binary file (not text), skipped; convert it to text if it matters", "binary")
    if text.isspace():
        raise Unreadable("file holds only whitespace, nothing to read", "empty")
    return normalize_newlines(text)


def read_text(source: str, data: bytes, kind: str, language: str, chunk: int, text: str | None = None) -> Document:
    """A text or code file as a Document; `text` may be passed when the caller already decoded it."""
    if text is None:
        text = decode_or_skip(data)
    segments, lines = line_segments(text, chunk)
    return Document(
        source=source,
        kind=kind,
        sha256=hashlib.sha256(data).hexdigest(),
        title=source.rsplit("!", 1)[-1].rsplit("/", 1)[-1],
        segments=segments,
        language=language,
        meta={"lines": lines},
    )
