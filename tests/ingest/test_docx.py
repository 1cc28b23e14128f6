"""DOCX ingestion: order, headings, tables as rows, headers/footers, list numbers, corpus robustness."""

from pathlib import Path

import docx
import pytest

from scoutdoc.ingest import load_sources
from scoutdoc.ingest.docx import read_docx

CORPUS = Path(__file__).resolve().parents[2].parent / "shared" / "corpus"


def make_docx(path: Path) -> Path:
    document = docx.Document()
    document.core_properties.title = "Quarterly plan"
    document.add_heading("Introduction", level=1)
    document.add_paragraph("The plan covers three regions.")
    document.add_paragraph("First step", style="List Number")
    document.add_paragraph("Second step", style="List Number")
    document.add_paragraph("A bullet", style="List Bullet")
    document.add_heading("Budget", level=2)
    table = document.add_table(rows=3, cols=3)
    for r, row in enumerate([["Region", "Q1", "Q2"], ["North", "10", "12"], ["South", "7", "9"]]):
        for c, value in enumerate(row):
            table.cell(r, c).text = value
    document.add_paragraph("Closing remark.")
    document.sections[0].header.paragraphs[0].text = "Company confidential"
    document.sections[0].footer.paragraphs[0].text = "Page footer text"
    document.save(str(path))
    return path


def test_docx_structure_and_table_rows(tmp_path):
    path = make_docx(tmp_path / "plan.docx")
    (document,) = load_sources([path]).documents
    assert document.kind == "docx"
    assert document.title == "Quarterly plan"
    rows = [(s.where, s.text) for s in document.segments if s.where.startswith("table")]
    assert rows == [
        ("table 1 row 1", "| Region | Q1 | Q2 |"),
        ("table 1 row 2", "| North | 10 | 12 |"),
        ("table 1 row 3", "| South | 7 | 9 |"),
    ]
    text = document.text
    assert text.index("# Introduction") < text.index("## Budget") < text.index("| Region") < text.index("Closing remark.")
    assert "1. First step" in text and "2. Second step" in text
    assert "• A bullet" in text
    wheres = [s.where for s in document.segments]
    assert "header, section 1" in wheres and "footer, section 1" in wheres
    header = next(s for s in document.segments if s.where == "header, section 1")
    assert header.text == "Company confidential"


def test_corrupt_docx_is_a_clean_skip(tmp_path):
    path = tmp_path / "broken.docx"
    path.write_bytes(b"PK\x03\x04 this is not really a zip")
    result = load_sources([path])
    assert not result.documents
    assert ".docx" in result.skipped[0].reason


def test_empty_docx_is_reported(tmp_path):
    path = tmp_path / "empty.docx"
    docx.Document().save(str(path))
    result = load_sources([path])
    assert not result.documents
    assert "no text" in result.skipped[0].reason


CORPUS_DOCX = sorted(CORPUS.joinpath("docx").glob("*.docx")) if CORPUS.is_dir() else []


@pytest.mark.parametrize("path", CORPUS_DOCX, ids=lambda p: p.name)
def test_every_corpus_docx_yields_text_or_a_clear_skip(path):
    result = load_sources([path])
    assert len(result.documents) + len(result.skipped) == 1
    if result.documents:
        assert result.documents[0].chars > 0
    else:
        assert result.skipped[0].reason == "the document has no text"


def test_corpus_tables_and_headers(corpus):
    document = read_docx("x.docx", (corpus / "docx" / "features_steps_test_files_tbl-cell-access.docx").read_bytes())
    assert any(s.where == "table 1 row 1" for s in document.segments)
    document = read_docx("x.docx", (corpus / "docx" / "features_steps_test_files_hdr-header-footer.docx").read_bytes())
    assert {"header, section 1", "footer, section 1"} <= {s.where for s in document.segments}


def _renamed_main_part(body: bytes) -> bytes:
    """A real .docx whose main part is "word/document.dat" (declared XML by an Override), holding `body`."""
    import io
    import re
    import zipfile

    import docx

    plain = io.BytesIO()
    docx.Document().save(plain)
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(plain.getvalue())) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            data = src.read(info)
            name = info.filename.replace("word/document.xml", "word/document.dat").replace(
                "word/_rels/document.xml.rels", "word/_rels/document.dat.rels")
            if info.filename in ("[Content_Types].xml", "_rels/.rels"):
                data = data.replace(b"/word/document.xml", b"/word/document.dat").replace(b"word/document.xml", b"word/document.dat")
            if info.filename == "word/document.xml":
                data = re.sub(rb"<w:body>.*</w:body>", b"<w:body>" + body + b"</w:body>", data, flags=re.S)
            dst.writestr(name, data)
    return out.getvalue()


def test_the_caps_count_a_main_part_whatever_its_name(tmp_path):
    """python-docx finds the main part through its relationship: counted by suffix alone, a renamed
    one with 3M paragraphs was parsed (2.6 GB, two minutes)."""
    small = tmp_path / "renamed.docx"
    small.write_bytes(_renamed_main_part(b"<w:p><w:r><w:t>Renamed but readable.</w:t></w:r></w:p>"))
    result = load_sources([small])
    assert "Renamed but readable." in result.documents[0].text
    bomb = tmp_path / "renamed-bomb.docx"
    bomb.write_bytes(_renamed_main_part(b"<w:p/>" * 120_000))
    result = load_sources([bomb])
    assert not result.documents and "paragraphs" in result.skipped[0].reason
