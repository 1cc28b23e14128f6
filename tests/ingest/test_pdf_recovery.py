"""PDFs with a missing or broken cross-reference table are recovered through pypdf's non-strict mode.

Fixtures are fpdf2 files damaged the two ways seen in the wild: cut off before `startxref`
(an interrupted download), and written without any xref table or startxref, only a trailer
(pdfminer's simple1.pdf / simple3.pdf).
"""

import pytest
from fpdf import FPDF

from scoutdoc.ingest import load_sources
from scoutdoc.ingest.pdf import RECOVERED_WARNING


@pytest.fixture
def good_pdf() -> bytes:
    pdf = FPDF()
    pdf.set_font("helvetica", size=12)
    for text in ("Hello World on page one", "Second page about recovery"):
        pdf.add_page()
        pdf.multi_cell(0, 8, text)
    return bytes(pdf.output())


def _read(tmp_path, data: bytes):
    path = tmp_path / "damaged.pdf"
    path.write_bytes(data)
    return load_sources([path])


def test_pdf_truncated_before_startxref_is_recovered(tmp_path, good_pdf):
    result = _read(tmp_path, good_pdf[: good_pdf.rindex(b"startxref")])
    (document,) = result.documents
    assert [s.where for s in document.segments] == ["page 1", "page 2"]
    assert "Hello World" in document.segments[0].text and "recovery" in document.segments[1].text
    assert document.meta["warnings"] == [RECOVERED_WARNING]


def test_pdf_without_xref_table_like_pdfminer_simple1_is_recovered(tmp_path, good_pdf):
    xref = good_pdf.rindex(b"\nxref") + 1
    trailer = b"trailer\n<< /Size 20 /Root 1 0 R >>\n%%EOF\n"  # no xref, no startxref, a wrong /Root
    (document,) = _read(tmp_path, good_pdf[:xref] + trailer).documents
    assert "Hello World" in document.text


def test_intact_pdf_has_no_recovery_warning(tmp_path, good_pdf):
    (document,) = _read(tmp_path, good_pdf).documents
    assert "warnings" not in document.meta


def test_unrecoverable_pdf_is_still_a_clean_skip(tmp_path, good_pdf):
    result = _read(tmp_path, good_pdf[:400])  # cut inside the first page's objects
    assert not result.documents
    assert "not a readable PDF" in result.skipped[0].reason
