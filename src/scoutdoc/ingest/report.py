"""What `scoutdoc inspect` reports: per-source sizes, skips, per-directory totals, as plain data.

Kept apart from the CLI so the same numbers can be shown as a rich table or printed as JSON, and
tested without a terminal. Token counts come from an optional `count_tokens` callable (the model's
tokenizer); without one they are None and only characters are reported.
"""

from collections.abc import Callable
from pathlib import PurePosixPath

from ..wording import plural
from .document import Document, IngestResult
from .pack import pack, pack_document

CountTokens = Callable[[str], int]


def extent(document: Document) -> str:
    """Pages, lines, paragraphs or duration: the size a reader of that kind would quote."""
    meta = document.meta
    if "pages" in meta:
        return plural(meta["pages"], "page")
    if "lines" in meta:
        return plural(meta["lines"], "line")
    if "duration" in meta:
        return f"{plural(len(meta.get('cues', [])), 'cue')}, {meta['duration']}"
    if "paragraphs" in meta:
        return f"{plural(meta['paragraphs'], 'paragraph')}, {plural(meta.get('tables', 0), 'table')}"
    return ""


def directory_of(source: str) -> str:
    """The folder a source sits in; an archive member's folder is written `archive.zip!folder`."""
    outer, _, inner = source.rpartition("!")
    parent = str(PurePosixPath(inner).parent)
    parent = "" if parent == "." else parent
    if outer:
        return f"{outer}!{parent}" if parent else f"{outer}!"
    return parent or "."


def summarize(result: IngestResult, count_tokens: CountTokens | None = None, by_directory: bool = False) -> dict:
    """The inspect report as a JSON-ready dict: sources, skipped, totals (and directories on request)."""
    sources = []
    for document in result.documents:
        entry = {
            "path": document.source,
            "kind": document.kind,
            "language": document.language or None,
            "title": document.title,
            "extent": extent(document),
            "segments": len(document.segments),
            "chars": document.chars,
            "tokens": count_tokens(pack_document(document)) if count_tokens else None,
            "sha256": document.sha256,
        }
        for key in ("pages", "lines", "failed_pages", "empty_pages", "warnings"):
            if key in document.meta:
                entry[key] = document.meta[key]
        sources.append(entry)
    packed = pack(result)
    report: dict = {
        "sources": sources,
        "skipped": [{"path": s.source, "reason": s.reason, "code": s.code} for s in result.skipped],
        "totals": {
            "sources": len(sources),
            "skipped": len(result.skipped),
            "chars": sum(s["chars"] for s in sources),
            "packed_chars": len(packed),
            "tokens": count_tokens(packed) if count_tokens else None,
        },
    }
    if by_directory:
        folders: dict[str, dict] = {}
        for entry in sources:
            row = folders.setdefault(directory_of(entry["path"]), {"directory": directory_of(entry["path"]), "sources": 0, "chars": 0, "tokens": 0 if count_tokens else None})
            row["sources"] += 1
            row["chars"] += entry["chars"]
            if count_tokens:
                row["tokens"] += entry["tokens"]
        report["directories"] = [folders[k] for k in sorted(folders)]
    return report
