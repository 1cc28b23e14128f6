"""The sentences repeated before the question: best matches, one per line, with their locations."""

import random

from scoutdoc import excerpt as excerpts
from scoutdoc.ingest.document import Document, Segment
from test_fit import count, filler, system_for


def test_excerpt_repeats_the_best_matching_sentences_best_last():
    pad = "\n" + filler(random.Random(1), 24)
    doc = Document("c.pdf", "pdf", "0" * 64, "c", [
        Segment("The fee is EUR 2,400 per month, paid within thirty days." + pad, "page 1"),
        Segment("Either party may terminate with sixty days'\nwritten notice. A breach must be remedied\n"
                "within fourteen days. Notice is given in writing." + pad, "page 2"),
        Segment("The courts of Dublin have jurisdiction." + pad, "page 3")])
    question = "What is the termination notice period?"
    text = excerpts.excerpt(system_for(doc), question, count)
    lines = text.splitlines()
    # one sentence per line, its lines joined, after its source and location; the best match last
    assert lines[-1] == "[c.pdf, page 2] Either party may terminate with sixty days' written notice."
    assert lines[:-1] == ["[c.pdf, page 2] Notice is given in writing."]  # the breach sentence matches no term
    assert excerpts.excerpt(system_for(doc), "Hello?", count) == ""
    assert excerpts.excerpt(system_for(doc), question, count, room=count(lines[-1] + "\n")) == lines[-1] + "\n"
    many = excerpts.excerpt(system_for(doc), "Which fee, notice, courts and river?", count)
    assert len(many.splitlines()) == excerpts.EXCERPT_SENTENCES


def test_sentences_cut_at_sentence_ends_and_narrow_line_ranges():
    code = "def read(path):\n    return open(path).read()\n\n\ndef write(path, text):\n    open(path, 'w').write(text)\n"
    doc = Document("io.py", "code", "0" * 64, "io", [Segment(code, "L1-6")])
    units = excerpts.sentences(system_for(doc))[1]
    assert [(u.text, u.where) for u in units] == [
        ("def read(path): return open(path).read()", ["L1-2"]),
        ("def write(path, text): open(path, 'w').write(text)", ["L5-6"])]
    long = Document("a.txt", "text", "0" * 64, "a", [Segment("word " * 300, "L1-1")])
    assert all(len(u.text) <= excerpts.SENTENCE_CHARS for u in excerpts.sentences(system_for(long))[1])
