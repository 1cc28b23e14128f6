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


@dataclass(frozen=True)
class Skip:
    source: str
    reason: str  # one line: what is wrong and what to do


@dataclass
class IngestResult:
    documents: list[Document] = field(default_factory=list)
    skipped: list[Skip] = field(default_factory=list)
    tree: str = ""  # directory-tree header for directory arguments, empty otherwise
