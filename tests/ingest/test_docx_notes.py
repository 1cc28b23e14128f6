"""Word text outside the body paragraphs: text boxes, footnotes, endnotes, comments; Strict OOXML packages.

The fixtures are written with python-docx, with the parts it has no API for (footnotes, endnotes,
text boxes) added as raw WordprocessingML, the way Word itself stores them.
"""

import io
import zipfile
from pathlib import Path

import docx
from docx.opc.constants import CONTENT_TYPE as CT
from docx.opc.constants import RELATIONSHIP_TYPE as RT
from docx.opc.packuri import PackURI
from docx.opc.part import Part
from docx.oxml import parse_xml

from scoutdoc.ingest import load_sources
from scoutdoc.ingest.docx import read_docx

W = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"
NS = (
    f'xmlns:w="{W}" xmlns:mc="http://schemas.openxmlformats.org/markup-compatibility/2006" '
    'xmlns:wp="http://schemas.openxmlformats.org/drawingml/2006/wordprocessingDrawing" '
    'xmlns:a="http://schemas.openxmlformats.org/drawingml/2006/main" '
    'xmlns:wps="http://schemas.microsoft.com/office/word/2010/wordprocessingShape" '
    'xmlns:v="urn:schemas-microsoft-com:vml"'
)


def _notes_part(document, kind: str, notes: dict[int, str]) -> None:
    """A footnotes or endnotes part with Word's two separator notes and the given notes."""
    body = "".join(
        f'<w:{kind} w:id="{i}"><w:p><w:r><w:t>{text}</w:t></w:r></w:p></w:{kind}>' for i, text in notes.items()
    )
    xml = (
        f'<w:{kind}s {NS}>'
        f'<w:{kind} w:type="separator" w:id="-1"><w:p><w:r><w:separator/></w:r></w:p></w:{kind}>'
        f'<w:{kind} w:type="continuationSeparator" w:id="0"><w:p><w:r><w:continuationSeparator/></w:r></w:p></w:{kind}>'
        f"{body}</w:{kind}s>"
    )
    content_type, reltype = (CT.WML_FOOTNOTES, RT.FOOTNOTES) if kind == "footnote" else (CT.WML_ENDNOTES, RT.ENDNOTES)
    part = Part(PackURI(f"/word/{kind}s.xml"), content_type, xml.encode(), document.part.package)
    document.part.relate_to(part, reltype)


def _reference(paragraph, kind: str, note_id: int) -> None:
    paragraph._p.append(parse_xml(f'<w:r {NS}><w:{kind}Reference w:id="{note_id}"/></w:r>'))


def _text_box(paragraph, text: str) -> None:
    """A DrawingML text box with its VML fallback copy, as Word writes it."""
    content = f'<w:txbxContent><w:p><w:r><w:t>{text}</w:t></w:r></w:p></w:txbxContent>'
    paragraph._p.append(parse_xml(
        f'<w:r {NS}><mc:AlternateContent>'
        f'<mc:Choice Requires="wps"><w:drawing><wp:anchor><a:graphic><a:graphicData>'
        f'<wps:wsp><wps:txbx>{content}</wps:txbx></wps:wsp>'
        f'</a:graphicData></a:graphic></wp:anchor></w:drawing></mc:Choice>'
        f'<mc:Fallback><w:pict><v:shape><v:textbox>{content}</v:textbox></v:shape></w:pict></mc:Fallback>'
        f'</mc:AlternateContent></w:r>'
    ))


def make_annotated_docx(path: Path) -> Path:
    document = docx.Document()
    intro = document.add_paragraph("Revenue grew in the north.")
    _reference(intro, "footnote", 1)
    closing = document.add_paragraph("Costs were flat.")
    _reference(closing, "endnote", 1)
    document.add_comment(closing.runs[0], text="Check the Q3 figure", author="Ana Ruiz")
    _text_box(document.add_paragraph(), "Sidebar: hiring freeze until March")
    _notes_part(document, "footnote", {1: "Audited figures, see annex B."})
    _notes_part(document, "endnote", {1: "Source: finance team export."})
    document.save(str(path))
    return path


def test_text_boxes_notes_and_comments_are_read_with_markers(tmp_path):
    (document,) = load_sources([make_annotated_docx(tmp_path / "annotated.docx")]).documents
    by_where = {s.where: s.text for s in document.segments}
    assert by_where["text box 1"] == "[text box] Sidebar: hiring freeze until March"
    assert by_where["footnote 1"] == "[footnote 1] Audited figures, see annex B."
    assert by_where["endnote 1"] == "[endnote 1] Source: finance team export."
    comment = next(text for where, text in by_where.items() if where.startswith("comment"))
    assert comment.startswith("[comment ") and "Ana Ruiz]" in comment and comment.endswith("Check the Q3 figure")
    assert document.segments[0].text == "Revenue grew in the north.[footnote 1]\nCosts were flat.[comment 0][endnote 1]"
    assert document.text.count("hiring freeze") == 1  # the VML fallback copy is not read twice
    assert "separator" not in document.text


def _strict(data: bytes) -> bytes:
    """The package renamed into Strict OOXML namespaces, as Word's 'Strict Open XML Document' writes them."""
    pairs = [
        (b"http://schemas.openxmlformats.org/wordprocessingml/2006/main", b"http://purl.oclc.org/ooxml/wordprocessingml/main"),
        (b"http://schemas.openxmlformats.org/officeDocument/2006/relationships", b"http://purl.oclc.org/ooxml/officeDocument/relationships"),
        (b"http://schemas.openxmlformats.org/drawingml/2006/main", b"http://purl.oclc.org/ooxml/drawingml/main"),
    ]
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as source, zipfile.ZipFile(out, "w") as target:
        for info in source.infolist():
            content = source.read(info)
            for transitional, strict in pairs:
                content = content.replace(transitional, strict)
            target.writestr(info, content)
    return out.getvalue()


def test_strict_ooxml_document_is_read(tmp_path):
    document = docx.Document()
    document.add_heading("Strict plan", level=1)
    document.add_paragraph("Strict documents hold the same text.")
    buffer = io.BytesIO()
    document.save(buffer)
    strict = _strict(buffer.getvalue())
    assert b"purl.oclc.org" in zipfile.ZipFile(io.BytesIO(strict)).read("_rels/.rels")
    read = read_docx("strict.docx", strict)
    assert "# Strict plan" in read.text and "Strict documents hold the same text." in read.text


def test_damaged_strict_ooxml_document_says_so(tmp_path):
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as package:
        package.writestr("_rels/.rels", '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
                         '<Relationship Id="rId1" Type="http://purl.oclc.org/ooxml/officeDocument/relationships/officeDocument" '
                         'Target="word/document.xml"/></Relationships>')
    path = tmp_path / "strict-broken.docx"
    path.write_bytes(out.getvalue())
    (skip,) = load_sources([path]).skipped
    assert "Strict Open XML" in skip.reason and "KeyError" not in skip.reason and skip.code == "damaged"


def test_corpus_comments_are_read(corpus):
    data = (corpus / "docx" / "features_steps_test_files_comments-rich-para.docx").read_bytes()
    document = read_docx("comments.docx", data)
    assert "[comment 0, Steve Canny] Text with hyperlink" in document.text
    assert "Some text worthy of note.[comment 0]" in document.text


def _run(text: str, tag: str = "w:t") -> str:
    return f'<w:r><{tag} xml:space="preserve">{text}</{tag.split()[0]}></w:r>'


def test_runs_inside_changes_controls_fields_and_tags_are_read_as_word_shows_them(tmp_path):
    """A tracked insertion is read and a deletion left out (changes accepted); a content control, a
    simple field and a smart tag keep their text; a content control around paragraphs, a table
    nested in a cell and a change inside a cell are read too."""
    document = docx.Document()
    add = document.element.body.sectPr.addprevious  # blocks go before the section properties, as Word keeps them
    add(parse_xml(
        f'<w:p {NS}>{_run("Notice period is ")}<w:del w:id="1" w:author="Ana">{_run("30 days", "w:delText")}</w:del>'
        f'<w:ins w:id="2" w:author="Ana">{_run("60 days")}</w:ins>{_run(" after notice.")}</w:p>'))
    add(parse_xml(
        f'<w:p {NS}>{_run("Client: ")}<w:sdt><w:sdtPr><w:alias w:val="Name"/></w:sdtPr><w:sdtContent>{_run("ACME")}'
        f'</w:sdtContent></w:sdt> <w:fldSimple w:instr="DOCPROPERTY City">{_run(" of Cork")}</w:fldSimple>'
        f'<w:smartTag w:uri="x" w:element="place">{_run(", Ireland")}</w:smartTag><w:moveFrom w:id="3" w:author="Ana">'
        f'{_run(" MOVED AWAY")}</w:moveFrom></w:p>'))
    add(parse_xml(f'<w:sdt {NS}><w:sdtContent><w:p>{_run("Inside a content control.")}</w:p></w:sdtContent></w:sdt>'))
    table = document.add_table(rows=1, cols=2)
    table.cell(0, 0).text = "outer"
    table.cell(0, 0)._tc.append(parse_xml(
        f'<w:tbl {NS}><w:tr><w:tc><w:p>{_run("in A")}</w:p></w:tc><w:tc><w:p>{_run("in B")}</w:p></w:tc></w:tr></w:tbl>'))
    table.cell(0, 1)._tc.append(parse_xml(f'<w:p {NS}><w:ins w:id="4" w:author="Ana">{_run("added")}</w:ins></w:p>'))
    path = tmp_path / "changes.docx"
    document.save(str(path))
    (doc,) = load_sources([path]).documents
    text = "\n".join(s.text for s in doc.segments)
    assert "Notice period is 60 days after notice." in text and "30 days" not in text
    assert "Client: ACME of Cork, Ireland" in text and "MOVED AWAY" not in text
    assert "Inside a content control." in text
    assert "| outer in A; in B | added |" in text


def test_positional_tabs_separate_words_and_a_rubys_reading_is_left_out(tmp_path):
    document = docx.Document()
    add = document.element.body.sectPr.addprevious
    add(parse_xml(f'<w:p {NS}>{_run("Chapter One")}<w:r><w:ptab w:relativeTo="margin" w:alignment="right" w:leader="none"/></w:r>'
                  f'{_run("Page 7")}</w:p>'))
    add(parse_xml(f'<w:p {NS}><w:r><w:ruby><w:rt>{_run("とうきょう")}</w:rt><w:rubyBase>{_run("東京")}</w:rubyBase></w:ruby></w:r>'
                  f'{_run("に行く")}</w:p>'))
    path = tmp_path / "tabs.docx"
    document.save(str(path))
    (doc,) = load_sources([path]).documents
    assert doc.segments[0].text == "Chapter One\tPage 7\n東京に行く"
