"""The data that leaves ingestion: documents made of located text segments, and the skips."""

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Segment:
    """A piece of text and where it came from, so answers can cite it.

    `where` is a short human-readable locator: "page 3", "lines 10-42", "00:01:02.500-00:01:05.000",
    "table 1 row 2".
    """

    text: str
    where: str = ""


@dataclass
class Document:
    source: str  # a path, relative to the directory argument it came from, or "archive.zip!member/path"
    kind: str  # pdf, docx, text, code, transcript
    sha256: str
    title: str
    segments: list[Segment] = field(default_factory=list)
    language: str = ""  # programming or markup language for code files
    meta: dict = field(default_factory=dict)  # pages, lines, warnings (e.g. pages that failed)

    @property
    def text(self) -> str:
        return "\n".join(s.text for s in self.segments)

    @property
    def chars(self) -> int:
        return sum(len(s.text) for s in self.segments)


SKIP_CODES = (
    "not_found",  # missing path or dangling link
    "permission",  # the OS refused to read it
    "link",  # symbolic link loop, or a link that is not followed
    "not_regular",  # device, socket, FIFO
    "empty",  # empty or whitespace-only file
    "binary",  # not text and not a known document format
    "secret",  # .env, keys, credentials (see --include-secrets)
    "too_large",  # over --max-file-size
    "encrypted",  # PDF needing a (different) password, encrypted zip member
    "no_text",  # a scan, a document or transcript without text
    "damaged",  # corrupt or malformed file
    "garbled",  # text that is mostly replacement or private-use characters, refused under --strict
    "unsafe",  # hostile archive member: traversal, absolute path, link, device, bomb
    "limit",  # archive caps: member count, total size, nesting depth
)


@dataclass(frozen=True)
class Skip:
    source: str
    reason: str  # one line: what is wrong and what to do
    code: str = "damaged"  # one of SKIP_CODES, for programs (the reason is for people)


@dataclass
class IngestResult:
    documents: list[Document] = field(default_factory=list)
    skipped: list[Skip] = field(default_factory=list)
    tree: str = ""  # directory-tree header for directory arguments, empty otherwise


class Unreadable(Exception):
    """A source that cannot be used; its message becomes the `Skip.reason` (one line, with what to do).

    Readers raise it instead of returning partial garbage, and `load_sources` turns it into a skip so
    the other sources are still ingested.
    """

    def __init__(self, reason: str, code: str = "damaged") -> None:
        super().__init__(reason)
        self.code = code
