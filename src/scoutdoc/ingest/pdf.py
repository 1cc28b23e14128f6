"""PDFs through pypdf: one segment per page, labelled with its 1-based page number.

A page whose extraction fails is recorded in `meta["failed_pages"]` and the rest are kept; a PDF
where no page yields text is almost always a scan and is refused with that explanation rather than
passed on as an empty document.
"""

import hashlib
import io
import logging
from pathlib import PurePosixPath

from pypdf import PdfReader
from pypdf.errors import DependencyError, FileNotDecryptedError, PdfReadError

from .document import Document, Segment, Unreadable
from .limits import check_pdf_pages
from .options import ArchiveLimits

# pypdf logs every recoverable oddity of real-world files; they are not the user's problem.
logging.getLogger("pypdf").setLevel(logging.ERROR)


_OPEN_ERRORS = (PdfReadError, ValueError, TypeError, KeyError, IndexError, AttributeError, RecursionError)
RECOVERED_WARNING = "cross-reference table missing or damaged; pages were recovered by scanning the file, check the text"


def _recovered(data: bytes) -> PdfReader | None:
    """A reader for a PDF whose `startxref` or xref table is missing (truncated file, or written
    without one like pdfminer's simple1.pdf), or None.

    pypdf's non-strict mode rebuilds the xref by scanning for `N 0 obj` and finds the catalog
    without a trailer, but only once it has a startxref pointer to doubt: a missing one stops it
    first ("startxref not found", "EOF marker not found"). Appending a deliberately wrong
    `startxref 0` gets it to that recovery instead of giving up.
    """
    try:
        reader = PdfReader(io.BytesIO(data + b"\nstartxref\n0\n%%EOF\n"))
        if not len(reader.pages):  # the catalog and page tree must be reachable, or it is no recovery
            return None
    except Exception:  # noqa: BLE001 - pypdf raises many types on what it cannot rebuild
        return None
    return reader


def _open(data: bytes, passwords: tuple[str, ...]) -> tuple[PdfReader, bool]:
    """The reader, decrypted when needed, and whether its xref had to be recovered."""
    recovered = False
    try:
        reader = PdfReader(io.BytesIO(data))
    except _OPEN_ERRORS as exc:
        reader = _recovered(data)
        if reader is None:
            raise Unreadable(f"not a readable PDF ({_short(exc)}); the file may be damaged, re-export or repair it", "damaged") from exc
        recovered = True
    if not reader.is_encrypted:
        return reader, recovered
    tried_user_password = False
    for password in ("", *passwords):
        tried_user_password = tried_user_password or bool(password)
        try:
            if reader.decrypt(password):
                return reader, recovered
        except DependencyError as exc:
            raise Unreadable("encrypted with AES, which needs the 'cryptography' package: pip install 'pypdf[crypto]'", "encrypted") from exc
        except (PdfReadError, NotImplementedError, ValueError) as exc:
            raise Unreadable(f"encrypted in a way pypdf cannot open ({_short(exc)})", "encrypted") from exc
    if tried_user_password:
        raise Unreadable("encrypted, and the password given did not open it; check --password", "encrypted")
    raise Unreadable("encrypted; pass its password with --password", "encrypted")


def _short(exc: Exception) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:120]


def read_pdf(source: str, data: bytes, passwords: tuple[str, ...] = (), limits: ArchiveLimits | None = None) -> Document:
    reader, recovered = _open(data, passwords)
    try:
        pages = reader.pages
        total = len(pages)
    except (PdfReadError, FileNotDecryptedError, ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
        raise Unreadable(f"PDF page tree is damaged ({_short(exc)}); re-export or repair the file", "damaged") from exc
    check_pdf_pages(total, limits or ArchiveLimits())
    segments: list[Segment] = []
    failed: list[int] = []
    empty: list[int] = []
    for number in range(1, total + 1):
        try:
            text = pages[number - 1].extract_text() or ""
        except Exception:  # noqa: BLE001 - pypdf raises many types on broken content streams; keep the other pages
            failed.append(number)
            text = ""
        else:
            if not text.strip():
                empty.append(number)
        if text.strip():
            segments.append(Segment(text.strip("\n"), f"page {number}"))
    if total == 0:
        raise Unreadable("PDF has no pages", "no_text")
    if not segments:
        if failed and len(failed) == total:
            raise Unreadable("text extraction failed on every page; the PDF may be damaged, re-export it", "damaged")
        raise Unreadable("no extractable text (a scanned or image-only PDF?); run OCR first, e.g. ocrmypdf", "no_text")
    title = PurePosixPath(source.split("!")[-1]).name
    try:
        meta_title = reader.metadata.title if reader.metadata else None
    except Exception:  # noqa: BLE001 - broken info dictionaries are common and harmless
        meta_title = None
    if isinstance(meta_title, str):
        cleaned = " ".join(meta_title.replace("\x00", " ").split())
        title = cleaned or title
    meta: dict = {"pages": total}
    if recovered:
        meta["warnings"] = [RECOVERED_WARNING]
    if failed:
        meta["failed_pages"] = failed
    if empty:
        meta["empty_pages"] = empty
    return Document(source=source, kind="pdf", sha256=hashlib.sha256(data).hexdigest(), title=title, segments=segments, meta=meta)
