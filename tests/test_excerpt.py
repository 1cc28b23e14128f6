"""The sentences repeated before the question: best matches, one per line, with their locations."""

import os
import random
import subprocess
import sys

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
    text = excerpts.excerpt(system_for(doc), question, count).lines
    lines = text.splitlines()
    # one sentence per line, its lines joined, after its source and location; the best match last
    assert lines[-1] == "[c.pdf, page 2] Either party may terminate with sixty days' written notice."
    assert lines[:-1] == ["[c.pdf, page 2] Notice is given in writing."]  # the breach sentence matches no term
    assert excerpts.excerpt(system_for(doc), "Hello?", count).lines == ""
    assert excerpts.excerpt(system_for(doc), question, count, room=count(lines[-1] + "\n")).lines == lines[-1] + "\n"
    many = excerpts.excerpt(system_for(doc), "Which fee, notice, courts and river?", count).lines
    assert len(many.splitlines()) == excerpts.EXCERPT_SENTENCES


def test_sentences_cut_at_sentence_ends_and_narrow_line_ranges():
    code = "def read(path):\n    return open(path).read()\n\n\ndef write(path, text):\n    open(path, 'w').write(text)\n"
    doc = Document("io.py", "code", "0" * 64, "io", [Segment(code, "L1-6")])
    units = excerpts.sentences(system_for(doc)).keys
    assert [(u.text, u.where) for u in units] == [
        ("def read(path): return open(path).read()", ["L1-2"]),
        ("def write(path, text): open(path, 'w').write(text)", ["L5-6"])]
    one_line = '<document source="a.py" kind="code">\n[L1-1]\n"""Orders."""\n</document>\n'
    assert [(u.text, u.where) for u in excerpts.sentences(one_line).keys] == [('"""Orders."""', ["L1-1"])]
    long = Document("a.txt", "text", "0" * 64, "a", [Segment("word " * 300, "L1-1")])
    assert all(len(u.text) <= excerpts.SENTENCE_CHARS for u in excerpts.sentences(system_for(long)).keys)


def _texts(doc: Document) -> list[str]:
    return [u.text for u in excerpts.sentences(system_for(doc)).keys]


def test_abbreviations_and_initials_do_not_end_a_sentence():
    doc = Document("a.pdf", "pdf", "0" * 64, "a", [Segment(
        "Agreement No. 010099 binds Acme Co. and Dr. J. R. Smith of Bern, Switzerland. It ends in 2030.", "page 1")])
    assert _texts(doc) == ["Agreement No. 010099 binds Acme Co. and Dr. J. R. Smith of Bern, Switzerland.",
                           "It ends in 2030."]
    plain = Document("b.txt", "text", "0" * 64, "b", [Segment("Is it renewed? The answer is no. See Fig. 3.", "L1-1")])
    assert _texts(plain) == ["Is it renewed? The answer is no.", "See Fig. 3."]


def test_a_table_row_stays_whole_and_a_question_keeps_its_answer():
    row = Document("c.docx", "docx", "0" * 64, "c", [Segment("| Party | Signatory |", "table 1 row 1"),
                                                       Segment("| Bluebell Bakery Co. | Tom Reilly |", "table 1 row 2")])
    assert _texts(row) == ["| Party | Signatory |", "| Bluebell Bakery Co. | Tom Reilly |"]
    table = Document("t.md", "text", "0" * 64, "t", [Segment("| Party | Signatory |\n| --- | --- |\n"
                                                              "| Bluebell Bakery Co. | Tom Reilly |\n", "L1-3")])
    assert [(u.text, u.where) for u in excerpts.sentences(system_for(table)).keys] == [
        ("| Party | Signatory |", ["L1-1"]), ("| --- | --- |", ["L2-2"]),
        ("| Bluebell Bakery Co. | Tom Reilly |", ["L3-3"])]
    assert "Tom Reilly" in excerpts.excerpt(system_for(row), "Who signed for Bluebell Bakery Co.?", count).lines
    talk = Document("t.vtt", "subtitles", "0" * 64, "t", [Segment(
        "[00:04:02] ¿Sabes lo que les pasa a los acusados? [00:04:05] El garrote vil. [00:04:07] Ya.", "00:04:02")])
    assert _texts(talk) == ["[00:04:02] ¿Sabes lo que les pasa a los acusados? [00:04:05] El garrote vil.",
                            "[00:04:07] Ya."]


ADDRESSES = ("Appendix A - Members\nKawasaki Kisen Kaisha, Ltd.\nHibiya Central Building\nTokyo 105-8421\nJapan\n"
             "Maersk Line A/S\n50, Esplanaden\nDK-1098 Copenhagen\nDenmark\n"
             "MSC Mediterranean Shipping Company S.A.\n40, avenue Eugene-Pittard\n1206 Geneva\nSwitzerland\n")


def test_a_list_item_is_found_by_its_line_and_shown_with_the_lines_after_it():
    doc = Document("members.pdf", "pdf", "0" * 64, "m", [Segment(ADDRESSES, "page 3")])
    best = excerpts.excerpt(system_for(doc), "In which city is MSC Mediterranean Shipping Company located?",
                            count).lines.splitlines()[-1]
    assert best == ("[members.pdf, page 3] MSC Mediterranean Shipping Company S.A. 40, avenue Eugene-Pittard "
                    "1206 Geneva Switzerland")
    best = excerpts.excerpt(system_for(doc), "Where is Maersk Line?", count).lines.splitlines()[-1]
    assert best == "[members.pdf, page 3] Maersk Line A/S 50, Esplanaden DK-1098 Copenhagen Denmark"


def test_a_contents_entry_is_not_repeated_before_the_question():
    doc = Document("spec.pdf", "pdf", "0" * 64, "s", [
        Segment("CONTENTS\n2 Hydro network model ........................ 6\n3 Metadata . . . . . . . . 9\n", "page 1"),
        Segment(filler(random.Random(2), 36) + "\nThe hydro network model holds every river and lake.", "page 6")])
    lines = excerpts.excerpt(system_for(doc), "What does the hydro network model hold?", count).lines
    assert lines == "[spec.pdf, page 6] The hydro network model holds every river and lake.\n"


def test_a_narrow_column_of_prose_is_cut_into_sentences_not_list_items():
    column = ("A report creeps into camp that\nJohnston is coming with fifty\nthousand men to raise the siege,\n"
              "but I do not believe it. We have\noften heard that Richmond had\nfallen, but it continues within\n"
              "the confederate lines.\n")
    doc = Document("diary.pdf", "pdf", "0" * 64, "d", [Segment(column, "page 1")])
    assert _texts(doc) == [
        "A report creeps into camp that Johnston is coming with fifty thousand men to raise the siege, "
        "but I do not believe it.",
        "We have often heard that Richmond had fallen, but it continues within the confederate lines."]


def test_a_sentence_repeated_on_every_page_is_repeated_once():
    header = "International Council of Containership Operators Agreement No. 010099-061 Revised Page No. {}"
    doc = Document("members.pdf", "pdf", "0" * 64, "m", [
        Segment(header.format(n) + "\n\n" + filler(random.Random(n), 30), f"page {n}") for n in range(1, 4)])
    lines = excerpts.excerpt(system_for(doc), "What is the agreement number?", count).lines.splitlines()
    assert len(lines) == 1 and "010099-061" in lines[0]
    # a running header at the top of a list leads a different window of lines on each page
    pages = [Segment("Appendix A - Members 2012-2\n" + block, f"page {n}")
             for n, block in enumerate(ADDRESSES.split("Appendix A - Members\n")[1].split("Maersk"), 1)]
    pages.append(Segment("Appendix A - Members 2012-2\nZim Integrated Shipping Services Ltd.\nP.O.B. 1723\n"
                         "Haifa 31016\nIsrael\n", "page 3"))
    doc = Document("members.pdf", "pdf", "0" * 64, "m", pages)
    lines = excerpts.excerpt(system_for(doc), "Which member company in the appendix is in Israel?", count).lines
    assert lines.count("Appendix A - Members") == 1 and "] Israel\n" in lines


def test_hostile_text_is_cut_in_linear_time():
    """Two shapes that took quadratic time (minutes at these sizes): a table row with a long run of
    spaces, and one endless "sentence" of abbreviations. Run in a child process (a regular expression
    holds the GIL, so only a process can be stopped), with a hang budget 100x what it needs."""
    code = ("from scoutdoc import excerpt as e; "
            "print([len(e._spans(t)) for t in ('|' + ' ' * 400_000 + 'x |', 'Mr. ' * 400_000)])")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert run.stdout.strip() == "[1, 1]", run.stderr


def test_code_without_sentence_ends_is_cut_at_line_ends_with_narrowed_ranges():
    code = "".join(f"def f{i}(x):\n    return x * {i}\n" for i in range(60))
    doc = Document("m.py", "code", "0" * 64, "m", [Segment(code, "L1-120")])
    units = excerpts.sentences(system_for(doc)).keys
    assert len(units) > 1 and all(len(u.text) <= excerpts.SENTENCE_CHARS for u in units)
    assert all(u.text.startswith("def f") and u.text.split()[-1].isdigit() for u in units)  # whole lines
    assert units[0].where[0].startswith("L1-") and units[-1].where[0].endswith("-120")
    best = excerpts.excerpt(system_for(doc), "What does f42 return?", count).lines.splitlines()[-1]
    assert "def f42(x): return x * 42" in best and "L1-120" not in best


def test_only_a_clear_winner_is_named_again_after_the_question():
    pad = "\n" + filler(random.Random(2), 24)
    doc = Document("c.pdf", "pdf", "0" * 64, "c", [
        Segment("Either party may terminate with sixty days' written notice." + pad, "page 1"),
        Segment("Notice of a breach is given in writing." + pad, "page 2")])
    clear = excerpts.excerpt(system_for(doc), "What is the termination notice period?", count)
    assert clear.lead == "Either party may terminate with sixty days' written notice."
    assert clear.lines.splitlines()[-1] == "[c.pdf, page 1] " + clear.lead
    close = excerpts.excerpt(system_for(doc), "Which notice applies?", count)  # both match "notice" alone
    assert close.lines and close.lead == ""
    lone = excerpts.excerpt(system_for(doc), "Who may terminate?", count)  # one match: no runner-up to beat
    assert lone.lines.count("\n") == 1 and lone.lead == ""
    assert excerpts.excerpt(system_for(doc), "What is the termination notice period?", count, room=5) == excerpts.Excerpt()


def test_the_earlier_question_helps_rank_a_follow_up_at_half_weight():
    pad = "\n" + filler(random.Random(3), 24)
    doc = Document("c.pdf", "pdf", "0" * 64, "c", [
        Segment("Either party may terminate with sixty days' notice." + pad, "page 1"),
        Segment("The monthly fee is EUR 2,400." + pad, "page 2")])
    system = system_for(doc)
    earlier = "What is the termination notice period?"
    assert excerpts.excerpt(system, "And who can invoke it?", count).lines == ""
    found = excerpts.excerpt(system, "And who can invoke it?", count, earlier=earlier)
    assert found.lines == "[c.pdf, page 1] Either party may terminate with sixty days' notice.\n" and found.lead == ""
    # a new subject outranks the earlier one, which still gets a place
    lines = excerpts.excerpt(system, "What is the monthly fee?", count, earlier=earlier).lines.splitlines()
    assert lines == ["[c.pdf, page 1] Either party may terminate with sixty days' notice.",
                     "[c.pdf, page 2] The monthly fee is EUR 2,400."]


def test_a_question_whose_words_occur_nowhere_says_which():
    doc = Document("m.vtt", "text", "0" * 64, "m", [Segment(filler(random.Random(4), 48), "L1-4")])
    system = system_for(doc)
    assert excerpts.excerpt(system, "Governing law?", count).unmatched == ("governing", "law")
    assert excerpts.excerpt(system, "Which river?", count).unmatched == ()
    assert excerpts.excerpt(system, "Governing law?", count, earlier="Which river?").unmatched == ()
    assert excerpts.excerpt(system, "What is it?", count).unmatched == ()  # no words to look for


def test_a_word_hyphenated_across_a_line_break_is_found_and_shown_whole():
    diary = ("JUNE 17TH.—I was detailed to the charge of a squad of men to guard\nprisoners in the corral at "
             "Logan's head-\nquarters. The Smith-\nJones farm lies east.\n")
    doc = Document("diary.pdf", "pdf", "0" * 64, "d", [Segment(diary + filler(random.Random(3), 20), "page 6")])
    best = excerpts.excerpt(system_for(doc), "Whose headquarters had the corral?", count).lines.splitlines()[-1]
    assert best.endswith("guard prisoners in the corral at Logan's headquarters.")
    assert "The Smith- Jones farm lies east." in _texts(doc)  # a capital after the break: a name, left as it was


def _rare_words(rng: random.Random, sentences: int) -> str:
    """Sentences of made-up words, each too rare to be what the document is about."""
    def word() -> str:
        return "".join(rng.choice("bcdfgklmnprstvz") + rng.choice("aeiou") for _ in range(3))

    return "\n".join(" ".join(word() for _ in range(9)) + "." for _ in range(sentences))


def test_key_sentences_open_with_the_first_and_hold_what_the_document_keeps_returning_to():
    rng = random.Random(3)
    central = ["Northwind delivers the bakery dashboard to Bluebell every month.",
               "Bluebell pays Northwind EUR 2,400 for the bakery dashboard.",
               "Either Northwind or Bluebell may end the dashboard contract with sixty days' notice."]
    doc = Document("c.pdf", "pdf", "0" * 64, "c", [
        Segment("Services agreement of 3 March 2025.\n" + _rare_words(rng, 6), "page 1"),
        Segment(_rare_words(rng, 6) + "\n" + central[0] + "\nDashboard.\n" + _rare_words(rng, 6), "page 2"),
        Segment(central[1] + "\n" + _rare_words(rng, 6) + "\n" + central[2], "page 3"),
        Segment(_rare_words(rng, 6) + "\n" + central[1], "page 4")])  # a near copy, shown once
    lines = excerpts.key_sentences(system_for(doc), count).splitlines()
    assert lines == ["[c.pdf, page 1] Services agreement of 3 March 2025.",
                     f"[c.pdf, page 2] {central[0]}", f"[c.pdf, page 3] {central[1]}", f"[c.pdf, page 3] {central[2]}"]
    room = count(lines[0] + "\n") + max(count(line + "\n") for line in lines[1:])
    fewer = excerpts.key_sentences(system_for(doc), count, room=room).splitlines()
    assert len(fewer) == 2 and fewer[0] == lines[0] and fewer[1] in lines[1:]  # the opening, then the best-ranked
    assert excerpts.key_sentences(system_for(Document("e.txt", "text", "0" * 64, "e", [])), count) == ""


def test_key_sentences_stop_at_their_number():
    sentences = [f"The harbour crane number {n} lifts containers onto the harbour ships at night." for n in range(40)]
    doc = Document("h.txt", "text", "0" * 64, "h", [Segment("\n".join(s + f" Shift {n} of crane {n * 7}."
                                                                    for n, s in enumerate(sentences)), "L1-40")])
    lines = excerpts.key_sentences(system_for(doc), count, room=10_000).splitlines()
    assert 1 < len(lines) <= excerpts.KEY_SENTENCES


def test_the_next_question_about_the_same_documents_reuses_their_sentences(monkeypatch):
    doc = Document("n.txt", "text", "0" * 64, "n", [Segment("The fee is EUR 2,400.\nNotice is sixty days.", "L1-2")])
    calls, real = [], excerpts.sentences
    excerpts._indexed.cache_clear()
    monkeypatch.setattr(excerpts, "sentences", lambda system: calls.append(system) or real(system))
    system = system_for(doc)
    assert "EUR 2,400" in excerpts.excerpt(system, "What is the fee?", count).lines
    assert "sixty days" in excerpts.excerpt(system, "What is the notice?", count).lines
    assert excerpts.key_sentences(system, count).startswith("[n.txt, L1-1] The fee is EUR 2,400.")
    assert calls == [system]  # read once: the other two asked the kept index
    other = system_for(Document("m.txt", "text", "0" * 64, "m", [Segment("The rent is EUR 900.", "L1-1")]))
    assert "EUR 900" in excerpts.excerpt(other, "What is the rent?", count).lines and len(calls) == 2


def test_key_sentences_are_the_same_in_every_process():
    """Twenty words, all in the first sentence and each in one more, tie for the KEY_WORDS places:
    the tie must not be broken by string hashing, which differs between processes, or the summary's
    prompt would too."""
    code = ("from scoutdoc import excerpt as e; "
            "words = [f'word{chr(97 + k)}' for k in range(20)]; "
            "text = ' '.join(words) + '.\\n' + '\\n'.join(f'{w} pad{k} fill{k} more{k}.' for k, w in enumerate(words)); "
            "system = '<document source=\"t.txt\" kind=\"text\">\\n[L1-21]\\n' + text + '\\n</document>\\n'; "
            "print(e.key_sentences(system, lambda t: len(t) // 4 + 1))")
    outputs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                              env={**os.environ, "PYTHONHASHSEED": str(seed)}).stdout for seed in range(6)}
    assert len(outputs) == 1 and len(outputs.pop().strip().splitlines()) == excerpts.KEY_SENTENCES
