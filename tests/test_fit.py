"""fit.py: retrieval and map-reduce over documents longer than the window, and `auto` leaving fitting prompts alone.

Tokens are counted by a stand-in (one token per four characters, as English text roughly is) so the
tests need no model; the engine-level tests in tests/test_session_fit.py use a real tokenizer.
"""

import random
import subprocess
import sys

import pytest

from scoutdoc import fit
from scoutdoc.errors import ContextTooLongError
from scoutdoc.ingest import IngestResult, pack
from scoutdoc.ingest.document import Document, Segment
from scoutdoc.prompt import system_text

WORDS = ("river bank ledger harvest copper lantern meadow signal harbor orchard quarry timber "
         "valley summit canvas engine pillar marble basket thunder").split()


def count(text: str) -> int:
    return len(text) // 4 + 1


def window(limit: int, answer: int = 64) -> fit.Window:
    return fit.Window(limit, answer, count, lambda system, question: count(system) + count(question) + 12)


def filler(rng: random.Random, words: int) -> str:
    lines = []
    for _ in range(words // 12):
        lines.append(" ".join(rng.choice(WORDS) for _ in range(12)) + ".")
    return "\n".join(lines)


def pdf(pages: int, seed: int = 0, fact_page: int | None = None, fact: str = "") -> Document:
    rng = random.Random(seed)
    segments = []
    for n in range(1, pages + 1):
        text = filler(rng, 120)
        if n == fact_page:
            text += "\n" + fact
        segments.append(Segment(text, f"page {n}"))
    return Document("report.pdf", "pdf", "0" * 64, "report", segments, meta={"pages": pages})


def system_for(*documents: Document) -> str:
    return system_text(pack(IngestResult(documents=list(documents))))


def test_retrieve_finds_the_planted_fact_in_a_document_ten_times_the_window():
    fact = "The vault combination is 4417-PELICAN."
    system = system_for(pdf(120, fact_page=77, fact=fact))
    w = window(count(system) // 10)
    question = "What is the vault combination?"
    fitted = fit.fit(system, question, w)
    assert fitted.stats.strategy == "retrieve"
    assert fact in fitted.system
    assert "[page 77]\n" in fitted.system  # the passage keeps its marker
    assert w.measure(fitted.system, question) + w.answer <= w.limit
    assert 0 < fitted.stats.passages_used < fitted.stats.passages_total
    assert fitted.stats.where.startswith("page") and "77" in fitted.stats.where.replace("-", ", ").split(", ")
    assert fitted.stats.notice().startswith(f"answered from {fitted.stats.passages_used} of ")
    # passages come back in document order, inside their document's header
    pages = [int(line[6:-1]) for line in fitted.system.splitlines() if line.startswith("[page ")]
    assert pages == sorted(pages)
    assert fitted.system.count('<document source="report.pdf"') == 1


def test_auto_leaves_a_fitting_prompt_byte_identical_to_full():
    system = system_for(pdf(3))
    w = window(count(system) * 2)
    auto = fit.fit(system, "What is on page 2?", w, "auto")
    full = fit.fit(system, "What is on page 2?", w, "full")
    assert auto.system == full.system == system
    assert auto.stats.strategy == "full" and auto.stats.notice() == ""
    assert auto.stats.passages_used == auto.stats.passages_total > 0


def test_full_refuses_a_prompt_that_does_not_fit():
    system = system_for(pdf(40))
    with pytest.raises(ContextTooLongError, match="holds") as info:
        fit.fit(system, "What?", window(count(system) // 3), "full")
    assert info.value.exit_code == 4


def test_unknown_strategy_is_a_usage_error():
    with pytest.raises(Exception, match="unknown --fit"):
        fit.fit("x", "q", window(100), "guess")


def test_map_reduce_covers_every_passage_once_in_order_with_markers():
    system = system_for(pdf(60, seed=3))
    w = window(count(system) // 3)
    fitted = fit.fit(system, "Summarize.", w, "auto", summary=True)
    assert fitted.stats.strategy == "map-reduce"
    assert fitted.stats.windows == len(fitted.parts) >= 3
    layout = fit.parse(system)
    seen = []
    for part in fitted.parts:
        assert w.measure(part.system, part.question) + w.answer <= w.limit
        assert "[page " in part.system and part.where.startswith("page")
        body = fit.parse(part.system)
        seen.extend(p.text for p in body.passages)
    assert seen == [p.text for p in layout.passages]


def test_combine_keeps_citations_and_drops_parts_that_found_nothing():
    plan = fit.Fitted(fit.FitStats("map-reduce", 10, 10, 3), question="What is the fee?", preamble="Instructions.\n\n")
    partials = [("pages 1-4", "The fee is EUR 2,400 [report.pdf, page 3]."), ("pages 5-8", fit.NOT_FOUND),
                ("pages 9-10", "It is due monthly [report.pdf, page 9].")]
    step = fit.combine(plan, partials, window(4000))
    assert step.stats is plan.stats and not step.parts
    assert step.system.startswith("Instructions.\n\n<document ")
    assert "[pages 1-4]\nThe fee is EUR 2,400 [report.pdf, page 3]." in step.system
    assert fit.NOT_FOUND not in step.system and "[report.pdf, page 9]" in step.system
    assert step.question.startswith("What is the fee?")


def test_combine_runs_another_round_when_the_partial_answers_do_not_fit_together():
    partials = [(f"pages {n}-{n + 1}", filler(random.Random(n), 60) + f" [report.pdf, page {n}]") for n in range(1, 40, 2)]
    w = window(600)
    plan = fit.Fitted(fit.FitStats("map-reduce", 40, 40, 20), question="Summarize.", preamble="Instructions.\n\n")
    step = fit.combine(plan, partials, w)
    assert 1 < len(step.parts) < len(partials) and step.preamble == plan.preamble
    for part in step.parts:
        assert w.measure(part.system, part.question) + w.answer <= w.limit


def test_long_segments_are_cut_at_lines_with_narrowed_line_ranges():
    code = "\n".join(f"def f{i}(): return {i}  # {'x' * 40}" for i in range(1, 201))
    doc = Document("app.py", "code", "0" * 64, "app.py", [Segment(code, "L1-200")], language="python")
    layout = fit.parse(system_for(doc))
    assert len(layout.passages) > 5
    first, second = layout.passages[0], layout.passages[1]
    assert first.text.startswith("[L1-") and first.where[0].startswith("L1-")
    end = int(first.where[0].split("-")[1])
    assert second.where == [f"L{end + 1}-{int(second.where[0].split('-')[1])}"]
    assert second.text.split("\n", 2)[1] == f"def f{end + 1}(): return {end + 1}  # {'x' * 40}"
    assert "".join(fit.MARKER.sub("", p.text) for p in layout.passages) == code + "\n"


def test_short_segments_are_merged_and_describe_names_page_runs():
    doc = Document("a.pdf", "pdf", "0" * 64, "a", [Segment(f"page {n} text", f"page {n}") for n in range(1, 12)])
    layout = fit.parse(system_for(doc))
    assert len(layout.passages) == 1 and layout.passages[0].where[:2] == ["page 1", "page 2"]
    big = fit.parse(system_for(pdf(12)))
    chosen = [i for i, p in enumerate(big.passages) if p.where[0] in ("page 2", "page 3", "page 4", "page 5", "page 11")]
    assert fit.describe(big, chosen) == "pages 2-5, 11"
    one_line = fit.parse(system_for(Document("w.txt", "text", "0" * 64, "w", [Segment("word " * 4000, "L1-1")])), 300)
    assert len(one_line.passages) > 2 and fit.describe(one_line, [0, 2]) == "L1-1"  # pieces of one line, named once


def test_terms_drop_question_words_and_rank_uses_stems():
    assert fit.terms("What is the termination notice period?") == ["termination", "notice", "period"]
    passages = [fit.Passage(0, "[page 1]\nThe fee is monthly.\n", ["page 1"]),
                fit.Passage(0, "[page 2]\nEither party may terminate with notice.\n", ["page 2"])]
    assert fit.rank(passages, "What is the termination notice period?") == [1, 0]


def test_an_acronym_ending_in_s_is_found_before_words_that_share_its_stem():
    """The porter stemmer cuts "LRS" to "lr", which "LR_Element" is made of too."""
    passages = [fit.Passage(0, f"[page {n}]\n{text}\n", [f"page {n}"]) for n, text in enumerate((
        "LR_Element LR_Position LR_Event", "The Linear Reference System (LRS) manages the network.",
        "The TERMS of the agreement."), 1)]
    assert fit.rank(passages, "What does LRS stand for?")[0] == 1
    assert fit.hits(passages, "Which terms apply?") == [2]  # an upper-case word is still found by its stem
    assert fit.hits(passages, "What are LR elements?")[0] == 0


def test_a_long_file_is_cut_into_passages_in_linear_time():
    """Each passage's line range used to be found by counting the lines of everything before it: 16 s
    for one 9 MB file, on every question. Run in a child process with a hang budget."""
    code = (
        "from scoutdoc import fit\n"
        "body = ''.join(f'x = {i}  # a line of code that is long enough\\n' for i in range(500_000))\n"
        "layout = fit.parse(f'<document source=\"big.py\" kind=\"code\">\\n[L1-500000]\\n{body}</document>\\n')\n"
        "print(layout.passages[0].where[0].split('-')[0], layout.passages[-1].where[0].split('-')[1])\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert run.stdout.split() == ["L1", "500000"], run.stderr
