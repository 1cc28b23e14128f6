"""Counts in words people read: "1 table", "2 tables", "1,024 sources"."""


def plural(n: int, noun: str, many: str | None = None) -> str:
    """`n` and `noun`, pluralised with "s" (or `many`) unless n is 1; thousands separated."""
    return f"{n:,} {noun}" if n == 1 else f"{n:,} {many or noun + 's'}"

