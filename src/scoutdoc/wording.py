"""Counts and lists in words people read: "1 table", "2 tables", "1,024 sources", '"fee" and "date"'."""

from typing import Sequence


def plural(n: int, noun: str, many: str | None = None) -> str:
    """`n` and `noun`, pluralised with "s" (or `many`) unless n is 1; thousands separated."""
    return f"{n:,} {noun}" if n == 1 else f"{n:,} {many or noun + 's'}"



def quoted(words: Sequence[str]) -> str:
    """The words quoted and joined as a sentence lists them: '"a"', '"a" and "b"', '"a", "b" and "c"'."""
    marks = [f'"{w}"' for w in words]
    return marks[0] if len(marks) == 1 else f"{', '.join(marks[:-1])} and {marks[-1]}"
