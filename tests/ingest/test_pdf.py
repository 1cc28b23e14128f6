"""PDF ingestion: page provenance on a generated multi-page PDF, and every corpus PDF handled cleanly."""

from pathlib import Path

import pytest
from fpdf import FPDF

from scoutdoc.ingest.document import SKIP_CODES
from scoutdoc.ingest import IngestOptions, load_sources
from scoutdoc.ingest.pdf import read_pdf

CORPUS = Path(__file__).resolve().parents[2].parent / "shared" / "corpus"

USER_PASSWORD_FILES = {
    "r2-user-password.pdf": "asdfzxcv",
    "r3-user-password.pdf": "asdfzxcv",
    "r4-user-password.pdf": "asdfzxcv",
    "r4-aes-user-password.pdf": "asdfzxcv",
    "r5-user-password.pdf": "asdfzxcv",
    "r6-user-password.pdf": "asdfzxcv",
    "r6-both-passwords.pdf": "foo",
}

# For these AES-256 files pypdf 7's decrypt("") answers OWNER_PASSWORD (the owner check accepts
# the empty string), so they open without a password; we accept what pypdf decides.
OPENS_WITH_EMPTY_OWNER_PASSWORD = {"r5-user-password.pdf", "r6-user-password.pdf"}


def make_pdf(path: Path, pages: list[str]) -> Path:
    pdf = FPDF()
    pdf.set_font("helvetica", size=12)
    for text in pages:
        pdf.add_page()
        pdf.multi_cell(0, 8, text)
    pdf.output(str(path))
    return path


def test_generated_pdf_keeps_page_numbers(tmp_path):
    pages = [f"Page {n} talks about topic-{n} and nothing else." for n in range(1, 6)]
    path = make_pdf(tmp_path / "report.pdf", pages)
    result = load_sources([path])
    (document,) = result.documents
    assert document.kind == "pdf"
    assert document.meta["pages"] == 5
    assert [s.where for s in document.segments] == [f"page {n}" for n in range(1, 6)]
    for n, segment in enumerate(document.segments, start=1):
        assert f"topic-{n}" in segment.text
        assert f"topic-{n + 1}" not in segment.text


def test_blank_pages_are_recorded_and_text_pages_kept(tmp_path):
    path = make_pdf(tmp_path / "gaps.pdf", ["first page text", "", "third page text"])
    document = read_pdf("gaps.pdf", path.read_bytes())
    assert [s.where for s in document.segments] == ["page 1", "page 3"]
    assert document.meta["empty_pages"] == [2]


def test_pdf_without_text_is_reported_as_scan(tmp_path):
    path = make_pdf(tmp_path / "blank.pdf", ["", ""])
    result = load_sources([path])
    assert not result.documents
    assert "no extractable text" in result.skipped[0].reason and result.skipped[0].code == "no_text"
    assert "OCR" in result.skipped[0].reason


def test_corrupt_pdf_is_a_clean_skip(tmp_path):
    path = tmp_path / "broken.pdf"
    path.write_bytes(b"%PDF-1.7\n1 0 obj <<>> garbage without xref")
    result = load_sources([path])
    assert not result.documents
    assert result.skipped[0].source == str(path)
    assert result.skipped[0].reason


CORPUS_PDFS = sorted(CORPUS.joinpath("pdf").rglob("*.pdf")) if CORPUS.is_dir() else []


@pytest.mark.parametrize("path", CORPUS_PDFS, ids=lambda p: p.name)
def test_every_corpus_pdf_yields_text_or_a_clear_skip(path):
    result = load_sources([path])
    assert len(result.documents) + len(result.skipped) == 1
    if result.documents:
        assert result.documents[0].chars > 0
    else:
        reason = result.skipped[0].reason
        assert result.skipped[0].code in SKIP_CODES
        assert reason and "\n" not in reason and "Traceback" not in reason


@pytest.mark.parametrize("name,password", sorted(USER_PASSWORD_FILES.items()))
def test_encrypted_pdfs_open_with_password_and_fail_cleanly_without(corpus, name, password):
    path = corpus / "pdf" / "encryption" / name
    without = load_sources([path])
    if name in OPENS_WITH_EMPTY_OWNER_PASSWORD:
        assert without.documents
        return
    assert not without.documents
    assert "encrypted" in without.skipped[0].reason and "--password" in without.skipped[0].reason
    assert without.skipped[0].code == "encrypted"
    wrong = load_sources([path], IngestOptions(passwords=("not-the-password",)))
    assert not wrong.documents
    assert "did not open" in wrong.skipped[0].reason
    opened = load_sources([path], IngestOptions(passwords=(password,)))
    assert opened.documents, opened.skipped
    assert opened.documents[0].chars > 0


def test_owner_password_only_pdfs_open_without_password(corpus):
    for path in sorted((corpus / "pdf" / "encryption").glob("*-owner-password.pdf")):
        result = load_sources([path])
        assert result.documents, (path.name, result.skipped)


def test_libreoffice_password_pdf(corpus):
    path = corpus / "pdf" / "libreoffice-writer-password.pdf"
    if not path.exists():
        pytest.skip("not in this corpus")
    assert not load_sources([path]).documents
    assert load_sources([path], IngestOptions(passwords=("openpassword",))).documents


def test_a_failing_page_is_reported_and_the_rest_kept(tmp_path, monkeypatch):
    """Failure injection in pypdf (real broken pages are rare and pypdf is lenient)."""
    import pypdf

    path = make_pdf(tmp_path / "three.pdf", ["alpha page", "beta page", "gamma page"])
    original = pypdf.PageObject.extract_text

    def flaky(self, *args, **kwargs):
        text = original(self, *args, **kwargs)
        if "beta" in text:
            raise KeyError("/Font")
        return text

    monkeypatch.setattr(pypdf.PageObject, "extract_text", flaky)
    (document,) = load_sources([path, path]).documents  # named twice, read once
    assert [s.where for s in document.segments] == ["page 1", "page 3"]
    assert document.meta["failed_pages"] == [2]
