"""What the user chose about which files to read and how far to trust archives.

One dataclass shared by the library and every CLI command that ingests (`inspect`, `ask`, `batch`),
so the same flags mean the same thing everywhere.
"""

from dataclasses import dataclass, field

MiB = 1024 * 1024


@dataclass(frozen=True)
class ArchiveLimits:
    """Caps that keep a hostile archive or file (zip bomb, million tiny members, XML or PDF bombs) from
    exhausting the machine. The parser caps bound what a parser allocates, which the byte caps alone
    do not: a 1 MB .docx can inflate to a 1 GiB XML tree, a tiny PDF can declare a billion objects.
    """

    max_members: int = 10_000
    max_total_bytes: int = 512 * MiB  # uncompressed bytes read from one archive, nested ones included
    max_ratio: float = 100.0  # uncompressed / compressed, checked once a member or archive passes ratio_floor
    ratio_floor: int = 1 * MiB  # small, very repetitive files are normal; only large ones can be bombs
    max_depth: int = 3  # archives inside archives: an archive given by the user is depth 1
    max_header_bytes: int = 1 * MiB  # one tar PAX / GNU long-name header (real ones are a few hundred bytes)
    max_xml_bytes: int = 64 * MiB  # uncompressed XML parts of one .docx, all parsed into a tree by python-docx
    max_xml_elements: int = 1_500_000  # XML elements in those parts (each costs lxml about 150 bytes)
    max_docx_paragraphs: int = 100_000  # paragraphs in one .docx (python-docx takes ~50 us each)
    max_pdf_pages: int = 20_000  # pages read from one PDF


@dataclass(frozen=True)
class IngestOptions:
    """Selection and decoding choices.

    `max_file_size` applies to files found by walking a directory or inside an archive; a file the
    user names explicitly is always read, since they asked for it.
    """

    include: tuple[str, ...] = ()  # gitignore-style globs; when given, only matching files are kept
    exclude: tuple[str, ...] = ()
    gitignore: bool = True  # honour .gitignore files and .git/info/exclude
    max_file_size: int = 4 * MiB
    max_total_chars: int = 64 * MiB  # text read in one run, all sources together (see `load_sources`)
    include_secrets: bool = False
    passwords: tuple[str, ...] = ()  # tried in order on encrypted PDFs (after the empty password)
    archive: ArchiveLimits = field(default_factory=ArchiveLimits)
    line_chunk: int = 50  # lines per located segment in text and code files
    strict: bool = False  # skip documents whose text is mostly garbled instead of warning about them
    members: tuple[str, ...] = ()  # gitignore-style globs archive members must match (batch's member patterns)
