"""Regenerate examples/contract.pdf and examples/contract.docx from the one contract text below.

The text is ours (no third-party rights) and short on purpose: the default model has an 8k-token
context, and the examples are used by the tests. Run: `python examples/make_examples.py`
(needs the `test` extra for fpdf2; python-docx is a runtime dependency).
"""

from datetime import datetime, timezone
from pathlib import Path

from docx import Document
from fpdf import FPDF

HERE = Path(__file__).parent
TITLE = "SERVICES AGREEMENT"
PARTIES = (
    "This Services Agreement is made on 3 March 2025 between Northwind Analytics Ltd (the Provider) "
    "and Bluebell Bakery Co. (the Client)."
)
# (heading, paragraphs); the page break falls before section 5 so citations can name two pages.
SECTIONS = [
    ("1. Services", [
        "The Provider will build and host a sales dashboard for the Client and deliver a monthly report "
        "on the first business day of each month.",
    ]),
    ("2. Term", [
        "The Agreement starts on 1 April 2025 and runs for twelve (12) months. It renews for further "
        "twelve-month terms unless either party gives notice under section 6.",
    ]),
    ("3. Fees and Payment", [
        "The Client pays a fixed fee of EUR 2,400 per month. The Provider invoices monthly in advance and "
        "the Client pays each invoice within thirty (30) days of receipt.",
        "Late payments carry interest of 1% per month.",
    ]),
    ("4. Confidentiality", [
        "Each party keeps the other party's confidential information secret during the Agreement and for "
        "three (3) years after it ends.",
    ]),
    ("5. Liability", [
        "Each party's total liability under this Agreement is limited to the fees paid in the twelve "
        "months before the claim. Neither party is liable for indirect or consequential loss.",
    ]),
    ("6. Termination", [
        "Either party may terminate this Agreement by giving sixty (60) days' written notice to the other "
        "party. Either party may terminate immediately if the other commits a material breach and does not "
        "remedy it within fourteen (14) days of being asked to.",
    ]),
    ("7. Governing Law", [
        "This Agreement is governed by the laws of Ireland, and the courts of Dublin have exclusive "
        "jurisdiction.",
    ]),
]
SIGNATURES = "Signed: Ana Duarte, for Northwind Analytics Ltd. Signed: Tom Reilly, for Bluebell Bakery Co."
PAGE_BREAK_BEFORE = "5. Liability"
FIXED_DATE = datetime(2025, 3, 3, tzinfo=timezone.utc)


def make_pdf(path: Path) -> None:
    pdf = FPDF(format="A4")
    pdf.set_creation_date(FIXED_DATE)  # regenerating gives the same bytes
    pdf.set_margins(20, 20, 20)
    pdf.add_page()
    pdf.set_font("Helvetica", "B", 16)
    pdf.cell(0, 10, TITLE, new_x="LMARGIN", new_y="NEXT", align="C")
    pdf.set_font("Helvetica", "", 11)
    pdf.multi_cell(0, 6, PARTIES, new_x="LMARGIN", new_y="NEXT")
    for heading, paragraphs in SECTIONS:
        if heading == PAGE_BREAK_BEFORE:
            pdf.add_page()
        pdf.ln(3)
        pdf.set_font("Helvetica", "B", 12)
        pdf.cell(0, 8, heading, new_x="LMARGIN", new_y="NEXT")
        pdf.set_font("Helvetica", "", 11)
        for para in paragraphs:
            pdf.multi_cell(0, 6, para, new_x="LMARGIN", new_y="NEXT")
    pdf.ln(6)
    pdf.multi_cell(0, 6, SIGNATURES, new_x="LMARGIN", new_y="NEXT")
    pdf.output(str(path))


def make_docx(path: Path) -> None:
    doc = Document()
    doc.core_properties.title = TITLE
    doc.core_properties.created = doc.core_properties.modified = FIXED_DATE.replace(tzinfo=None)
    doc.add_heading(TITLE, level=0)
    doc.add_paragraph(PARTIES)
    for heading, paragraphs in SECTIONS:
        doc.add_heading(heading, level=1)
        for para in paragraphs:
            doc.add_paragraph(para)
    table = doc.add_table(rows=3, cols=2)
    for row, cells in zip(table.rows, [("Party", "Signatory"), ("Northwind Analytics Ltd", "Ana Duarte"),
                                       ("Bluebell Bakery Co.", "Tom Reilly")]):
        for cell, text in zip(row.cells, cells):
            cell.text = text
    doc.save(str(path))


if __name__ == "__main__":
    make_pdf(HERE / "contract.pdf")
    make_docx(HERE / "contract.docx")
    print("wrote", HERE / "contract.pdf", HERE / "contract.docx")
