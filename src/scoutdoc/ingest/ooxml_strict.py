"""Strict Office Open XML (ISO/IEC 29500 Strict) packages rewritten as Transitional for python-docx.

Word's "Strict Open XML Document" keeps the same parts and elements as an ordinary .docx but names
them in the `http://purl.oclc.org/ooxml/...` namespaces; python-docx only knows the Transitional
`http://schemas.openxmlformats.org/...` names, so it finds no main document and fails with a
KeyError. Renaming the namespaces (and the relationship types built on them) in every XML part is
enough for reading text: the element names and structure are the same in both conformance classes.
"""

import io
import zipfile

MiB = 1024 * 1024
MAX_XML_BYTES = 256 * MiB  # all XML parts together; a real document's XML is a few MB at most

_STRICT = b"http://purl.oclc.org/ooxml/"
# Strict name -> Transitional name (ECMA-376 Part 1, Annex A); longest first so prefixes do not
# shadow longer names.
_NAMESPACES = sorted(
    {
        b"http://purl.oclc.org/ooxml/wordprocessingml/main": b"http://schemas.openxmlformats.org/wordprocessingml/2006/main",
        b"http://purl.oclc.org/ooxml/officeDocument/relationships/extendedProperties": b"http://schemas.openxmlformats.org/officeDocument/2006/relationships/extended-properties",
        b"http://purl.oclc.org/ooxml/officeDocument/relationships": b"http://schemas.openxmlformats.org/officeDocument/2006/relationships",
        b"http://purl.oclc.org/ooxml/officeDocument/extendedProperties": b"http://schemas.openxmlformats.org/officeDocument/2006/extended-properties",
        b"http://purl.oclc.org/ooxml/officeDocument/customProperties": b"http://schemas.openxmlformats.org/officeDocument/2006/custom-properties",
        b"http://purl.oclc.org/ooxml/officeDocument/docPropsVTypes": b"http://schemas.openxmlformats.org/officeDocument/2006/docPropsVTypes",
        b"http://purl.oclc.org/ooxml/officeDocument/sharedTypes": b"http://schemas.openxmlformats.org/officeDocument/2006/sharedTypes",
        b"http://purl.oclc.org/ooxml/officeDocument/math": b"http://schemas.openxmlformats.org/officeDocument/2006/math",
        b"http://purl.oclc.org/ooxml/officeDocument/bibliography": b"http://schemas.openxmlformats.org/officeDocument/2006/bibliography",
        b"http://purl.oclc.org/ooxml/drawingml/main": b"http://schemas.openxmlformats.org/drawingml/2006/main",
        b"http://purl.oclc.org/ooxml/drawingml/wordprocessingDrawing": b"http://schemas.openxmlformats.org/drawingml/2006/wordprocessingDrawing",
        b"http://purl.oclc.org/ooxml/drawingml/picture": b"http://schemas.openxmlformats.org/drawingml/2006/picture",
        b"http://purl.oclc.org/ooxml/drawingml/chart": b"http://schemas.openxmlformats.org/drawingml/2006/chart",
        b"http://purl.oclc.org/ooxml/drawingml/diagram": b"http://schemas.openxmlformats.org/drawingml/2006/diagram",
    }.items(),
    key=lambda item: -len(item[0]),
)


class StrictPackageError(Exception):
    """A Strict package that cannot be rewritten (damaged zip, or XML over the size cap)."""


def is_strict(data: bytes) -> bool:
    """True when the package's root relationships use the Strict namespaces."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as package:
            return _STRICT in package.read("_rels/.rels")
    except (zipfile.BadZipFile, KeyError, OSError, ValueError, EOFError):
        return False


def to_transitional(data: bytes) -> bytes:
    """The same package with every XML part's Strict namespace names replaced by Transitional ones."""
    out = io.BytesIO()
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as source, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as target:
            infos = source.infolist()
            xml_bytes = sum(i.file_size for i in infos if i.filename.endswith((".xml", ".rels")))
            if xml_bytes > MAX_XML_BYTES:
                raise StrictPackageError(f"its XML parts hold {xml_bytes / MiB:.0f} MiB, over the {MAX_XML_BYTES // MiB} MiB cap")
            for info in infos:
                content = source.read(info)
                if info.filename.endswith((".xml", ".rels")):
                    for strict, transitional in _NAMESPACES:
                        content = content.replace(strict, transitional)
                target.writestr(info, content)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError) as exc:
        raise StrictPackageError(str(exc) or type(exc).__name__) from exc
    return out.getvalue()
