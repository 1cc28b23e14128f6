"""The sentences repeated right before the question, the documents' best matches for it, or before a
summary's instruction, the documents' most central ones: one per line.

A unit is a sentence (a question together with the one after it, its answer in a dialogue), a table
row, or an item of a list (an address block, a form) shown with the lines after it (see `_spans`).

The document part of the prompt stays byte-identical whatever the question (so follow-ups reuse its
KV snapshot); what a small model needs next to the question goes into the turn instead
(`prompt.question_text`, `prompt.summary_text`). Sentences are ranked with `fit`'s BM25 over the
same segments and locators, so each line can say where it comes from.
"""

from __future__ import annotations

import bisect
import re
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

from .fit import Bm25, Layout, Passage, _narrow, _segments, _split, parse, terms
from .ingest.pack import LINES

EXCERPT_SENTENCES = 3  # sentences repeated next to the question
EXCERPT_TOKENS = 400
KEY_SENTENCES = 8  # sentences shown before a summary's instruction
KEY_TOKENS = 500
KEY_WORDS = 12  # the words most units share, which key sentences are ranked against
KEY_MIN_WORDS = 4
EARLIER_WEIGHT = 0.5  # a follow-up's previous question counts this much beside its own words
LEAD_MARGIN = 2.0  # the best sentence is repeated after the question when its BM25 score is this many times the runner-up's
NEAR_COPY = 0.6  # a sentence sharing more of its words with one already repeated adds nothing
SHORT_LINE = 40  # a line this short, with others like it, is a list item, not part of a wrapped sentence
LIST_MIN_LINES = 3
PROSE_LOWER = 0.3  # more of a run's lines than this starting in lower case: wrapped prose, not a list
LIST_WINDOW = 4  # lines per unit in a list
SENTENCE_CHARS = 400  # a "sentence" without an end (code, a long line) is cut at a line end or a space before this
_SENTENCE_END = re.compile(r"(?<=[.!?;])\s+|\n[ \t]*\n")
_LINE_HYPHEN = re.compile(r"(?<=[^\W\d_])-[ \t]*\n[ \t]*(?=[^\W\d_])")  # "wav-\ning": a letter either side of one line break
_LEADER = re.compile(r"(?:\. ?){5}")  # a table of contents' dot leader: "2 LRS ........ 6"
_ROW_END = re.compile(r"\n\s*")  # no leading [ \t]*: quadratic on a long run of spaces
# A period after these ends a word, not a sentence: "Bluebell Bakery Co. | Tom Reilly", "S.A.",
# "Dr. J. Smith"; after the second kind only before a number: "Agreement No. 010099", "Fig. 3", but
# "The answer is no. Then...". Written out here rather than taken from a sentence splitter library
# (pysbd, punkt) because this runs over every sentence of the sources on every question, which for a
# long source is millions of characters, and those libraries are orders of magnitude slower.
_ABBREVIATION = re.compile(
    r"(?:^|[\s(|])(?:co|corp|inc|ltd|bros|mr|mrs|ms|dr|prof|st|jr|sr|vs|dept|bldg|ave|blvd|rd|approx|"
    r"(?:[a-z]\.)*[a-z])\.$", re.IGNORECASE)
_BEFORE_NUMBER = re.compile(
    r"(?:^|[\s(|])(?:no|nos|art|sec|ch|fig|figs|vol|pp|tel|ref|jan|feb|mar|apr|jun|jul|aug|sep|sept|oct|nov|dec)\.$",
    re.IGNORECASE)


@dataclass
class Units:
    """The documents' units in document order: `keys[i]` is what BM25 ranks, `text(i)` what the
    excerpt shows (the same, except for a list item: its line, shown with the lines after it)."""

    layout: Layout
    keys: list[Passage]
    items: dict[int, tuple[str, int, int]]  # list item index -> its segment's text and the span shown

    def text(self, i: int) -> str:
        """Built only for the few units an excerpt shows: a long list has hundreds of thousands."""
        if i not in self.items:
            return self.keys[i].text
        segment, start, end = self.items[i]
        return _flat(segment[start:end])


def sentences(system: str) -> Units:
    """The documents in `system` (taken apart whole, so no segment is cut mid-sentence) and their
    text as units, in document order, each with the locator of its segment (a line range narrowed to
    the unit's lines) and its whitespace collapsed: a PDF breaks lines mid-sentence, and one sentence
    per line is what a small model reads best."""
    layout = parse(system, len(system) + 1)
    units = Units(layout, [], {})
    for doc in range(len(layout.docs)):
        body = "".join(p.text for p in layout.passages if p.doc == doc)
        for where, text in _segments(body, layout.docs[doc].kind):
            starts = [0, *(m.end() for m in re.finditer("\n", text))] if LINES.match(where) else []

            def locate(start: int, end: int) -> list[str]:
                return [_narrow(where, bisect.bisect_right(starts, start) - 1, text[start:end]) if starts else where]

            for start, end, show_end in _spans(text):
                if show_end > end:
                    units.items[len(units.keys)] = (text, start, show_end)
                    units.keys.append(Passage(doc, _flat(text[start:end]), locate(start, show_end)))
                    continue
                for piece in _split(text[start:end], SENTENCE_CHARS, ("\n", " ")):  # whole lines where it can
                    if piece.strip():
                        units.keys.append(Passage(doc, _flat(piece), locate(start, start + len(piece))))
                    start += len(piece)
    return units


def _flat(text: str) -> str:
    """A unit's text on one line: whitespace collapsed, and a word hyphenated across a line break
    joined ("head-\nquarters", a printed page's or an OCR'd scan's), so that BM25 finds it by the
    word and the model reads the word. A compound split at its own hyphen ("cast-\niron") loses
    the hyphen too; the two cannot be told apart without a dictionary."""
    if "-" in text and "\n" in text:  # most units have neither: skip the expression
        text = _LINE_HYPHEN.sub(lambda m: "" if m.string[m.end()].islower() else m.group(0), text)
    return " ".join(text.split())


def _spans(text: str) -> list[tuple[int, int, int]]:
    """(start, end, end shown) of each unit of a segment: its sentences (shown as ranked), and in a
    run of short lines (an address block, a form, a list, where no sentence ends) each line, ranked
    alone but shown with the lines after it, up to LIST_WINDOW lines: a name and what follows it
    (its address, its value) stay together, and the line that matches leads."""
    spans: list[tuple[int, int, int]] = []
    done = 0
    for run in _short_line_runs(text):
        spans += [(a, b, b) for a, b in _sentences_between(text, done, run[0][0])]
        spans += [(a, b, run[min(i + LIST_WINDOW, len(run)) - 1][1]) for i, (a, b) in enumerate(run)]
        done = run[-1][1]
    return spans + [(a, b, b) for a, b in _sentences_between(text, done, len(text))]


def _short_line_runs(text: str) -> list[list[tuple[int, int]]]:
    """The runs of at least LIST_MIN_LINES consecutive non-blank lines of at most SHORT_LINE
    characters each, as (start, end) of each line."""
    runs: list[list[tuple[int, int]]] = []
    run: list[tuple[int, int]] = []
    start = 0
    for line in text.split("\n"):
        if 0 < len(line.strip()) <= SHORT_LINE and not line.lstrip().startswith("|"):
            run.append((start, start + len(line)))
        elif run:  # a long line, a blank one or a table row ends the run
            runs.append(run)
            run = []
        start += len(line) + 1
    runs.append(run)
    return [run for run in runs if len(run) >= LIST_MIN_LINES and not _wrapped_prose(text, run)]


def _wrapped_prose(text: str, run: list[tuple[int, int]]) -> bool:
    """A narrow column of prose (an OCR'd book page) also has short lines, but its lines go on in
    lower case where a list's items start with a capital, a digit or a symbol."""
    lower = sum(text[start: end].lstrip()[:1].islower() for start, end in run[1:])
    return lower > PROSE_LOWER * (len(run) - 1)


def _sentences_between(text: str, start: int, end: int) -> list[tuple[int, int]]:
    """(start, end) of each sentence of text[start:end], leading whitespace left out."""
    spans, begin = [], start
    for stop, after in _sentence_ends(text[start:end]):
        raw = text[begin: start + stop]
        if raw.strip():
            spans.append((begin + len(raw) - len(raw.lstrip()), start + stop))
        begin = start + after
    return spans


def _sentence_ends(text: str) -> list[tuple[int, int]]:
    """(end, start of the next) for each sentence of `text`. A table's rows are its sentences (a
    row's cells only mean something together); a period after an abbreviation or an initial does
    not end a sentence; a question stays with the sentence after it, which in a dialogue or a FAQ
    is its answer."""
    if text.lstrip().startswith("|"):
        return [m.span() for m in _ROW_END.finditer(text.rstrip())] + [(len(text), len(text))]
    ends = []
    for m in _SENTENCE_END.finditer(text):
        sentence = text[max(ends[-1][1] if ends else 0, m.start() - 12): m.start()]  # its end is enough
        joined = (_ABBREVIATION.search(sentence) or sentence.endswith("?")
                  or (_BEFORE_NUMBER.search(sentence) and text[m.end(): m.end() + 1].isdigit()))
        if not joined or m.group(0).count("\n") > 1:  # a blank line always ends one
            ends.append(m.span())
    return ends + [(len(text), len(text))]


@dataclass
class Excerpt:
    """What `prompt.question_text` puts around the question: `lines` before it, one sentence per line
    after its `[source, location]`, the best last ("" when nothing matches); `lead`, the best sentence
    alone, when BM25 ranks it at least LEAD_MARGIN times above the runner-up ("" otherwise, and for a
    lone match, which shares a word or two with the question and nothing more to go by);
    `unmatched`, the question's words when no sentence holds any of them (nor of the earlier
    question's), which the model is then told."""

    lines: str = ""
    lead: str = ""
    unmatched: tuple[str, ...] = ()


def excerpt(
    system: str, question: str, count: Callable[[str], int], room: int = EXCERPT_TOKENS, earlier: str = "",
) -> Excerpt:
    """The sentences of the documents that match the question best (BM25), at most `room` tokens.

    A small model copies the answer from a sentence next to the question far more reliably than
    from a passage cut mid-sentence or from the middle of a long document, and more reliably still
    when the one clearly best sentence is named again after the question. Only a clear winner is:
    where the runner-up scores close to it, BM25's first pick is often the wrong sentence, and the
    model then repeats that sentence instead of answering (measured with benchmarks/bench_answers.py).

    `earlier`, the conversation's previous question, counts at EARLIER_WEIGHT: a follow-up ("And who
    can invoke it?") often names its subject only by a pronoun, and its own words match nothing.
    """
    units, index = _indexed(system)
    own = index.scored(question)
    ranked = _ranked(index, own, earlier)
    # a lead is the question's own clear winner: one owed to the earlier question is what its answer said
    clear = len(own) > 1 and own[0][1] > 0 and own[0][1] >= LEAD_MARGIN * own[1][1] and own[0][0] == ranked[0][0]
    lines, used, novel, lead = [], 0, _Novelty(units), ""
    for i, _ in ranked:
        if len(lines) == EXCERPT_SENTENCES:
            break
        text = units.text(i)
        if _LEADER.search(text) or not novel(i, text):
            continue  # a contents entry names a section the documents hold and says nothing of it
        line = _labelled(units, i, text)
        need = count(line)
        if used + need <= room:
            lines.append(line)
            used += need
            lead = text if clear and i == ranked[0][0] else lead
    return Excerpt("".join(reversed(lines)), lead, () if ranked else tuple(terms(question)))


def _ranked(index: Bm25, own: list[tuple[int, float]], earlier: str) -> list[tuple[int, float]]:
    """The question's own BM25 ranking with the earlier question's scores added at EARLIER_WEIGHT."""
    if not earlier:
        return own
    scores = dict(own)
    for i, score in index.scored(earlier):
        scores[i] = scores.get(i, 0.0) + EARLIER_WEIGHT * score
    return sorted(scores.items(), key=lambda item: (-item[1], item[0]))


def key_sentences(system: str, count: Callable[[str], int], room: int = KEY_TOKENS) -> str:
    """The documents' most central sentences, for a summary, in document order: the opening one
    (a title, a date, who is party to what), then those BM25 ranks best against the words most
    units share (KEY_WORDS of them), at most KEY_SENTENCES in all and `room` tokens.

    Asked to summarize a whole document, the default 135M model mostly restates the instruction
    ("the documents contain the purpose, the main points...") or invents; given the sentences a
    summary would draw on, next to the instruction, it uses them (benchmarks/bench_answers.py
    --summaries, docs/benchmarks.md). Frequency is the measure of centrality here because it needs
    no model: the words a document keeps coming back to are what it is about.
    """
    units, index = _indexed(system)
    shared: Counter[str] = Counter()
    for unit in units.keys:  # `terms` gives each word once, in order: ties rank by first use, the same every run
        shared.update(w for w in terms(unit.text) if len(w) > 2 and not w.isdigit())
    topic = " ".join(w for w, n in shared.most_common(KEY_WORDS) if n > 1)
    ranked = [0] + [i for i, _ in index.scored(topic) if i] if units.keys else []
    chosen: list[tuple[int, str]] = []
    used, novel = 0, _Novelty(units)
    for i in ranked:
        if len(chosen) == KEY_SENTENCES:
            break
        text = units.text(i)
        if len(re.findall(r"\w+", units.keys[i].text)) < KEY_MIN_WORDS or not novel(i, text):
            continue  # a heading or a label says little a summary can use
        line = _labelled(units, i, text)
        need = count(line)
        if used + need <= room:
            chosen.append((i, line))
            used += need
    return "".join(line for _, line in sorted(chosen))


@lru_cache(maxsize=2)
def _indexed(system: str) -> tuple[Units, Bm25]:
    """The documents' units and their index, kept for the next question about the same documents:
    in `chat` (and `summarize` then `chat`), a follow-up is then one query instead of a pass over
    all of the text, which for 13 MB of prose took 1.9 s (docs/benchmarks.md)."""
    units = sentences(system)
    return units, Bm25(units.keys)


class _Novelty:
    """Whether a unit adds something to those already taken: not a sentence sharing most of its words
    with one taken (a page header repeated on every page), nor a list window whose matching line
    leads another one taken (a running header leads a different window on each page)."""

    def __init__(self, units: Units):
        self.units, self.seen, self.keys = units, [], set()

    def __call__(self, i: int, text: str) -> bool:
        """`text`: the unit as shown, `units.text(i)`."""
        words = set(re.findall(r"\w+", text.lower()))
        key = self.units.keys[i].text.lower()
        if any(len(words & earlier) > NEAR_COPY * len(words) for earlier in self.seen) or key in self.keys:
            return False
        self.seen.append(words)
        if i in self.units.items:
            self.keys.add(key)
        return True


def _labelled(units: Units, i: int, text: str) -> str:
    """A unit, shown as `text`, on one line after its `[source, location]`."""
    unit = units.keys[i]
    name = units.layout.docs[unit.doc].source.rsplit("/", 1)[-1]
    return f"[{', '.join(x for x in (name, unit.where[0]) if x)}] {text}\n"
