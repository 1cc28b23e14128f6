"""The names and numbers of an answer that the documents lack (`grounding`)."""

import pytest

from scoutdoc.grounding import note, unsupported

DOCUMENTS = (
    "Services Agreement between Northwind Analytics Ltd (the Provider) and Bluebell Bakery Co.\n"
    "The Client pays EUR 2,400 a month. Either party may terminate with sixty (60) days' notice.\n"
    "We host it on Postgres in Germany; the 17TH of June. Figure 1.1a shows a Nasua nasua.\n"
)


@pytest.mark.parametrize("answer", [
    "The monthly fee is EUR 2400.",                    # separators differ
    "The fee is 2.400 euros a month.",
    "Northwind Analytics is the Provider [contract.pdf, page 1].",
    "The data lives in PostgreSQL, in German hands.",  # a longer or shorter form of a long word
    "It happened on the 17th.",                         # an ordinal's ending, in either case
    "The Provider is northwind analytics.",
    "1. Sixty days\n2. Either party",                   # list numbers, and capitals that start a line
    "- Either party\n* Sixty days",
    "Figure 1.1a shows a Nasua nasua.",
    "It is the Provider's job.",                       # a possessive names what the documents name
    "The notice is sixty days; hash 3fa2b1c9 and v2 are parts of words.",
])
def test_what_the_documents_hold_is_not_named(answer):
    assert unsupported(answer, DOCUMENTS) == []


def test_names_and_numbers_the_documents_lack_are_named_in_order_once_each():
    answer = ("The president is François-Étienne Maréchal [doc.pdf, page 2], who met Maréchal's "
              "team on a Monday, paid 3,100 EUR and came 3rd; Monday again.")
    assert unsupported(answer, DOCUMENTS) == ["François-Étienne Maréchal", "Maréchal's", "Monday", "3,100", "3rd"]


def test_words_of_the_question_are_not_named():
    answer = "The report is due on the first Monday, says Zim."
    assert unsupported(answer, DOCUMENTS) == ["Monday", "Zim"]
    assert unsupported(answer, DOCUMENTS, ["Is the report due on a Monday?", "And what does zim say?"]) == []


def test_a_capital_that_starts_a_sentence_is_no_name_but_a_number_is_checked_anywhere():
    assert unsupported("Perhaps. Maybe: Surely (Never) 1999.", DOCUMENTS) == ["1999"]
    assert unsupported("They said \"Never\" and walked.", DOCUMENTS) == []


def test_a_short_word_must_match_whole():
    # "Red" is the start of "Reduce"-like words but not one of the document's words
    assert unsupported("They met at Red River.", "Reduce the river. We reduced it.") == ["Red"]


def test_the_note_lists_a_few_and_counts_the_rest():
    assert note(["Monday"]) == 'the answer names "Monday", which the documents do not contain: check it against them'
    many = note([f"N{i}" for i in range(9)])
    assert many.startswith('the answer names "N0", "N1", "N2", "N3", "N4", "N5" and 3 more, which')


def test_a_name_is_found_at_the_end_of_long_documents_past_many_near_misses():
    documents = "Northwinds xBluebell " * 100_000 + "Bluebell"
    assert unsupported("Northwind and Bluebell and Zephyr.", documents) == ["Zephyr"]
    assert unsupported("Bluebell.", documents[:-8]) == []  # "Bluebell" is the start of the answer: no name
    assert unsupported("It is Bluebell.", documents[:-8]) == ["Bluebell"]


@pytest.mark.parametrize(("answer", "named"), [
    ("It is 2400.", []), ("It is 2.400 EUR.", []), ("A rate of 1,5.", []), ("Pop. 67413000.", []),
    ("It is 400.", ["400"]),  # a part of 2,400 is another number
    ("It is 15.", ["15"]),    # and so are the digits of 1.5 run together
    ("Page 12.", ["12"]),     # 12.5 holds no 12
    ("See 3.1.6.2.", []), ("See 3.1.6.", ["3.1.6"]), ("See 273.879,0561.", ["273.879,0561"]),
])
def test_numbers_match_whole_with_their_thousands_separators_or_none(answer, named):
    documents = "The fee is EUR 2,400 a month; a rate of 1.5 %; 67,413,000 people; page 12.5; section 3.1.6.2."
    assert unsupported(answer, documents) == named
