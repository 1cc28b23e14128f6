"""Sizes as people write them ("4M", "500k", "8GiB", "128k" tokens) and bytes as people read them.

One rule for every option that takes a size (`--max-file-size`, `--kv-device-budget`,
`--kv-host-budget`, `--context`): the suffixes k, M, G and T are powers of 1024, written with or
without "i" and a trailing "B", in either case: "4M" = "4MiB" = "4MB" = 4 * 2**20. Memory and files
are measured that way, and so are context lengths: a "128k" model holds 131,072 tokens and Llama 4
Scout's "10M" context is 10,485,760.
"""

import re

from .errors import UsageError

_SIZE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*(?:([kmgt])i?)?b?\s*$", re.IGNORECASE)
_POWER = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4}


def parse_size(text: str | int, option: str = "") -> int:
    """"4M" -> 4 * 2**20, "500k" -> 512,000, "1.5GiB" -> 1.5 * 2**30, "512" -> 512; an int as given.

    A text that is not a size raises UsageError naming `option` (e.g. "--max-file-size")."""
    if isinstance(text, int):
        return text
    match = _SIZE.match(str(text))
    if not match:
        what = f"{option} {text!r}" if option else repr(text)
        raise UsageError(
            f"{what} is not a size; write a number with an optional k, M, G or T suffix (powers of 1024), "
            "e.g. 4M, 500k or 8GiB"
        )
    number, prefix = match.groups()
    return int(float(number) * 1024 ** _POWER[(prefix or "").lower()])


def format_bytes(n: int) -> str:
    """Bytes in the largest binary unit that keeps the number below 1024: "1.12 GiB"."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.2f} {unit}"
        value /= 1024
    return f"{n} B"
