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
def _full_run(chunk: int) -> re.Pattern:
    """Matches exactly `chunk` lines, newlines included, from where it is applied."""
    return re.compile(rf"(?:[^\n]*\n){{{chunk}}}")


def normalize_newlines(text: str) -> str:
    """Line numbers count "\n" as editors do; CRLF and lone CR files are brought to that form."""
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text


def line_segments(text: str, chunk: int) -> tuple[list[Segment], int]:
    """Runs of `chunk` lines labelled L<first>-<last>, and the number of lines.

    A final line without a newline still counts as a line. The regex is anchored at each run's
    start (`match`, not `findall`/`finditer`), so the engine only ever scans forward once: splitting
    into lines and joining them back costs three times as much on large codebases, and an unanchored
    search would rescan the short tail run from every position.
    """
    match = _full_run(chunk).match
    segments: list[Segment] = []
    pos, first = 0, 1
    while (run := match(text, pos)) is not None:
        end = run.end()
        segments.append(Segment(text[pos : end - 1], f"L{first}-{first + chunk - 1}"))
        pos, first = end, first + chunk
    if not text.endswith("\n"):  # also the empty text: one empty line
        rest = text[pos:]
    elif pos < len(text):
        rest = text[pos:-1]
    else:
        return segments, first - 1
    last = first + rest.count("\n")
    segments.append(Segment(rest, f"L{first}-{last}"))
    return segments, last


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
