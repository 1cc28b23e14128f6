"""Deciding what a file is and turning its bytes into text.

Extensions decide first (cheap and what the user expects); content decides for unknown names. Text
decoding tries the BOMs and UTF-8 before asking charset-normalizer, which is slow and only needed for
legacy encodings.
"""

import codecs
import posixpath

PROBE_BYTES = 8192

_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
_BOM_PREFIXES = tuple(bom for bom, _ in _BOMS)

_COMMON_LEGACY = ("cp1252", "iso8859_15", "latin_1", "cp1251", "koi8_r", "cp1250", "shift_jis", "gb18030", "big5", "euc_kr")

TRANSCRIPT_EXTS = {".vtt": "vtt", ".srt": "srt", ".sbv": "sbv"}
ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tbz", ".tar.xz", ".txz")

# Prose and data formats: kind "text", with the language recorded for the delimiter.
TEXT_LANGS = {
    ".txt": "", ".text": "", ".md": "markdown", ".markdown": "markdown", ".rst": "rst",
    ".csv": "csv", ".tsv": "tsv", ".json": "json", ".jsonl": "jsonl", ".ndjson": "jsonl", ".log": "log",
    ".adoc": "asciidoc", ".org": "org", ".tex": "latex",
}

CODE_LANGS = {
    ".py": "python", ".pyi": "python", ".pyx": "cython", ".js": "javascript", ".mjs": "javascript",
    ".cjs": "javascript", ".jsx": "jsx", ".ts": "typescript", ".tsx": "tsx", ".java": "java",
    ".kt": "kotlin", ".kts": "kotlin", ".scala": "scala", ".go": "go", ".rs": "rust", ".c": "c", ".h": "c",
    ".cc": "cpp", ".cpp": "cpp", ".cxx": "cpp", ".hpp": "cpp", ".hh": "cpp", ".cs": "csharp",
    ".m": "objective-c", ".mm": "objective-cpp", ".swift": "swift", ".rb": "ruby", ".php": "php",
    ".pl": "perl", ".pm": "perl", ".lua": "lua", ".r": "r", ".jl": "julia", ".dart": "dart",
    ".ex": "elixir", ".exs": "elixir", ".erl": "erlang", ".hs": "haskell", ".ml": "ocaml",
    ".fs": "fsharp", ".clj": "clojure", ".sh": "bash", ".bash": "bash", ".zsh": "zsh", ".fish": "fish",
    ".ps1": "powershell", ".bat": "batch", ".sql": "sql", ".html": "html", ".htm": "html", ".css": "css",
    ".scss": "scss", ".sass": "sass", ".less": "less", ".vue": "vue", ".svelte": "svelte", ".xml": "xml",
    ".yaml": "yaml", ".yml": "yaml", ".toml": "toml", ".ini": "ini", ".cfg": "ini", ".conf": "conf",
    ".proto": "protobuf", ".graphql": "graphql", ".tf": "terraform", ".nix": "nix", ".zig": "zig",
    ".cmake": "cmake", ".gradle": "groovy", ".groovy": "groovy", ".ipynb": "json", ".cu": "cuda",
}
CODE_NAMES = {
    "Makefile": "make", "makefile": "make", "GNUmakefile": "make", "Dockerfile": "dockerfile",
    "CMakeLists.txt": "cmake", "Jenkinsfile": "groovy", "Vagrantfile": "ruby", "Gemfile": "ruby",
    "Rakefile": "ruby", "BUILD": "starlark", "WORKSPACE": "starlark", ".gitignore": "gitignore",
    ".gitattributes": "gitattributes", ".editorconfig": "ini", ".dockerignore": "gitignore",
}


def archive_suffix(name: str) -> str | None:
    lower = name.lower()
    if not lower.endswith(ARCHIVE_SUFFIXES):  # one C call for the common case
        return None
    for suffix in ARCHIVE_SUFFIXES:
        if lower.endswith(suffix):
            return suffix
    return None


def classify(name: str, head: bytes) -> tuple[str, str]:
    """(kind, language-or-format) from a file name and its first bytes.

    kind is one of pdf, docx, transcript, archive, text, code, or "unknown" (sniff the content).
    """
    ext = posixpath.splitext(name)[1].lower()
    if ext == ".pdf" or head.startswith(b"%PDF-"):
        return "pdf", ""
    if ext == ".docx":
        return "docx", ""
    if ext in TRANSCRIPT_EXTS:
        return "transcript", TRANSCRIPT_EXTS[ext]
    suffix = archive_suffix(name)
    if suffix:
        return "archive", suffix
    if name in CODE_NAMES:
        return "code", CODE_NAMES[name]
    if ext in TEXT_LANGS:
        return "text", TEXT_LANGS[ext]
    if ext in CODE_LANGS:
        return "code", CODE_LANGS[ext]
    return "unknown", ""  # zip-based office files (.xlsx, .pptx) are not archives to unpack: sniffed as binary


def decode_text(data: bytes) -> str | None:
    """The text in `data`, or None when it looks binary.

    A NUL byte in the probe means binary unless a UTF-16/32 BOM explains it; otherwise UTF-8, then
    charset-normalizer for legacy code pages.
    """
    if data.startswith(_BOM_PREFIXES):
        for bom, encoding in _BOMS:
            if data.startswith(bom):
                try:
                    return data.decode(encoding)
                except UnicodeDecodeError:
                    return None
    if data.find(b"\x00", 0, PROBE_BYTES) != -1:  # find with bounds: no copy of the probe
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    from charset_normalizer import from_bytes  # slow to import and only needed for legacy encodings

    matches = list(from_bytes(data))
    if not matches:
        return None
    best = matches[0]
    # Short text often decodes equally cleanly (same "chaos") in several single-byte code pages, and
    # charset-normalizer's tie-break by language coherence picks rare ones (mac_cyrillic, cp1250);
    # among equally clean decodings prefer the code pages people actually use.
    tied = [m for m in matches if m.chaos == best.chaos]
    for encoding in _COMMON_LEGACY:
        for match in tied:
            if encoding in match.could_be_from_charset:
                return match.output().decode("utf-8")
    return str(best)
