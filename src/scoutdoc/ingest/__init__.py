"""Turning the paths a user names into located `Document`s, and saying clearly what was skipped.

`load_sources` never raises for a bad source: each one becomes a `Skip` with a one-line reason so the
other sources are still read. Callers that need at least one document use `require_documents`, which
raises `IngestError` (exit code 3) when nothing was ingested.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from ..errors import IngestError
from ..progress import Progress
from ..wording import plural
from .code import SECRET_SKIP_REASON, gitignore_spec, render_tree, walk_directory
from .document import Document, IngestResult, Segment, Skip, Unreadable
from .garbled import check_garbled
from .limits import check_docx_package, failure_reason
from .names import display_name
from .secrets import is_secret_path, refuse_secrets
from .options import ArchiveLimits, IngestOptions, MiB
from .pack import pack
from .sniff import ARCHIVE_SUFFIXES, classify
from .text import decode_or_skip, read_text
from .transcript import parse_timed_text, transcript_document

if TYPE_CHECKING:  # archives and glob matching load their modules on first use, not at start-up
    import pathspec

    from .archive import Budget

__all__ = [
    "ArchiveLimits", "Document", "IngestOptions", "IngestResult", "Segment", "Skip",
    "load_sources", "pack", "require_documents",
]

@dataclass
class _Work:
    path: str | Path
    source: str
    explicit: bool  # named by the user (no size cap, no secret filter)
    group: int = -1  # index of the directory argument it came from, -1 for a file argument


@dataclass
class _Collected:
    documents: list[Document] = field(default_factory=list)
    skipped: list[Skip] = field(default_factory=list)
    chars: int = 0  # the text of the documents kept so far (`_keep`)


def load_sources(
    paths: Iterable[str | os.PathLike],
    options: IngestOptions | None = None,
    progress: Progress | None = None,
    on_document: Callable[[Document], Document] | None = None,
) -> IngestResult:
    """Read every path (file, directory or archive) into documents; bad sources become skips.

    `on_document` sees each document as soon as it is read, and the result keeps what it returns
    instead: a caller that writes documents out as they come can hand back a lighter copy.
    """
    options = options or IngestOptions()
    out = _Collected()
    work: list[_Work] = []
    groups: list[str] = []
    seen: set[Path] = set()
    for raw in paths:
        path = Path(raw)
        problem = _stat_problem(path)
        if problem:
            out.skipped.append(Skip(display_name(str(raw)), *problem))
            continue
        if path.resolve() in seen:  # the same file or folder named twice is read once
            continue
        seen.add(path.resolve())
        if path.is_dir():
            selected, skips = walk_directory(path, options)
            out.skipped.extend(skips)
            groups.append(path.resolve().name or str(raw))
            work.extend(_Work(s.path, s.rel, False, len(groups) - 1) for s in selected)
        elif path.is_file():
            work.append(_Work(path, display_name(str(raw)), True))
        else:
            out.skipped.append(Skip(display_name(str(raw)), "not a regular file or directory (device, socket or pipe); pass a file", "not_regular"))
    per_group: dict[int, list[str]] = {}
    for done, item in enumerate(work, start=1):
        before = len(out.documents)
        try:
            with open(item.path, "rb") as handle:
                if _surely_over(handle, item.source, options.max_total_chars - out.chars):
                    raise _OverTotal
                data = handle.read()
        except _OverTotal:
            out.skipped.append(Skip(item.source, _over_total_reason(options.max_total_chars), "limit"))
        except OSError as exc:
            out.skipped.append(Skip(item.source, *_os_reason(exc)))
        else:
            _ingest_bytes(item.source, data, options, depth=0, explicit=item.explicit, budget=None, out=out, verbatim=item.group >= 0)
            del data
            if on_document:
                out.documents[before:] = map(on_document, out.documents[before:])
        if item.group >= 0 and len(out.documents) > before:
            per_group.setdefault(item.group, []).append(item.source)
        if progress:
            progress(done, len(work), "files")
    trees = [render_tree(groups[g], per_group[g]) for g in sorted(per_group)]
    return IngestResult(documents=out.documents, skipped=out.skipped, tree="\n\n".join(trees))


class _OverTotal(Exception):
    pass


_SAMPLE = 1 << 20


def _surely_over(handle, source: str, room: int) -> bool:
    """Whether a text file is too large for the room left, from its size and the characters per
    byte of its first MiB: a 10 GB log would otherwise be read and cut into segments before any cap
    applied. PDFs, Word files and archives hold far less text than their size, so they are read and
    counted instead."""
    if source.lower().endswith((".pdf", ".docx", *ARCHIVE_SUFFIXES)):
        return False
    size = os.fstat(handle.fileno()).st_size
    if size <= room:  # a character takes at least a byte
        return False
    sample = handle.read(_SAMPLE)
    handle.seek(0)
    per_byte = len(sample.decode("utf-8", errors="replace")) / max(len(sample), 1)
    return size * per_byte > room


def _over_total_reason(cap: int) -> str:
    return (f"with it the sources would hold over {cap // MiB}M characters of text, the cap for one run (about a "
            "quarter as many tokens, more than any model's window, and about 25 bytes of memory per character); "
            "select fewer or smaller files (--include/--exclude) or split the run")


def _keep(out: _Collected, document: Document, cap: int) -> None:
    """Keep a document just read while the text of the run stays within `cap` characters; else it is
    a skip. Memory grows about 25-fold over the text (segments, the packed prompt, token ids, the
    search index): 152 MB of text took 4.5 GB before this cap. Each document counts as soon as it is
    read, an archive's members one by one, so an archive of many large members stops holding text
    at the cap instead of after its last member (240 members of 4 MB took 730 MB)."""
    if out.chars + document.chars > cap:
        out.skipped.append(Skip(document.source, _over_total_reason(cap), "limit"))
        return
    out.chars += document.chars
    out.documents.append(document)


def require_documents(result: IngestResult) -> IngestResult:
    """`result` unchanged, or IngestError when no source could be used."""
    if not result.documents:
        detail = f"{plural(len(result.skipped), 'source')} skipped, see the reasons above" if result.skipped else "no files were selected"
        raise IngestError(f"nothing could be ingested ({detail}); fix the paths or selection options and try again")
    return result


def _stat_problem(path: Path) -> tuple[str, str] | None:
    """(reason, code) when the path cannot be used at all."""
    try:
        path.stat()
    except FileNotFoundError:
        if path.is_symlink():
            return "dangling symbolic link (its target does not exist); fix the link or pass the target", "not_found"
        return "no such file or directory; check the path", "not_found"
    except OSError as exc:
        return _os_reason(exc)
    return None


def _os_reason(exc: OSError) -> tuple[str, str]:
    if isinstance(exc, PermissionError):
        return "permission denied; check the file's permissions", "permission"
    if exc.errno == errno.ELOOP:
        return "symbolic link loop; fix or remove the link", "link"
    if isinstance(exc, FileNotFoundError):
        return "no such file or directory (it disappeared while reading); check the path", "not_found"
    return f"cannot be read ({exc.strerror or exc}); check the path", "damaged"


def _ingest_bytes(
    source: str, data: bytes, options: IngestOptions, depth: int, explicit: bool, budget: Budget | None, out: _Collected,
    verbatim: bool = False,
) -> None:
    """Dispatch one file's bytes by type; appends documents or skips to `out`. `depth` counts enclosing archives.

    `verbatim` marks a file found in a directory (a codebase): text files are packed as written,
    so a subtitle file there stays source instead of being rewritten as a transcript.

    Whatever a reader raises becomes this source's skip, so one hostile file never ends the run; the
    documents an archive gave before it failed are kept.
    """
    name = source.rsplit("!", 1)[-1].rsplit("/", 1)[-1]
    kind, detail = classify(name, data[:8])
    if verbatim and kind == "transcript":
        kind = "text"
    try:
        if not data:
            raise Unreadable("empty file, nothing to read", "empty")
        if kind == "archive":
            _ingest_archive(source, data, detail, options, depth, budget, out)
            return
        # The format libraries are imported on first use: a codebase run should not pay for pypdf.
        if kind == "pdf":
            from .pdf import read_pdf

            document = read_pdf(source, data, options.passwords, options.archive)
        elif kind == "docx":
            from .docx import read_docx

            check_docx_package(data, options.archive)
            document = read_docx(source, data)
        else:
            document = _read_text_kinds(source, data, kind, detail, options, explicit, verbatim)
        if kind in ("pdf", "docx") and not explicit and not options.include_secrets:
            refuse_secrets(document.text)  # a key pasted into a Word file or a PDF is a key too
        _keep(out, check_garbled(document, options.strict), options.max_total_chars)
    except Unreadable as exc:
        out.skipped.append(Skip(source, str(exc), exc.code))
    except (Exception, RecursionError, MemoryError) as exc:  # noqa: BLE001 - parsers raise anything on hostile input
        out.skipped.append(Skip(source, *failure_reason(kind, exc)))


# Plain text that may be a transcript with its times at the line starts ("[00:01:02] Ana: ..."); a
# table (.csv), a log or data keep their lines: read as a transcript, a timetable's "08:15,Express A"
# lost its header row and became a cue at minute 8.
TIMED_TEXT_SUFFIXES = ("", ".txt", ".text", ".md", ".transcript")


def _read_text_kinds(source: str, data: bytes, kind: str, detail: str, options: IngestOptions, explicit: bool, verbatim: bool) -> Document:
    """Subtitles, timestamped text, prose and code: everything that is decoded text."""
    text = decode_or_skip(data)
    if not explicit and not options.include_secrets:
        refuse_secrets(text)
    if kind == "transcript":
        from .transcript import read_subtitles

        return read_subtitles(source, data, text, detail)
    if kind in ("text", "unknown") and not verbatim and PurePosixPath(source.split("!")[-1].lower()).suffix in TIMED_TEXT_SUFFIXES:
        cues = parse_timed_text(text)
        if cues:
            return transcript_document(source, data, cues)
    return read_text(source, data, "code" if kind == "code" else "text", detail, options.line_chunk, text)


def _ingest_archive(source: str, data: bytes, suffix: str, options: IngestOptions, depth: int, budget: Budget | None, out: _Collected) -> None:
    from .archive import Budget, Member, iter_members

    limits = options.archive
    if depth + 1 > limits.max_depth:
        raise Unreadable(f"archive nested more than {limits.max_depth} levels deep, not opened; extract it and pass the contents", "limit")
    budget = budget or Budget(limits.max_total_bytes)
    include = _globs(options.include)
    exclude = _globs(options.exclude)
    members = _globs(options.members)
    for entry in iter_members(data, suffix, limits, options.max_file_size, budget, options.passwords):
        if isinstance(entry, Skip):
            out.skipped.append(Skip(f"{source}!{entry.source}" if entry.source else source, entry.reason, entry.code))
            continue
        member: Member = entry
        member_source = f"{source}!{member.name}"
        if exclude and exclude.match_file(member.name):
            continue
        leaf = member.name.rsplit("/", 1)[-1]
        if include and not include.match_file(member.name) and classify(leaf, b"")[0] != "archive":
            continue
        if members and not members.match_file(member.name) and classify(leaf, b"")[0] != "archive":
            continue
        if not options.include_secrets and is_secret_path(member.name):
            out.skipped.append(Skip(member_source, SECRET_SKIP_REASON, "secret"))
            continue
        if out.chars >= options.max_total_chars:  # full: not even decoded
            out.skipped.append(Skip(member_source, _over_total_reason(options.max_total_chars), "limit"))
            continue
        _ingest_bytes(member_source, member.data, options, depth + 1, False, budget, out)


def _globs(patterns: tuple[str, ...]) -> pathspec.PathSpec | None:
    return gitignore_spec(patterns) if patterns else None
