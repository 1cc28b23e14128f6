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
    assert unsupported("Perhaps. Maybe: Surely 1999.\n## Key Points\n- Never", DOCUMENTS) == ["1999"]
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


@pytest.mark.parametrize(("answer", "named"), [
    ("The CEO is Dr. Maréchal.", ["CEO", "Maréchal"]),          # a title is no name, nor does it end a sentence
    ("It was written by J. R. R. Tolkien.", ["Tolkien"]),
    ("The CEO is **Maréchal** (Maréchal), see [Maréchal](x).", ["CEO", "Maréchal"]),
    ("The dose is 500mg daily, at 3pm, in the 1990s.", ["500mg", "3pm", "1990s"]),  # a number with its unit
    ("It costs $2,400 and 1.5 %.", []),                            # cents and trailing zeros
    ("It costs $2,401.", ["2,401"]),
    ("It ends in 2025.", []),                                      # the year of a dotted date
    ("The formula is H2O.", []),                                   # no number inside a word
    ("So I'm sure, and I'll say: Northwind_Traders_Diagram.", ["Northwind_Traders_Diagram"]),  # a code whole
    ("It is the Traders Report.", ["Report"]),                      # an underscore separates words
])
def test_what_an_adversarial_read_found(answer, named):
    documents = "Northwind Traders. The fee is $2,400.00, the rate 1.50 %. Valid until 31.12.2025. H2O. Traders_Summary.pdf"
    assert unsupported(answer, documents) == named


def test_accents_and_apostrophes_match_however_encoded():
    import unicodedata

    nfd = unicodedata.normalize("NFD", "He met Maréchal and O'Neil.")
    assert unsupported("The CEO met Maréchal and O’Neil.", nfd, ["Who is the CEO?"]) == []
    assert unsupported(unicodedata.normalize("NFD", "The CEO met Maréchal."), "He met Maréchal", ["CEO?"]) == []
    assert unsupported("It was Stafford, for 123 euros.", "Staﬀord paid １２３ euros") == []  # a PDF's ligature


def test_a_short_name_must_match_whole_and_a_longer_one_nearly():
    documents = "We browse as well as chased Christine and Germany's PostgreSQL."
    assert unsupported("It was Brown, Wells and Chase.", documents) == ["Brown", "Wells", "Chase"]
    assert unsupported("It was German Postgres.", documents) == []


def test_only_the_first_names_are_looked_up_and_long_number_runs_stay_linear():
    many = "It was " + ", ".join(f"Zed{chr(97 + i % 26)}{chr(97 + i // 26)}" for i in range(60)) + "."
    assert len(unsupported(many, "nothing here")) == 40
    assert unsupported("x " + "1." * 16000 + "a", "nothing here") == ["1." * 15999 + "1"]


@pytest.mark.parametrize(("answer", "named"), [
    ("Pay at https://pay.contoso-billing.com/now or mail billing@contoso.com.",
     ["https://pay.contoso-billing.com/now", "billing@contoso.com"]),
    ("Call renew_fee() or renewalFee.computeTotal() in scoutdoc.billing.renew.",
     ["renewalFee.computeTotal", "scoutdoc.billing.renew"]),
    ("See https://www.contoso.com/, contoso.com, www.contoso.com/pay and parse_rows().", []),  # scheme, slash, inside
    ("Read read_orders.py, e.g. the U.S. one at 3 p.m.", ["3"]),  # a file name present; abbreviations are no code
])
def test_web_and_mail_addresses_and_code_are_looked_up_whole(answer, named):
    documents = "Visit https://www.contoso.com/pay/. <document source=\"repo/read_orders.py\">def parse_rows(f): renew_fee"
    assert unsupported(answer, documents) == named


def test_a_code_the_question_names_is_no_claim():
    assert unsupported("It calls load_all().", "nothing", ["What does load_all() do?"]) == []


@pytest.mark.parametrize("answer", [
    "**Summary:** the meeting.", "**Summary**: the meeting.", "- **Key points**\n+ Listing it",
    "1) Overview of it\n(a) Alpha here\nb. Beta here",
])
def test_list_markers_and_bold_labels_start_a_sentence(answer):
    assert unsupported(answer, "the meeting") == []


def test_accents_written_or_left_out_match_and_one_name_is_not_another_sharing_its_start():
    documents = "José García of Zürich met Francisca, Antonia and Richardson."
    assert unsupported("Jose Garcia of Zurich met Richards.", documents) == []
    assert unsupported("It was José, in Zürich.", "Jose in Zurich") == []
    assert unsupported("It was Francisco and Antonio.", documents) == ["Francisco", "Antonio"]


def test_a_word_split_at_a_line_end_or_by_an_invisible_hyphen_is_found():
    documents = "The Rappahan-\nnock river. North\u00adwind and Blue\u200bbell."
    assert unsupported("It is the Rappahannock, by Northwind and Bluebell.", documents) == []
    assert unsupported("It is the Rappahannock and Zephyr.", documents) == ["Zephyr"]


@pytest.mark.parametrize("run", ["a_" * 50_000 + "!", "a." * 50_000 + "@", "www." + "." * 100_000, "aB" * 50_000,
                                 "ab." * 50_000, "a-" * 50_000 + "@b"])
def test_long_runs_that_look_like_code_stay_linear(run):
    import time

    started = time.perf_counter()
    unsupported(f"See {run}", "nothing")
    assert time.perf_counter() - started < 2  # quadratic would take minutes


@pytest.mark.parametrize("answer", [
    "Pay at **https://pay.contoso.com/checkout**.", "Pay at `https://pay.contoso.com/checkout`.",
    "Pay at _https://pay.contoso.com/checkout_.", "The supplier is __Contoso Ltd__.",
])
def test_markdown_around_an_address_or_a_name_is_not_part_of_it(answer):
    assert unsupported(answer, "Pay at https://pay.contoso.com/checkout to Contoso Ltd.") == []
