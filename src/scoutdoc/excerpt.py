"""The sentences repeated right before the question: the documents' best matches for it, one per line.

The document part of the prompt stays byte-identical whatever the question (so follow-ups reuse its
KV snapshot); what a small model needs next to the question goes into the turn instead
(`prompt.question_text`). Sentences are ranked with `fit`'s BM25 over the same segments and
locators, so each line can say where it comes from.
"""

from __future__ import annotations

import re
from typing import Callable

from .fit import Layout, Passage, _narrow, _segments, _split, hits, parse

EXCERPT_SENTENCES = 3  # sentences repeated next to the question
EXCERPT_TOKENS = 400
SENTENCE_CHARS = 400  # a "sentence" without an end (a list, a table, code) is cut at about this length
_SENTENCE_END = re.compile(r"(?<=[.!?;])\s+|\n[ \t]*\n")


def sentences(system: str) -> tuple[Layout, list[Passage]]:
    """The documents in `system` (taken apart whole, so no segment is cut mid-sentence) and their
    text as sentences, in document order, each with the locator of its segment (a line range
    narrowed to the sentence's lines) and its whitespace collapsed: a PDF breaks lines
    mid-sentence, and one sentence per line is what a small model reads best."""
    layout = parse(system, len(system) + 1)
    out: list[Passage] = []
    for doc in range(len(layout.docs)):
        body = "".join(p.text for p in layout.passages if p.doc == doc)
        for where, text in _segments(body):
            start = 0
            for end, after in [m.span() for m in _SENTENCE_END.finditer(text)] + [(len(text), len(text))]:
                raw = text[start:end].lstrip()
                local = _narrow(where, text[: end - len(raw)], raw)
                out.extend(Passage(doc, piece, [local])
                           for piece in _split(" ".join(raw.split()), SENTENCE_CHARS, (" ",)) if piece.strip())
                start = after
    return layout, out


def excerpt(system: str, question: str, count: Callable[[str], int], room: int = EXCERPT_TOKENS) -> str:
    """The sentences of the documents that match the question best (BM25; none when nothing
    matches), at most `room` tokens, one per line after its `[source, location]`, the best last:
    what `prompt.question_text` puts right before the question. A small model copies the answer
    from a sentence next to the question far more reliably than from a passage cut mid-sentence
    or from the middle of a long document (measured with benchmarks/bench_answers.py)."""
    layout, units = sentences(system)
    lines, used = [], 0
    for i in hits(units, question)[:EXCERPT_SENTENCES]:
        unit = units[i]
        name = layout.docs[unit.doc].source.rsplit("/", 1)[-1]
        line = f"[{', '.join(x for x in (name, unit.where[0]) if x)}] {unit.text}\n"
        need = count(line)
        if used + need <= room:
            lines.append(line)
            used += need
    return "".join(reversed(lines))
