"""Text decoding (UTF-8, BOMs, UTF-16, legacy code pages), binary sniffing and line provenance."""

import codecs

from scoutdoc.ingest import IngestOptions, load_sources
from scoutdoc.ingest.sniff import decode_text

SAMPLE = "Grüße aus Köln – naïve café, 100 € net.\nSecond line.\n"


def test_encodings_decode_to_the_same_text(tmp_path):
    variants = {
        "utf8.txt": SAMPLE.encode("utf-8"),
        "bom.txt": codecs.BOM_UTF8 + SAMPLE.encode("utf-8"),
        "utf16.txt": SAMPLE.encode("utf-16"),
        "utf16be.txt": codecs.BOM_UTF16_BE + SAMPLE.encode("utf-16-be"),
    }
    for name, data in variants.items():
        (tmp_path / name).write_bytes(data)
    result = load_sources([tmp_path / n for n in variants])
    assert not result.skipped
    for document in result.documents:
        assert document.text == SAMPLE.rstrip("\n"), document.source


def test_legacy_encoding_is_detected():
    text = "Le garçon a mangé une crème brûlée près de la fenêtre. " * 8
    assert decode_text(text.encode("cp1252")) == text
    russian = "Привет, как дела? Это проверка кодировки текста. " * 8
    assert decode_text(russian.encode("cp1251")) == russian


def test_binary_unknown_is_skipped_and_text_unknown_is_read(tmp_path):
    (tmp_path / "blob.dat").write_bytes(b"\x00\x01\x02\xff" * 100)
    (tmp_path / "NOTES").write_text("plain notes without extension\n", encoding="utf-8")
    result = load_sources([tmp_path / "blob.dat", tmp_path / "NOTES"])
    assert [d.source for d in result.documents] == [str(tmp_path / "NOTES")]
    assert result.documents[0].kind == "text"
    assert "binary" in result.skipped[0].reason


def test_line_ranges_are_citable(tmp_path):
    path = tmp_path / "mod.py"
    path.write_text("\n".join(f"x{i} = {i}" for i in range(1, 121)) + "\n", encoding="utf-8")
    (document,) = load_sources([path], IngestOptions(line_chunk=50)).documents
    assert (document.kind, document.language) == ("code", "python")
    assert [s.where for s in document.segments] == ["L1-50", "L51-100", "L101-120"]
    assert document.segments[1].text.splitlines()[0] == "x51 = 51"
    assert document.meta["lines"] == 120


def test_empty_and_missing_files(tmp_path):
    (tmp_path / "empty.md").write_bytes(b"")
    result = load_sources([tmp_path / "empty.md", tmp_path / "missing.txt"])
    assert not result.documents
    reasons = {s.source: s.reason for s in result.skipped}
    assert "empty file" in reasons[str(tmp_path / "empty.md")]
    assert "no such file" in reasons[str(tmp_path / "missing.txt")]


def test_crlf_and_unterminated_last_line(tmp_path):
    path = tmp_path / "win.txt"
    path.write_bytes(b"one\r\ntwo\r\nthree")
    (document,) = load_sources([path], IngestOptions(line_chunk=2)).documents
    assert [(s.where, s.text) for s in document.segments] == [("L1-2", "one\ntwo"), ("L3-3", "three")]
