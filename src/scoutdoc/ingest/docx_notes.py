"""Word text that python-docx's paragraph API does not reach: text boxes, footnotes, endnotes, comments,
and runs wrapped in other elements.

`Paragraph.text` reads only a paragraph's own runs and hyperlinks, so a tracked insertion (`w:ins`),
a content control (`w:sdt`), a field (`w:fldSimple`) or a smart tag lost its text: a contract under
review read "Notice period is  after notice." `paragraph_text` walks the paragraph instead, leaving
out only tracked deletions and moves away, and text boxes. Text in a text box (a drawing anchored in
a run) and the notes and comments kept in their own package parts come back with a marker saying
what they are (`[text box]`, `[footnote 2]`, `[comment 1, Ana]`), and a reference in the body keeps
its place as the same marker, so the model can tie a note to the sentence it annotates.
"""

from docx.opc.constants import RELATIONSHIP_TYPE as RT
from docx.oxml import parse_xml
from docx.oxml.ns import qn
from docx.text.paragraph import Paragraph

from .document import Segment

_MC_FALLBACK = "{http://schemas.openxmlformats.org/markup-compatibility/2006}Fallback"
# (label, relationship type of the part, note element, reference element in the body)
_NOTE_KINDS = (
    ("footnote", RT.FOOTNOTES, "w:footnote", "w:footnoteReference"),
    ("endnote", RT.ENDNOTES, "w:endnote", "w:endnoteReference"),
    ("comment", RT.COMMENTS, "w:comment", "w:commentReference"),
)
_REFERENCE_LABELS = {qn(ref): label for label, _, _, ref in _NOTE_KINDS}


def _marker(label: str, note_id: str | None) -> str:
    return f"[{label} {note_id}]" if note_id is not None else f"[{label}]"


# Not read: deleted and moved-away text, text boxes (`text_boxes`), Word's second copy of a drawing,
# and the property elements, which hold no text of the document's.
# A ruby's reading (`w:rt`, furigana) is left out too: its base text is what the sentence says.
_LEFT_OUT = frozenset(qn(t) for t in ("w:del", "w:moveFrom", "w:txbxContent", "w:pPr", "w:rPr", "w:sdtPr", "w:rt")) | {_MC_FALLBACK}
_CHARACTERS = {qn("w:tab"): "\t", qn("w:ptab"): "\t", qn("w:br"): "\n", qn("w:cr"): "\n", qn("w:noBreakHyphen"): "-"}
_TEXT = qn("w:t")


def paragraph_text(paragraph: Paragraph) -> str:
    """The paragraph's text as Word shows it with changes accepted, with `[footnote N]`-style markers
    where it references a note or comment."""
    return element_text(paragraph._p)


def element_text(element) -> str:
    """The text of a paragraph element (or of any element holding runs), in document order."""
    pieces: list[str] = []

    def walk(node) -> None:
        for child in node:
            tag = child.tag
            if tag == _TEXT:
                pieces.append(child.text or "")
            elif tag in _CHARACTERS:
                pieces.append(_CHARACTERS[tag])
            elif tag in _REFERENCE_LABELS:
                pieces.append(_marker(_REFERENCE_LABELS[tag], child.get(qn("w:id"))))
            elif tag not in _LEFT_OUT:
                walk(child)

    walk(element)
    return "".join(pieces)


def text_boxes(paragraph: Paragraph) -> list[str]:
    """Text of the text boxes anchored in this paragraph, one string per box, in document order.

    Word writes each box twice, as DrawingML (`mc:Choice`) and as a VML fallback (`mc:Fallback`);
    only the first copy is read. A box nested in a box is its own entry.
    """
    boxes = []
    for content in paragraph._p.iter(qn("w:txbxContent")):
        if any(a.tag == _MC_FALLBACK for a in content.iterancestors()):
            continue
        lines = [element_text(p).strip() for p in content.iterchildren(qn("w:p"))]
        text = "\n".join(line for line in lines if line)
        if text:
            boxes.append(text)
    return boxes


def note_segments(document) -> list[Segment]:
    """Footnotes, endnotes and comments, each its own segment, marked and located by kind and id."""
    segments = []
    for label, reltype, tag, _ in _NOTE_KINDS:
        for rel in document.part.rels.values():
            if rel.is_external or rel.reltype != reltype:
                continue
            part = rel.target_part
            root = part.element if hasattr(part, "element") else parse_xml(part.blob)
            for note in root.iterchildren(qn(tag)):
                if note.get(qn("w:type")) not in (None, "normal"):  # separator lines, not notes
                    continue
                lines = [element_text(p).strip() for p in note.iter(qn("w:p"))]
                text = "\n".join(line for line in lines if line)
                if not text:
                    continue
                note_id = note.get(qn("w:id"))
                author = note.get(qn("w:author")) if label == "comment" else None
                marker = f"[{label} {note_id}, {author}]" if author else _marker(label, note_id)
                segments.append(Segment(f"{marker} {text}", f"{label} {note_id}"))
    return segments
