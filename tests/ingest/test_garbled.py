"""Extracted text that is mostly replacement or private-use characters: a warning, or a skip under strict."""

from scoutdoc.ingest import IngestOptions, load_sources
from scoutdoc.ingest.garbled import garbled_share

MOJIBAKE = "\ue001\ue002\ue003 \ufffd\ufffd\ue010\ue011 \ue020\ue021\ue022 ok"


def test_share_counts_visible_characters():
    assert garbled_share(["plain text, nothing odd"]) == 0.0
    assert garbled_share(["\ufffd\ufffd ab"]) == 0.5
    assert garbled_share(["\ue000\ue001\ue002", "", "  \n "]) == 1.0


def test_garbled_text_file_warns_and_strict_skips_it(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text(MOJIBAKE, encoding="utf-8")
    (document,) = load_sources([path]).documents
    (warning,) = document.meta["warnings"]
    assert "private-use" in warning and "--strict" in warning
    strict = load_sources([path], IngestOptions(strict=True))
    assert not strict.documents
    assert strict.skipped[0].code == "garbled" and "--strict" in strict.skipped[0].reason


def test_mostly_readable_text_with_a_few_odd_characters_is_not_flagged(tmp_path):
    path = tmp_path / "logo.md"
    path.write_text("# Title \ue000\n" + "Normal prose follows here. " * 5, encoding="utf-8")
    (document,) = load_sources([path]).documents
    assert "warnings" not in document.meta
