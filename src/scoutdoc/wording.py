"""Counts and sizes in words people read: "1 table", "2 tables", "1,024 sources", "373.2 MB"."""


def plural(n: int, noun: str, many: str | None = None) -> str:
    """`n` and `noun`, pluralised with "s" (or `many`) unless n is 1; thousands separated."""
    return f"{n:,} {noun}" if n == 1 else f"{n:,} {many or noun + 's'}"


def size(n: int) -> str:
    """Bytes in the largest binary unit that keeps the number at or above 1: 512 B, 1.5 KiB, 373.2 MiB."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024:
            return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"
