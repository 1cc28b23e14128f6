"""Word .docx through python-docx: body paragraphs and tables in document order, then headers/footers.

Headings become Markdown-style `#` prefixes so the structure survives as text; list numbers, which
Word computes at render time and python-docx does not expose, are recomputed from the numbering
part so "3.2 Scope" still reads "3.2". Tables become one `| a | b |` line per row, each its own
segment ("table 2 row 3") so an answer can cite a row.
"""

import hashlib
import io
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import PurePosixPath

import docx
from docx.oxml.ns import qn
from docx.table import Table
from docx.text.paragraph import Paragraph

from .docx_notes import note_segments, paragraph_text, text_boxes
from .document import Document, Segment, Unreadable
from .ooxml_strict import StrictPackageError, is_strict, to_transitional

_ROMAN = [(1000, "m"), (900, "cm"), (500, "d"), (400, "cd"), (100, "c"), (90, "xc"), (50, "l"), (40, "xl"), (10, "x"), (9, "ix"), (5, "v"), (4, "iv"), (1, "i")]


def _roman(n: int) -> str:
    out = ""
    for value, letters in _ROMAN:
        while n >= value:
            out += letters
            n -= value
    return out


def _letters(n: int) -> str:
    # Word repeats the letter past z: a..z, aa..zz
    return chr(ord("a") + (n - 1) % 26) * ((n - 1) // 26 + 1)


def _format_number(n: int, fmt: str) -> str:
    if fmt == "lowerLetter":
        return _letters(n)
    if fmt == "upperLetter":
        return _letters(n).upper()
    if fmt == "lowerRoman":
        return _roman(n)
    if fmt == "upperRoman":
        return _roman(n).upper()
    if fmt == "decimalZero":
        return f"{n:02d}"
    return str(n)


@dataclass
class _Level:
    fmt: str = "decimal"
    text: str = "%1."
    start: int = 1


@dataclass
class _Numbering:
    """Level definitions per numId and running counters, read once per document."""

    levels: dict[str, dict[int, _Level]] = field(default_factory=dict)
    counters: dict[str, dict[int, int]] = field(default_factory=dict)

    @classmethod
    def load(cls, document) -> "_Numbering":
        numbering = cls()
        try:
            root = document.part.numbering_part.element
        except (NotImplementedError, KeyError, AttributeError):
            return numbering
        abstract: dict[str, dict[int, _Level]] = {}
        for anum in root.findall(qn("w:abstractNum")):
            levels = {}
            for lvl in anum.findall(qn("w:lvl")):
                level = _Level()
                for tag, attr in (("w:numFmt", "fmt"), ("w:lvlText", "text")):
                    node = lvl.find(qn(tag))
                    if node is not None and node.get(qn("w:val")) is not None:
                        setattr(level, attr, node.get(qn("w:val")))
                start = lvl.find(qn("w:start"))
                if start is not None and (start.get(qn("w:val")) or "").isdigit():
                    level.start = int(start.get(qn("w:val")))
                levels[int(lvl.get(qn("w:ilvl"), "0"))] = level
            abstract[anum.get(qn("w:abstractNumId"))] = levels
        for num in root.findall(qn("w:num")):
            ref = num.find(qn("w:abstractNumId"))
            if ref is not None:
                numbering.levels[num.get(qn("w:numId"))] = abstract.get(ref.get(qn("w:val")), {})
        return numbering

    def label(self, num_id: str, ilvl: int) -> str:
        levels = self.levels.get(num_id)
        if not levels or ilvl not in levels:
            return ""
        counters = self.counters.setdefault(num_id, {})
        counters[ilvl] = counters.get(ilvl, levels[ilvl].start - 1) + 1
        for deeper in [k for k in counters if k > ilvl]:
            del counters[deeper]
        level = levels[ilvl]
        if level.fmt == "bullet":
            return "•"
        if level.fmt == "none":
            return ""
        text = level.text
        for i in range(ilvl + 1):
            sub = levels.get(i, _Level())
            value = counters.get(i, sub.start)
            text = text.replace(f"%{i + 1}", _format_number(value, sub.fmt))
        return text


class _StyleCache:
    """A paragraph's style, resolved once per style id.

    python-docx resolves `paragraph.style` by scanning every style of the document (for the default
    one) on each call; a document of 100,000 short paragraphs then took minutes. Paragraphs share a
    handful of styles, so each id is resolved once.
    """

    def __init__(self) -> None:
        self.styles: dict[str | None, object] = {}

    def style(self, paragraph: Paragraph):
        key = paragraph._p.style
        if key not in self.styles:
            self.styles[key] = paragraph.style
        return self.styles[key]


def _num_pr(paragraph: Paragraph, styles: _StyleCache) -> tuple[str, int] | None:
    """(numId, ilvl) from the paragraph, else from its style chain."""
    candidates = [paragraph._p.pPr]
    style = styles.style(paragraph)
    while style is not None:
        candidates.append(style.element.pPr)
        style = style.base_style
    for ppr in candidates:
        if ppr is None:
            continue
        num_pr = ppr.find(qn("w:numPr"))
        if num_pr is None:
            continue
        num_id = num_pr.find(qn("w:numId"))
        ilvl = num_pr.find(qn("w:ilvl"))
        if num_id is None:
            continue
        level = ilvl.get(qn("w:val")) if ilvl is not None else "0"
        return num_id.get(qn("w:val")), int(level) if (level or "").isdigit() else 0
    return None


def _heading_level(paragraph: Paragraph, styles: _StyleCache) -> int:
    style = styles.style(paragraph)
    name = (style.name if style is not None else "") or ""
    if name == "Title":
        return 1
    if name.startswith("Heading "):
        rest = name.removeprefix("Heading ")
        if rest.isdigit():
            return int(rest)
    return 0


_P, _TBL, _SDT_CONTENT = qn("w:p"), qn("w:tbl"), qn("w:sdtContent")
_WRAPPERS = {qn("w:sdt"), _SDT_CONTENT, qn("w:customXml")}  # content controls and custom XML around blocks


def _blocks(element, parent) -> Iterator[Paragraph | Table]:
    """The paragraphs and tables of a body, cell, header or footer in document order, also those
    inside a content control (`w:sdt`), which python-docx's `iter_inner_content` passes over."""
    for child in element.iterchildren():
        if child.tag == _P:
            yield Paragraph(child, parent)
        elif child.tag == _TBL:
            yield Table(child, parent)
        elif child.tag in _WRAPPERS:
            yield from _blocks(child, parent)


def _cell_text(cell) -> str:
    """A cell's paragraphs and, for a table nested in it, its rows ("a; b / c; d"), on one line."""
    parts = []
    for block in _blocks(cell._tc, cell):
        if isinstance(block, Table):
            parts.append(" / ".join("; ".join(cells) for cells in _rows(block)))
        else:
            parts.append(paragraph_text(block))
    return " ".join(" ".join(parts).split())


def _rows(table: Table) -> list[list[str]]:
    """Each row's cell texts, rows without any text left out."""
    rows = []
    for row in table.rows:
        cells, seen = [], set()
        for cell in row.cells:
            if id(cell._tc) in seen:  # a merged cell is returned once per grid column it spans
                continue
            seen.add(id(cell._tc))
            cells.append(_cell_text(cell))
        if any(cells):
            rows.append(cells)
    return rows


def _table_rows(table: Table) -> list[str]:
    return ["| " + " | ".join(cells) + " |" for cells in _rows(table)]


def _hdr_ftr_segments(document) -> list[Segment]:
    segments, seen = [], set()
    for index, section in enumerate(document.sections, start=1):
        for label, part in (
            ("header", section.header),
            ("first-page header", section.first_page_header),
            ("even-page header", section.even_page_header),
            ("footer", section.footer),
            ("first-page footer", section.first_page_footer),
            ("even-page footer", section.even_page_footer),
        ):
            if part.is_linked_to_previous:
                continue
            lines = []
            for block in _blocks(part._element, part):
                lines += _table_rows(block) if isinstance(block, Table) else [paragraph_text(block)]
            text = "\n".join(line for line in lines if line.strip())
            if text.strip() and text not in seen:
                seen.add(text)
                segments.append(Segment(text, f"{label}, section {index}"))
    return segments


def _open(data: bytes):
    """The python-docx Document; a Strict Open XML package is first renamed into Transitional."""
    strict = is_strict(data)
    try:
        return docx.Document(io.BytesIO(to_transitional(data) if strict else data))
    except StrictPackageError as exc:
        raise Unreadable(f"a Strict Open XML document that could not be converted ({exc}); re-save it in Word as 'Word Document (*.docx)'", "damaged") from exc
    except (zipfile.BadZipFile, KeyError, ValueError, Exception) as exc:  # noqa: BLE001 - python-docx raises broadly on bad packages
        if strict:
            raise Unreadable("a Strict Open XML document that is damaged or incomplete even as Transitional; re-save it in Word as 'Word Document (*.docx)'", "damaged") from exc
        raise Unreadable(f"not a readable .docx ({type(exc).__name__}); the file may be damaged or not really Word, re-save it from Word", "damaged") from exc


def read_docx(source: str, data: bytes) -> Document:
    document = _open(data)
    numbering = _Numbering.load(document)
    styles = _StyleCache()
    segments: list[Segment] = []
    block: list[str] = []
    block_start = 0
    paragraph_no = 0
    table_no = 0
    box_no = 0

    def flush() -> None:
        if block:
            where = f"paragraph {block_start}" if block_start == paragraph_no else f"paragraphs {block_start}-{paragraph_no}"
            segments.append(Segment("\n".join(block), where))
            block.clear()

    try:
        for item in _blocks(document.element.body, document._body):
            if isinstance(item, Table):
                flush()
                table_no += 1
                for row_no, row in enumerate(_table_rows(item), start=1):
                    segments.append(Segment(row, f"table {table_no} row {row_no}"))
                continue
            text = paragraph_text(item).strip()
            if text:
                level = _heading_level(item, styles)
                num = _num_pr(item, styles)
                label = numbering.label(*num) if num else ""
                if label:
                    text = f"{label} {text}"
                if level:
                    flush()
                    text = "#" * level + " " + text
                paragraph_no += 1
                if not block:
                    block_start = paragraph_no
                block.append(text)
            for box in text_boxes(item):  # after the paragraph that anchors it, as its own segment
                flush()
                box_no += 1
                segments.append(Segment(f"[text box] {box}", f"text box {box_no}"))
        flush()
        segments.extend(_hdr_ftr_segments(document))
        segments.extend(note_segments(document))
    except (KeyError, ValueError, AttributeError) as exc:
        raise Unreadable(f".docx structure is damaged ({type(exc).__name__}); re-save it from Word", "damaged") from exc
    if not segments:
        raise Unreadable("the document has no text", "no_text")
    title = (document.core_properties.title or "").strip() or PurePosixPath(source.split("!")[-1]).name
    return Document(
        source=source,
        kind="docx",
        sha256=hashlib.sha256(data).hexdigest(),
        title=title,
        segments=segments,
        meta={"paragraphs": paragraph_no, "tables": table_no},
    )
