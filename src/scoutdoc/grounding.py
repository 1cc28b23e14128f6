"""The names and numbers of an answer that occur nowhere in the documents.

A small model answers from its own head as readily as from the documents: asked who the president
of France is, about a PDF that only tabulates countries, the default model named "François-Étienne
Maréchal"; asked on which day a monthly report is due, it added that the first business day "is a
Monday". The user is told which names and numbers of an answer neither the documents nor the
question contain, so they know what to check before trusting it. The note states a fact about the
answer, not a verdict: "12" is named where the documents say "twelve", and an answer can be wrong
with every name in it taken from the documents.

Only names (capitalised words inside a sentence), numbers, and web addresses, e-mail addresses and
code (whole) are checked. Ordinary words are what an answer rephrases; a name or a number is what it
must not make up. Over the QA sets' answers this named something in 13 of the default model's 33
wrong answers and in 4 of its 45 right ones: the invented Monday, an invented acronym, "Euro" for
"EUR", and a link the documents write without its "/bar" (docs/benchmarks.md). A name that starts a
sentence, a list item or a table cell goes unchecked ("Maréchal is the CEO."), as do names in scripts
without capitals. Capitalised nouns (German) are checked like names: a long one counts as found in
a shorter or longer form of the same word, a short one must match.

The documents given are what they say: the caller leaves out the locators it wrote into them
(`ingest.pack.without_locators`), whose page numbers and times would make any small number look
found.
"""

import math
import re
import unicodedata
from collections.abc import Iterable

from .wording import quoted

# A marker the answer cites ([contract.pdf, page 2], [L10-42], [00:03:15]): brackets holding a comma
# or a digit. Other brackets ("[Maréchal](link)") are text like any other.
CITATION = re.compile(r"\[[^\]\n]*[,\d][^\]\n]*\]")
# Numbers with their separators, units or an ordinal's ending after them ("2,400", "500mg", "3rd"),
# not inside a word or a code ("v2", "H2O", "3fa2b1c9"); words of letters, with an apostrophe inside
# ("O'Neil") but split at hyphens, so each part of "François-Étienne" counts.
TOKEN = re.compile(
    r"(?<!\w)(?P<number>\d+(?:[.,]\d+)*)(?![.,]?\d|[^\W\d_]+\d)[^\W\d_]*"
    r"|(?P<word>[^\W\d_]+(?:'[^\W\d_]+)*)"
)
# What a model invents besides names, written in lower case as often as not: web addresses, e-mail
# addresses and code (snake_case, lowerCamel, dotted.names, a call's "()"), each looked up whole.
CODE = re.compile(
    r"(?:https?://|www\.)[^\s<>\"'()\[\]{}`*]*[^\s<>\"'()\[\]{}`*_.,;:!?]"  # not markdown's ** ` _ around it
    r"|(?<![\w.+-])[\w.+-]+@[\w-]+(?:\.[\w-]+)+"
    r"|(?<![\w.@/])(?:[^\W\d_]\w*(?:\.[^\W\d_]\w+)+|[^\W\d_][^\W_]*(?:_[^\W_]+)+|[a-z]+[A-Z]\w*|[^\W\d_]\w*(?=\(\)))"
)
OPENERS = set(".!?:;\"“”'‘<>#|")  # after one of these (and spaces) a capital starts a sentence, not a name
BULLETS = set("-–—*•+")  # likewise one of these with a space after it ("- Item"); "**Name**" is a name
# A list item's start ("- ", "1) ", "(a) ") and a markdown label or heading in bold at the start of a
# line ("**Summary:**", "- **Key points**" alone): the words after it or in it start a sentence.
LIST_START = re.compile(r"[ \t]*(?:[-–—*•+]|\(?(?:\d{1,3}|[^\W\d_])[.)])[ \t]+")
LABEL = re.compile(rf"^(?:{LIST_START.pattern})?\*\*[^*\n]+?(?::\*\*|\*\*[ \t]*(?::|$))", re.M)
TITLES = {"mr", "mrs", "ms", "dr", "prof", "st", "mt", "jr", "sr", "gen", "col", "capt", "lt", "sgt", "rev", "hon"}
# A title or an initial before a name does not end a sentence ("Dr. Maréchal", "J. R. R. Tolkien").
ABBREVIATION = re.compile(rf"(?:^|\W)(?:[^\W\d_]|{'|'.join(t.capitalize() for t in sorted(TITLES))})\.$")
POSSESSIVE = re.compile(r"'s$")  # "the CEO's" names the CEO
LIST_NUMBER = re.compile(r"[.)]\s")  # "1. " at the start of a line numbers a list item
PREFIX_SHARE = 0.8  # a long word also counts as found in a longer or shorter form sharing this much
PREFIX_MIN = 6  # ... when it has at least this many letters ("German"/"Germany", "PostgreSQL"/"Postgres")
LOOK_BACK = 64  # characters before a word that can tell whether it starts a sentence
CHECKED = 40  # names and numbers looked up at most, the first ones: each is one scan of the documents
SHOWN = 6  # names and numbers the note lists at most


def unsupported(answer: str, documents: str, asked: Iterable[str] = ()) -> list[str]:
    """The names and numbers of `answer` that neither `documents` nor the questions `asked` contain,
    in the order the answer gives them, adjacent ones as one phrase ("François-Étienne Maréchal").

    Case does not matter, nor accents (written either way, or left out: "Jose Garcia" is found as
    "José García"), ligatures and full-width forms (NFKC), invisible soft hyphens, a word split at a
    line end ("Rappahan-\nnock"), the shape of an apostrophe, a number's thousands separators ("2400"
    is found as "2,400") or zero cents ("2,400.00"), a web address's scheme or last slash; citation
    markers in square brackets (in the answer and in what was asked), markdown headings and bold
    labels ("**Summary:**") are left out. Only the first CHECKED distinct claims are looked up."""
    text = CITATION.sub(_blank, _normal(answer))
    words = CODE.sub(_blank, text)  # a code's words are looked up with it, not one by one
    known = set().union(*(_keys(CITATION.sub(_blank, _normal(question))) for question in asked))
    claims = [(span, key) for span, key in _codes(text) if key not in known]
    labels = {m.start(): m.end() for m in LABEL.finditer(words)}  # found once: per word, a long line took seconds
    claims += [(m.span(), key) for m in TOKEN.finditer(words) if (key := _key(m)) not in known and _is_claim(words, m, labels)]
    claims.sort()
    checked = set(list(dict.fromkeys(key for _, key in claims))[:CHECKED])
    found = _occurring(checked, documents)
    missing = [span for span, key in claims if key in checked and key not in found]
    phrases: list[str] = []
    for start, end in _joined(text, missing):
        if text[start:end] not in phrases:
            phrases.append(text[start:end])
    return phrases


def _blank(m: re.Match) -> str:
    return " " * len(m.group(0))


def _codes(text: str) -> list[tuple[tuple[int, int], str]]:
    """The codes of `text` with their keys: "@" and the code in lower case, a web address without
    its scheme and a last slash."""
    return [(m.span(), "@" + _folded(re.sub(r"^https?://", "", m.group(0)).rstrip("/"))) for m in CODE.finditer(text)]


def _keys(text: str) -> set[str]:
    """Every code, name and number `text` names, as keys: what a question names is no claim."""
    return {key for _, key in _codes(text)} | {_key(m) for m in TOKEN.finditer(CODE.sub(_blank, text))}


def note(phrases: list[str]) -> str:
    """The line the user reads about `unsupported`'s result."""
    if len(phrases) <= SHOWN:
        names = quoted(phrases)
    else:
        names = f"{', '.join(quoted([p]) for p in phrases[:SHOWN])} and {len(phrases) - SHOWN} more"
    return f"the answer names {names}, which the documents do not contain: check it against them"


def _normal(text: str) -> str:
    """Text in NFKC, apostrophes straight, without invisible characters: accents composed ("é" one
    character, as most text has it), compatibility forms plain (a PDF's ligature "ﬁ" is "fi",
    full-width "１２" is "12"), and a soft hyphen or a zero-width space inside a word ("North\u00adwind")
    gone."""
    return _INVISIBLE.sub("", unicodedata.normalize("NFKC", text).replace("’", "'"))


_INVISIBLE = re.compile("[\u00ad\u200b\u200c\u200d\u2060\ufeff]")  # str.translate: 0.9 s on 20 MB of Spanish
_LINE_END_HYPHEN = re.compile(r"-[ \t]*\n[ \t]*")  # "Rappahan-\nnock"
_MARKS = re.compile(r"[\u0300-\u036f]+")  # the combining accents of Latin, Greek and Cyrillic letters


def _folded(text: str) -> str:
    """Lower case without accents, for looking up: "José García" is found as "Jose Garcia", as a
    reader (and a model writing without accents) would take it."""
    text = text.lower()
    return text if text.isascii() else _MARKS.sub("", unicodedata.normalize("NFD", text))


def _key(m: re.Match) -> str:
    """What a token is looked up by: a word in lower case without a possessive "'s"; a number as
    "#digits" with its thousands separators dropped ("2,400" and "2.400": each separator has three
    digits after it) and "#digits.decimals" with a decimal part's trailing zeros dropped ("2,400.50"
    is "#2400.5", "2,400.00" is "#2400"); anything else as written ("=3.1.6.2")."""
    number = m.group("number")
    if number is None:
        return POSSESSIVE.sub("", _folded(m.group("word")))
    first, *rest = re.split(r"[.,]", number)
    if rest and len(rest[-1]) != 3:
        *rest, decimals = rest
    else:
        decimals = ""
    if not all(len(part) == 3 for part in rest):
        return "=" + number
    decimals = decimals.rstrip("0")
    return f"#{first}{''.join(rest)}" + (f".{decimals}" if decimals else "")


def _is_claim(text: str, m: re.Match, labels: dict[int, int]) -> bool:
    """A number (but a list item's "1." at the start of a line), or a capitalised word of two letters
    or more that does not start a sentence or a list item, and neither on a markdown heading's line
    nor in a bold label at a line's start (`labels`: where each such label ends, by line start)."""
    word = m.group("word")
    if word is not None and (len(word.split("'")[0]) < 2 or not word[0].isupper() or _is_title(text, m)):
        return False  # nor "I'm" and its kind
    line_start = text.rfind("\n", 0, m.start()) + 1
    if text.startswith("#", line_start):
        return False
    if word is not None and (LIST_START.fullmatch(text, line_start, m.start()) or m.end() <= labels.get(line_start, -1)):
        return False
    before = text[max(line_start, m.start() - LOOK_BACK): m.start()]
    stripped = before.rstrip()
    if word is None:
        return not (not stripped and LIST_NUMBER.match(text, m.end()))
    spaced = len(stripped) < len(before)
    return not (not stripped or (stripped[-1] in OPENERS and not ABBREVIATION.search(stripped))
                or (stripped[-1] in BULLETS and spaced))


def _is_title(text: str, m: re.Match) -> bool:
    """"Dr." before a name: a title with its point, not a name of its own."""
    return m.group("word").lower() in TITLES and text.startswith(".", m.end())


def _pattern(key: str) -> str:
    """How `key` is looked for in the lower-cased documents, as a whole word or number.

    Each pattern starts with the key's fixed letters or first digits, and checks what comes before
    them only after them (a look-behind that spans them): a pattern that starts with a look-behind
    makes the regex engine try every position, 25x slower (0.15 against 0.006 s for 11 MB)."""
    if key[0] == "@":  # a code: as it is, inside anything ("pay.contoso.com" in "https://pay.contoso.com/x")
        return re.escape(key[1:])
    if key[0] in "#=":
        first, rest = _digits(key)
        # not after a letter ("H2O"), nor after a digit and a separator ("400" of "2,400"), except
        # a year's four digits, which a dotted date puts there ("31.12.2025")
        after = r"\w" if re.fullmatch(r"#\d{4}", key) else r"[\w.,]"
        return rf"{first}(?<!{after}[\s\S]{{{len(first)}}}){rest}(?![\d]|[.,]\d)"
    if len(key) >= PREFIX_MIN:
        stem = math.ceil(PREFIX_SHARE * len(key))
        longest = math.floor(len(key) / PREFIX_SHARE)
        # the key cut short after its stem, or the key with letters after it, not a third word sharing
        # the stem: "Francisca" is not "Francisco"
        tail = rf"[^\W_]{{0,{longest - len(key)}}}"
        for letter in reversed(key[stem:]):
            tail = f"(?:{re.escape(letter)}{tail})?"
        literal = key[:stem]
    else:
        literal, tail = key, ""
    # an underscore separates words here: a file named AutoCad_Diagram.pdf names "Diagram"
    return rf"{re.escape(literal)}(?<![^\W_][\s\S]{{{len(literal)}}}){tail}(?![^\W_])"


def _digits(key: str) -> tuple[str, str]:
    """A number key's first digits and the rest, as the documents may write them: a whole number
    grouped in threes with any thousands separator or none, decimals after a point or a comma, with
    trailing zeros or without ("2,400.00" for "#2400"); anything else as it is."""
    if key[0] == "=":
        first = re.match(r"\d+", key[1:]).group()
        return first, re.escape(key[1 + len(first):])
    whole, _, decimals = key[1:].partition(".")
    groups = [whole[max(0, i - 3): i] for i in range(len(whole), 0, -3)][::-1]
    rest = "".join(rf"[.,\s\u00a0\u202f']?{g}" for g in groups[1:])
    return groups[0], rest + (rf"[.,]{decimals}0*" if decimals else r"(?:[.,]0+)?")


def _occurring(keys: set[str], documents: str) -> set[str]:
    """Which of `keys` occur in `documents` (which may run to tens of millions of characters: each key
    is one fast scan of them, normalised and lower-cased once)."""
    if not keys:
        return set()
    low = _folded(_normal(documents))
    found = {key for key in keys if re.search(_pattern(key), low)}
    if found == keys or "\n" not in low:
        return found
    joined = _LINE_END_HYPHEN.sub("", low)  # a word split at a line end, looked up again for what is missing
    return found | {key for key in keys - found if re.search(_pattern(key), joined)}


def _joined(text: str, spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Spans next to each other (only spaces or a hyphen between them) as one."""
    out: list[tuple[int, int]] = []
    for start, end in spans:
        if out and re.fullmatch(r"[ \-]*", text[out[-1][1]:start]):
            out[-1] = (out[-1][0], end)
        else:
            out.append((start, end))
    return out
