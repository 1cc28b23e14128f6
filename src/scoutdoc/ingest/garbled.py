"""Text that decoded without an error but is not readable: mostly replacement or private-use characters.

A PDF whose fonts lack a usable ToUnicode map (common in Japanese and other CJK PDFs) extracts as
U+FFFD, glyph codes in the private-use area or control characters. Packing that wastes the context
and invites the model to invent what the document says, so such a document is flagged with a
warning, or skipped under `--strict`.
"""

import re

from .document import Document, Unreadable

GARBLED_SHARE = 0.5  # of the visible (non-blank) characters
_GARBLED = re.compile("[\ufffd\ue000-\uf8ff\U000f0000-\U0010ffff\x00-\x08\x0e-\x1f]")
_BLANKS = (" ", "\n", "\t", "\r", "\u3000")


def garbled_share(texts: list[str]) -> float:
    """The share of visible characters in `texts` that are replacement, private-use or control characters."""
    bad = sum(len(_GARBLED.findall(t)) for t in texts if _GARBLED.search(t) is not None)
    if not bad:  # one C scan per segment settles nearly every document
        return 0.0
    visible = sum(len(t) - sum(map(t.count, _BLANKS)) for t in texts)
    return bad / visible if visible else 0.0


def check_garbled(document: Document, strict: bool) -> Document:
    """`document`, with a warning in `meta["warnings"]` when most of its text is garbled.

    Under `strict` such a document is refused instead (Unreadable, code "garbled").
    """
    share = garbled_share([s.text for s in document.segments])
    if share < GARBLED_SHARE:
        return document
    what = f"{share:.0%} of the extracted text is replacement, private-use or control characters"
    if document.kind == "pdf":
        what += " (fonts without a usable ToUnicode map?)"
    if strict:
        raise Unreadable(f"{what}; skipped under --strict, run OCR (e.g. ocrmypdf --force-ocr) or re-export the file", "garbled")
    document.meta.setdefault("warnings", []).append(f"{what}; the text may be unreadable, pass --strict to skip such files")
    return document
