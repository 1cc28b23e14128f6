"""The exact text the prompt builder puts in front of the model: tree header, then each document.

Every document is wrapped in a `<document ...>` header naming its source, kind and language, and
every segment is preceded by its locator in square brackets (`[page 3]`, `[L10-42]`,
`[00:01:02.500-00:01:05.000]`, `[table 1 row 2]`) so answers can cite it. The output depends only on
the IngestResult, byte for byte: it becomes a cached token prefix, so nothing here may vary between
runs (no timestamps, no dict-order surprises, no absolute paths). A document's own text cannot
open or close a document: "<document" and "</document" in it are written "&lt;document" and
"&lt;/document", as the header's attributes escape their quotes, so a file cannot pass itself off as
another source to the model or to `fit.parse`. Nor can it forge a locator: a line of its text that
reads like one of its kind's markers ("[L99999-100000]" in a text file) is written with a space
before it, which `fit.parse` does not read as a marker.
"""

import os
import re
from collections.abc import Iterator
from typing import TextIO

from .document import Document, IngestResult


_TAG = re.compile(r"<(/?document)(?=[\s/>])", re.IGNORECASE)  # the tag itself: not <DocumentRoot> or <documentation>

# The locators written before segments, by kind of document (`fit.parse` reads them back with these).
# A docx's locators are too varied to list ("paragraphs 1-7", "table 1 row 2", "comment 3"): any line
# in brackets is one there.
MARKER = re.compile(r"^\[([^\[\]\n]{1,120})\]\n", re.M)
LINES = re.compile(r"^L(\d+)-(\d+)$")
TIMES = re.compile(r"^(\d+:\d\d:\d\d)(?:[.,]\d+)?-(\d+:\d\d:\d\d)(?:[.,]\d+)?$")
KIND_MARKERS = {"pdf": re.compile(r"^page \d+$"), "code": LINES, "text": LINES, "transcript": TIMES}
_MARKER_LIKE = re.compile(r"^(?=\[([^\[\]\n]{1,120})\]$)", re.M)


# A transcript's text keeps each cue's start in brackets after its speaker ("Ana: [00:00:01] Morning").
INLINE_TIME = re.compile(r"\[\d+:\d\d:\d\d(?:[.,]\d+)?\]")
_DOCUMENT = re.compile(r'^(<document [^\n]*?\bkind="([^"]*)"[^\n]*>\n)(.*?)^(?=</document>)', re.M | re.S)


def without_locators(packed: str) -> str:
    """`pack`'s output without the locators it wrote: each document's marker lines (those its kind
    reads as markers, which its own text cannot forge, see `_inert`) and a transcript's cue times.
    What the documents *say* holds neither, so nothing is taken from them as said: every number up
    to a PDF's page count, and in a transcript every number from 0 to 59, would otherwise count as
    found in it. A log's own [12:05:33] or a "[Draft]" line in a PDF stays."""
    def one(m: re.Match) -> str:
        kind, body = m.group(2), m.group(3)
        body = MARKER.sub(lambda line: "\n" if is_marker(kind, line.group(1)) else line.group(0), body)
        return m.group(1) + (INLINE_TIME.sub(" ", body) if kind == "transcript" else body)

    return _DOCUMENT.sub(one, packed)


def is_marker(kind: str, label: str) -> bool:
    """Whether `[label]` on a line of its own is a locator in a document of this kind."""
    valid = KIND_MARKERS.get(kind)
    return valid is None or bool(valid.match(label))


def _inert(text: str, kind: str | None = None) -> str:
    text = _TAG.sub(r"&lt;\1", text)
    if kind is None or "[" not in text:
        return text
    return _MARKER_LIKE.sub(lambda m: " " if is_marker(kind, m.group(1)) else "", text)


def tree_block(tree: str) -> str:
    return f"<directory_tree>\n{_inert(tree)}\n</directory_tree>"


def _attr(value: str) -> str:
    return value.replace("&", "&amp;").replace('"', "&quot;").replace("\n", " ")


def _document_parts(document: Document) -> list[str]:
    attrs = [f'source="{_attr(document.source)}"', f'kind="{document.kind}"']
    if document.language:
        attrs.append(f'language="{_attr(document.language)}"')
    leaf = document.source.split("!")[-1].rsplit("/", 1)[-1]
    if document.title and document.title != leaf:
        attrs.append(f'title="{_attr(document.title)}"')
    if document.kind == "pdf" and "pages" in document.meta:
        attrs.append(f'pages="{document.meta["pages"]}"')
    parts = [f"<document {' '.join(attrs)}>\n"]
    for segment in document.segments:
        if segment.where:
            parts.append(f"[{segment.where}]\n")
        parts.append(_inert(segment.text, document.kind))
        parts.append("\n")
    parts.append("</document>")
    return parts


def pack_document(document: Document) -> str:
    return "".join(_document_parts(document))


def iter_pack(result: IngestResult) -> Iterator[str]:
    """The pieces of `pack(result)` in order, for writing a large prompt out without building it."""
    started = False
    if result.tree:
        yield tree_block(result.tree)
        started = True
    for document in result.documents:
        if started:
            yield "\n\n"
        yield from _document_parts(document)
        started = True
    if started:
        yield "\n"


def write_pack(result: IngestResult, stream: TextIO) -> None:
    """Write `pack(result)` to a text stream without building it whole.

    Each document is joined and encoded once and handed to the binary buffer underneath, instead of
    tens of thousands of small writes through the text layer (a large share of `--dump`'s time).
    """
    buffer = getattr(stream, "buffer", None)
    if buffer is None or os.linesep != "\n":  # a Windows console translates newlines in the text layer
        stream.writelines(iter_pack(result))
        return
    stream.flush()
    encoding, errors = stream.encoding or "utf-8", stream.errors or "strict"
    started = False
    if result.tree:
        buffer.write(tree_block(result.tree).encode(encoding, errors))
        started = True
    for document in result.documents:
        text = pack_document(document)
        buffer.write((f"\n\n{text}" if started else text).encode(encoding, errors))
        started = True
    if started:
        buffer.write("\n".encode(encoding, errors))
    buffer.flush()


def pack(result: IngestResult) -> str:
    """All documents as one deterministic text block (what `scoutdoc inspect --dump` prints)."""
    return "".join(iter_pack(result))
