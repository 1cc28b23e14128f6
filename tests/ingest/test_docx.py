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
