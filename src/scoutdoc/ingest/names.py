"""Names as they may be shown: no terminal control characters, always valid UTF-8.

File and member names come from the disk or from an archive someone else built. A name holding an
escape sequence could recolour or rewrite the terminal, a newline could forge an extra "skipped"
line, and a name that is not UTF-8 (tar keeps such bytes as lone surrogates) cannot be written as
UTF-8 at all. Sources are named with `display_name` where they enter ingestion, so every table,
skip line, JSON report and prompt built from them is safe.
"""

import re

# C0 and C1 controls, DEL, and the bidirectional overrides that can reorder what a terminal shows
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def _escape(match: re.Match) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def display_name(name: str) -> str:
    """`name` with control characters written as `\\xNN` and undecodable bytes as U+FFFD."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        name = name.encode("utf-8", "surrogateescape" if _only_escaped(name) else "replace").decode("utf-8", "replace")
    return _UNSAFE.sub(_escape, name)


def _only_escaped(name: str) -> bool:
    """True when every surrogate is one `surrogateescape` made (U+DC80..U+DCFF), so it maps back to its byte."""
    return all(not 0xD800 <= ord(c) <= 0xDFFF or 0xDC80 <= ord(c) <= 0xDCFF for c in name)
