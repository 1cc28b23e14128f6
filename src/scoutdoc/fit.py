"""Fitting the documents into the model's window: all of them when they fit, else the passages that matter.

The full single prompt is the design: when the system message (instructions + packed documents) fits
next to the conversation and the answer, it is used unchanged, byte for byte, so a follow-up still
reuses the KV snapshot of the earlier turn. Only when it does not fit does a strategy take over:

- `retrieve` cuts the documents into passages at their own boundaries (the `[page 3]`, `[L10-42]`,
  `[00:01:02.500-…]`, `[table 1 row 2]` markers the packer writes, then paragraphs and lines inside
  a long segment, markers repeated or narrowed so every passage still says where it is from), ranks
  them against the question with BM25 over an in-memory SQLite FTS5 index, and keeps the best ones
  that fill the window, laid out again in document order;
- `map-reduce` answers (or summarizes) each window of passages in document order, then combines the
  partial answers, each labelled with the part it covers, in a final pass.

Everything here works on the system message's text, not on `Document`s: a follow-up has only the
stored text, and the packed format is deterministic (see `ingest.pack`). Tokens are counted through
callables the caller provides, so this module knows tokens and passages but not torch or engines.
"""

from __future__ import annotations

import re
import sqlite3
import threading
from dataclasses import dataclass, field
from typing import Callable, Iterable

from .errors import ContextTooLongError, UsageError
from .ingest.pack import LINES, MARKER, TIMES, is_marker
from .prompt import MAX_TOKEN_CHARS, check_fits, check_size_estimate

STRATEGIES = ("auto", "full", "retrieve", "map-reduce")
PASSAGE_CHARS = 1200  # about 300 tokens of prose: small enough to rank precisely, big enough to read
COMBINE_SOURCE = "partial answers"
NOT_FOUND = "NOT IN THIS PART"

# Words that say what kind of answer is wanted rather than what it is about; BM25 would weigh them
# little anyway, but an OR query over them matches every passage and drowns the ones that matter.
STOPWORDS = frozenset(
    "a an and are as at be been by can could did do does doc document documents for from had has have how "
    "i if in into is it its me my of on or our say says said should so tell than that the their them then "
    "there these they this those to was we were what when where which who whom whose why will with would "
    "you your about according please give list name".split()
)

_HEADER = re.compile(r'^<document source="[^\n]*>\n', re.M)
_PAGE = re.compile(r"^pages? (\d+)$")
_TREE = re.compile(r"<directory_tree>\n.*?\n</directory_tree>\n\n", re.S)


@dataclass(frozen=True)
class Passage:
    doc: int  # index into Layout.docs
    text: str  # marker line(s) and text, ending with a newline: exactly what goes into the prompt
    where: list[str]  # the locators of its markers, in order

    @property
    def body(self) -> str:
        """The text without its marker lines (a document's own "[project]" line stays): what the index ranks."""
        return MARKER.sub(lambda m: "" if m.group(1) in self.where else m.group(0), self.text)


@dataclass(frozen=True)
class Doc:
    header: str  # the `<document source=...>` line with its newline
    source: str
    kind: str = ""


@dataclass
class Layout:
    """A system message taken apart: instructions, the directory tree, documents cut into passages."""

    preamble: str  # everything before the documents (the directory tree taken out)
    tree: str  # the `<directory_tree>` block with its separator, or ""
    docs: list[Doc]
    passages: list[Passage]
    trailer: str  # what follows the last document

    def assemble(self, chosen: Iterable[int], tree: bool = False) -> str:
        """The system message holding the passages `chosen` (indexes), in document order."""
        by_doc: dict[int, list[str]] = {}
        for i in sorted(set(chosen)):
            by_doc.setdefault(self.passages[i].doc, []).append(self.passages[i].text)
        docs = [self.docs[d].header + "".join(texts) + "</document>" for d, texts in sorted(by_doc.items())]
        return self.preamble + (self.tree if tree else "") + "\n\n".join(docs) + self.trailer


@dataclass
class FitStats:
    """What the answer was made from; shown as a notice, in `--json` and in the stored turn."""

    strategy: str  # "full", "retrieve" or "map-reduce"
    passages_used: int
    passages_total: int
    windows: int = 1
    where: str = ""  # the passages used, e.g. "report.pdf pages 2-5, 11"

    def as_dict(self) -> dict:
        return {"strategy": self.strategy, "passages_used": self.passages_used,
                "passages_total": self.passages_total, "windows": self.windows, "where": self.where}

    def notice(self) -> str:
        """One line for the user, empty when nothing was left out or split."""
        if self.strategy == "retrieve" and self.passages_used < self.passages_total:
            where = f", {self.where}" if self.where else ""
            return f"answered from {self.passages_used:,} of {self.passages_total:,} passages{where}"
        if self.strategy == "map-reduce" and self.windows > 1:
            return f"read all {self.passages_total:,} passages in {self.windows:,} parts, then combined the partial answers"
        return ""


@dataclass(frozen=True)
class Window:
    """The token budget: `measure(system, question)` is the whole prompt's token count with that system
    message and that last user message (the caller's closure adds the history and the chat template)."""

    limit: int
    answer: int  # tokens kept free for the answer (--max-tokens)
    count: Callable[[str], int]
    measure: Callable[[str, str], int]
    model: str = "the model"

    def room(self, layout: Layout, question: str) -> int:
        """Tokens left for passages: the window less the answer, the instructions and the question."""
        return self.limit - self.answer - self.measure(layout.preamble + layout.trailer, question)


@dataclass
class Part:
    """One map step of a map-reduce plan: a system message with one window of passages."""

    system: str
    question: str
    where: str


@dataclass
class Fitted:
    """What to run: one prompt (`system`, `question`) or, for map-reduce, the `parts`, whose answers
    then go to `combine` (with `preamble`, the instructions before the documents, and `question`, the
    user's)."""

    stats: FitStats
    system: str = ""
    question: str = ""
    parts: list[Part] = field(default_factory=list)
    preamble: str = ""


def parse(system: str, passage_chars: int = PASSAGE_CHARS) -> Layout:
    """Take a system message written by `prompt.system_text` apart; passages of at most about
    `passage_chars` characters cover each document's text."""
    headers = list(_HEADER.finditer(system))
    if not headers:
        return Layout(preamble=system, tree="", docs=[], passages=[], trailer="")
    preamble = system[: headers[0].start()]
    tree = ""
    if (match := _TREE.search(preamble)) is not None:
        tree = match.group(0)
        preamble = preamble[: match.start()] + preamble[match.end():]
    docs: list[Doc] = []
    passages: list[Passage] = []
    trailer = ""
    for n, header in enumerate(headers):
        end = headers[n + 1].start() if n + 1 < len(headers) else len(system)
        span = system[header.end(): end]
        close = span.rfind("</document>")
        body = span[:close] if close >= 0 else span
        if n + 1 == len(headers):
            trailer = span[close + len("</document>"):] if close >= 0 else ""
        source, kind = (re.search(rf' {name}="([^"]*)"', header.group(0)) for name in ("source", "kind"))
        docs.append(Doc(header.group(0), source.group(1) if source else "", kind.group(1) if kind else ""))
        passages.extend(Passage(n, text, where) for text, where in _passages(body, passage_chars, docs[-1].kind))
    return Layout(preamble, tree, docs, passages, trailer)


def _segments(body: str, kind: str = "") -> list[tuple[str, str]]:
    """(locator, text after the marker line) for each marked segment of a document of this `kind`;
    text before any marker gets ""."""
    marks = [m for m in MARKER.finditer(body) if is_marker(kind, m.group(1))]
    out = []
    if not marks or marks[0].start() > 0:
        out.append(("", body[: marks[0].start() if marks else len(body)]))
    for i, mark in enumerate(marks):
        end = marks[i + 1].start() if i + 1 < len(marks) else len(body)
        out.append((mark.group(1), body[mark.end(): end]))
    return [(where, text) for where, text in out if text.strip() or where]


def _split(text: str, limit: int, seps: tuple[str, ...] = ("\n\n", "\n", ". ", " ")) -> list[str]:
    """`text` in consecutive pieces of at most `limit` characters, cut after the coarsest separator that
    works (paragraphs, then lines, then sentences, then words); joined they give `text` back."""
    if len(text) <= limit:
        return [text]
    for k, sep in enumerate(seps):
        parts = [p + sep for p in text.split(sep)]
        parts[-1] = parts[-1][: -len(sep)]
        if len(parts) < 2:
            continue
        pieces: list[str] = []
        for part in parts:
            for small in _split(part, limit, seps[k + 1:]):
                if pieces and len(pieces[-1]) + len(small) <= limit:
                    pieces[-1] += small
                else:
                    pieces.append(small)
        return [p for p in pieces if p]
    return [text[i: i + limit] for i in range(0, len(text), limit)]


def _narrow(where: str, lines_before: int, piece: str) -> str:
    """The locator of a piece of a segment that starts `lines_before` lines into it: a line range
    narrowed to the piece's lines (trailing blank ones left out), else the same."""
    match = LINES.match(where)
    if not match:
        return where
    first = int(match.group(1)) + lines_before
    return f"L{first}-{first + piece.rstrip().count(chr(10))}"


def _passages(body: str, limit: int = PASSAGE_CHARS, kind: str = "") -> list[tuple[str, list[str]]]:
    """A document's text as passages: short segments merged with their neighbours, long ones cut."""
    out: list[tuple[str, list[str]]] = []
    run_text, run_where = "", []
    for where, text in _segments(body, kind):
        marker = f"[{where}]\n" if where else ""
        if len(marker) + len(text) <= limit:
            if run_text and len(run_text) + len(marker) + len(text) > limit:
                out.append((run_text, run_where))
                run_text, run_where = "", []
            run_text += marker + text
            run_where.append(where)
            continue
        if run_text:
            out.append((run_text, run_where))
            run_text, run_where = "", []
        done = 0  # lines before the piece: counted as they go, since counting them anew each time is quadratic
        for piece in _split(text, limit - len(marker) - 1):
            local = _narrow(where, done, piece)
            done += piece.count("\n")
            out.append(((f"[{local}]\n" if local else "") + piece + ("" if piece.endswith("\n") else "\n"), [local]))
    if run_text:
        out.append((run_text, run_where))
    return out


def terms(question: str) -> list[str]:
    """The question's content words, lower-cased, once each, as an FTS5 query would take them."""
    seen: dict[str, None] = {}
    for word in re.findall(r"\w+", question.lower()):
        if len(word) > 1 and word not in STOPWORDS:
            seen.setdefault(word)
    return list(seen)


def hits(passages: list[Passage], question: str) -> list[int]:
    """Indexes of the passages matching any of the question's terms, best first: BM25 from SQLite FTS5
    (porter stemming, so "terminate" finds "termination")."""
    return [i for i, _ in scored_hits(passages, question)]


def scored_hits(passages: list[Passage], question: str) -> list[tuple[int, float]]:
    """`hits` with each one's BM25 score, higher is better (FTS5's `bm25()` negated)."""
    if not terms(question) or not passages:
        return []
    index = Bm25(passages)
    try:
        return index.scored(question)
    finally:
        index.close()


# An upper-case word ending in S ("LRS", "GPS", "NHS"): an acronym, which the porter stemmer would
# cut to another one ("LRS" found "LR_Element" before "Linear Reference System (LRS)").
_ACRONYM_S = re.compile(r"\b[A-Z][A-Z0-9]*S\b")
_UNSTEMMED = "0"  # appended to a copy of such a word: porter leaves a word ending in a digit alone


def _with_acronyms(text: str) -> str:
    """`text` with an unstemmed copy after each acronym ending in S, which only the same acronym
    in a question matches (the word itself stays, so "TERMS" in a heading is still found by "term")."""
    return _ACRONYM_S.sub(lambda m: f"{m.group(0)} {m.group(0)}{_UNSTEMMED}", text)


class Bm25:
    """`scored_hits` over fixed passages, indexed once and asked any number of questions (from any
    thread): what `excerpt` keeps between the questions of one conversation."""

    def __init__(self, passages: list[Passage]):
        self._db = sqlite3.connect(":memory:", check_same_thread=False)
        self._lock = threading.Lock()
        # contentless: only the index is kept (rowids are all a ranking needs), a quarter faster to fill
        self._db.execute("CREATE VIRTUAL TABLE p USING fts5(body, tokenize='porter unicode61 remove_diacritics 2', content='')")
        self._db.executemany(
            "INSERT INTO p(rowid, body) VALUES (?, ?)", ((i, _with_acronyms(p.body)) for i, p in enumerate(passages))
        )

    def scored(self, question: str) -> list[tuple[int, float]]:
        """Passages matching any of the question's terms, best first. An acronym ending in S is
        asked for both as itself and stemmed: the passages naming it rank above those that merely
        share its stem, and none is lost."""
        words = terms(question)
        if not words:
            return []
        words += [w.lower() + _UNSTEMMED for w in dict.fromkeys(_ACRONYM_S.findall(question))]
        query = " OR ".join('"' + w.replace('"', '""') + '"' for w in words)
        with self._lock:
            rows = self._db.execute("SELECT rowid, bm25(p) FROM p WHERE p MATCH ? ORDER BY bm25(p), rowid", (query,))
            return [(i, -score) for i, score in rows]

    def close(self) -> None:
        self._db.close()


def rank(passages: list[Passage], question: str) -> list[int]:
    """Every passage index, best first: the BM25 `hits`, then the passages that match nothing, in document order."""
    best = hits(passages, question)
    matched = set(best)
    return best + [i for i in range(len(passages)) if i not in matched]


def describe(layout: Layout, chosen: Iterable[int]) -> str:
    """Where the chosen passages are from, compactly: "pages 2-5, 11", "L1-120, L300-340",
    "00:01:02-00:04:10"; prefixed by the file's name when there are several documents."""
    runs: list[list[int]] = []  # consecutive passages of one document
    for i in sorted(set(chosen)):
        if runs and i == runs[-1][-1] + 1 and layout.passages[i].doc == layout.passages[runs[-1][-1]].doc:
            runs[-1].append(i)
        else:
            runs.append([i])
    per_doc: dict[int, list[str]] = {}
    for run in runs:
        wheres = [w for i in run for w in layout.passages[i].where if w]
        if wheres:
            per_doc.setdefault(layout.passages[run[0]].doc, []).append(_span(wheres[0], wheres[-1]))
    parts = []
    for d, spans in per_doc.items():
        spans = list(dict.fromkeys(_merge_pages(spans)))  # pieces of one long line are each "L1-1"
        text = ", ".join(spans[:6]) + (f" and {len(spans) - 6} more" if len(spans) > 6 else "")
        name = layout.docs[d].source.rsplit("/", 1)[-1] if len(layout.docs) > 1 else ""
        parts.append(f"{name} {text}" if name else text)
    return "; ".join(parts)


def _span(first: str, last: str) -> str:
    """One locator for a run of passages from `first`'s start to `last`'s end."""
    if (a := _PAGE.match(first)) and (b := _PAGE.match(last)):
        return f"page {a.group(1)}" if a.group(1) == b.group(1) else f"pages {a.group(1)}-{b.group(1)}"
    if (a := LINES.match(first)) and (b := LINES.match(last)):
        return f"L{a.group(1)}-{b.group(2)}"
    if (a := TIMES.match(first)) and (b := TIMES.match(last)):
        return f"{a.group(1)}-{b.group(2)}"
    return first if first == last else f"{first} to {last}"


def _merge_pages(spans: list[str]) -> list[str]:
    """["page 2", "pages 3-5", "page 11"] -> ["pages 2-5, 11"]: one "pages" word for a PDF's runs."""
    pages = [m for s in spans if (m := re.match(r"^pages? (\d+)(?:-(\d+))?$", s))]
    if not pages or len(pages) != len(spans):
        return spans
    runs: list[list[int]] = []
    for m in pages:
        a, b = int(m.group(1)), int(m.group(2) or m.group(1))
        if runs and a <= runs[-1][1] + 1:
            runs[-1][1] = max(runs[-1][1], b)
        else:
            runs.append([a, b])
    word = "page " if len(runs) == 1 and runs[0][0] == runs[0][1] else "pages "
    return [word + ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)]


def select(layout: Layout, question: str, room: int, count: Callable[[str], int]) -> list[int]:
    """The best-ranked passages whose tokens (with their documents' headers) fit in `room`, in document order."""
    cost = [count(p.text) for p in layout.passages]
    frame = [count(d.header + "</document>\n\n") for d in layout.docs]
    chosen: list[int] = []
    docs: set[int] = set()
    used = 0
    for i in rank(layout.passages, question):
        doc = layout.passages[i].doc
        need = cost[i] + (0 if doc in docs else frame[doc])
        if used + need <= room:
            chosen.append(i)
            docs.add(doc)
            used += need
    return sorted(chosen)


def windows(layout: Layout, room: int, count: Callable[[str], int]) -> list[list[int]]:
    """All passages in document order, grouped into consecutive windows that each fit in `room`."""
    groups: list[list[int]] = [[]]
    used, docs = 0, set()
    for i, passage in enumerate(layout.passages):
        need = count(passage.text)
        frame = 0 if passage.doc in docs else count(layout.docs[passage.doc].header + "</document>\n\n")
        if groups[-1] and used + need + frame > room:
            groups.append([])
            used, docs = 0, set()
            frame = count(layout.docs[passage.doc].header + "</document>\n\n")
        if need + frame > room:
            raise ContextTooLongError(
                f"one passage needs {need + frame:,} tokens but only {room:,} are left in the window; "
                "lower --max-tokens or use a model with a longer context (--model)")
        groups[-1].append(i)
        docs.add(passage.doc)
        used += need + frame
    return [g for g in groups if g]


def _fits(system: str, question: str, window: Window) -> bool:
    return window.measure(system, question) + window.answer <= window.limit


def _for_room(layout: Layout, system: str, room: int) -> Layout:
    """`layout`, or for a window too small for passages of the usual size, one with passages of about
    `room` characters (a quarter of the room in tokens), so several still fit."""
    if room >= PASSAGE_CHARS:
        return layout
    return parse(system, max(80, room))


def _retrieve(layout: Layout, system: str, question: str, window: Window) -> Fitted:
    """The passages that fit, re-checked on the whole prompt (a few tokens can merge differently)."""
    room = window.room(layout, question)
    layout = _for_room(layout, system, room)
    total = len(layout.passages)
    keep_tree = bool(layout.tree) and window.count(layout.tree) * 10 <= room
    if keep_tree:
        room -= window.count(layout.tree)
    for _ in range(4):
        if room <= 0:
            break
        chosen = select(layout, question, room, window.count)
        text = layout.assemble(chosen, tree=keep_tree)
        over = window.measure(text, question) + window.answer - window.limit
        if over <= 0 and chosen:
            return Fitted(FitStats("retrieve", len(chosen), total, 1, describe(layout, chosen)), text, question)
        room -= max(over, 16)
    whole = window.measure(system, question)
    if whole < window.limit:  # the documents fit, the answer's budget is what does not: say by how much
        check_fits(whole, window.answer, window.limit, window.model)
    raise ContextTooLongError(
        f"no passage of the documents fits next to the question and the answer in {window.model}'s "
        f"{window.limit:,} tokens; lower --max-tokens or use a model with a longer context (--model)")


WHERE_CHARS = 160  # a part's locations as named in its question, cut to this length


def map_question(question: str, where: str, index: int, total: int) -> str:
    """A map step's question: the user's, limited to this part, with a fixed reply when it has nothing."""
    where = where if len(where) <= WHERE_CHARS else where[: WHERE_CHARS - 1] + "…"
    return (f"{question}\n\n(You see part {index} of {total} of the documents: {where}. Answer from this part only "
            f"and cite it; if this part does not contain the answer, reply only: {NOT_FOUND}.)")


def combine_question(question: str) -> str:
    return (f"{question}\n\n(The document above holds partial answers, each from one part of the documents. "
            "Combine them into one answer, keep their citations, and leave out parts that found nothing.)")


def _map_reduce(layout: Layout, system: str, question: str, window: Window) -> Fitted:
    # Room for the longest question a part gets: its locations take up to WHERE_CHARS characters.
    probe = map_question(question, "", 999, 999)
    room = window.room(layout, probe) - window.count("x, " * (WHERE_CHARS // 3))
    layout = _for_room(layout, system, room)
    total = len(layout.passages)
    groups = windows(layout, room, window.count)
    parts = []
    for n, group in enumerate(groups, start=1):
        where = describe(layout, group) or f"passages {group[0] + 1}-{group[-1] + 1}"
        parts.append(Part(layout.assemble(group), map_question(question, where, n, len(groups)), where))
    return Fitted(FitStats("map-reduce", total, total, len(groups)), question=question, parts=parts,
                  preamble=layout.preamble)


def combine(plan: Fitted, partials: list[tuple[str, str]], window: Window) -> Fitted:
    """The step after a map-reduce round answered `plan.parts` with `partials` ((where, answer) pairs):
    one final prompt when they fit together, else another round over groups of them (each group one
    window). The plan's stats, preamble and question are carried along."""
    useful = [(w, a) for w, a in partials if NOT_FOUND.lower() not in a.lower()] or partials
    body = "".join(f"[{where}]\n{answer.strip()}\n" for where, answer in useful)
    system = f'{plan.preamble}<document source="{COMBINE_SOURCE}" kind="notes">\n{body}</document>\n'
    final = combine_question(plan.question)
    if _fits(system, final, window) or len(useful) == 1:
        return Fitted(plan.stats, system, final, preamble=plan.preamble)
    layout = parse(system)
    groups = windows(layout, window.room(layout, final), window.count)
    if len(groups) >= len(useful):
        raise ContextTooLongError(
            f"the partial answers are too long to combine in {window.model}'s {window.limit:,} tokens; "
            "lower --max-tokens or use a model with a longer context (--model)")
    parts = [Part(layout.assemble(g), final, describe(layout, g)) for g in groups]
    return Fitted(plan.stats, question=plan.question, parts=parts, preamble=plan.preamble)


def fit(system: str, question: str, window: Window, strategy: str = "auto", summary: bool = False) -> Fitted:
    """Choose and prepare how the documents in `system` meet the window for `question`.

    `auto`: the prompt unchanged when it fits, else `retrieve` for a question and `map-reduce` for a
    summary (`summary=True`: every part matters, so none may be left out). `full` refuses with the
    numbers (ContextTooLongError, exit 4) when it does not fit.
    """
    if strategy not in STRATEGIES:
        raise UsageError(f"unknown --fit {strategy!r}; use one of {', '.join(STRATEGIES)}")
    surely_over = len(system) // MAX_TOKEN_CHARS >= window.limit  # known from the size, before tokenizing
    if strategy == "full" and surely_over:
        check_size_estimate(len(system), window.limit, window.model)
    fits = not surely_over and _fits(system, question, window)
    if strategy == "full" and not fits:
        check_fits(window.measure(system, question), window.answer, window.limit, window.model)
    layout = parse(system)
    total = len(layout.passages)
    if fits or strategy == "full":  # nothing to leave out: the prompt exactly as it is
        name = "full" if strategy == "auto" else strategy
        return Fitted(FitStats(name, total, total), system, question)
    if strategy == "map-reduce" or (strategy == "auto" and summary):
        return _map_reduce(layout, system, question, window)
    return _retrieve(layout, system, question, window)
