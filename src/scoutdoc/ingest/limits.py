"""Budgets checked before a parser allocates, and the last line of defence when a parser fails anyway.

The format libraries trust their input: python-docx parses every XML part of a package into an lxml
tree (a 1 MB .docx can inflate to a 1 GiB document.xml), pypdf raises its own LimitReachedError or
recurses on hostile object graphs. What can be measured before parsing is measured here; whatever
a parser still raises becomes that one source's skip (`failure_reason`), never the end of the run.
"""

import io
import re
import zipfile

from .document import Unreadable
from .options import ArchiveLimits

_XML_SUFFIXES = (".xml", ".rels", ".vml")
_CONTENT_TYPES = "[Content_Types].xml"
_TYPES_CAP = 1 << 20  # a real [Content_Types].xml is a few KB
_TAG = re.compile(rb"<(Default|Override)\b([^>]*)>")
_ATTR = re.compile(rb"""(\w+)\s*=\s*["']([^"']*)["']""")


def _xml_parts(package: zipfile.ZipFile, infos: list[zipfile.ZipInfo]) -> list[zipfile.ZipInfo]:
    """The parts python-docx parses as XML: by suffix, and by the content type the package gives a
    part (an Override) or its extension (a Default). python-docx finds the main document through
    its relationship whatever its name, so "word/document.dat" declared XML is XML: by suffix
    alone, 123 MB of paragraphs under that name went past every cap."""
    by_name: dict[str, bytes] = {}
    by_extension: dict[str, bytes] = {}
    types = next((i for i in infos if i.filename == _CONTENT_TYPES), None)
    if types is not None:
        if types.file_size > _TYPES_CAP:
            raise Unreadable(f".docx declares {types.file_size:,} bytes of content types; refused", "limit")
        try:
            declared = package.read(types)
        except (zipfile.BadZipFile, NotImplementedError, RuntimeError, ValueError, EOFError, OSError):
            declared = b""
        for tag, body in _TAG.findall(declared):
            attrs = {k.lower(): v for k, v in _ATTR.findall(body)}
            kind = attrs.get(b"contenttype", b"").lower()
            if tag == b"Override":
                by_name[attrs.get(b"partname", b"").decode("utf-8", "replace").lstrip("/").lower()] = kind
            else:
                by_extension[attrs.get(b"extension", b"").decode("utf-8", "replace").lower()] = kind

    def is_xml(name: str) -> bool:
        name = name.lower()
        if name.endswith(_XML_SUFFIXES):
            return True
        kind = by_name.get(name)
        if kind is None:
            kind = by_extension.get(name.rsplit(".", 1)[-1] if "." in name.rsplit("/", 1)[-1] else "", b"")
        return b"xml" in kind

    return [i for i in infos if is_xml(i.filename)]


def check_docx_package(data: bytes, limits: ArchiveLimits) -> None:
    """Refuse a .docx whose XML parts would inflate past `limits.max_xml_bytes` or look like a bomb.

    The sizes come from the zip directory; zipfile stops reading a member at its declared size (and
    fails its CRC check) when the header lies, so the declared sizes bound what python-docx can read.
    A package that is not a readable zip is left for python-docx to report as damaged.
    """
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as package:
            infos = package.infolist()
            if len(infos) > limits.max_members:
                raise Unreadable(f".docx package has {len(infos)} parts, over the cap of {limits.max_members}; refused", "limit")
            xml_parts = _xml_parts(package, infos)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError, OSError):
        return
    xml_bytes = sum(i.file_size for i in xml_parts)
    if xml_bytes > limits.max_xml_bytes:
        raise Unreadable(
            f".docx holds {xml_bytes / 1e6:.1f} MB of XML, over the {limits.max_xml_bytes / 1e6:.0f} MB cap "
            "(a document this size is almost always an XML bomb); refused", "limit",
        )
    total = sum(i.file_size for i in infos)
    if total > limits.ratio_floor and total / max(len(data), 1) > limits.max_ratio:
        raise Unreadable(f".docx expands {total / max(len(data), 1):.0f}:1, which looks like a zip bomb; refused", "unsafe")
    elements, paragraphs = _count_tags(data, xml_parts, limits)
    if elements > limits.max_xml_elements:
        raise Unreadable(
            f".docx holds over {limits.max_xml_elements:,} XML elements (a long book has a few hundred thousand), "
            "too many to parse safely; refused", "limit",
        )
    if paragraphs > limits.max_docx_paragraphs:
        raise Unreadable(
            f".docx holds over {limits.max_docx_paragraphs:,} paragraphs (a 500-page book has about 30,000), "
            "too many to read in reasonable time; split it or save it as text", "limit",
        )


_PARAGRAPH_TAGS = (b"<w:p>", b"<w:p/>", b"<w:p ")


def _count_tags(data: bytes, parts: list[zipfile.ZipInfo], limits: ArchiveLimits) -> tuple[int, int]:
    """(tags, paragraphs) in the XML parts, read in 1 MiB pieces and given up past the caps.

    The tree lxml builds costs about 150 bytes per element whatever the file size, so 60 MiB of
    `<w:p/>` (10M elements) needs 1.4 GB while 60 MiB of prose is harmless; python-docx then spends
    about 50 microseconds per paragraph. Element and paragraph counts are what bound the parse, and
    counting them costs one decompression pass (a tag split across two pieces may be missed: the
    caps are far from any real document, so that slack does not matter).
    """
    elements = paragraphs = 0
    with zipfile.ZipFile(io.BytesIO(data)) as package:
        for info in parts:
            try:
                with package.open(info) as handle:
                    while piece := handle.read(1 << 20):
                        elements += piece.count(b"<")
                        paragraphs += sum(piece.count(tag) for tag in _PARAGRAPH_TAGS)
                        if elements > limits.max_xml_elements or paragraphs > limits.max_docx_paragraphs:
                            return elements, paragraphs
            except (zipfile.BadZipFile, NotImplementedError, RuntimeError, ValueError, EOFError, OSError):
                break  # python-docx reports the damaged part
    return elements, paragraphs


def check_pdf_pages(pages: int, limits: ArchiveLimits) -> None:
    if pages > limits.max_pdf_pages:
        raise Unreadable(f"PDF has {pages:,} pages, over the cap of {limits.max_pdf_pages:,}; split it and pass the parts", "limit")


def failure_reason(kind: str, exc: BaseException) -> tuple[str, str]:
    """(reason, code) for an exception a reader raised that it did not turn into `Unreadable` itself."""
    name = type(exc).__name__
    detail = " ".join(str(exc).split())[:120]
    what = {"pdf": "PDF", "docx": ".docx", "archive": "archive", "transcript": "subtitle file"}.get(kind, "file")
    if isinstance(exc, MemoryError):
        return f"the {what} needs more memory than is available to read; refused", "limit"
    if isinstance(exc, RecursionError):
        return f"the {what} is nested too deeply to read (a hostile or damaged file); refused", "damaged"
    if name == "LimitReachedError":  # pypdf's own safety limits (object counts, stream sizes, cycles)
        return f"the {what} exceeds a safety limit of the PDF reader ({detail}); refused", "limit"
    suffix = f": {detail}" if detail else ""
    return f"the {what} could not be read ({name}{suffix}); it may be damaged, re-export or repair it", "damaged"
