"""Transcripts: WebVTT, SRT and SBV through webvtt-py, and plain timestamped text such as Whisper output.

Cues are merged into paragraphs (same speaker, short gaps) because one-line cues read badly and waste
tokens on delimiters; each cue's start time is kept inline as `[00:01:02]` and the paragraph's full
range is its `where`, so an answer can still cite the moment something was said.
"""

import hashlib
import html
import io
import re
from dataclasses import dataclass
from pathlib import PurePosixPath

from .document import Document, Segment, Unreadable

MERGE_GAP_S = 2.0
MERGE_MAX_CHARS = 600

_SPEAKER_PREFIX = re.compile(r"^(?:>>\s*)?([A-Z][\w.'\- ]{0,30}?):\s+(.*)$", re.S)
_TIME = r"(?:\d{1,2}:)?\d{1,2}:\d{2}(?:[.,]\d{1,3})?"
_SRT_TIMING = re.compile(r"^\s*\d+:\d{1,2}:\d{1,2}[,.]\d+\s*-->")
_TIMED_LINE = re.compile(rf"^\s*\[?\s*({_TIME})(?:\s*(?:-->|-)\s*({_TIME}))?\s*\]?\s*(.*)$")


@dataclass(frozen=True)
class Cue:
    start: float
    end: float
    speaker: str
    text: str


def parse_time(stamp: str) -> float:
    parts = stamp.replace(",", ".").split(":")
    seconds = 0.0
    for part in parts:
        seconds = seconds * 60 + float(part)
    return seconds


def format_time(seconds: float, millis: bool = True) -> str:
    whole = int(seconds)
    h, m, s = whole // 3600, whole // 60 % 60, whole % 60
    if not millis:
        return f"{h:02d}:{m:02d}:{s:02d}"
    return f"{h:02d}:{m:02d}:{s:02d}.{round((seconds - whole) * 1000) % 1000:03d}"


def _split_speaker(text: str, voice: str | None) -> tuple[str, str]:
    text = " ".join(text.split())
    if voice:
        return voice.strip(), text
    match = _SPEAKER_PREFIX.match(text)
    if match:
        return match.group(1).strip(), match.group(2).strip()
    return "", text


def number_srt_cues(text: str) -> str:
    """SRT text with a cue number before every timing line that lacks one.

    Many tools write SRT without the cue numbers, and players accept it; webvtt-py rejects such a
    file as invalid and drops unnumbered cues, so the numbers are put back first.
    """
    lines = text.lstrip().splitlines()  # webvtt-py wants the first cue on the first line
    out: list[str] = []
    number = 0
    for line in lines:
        if _SRT_TIMING.match(line):
            number += 1
            if not (out and out[-1].strip().isdigit()):
                out.append(str(number))
        out.append(line)
    return "\n".join(out) + "\n"


_OVERRIDE = re.compile(r"\{\\[^{}\n]*\}")  # an SSA override in SRT text: {\an8} places the line at the top


def _plain(caption: str) -> str:
    """A caption's words: WebVTT's character references read ("&amp;" is "&"), SRT's SSA overrides gone."""
    return html.unescape(_OVERRIDE.sub("", caption))


def parse_subtitles(text: str, fmt: str) -> list[Cue]:
    import webvtt  # only subtitle files need it; plain timestamped text does not
    from webvtt.errors import MalformedCaptionError, MalformedFileError

    if fmt == "srt":
        text = number_srt_cues(text)
    try:
        captions = webvtt.from_buffer(io.StringIO(text), format=fmt).captions
    except (MalformedFileError, MalformedCaptionError) as exc:
        raise Unreadable(f"not a valid {fmt.upper()} file ({exc}); fix the file or save it as plain text", "damaged") from exc
    if not captions and "-->" in text:  # cues there, but none whose times read
        raise Unreadable("its cue times could not be read (they should look like 00:01:02.500 --> 00:01:05.000, "
                         "with a comma instead of the point in SRT); check or re-export the file", "damaged")
    cues = []
    for caption in captions:
        speaker, body = _split_speaker(_plain(caption.text), caption.voice)
        if body:
            cues.append(Cue(parse_time(caption.start), parse_time(caption.end), speaker, body))
    return cues


def parse_timed_text(text: str) -> list[Cue] | None:
    """Cues from plain text where most lines start with a timestamp; None when it is not such a file."""
    lines = [line for line in text.splitlines() if line.strip()]
    if len(lines) < 2:
        return None
    matches = [_TIMED_LINE.match(line) for line in lines]
    if sum(1 for m in matches if m) < 0.6 * len(lines):
        return None
    raw: list[tuple[float, float | None, str]] = []
    lead: list[str] = []  # lines before the first time (a title, who was there): kept, at that time
    for line, match in zip(lines, matches):
        if match:
            end = parse_time(match.group(2)) if match.group(2) else None
            raw.append((parse_time(match.group(1)), end, match.group(3)))
        elif raw:  # a continuation line belongs to the previous cue
            start, end, body = raw[-1]
            raw[-1] = (start, end, f"{body} {line.strip()}")
        else:
            lead.append(line.strip())
    if lead and raw:
        raw.insert(0, (raw[0][0], raw[0][0], " ".join(lead)))
    cues = []
    for i, (start, end, body) in enumerate(raw):
        if end is None:
            end = raw[i + 1][0] if i + 1 < len(raw) else start
        speaker, body = _split_speaker(body, None)
        if body:
            cues.append(Cue(start, end, speaker, body))
    return cues


def merge_cues(cues: list[Cue]) -> list[Segment]:
    segments: list[Segment] = []
    group: list[Cue] = []

    def flush() -> None:
        if not group:
            return
        body = " ".join(f"[{format_time(c.start, millis=False)}] {c.text}" for c in group)
        if group[0].speaker:
            body = f"{group[0].speaker}: {body}"
        segments.append(Segment(body, f"{format_time(group[0].start)}-{format_time(group[-1].end)}"))
        group.clear()

    for cue in cues:
        if group and (
            cue.speaker != group[-1].speaker
            or cue.start < group[-1].start  # out of order: a segment's times run forward, its range too
            or cue.start - group[-1].end > MERGE_GAP_S
            or sum(len(c.text) for c in group) + len(cue.text) > MERGE_MAX_CHARS
        ):
            flush()
        group.append(cue)
    flush()
    return segments


def transcript_document(source: str, data: bytes, cues: list[Cue]) -> Document:
    if not cues:
        raise Unreadable("transcript has no cues with text", "no_text")
    return Document(
        source=source,
        kind="transcript",
        sha256=hashlib.sha256(data).hexdigest(),
        title=PurePosixPath(source.split("!")[-1]).name,
        segments=merge_cues(cues),
        meta={
            "cues": [{"start": format_time(c.start), "end": format_time(c.end), "speaker": c.speaker, "text": c.text} for c in cues],
            "duration": format_time(max(c.end for c in cues)),
        },
    )


def read_subtitles(source: str, data: bytes, text: str, fmt: str) -> Document:
    return transcript_document(source, data, parse_subtitles(text, fmt))
