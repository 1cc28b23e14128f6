"""Gitignore patterns matched in time linear in the path's depth, for the patterns regexes make slow.

pathspec compiles each pattern to one regex; `**` becomes `(?:.+/)?` and `*` becomes `[^/]*`, and a
line like `**/*a*/**/*a*/**/*a*/**/b` then backtracks polynomially in the path (depth 10 took 8 s,
a deep tree never finished). A pattern with four or more `*` is instead matched segment by
segment here: a set of reachable path positions per pattern segment (`**` reaches every later
one), each segment compared with the classic single-backtrack wildcard loop, so the work is
pattern length x path depth x segment length, with no nesting. The verdict is pathspec's: a
pattern also matches below a matching directory, `dir/` only directories, `x/**` what is inside x.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass

_STAR = "*"
_ANY = "?"
STAR_LIMIT = 4  # patterns with fewer `*` keep pathspec's regex (their backtracking stays small)


def is_complex(line: str) -> bool:
    return line.count("*") >= STAR_LIMIT


def _tokens(segment: str) -> list:
    """A segment as literal characters, `*`, `?` and one-character class regexes."""
    out: list = []
    i = 0
    while i < len(segment):
        c = segment[i]
        if c == "\\" and i + 1 < len(segment):
            out.append(segment[i + 1])
            i += 2
            continue
        if c == "[":
            end = segment.find("]", i + 2 if segment[i + 1 : i + 2] in ("!", "^", "]") else i + 1)
            if end != -1:
                body = segment[i + 1 : end]
                body = "!" + body[1:] if body.startswith("^") else body
                out.append(re.compile(fnmatch.translate(f"[{body}]")))
                i = end + 1
                continue
        if c == _STAR:
            if not out or out[-1] != _STAR:  # runs of * are one *
                out.append(_STAR)
        else:
            out.append(_ANY if c == "?" else c)
        i += 1
    return out


def _one(token, char: str) -> bool:
    if token == _ANY:
        return True
    if isinstance(token, str):
        return token == char
    return token.match(char) is not None


def segment_match(tokens: list, text: str) -> bool:
    """Wildcard match of one path segment; at most len(text) x len(tokens) steps."""
    ti = si = 0
    star, mark = -1, 0
    while si < len(text):
        if ti < len(tokens) and tokens[ti] != _STAR and _one(tokens[ti], text[si]):
            ti += 1
            si += 1
        elif ti < len(tokens) and tokens[ti] == _STAR:
            star, mark = ti, si
            ti += 1
        elif star != -1:
            ti, mark = star + 1, mark + 1
            si = mark
        else:
            return False
    while ti < len(tokens) and tokens[ti] == _STAR:
        ti += 1
    return ti == len(tokens)


@dataclass
class _Match:
    """What pathspec reads from a regex match: the `ps_d` group says a directory was matched."""

    dir_mark: str | None

    def groupdict(self) -> dict:
        return {"ps_d": self.dir_mark}


class SegmentPattern:
    """A drop-in for a pattern's compiled regex (`match`/`search` on a normalized path)."""

    def __init__(self, line: str) -> None:
        body = line.strip()
        body = body[1:] if body.startswith("!") else body
        body = body[1:] if body.startswith("\\") and body[1:2] in ("!", "#") else body
        self.dir_only = body.endswith("/")
        body = body.rstrip("/")
        anchored = "/" in body
        parts = [p for p in body.lstrip("/").split("/") if p]
        if not anchored and parts[:1] != ["**"]:
            parts = ["**", *parts]
        self.inside = len(parts) > 1 and parts[-1] == "**"  # `x/**`: what is inside x
        if self.inside:
            parts = parts[:-1]
        self.parts = [None if p == "**" else _tokens(p) for p in parts]
        self.pattern = line

    def search(self, path: str) -> _Match | None:
        is_dir = path.endswith("/")
        segs = path.rstrip("/").split("/") if path.strip("/") else []
        reach = {0}
        for part in self.parts:
            if not reach:
                return None
            if part is None:  # `**`: zero or more whole segments
                reach = set(range(min(reach), len(segs) + 1))
            else:
                reach = {k + 1 for k in reach if k < len(segs) and segment_match(part, segs[k])}
        for k in sorted(reach):
            if k < len(segs):  # a matching ancestor directory: everything below it matches
                return _Match("/")
            if k == len(segs) and (is_dir or not (self.dir_only or self.inside)):
                return _Match("/" if is_dir else None)
        return None

    match = search
