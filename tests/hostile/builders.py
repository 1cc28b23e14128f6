"""Hostile files built at run time: bombs are streamed through the compressor, never held whole."""

import io
import tarfile
import zipfile
import zlib
from pathlib import Path

MiB = 1024 * 1024
_ZEROS = b"\0" * MiB


def tar_gz_with_big_header(path: Path, header_type: bytes, size: int) -> Path:
    """A .tar.gz whose first header is a PAX ('x') or GNU long-name ('L') record of `size` bytes, then a normal file."""
    info = tarfile.TarInfo("././@PaxHeader" if header_type == tarfile.XHDTYPE else "././@LongLink")
    info.type = header_type
    info.size = size
    good = tarfile.TarInfo("good.txt")
    body = b"a normal file after the hostile header\n"
    good.size = len(body)
    comp = zlib.compressobj(1, zlib.DEFLATED, 31)  # gzip framing
    with open(path, "wb") as f:
        f.write(comp.compress(info.tobuf(format=tarfile.GNU_FORMAT)))
        filler = (b"9 a=b\n" * (MiB // 6 + 1))[:MiB] if header_type == tarfile.XHDTYPE else b"a" * MiB
        left = size + (-size % 512)
        while left:
            chunk = filler if left >= MiB else filler[:left]
            f.write(comp.compress(chunk))
            left -= len(chunk)
        f.write(comp.compress(good.tobuf(format=tarfile.GNU_FORMAT) + body + b"\0" * (-len(body) % 512) + b"\0" * 1024))
        f.write(comp.flush())
    return path


def small_docx(text: str = "hello from a normal document") -> bytes:
    import docx

    document = docx.Document()
    document.add_paragraph(text)
    buf = io.BytesIO()
    document.save(buf)
    return buf.getvalue()


_BODY_OPEN = (b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
              b'<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"><w:body>')
_BODY_CLOSE = b"</w:body></w:document>"


def docx_with_document_xml(path: Path, repeat: bytes, size: int, head: bytes = _BODY_OPEN) -> Path:
    """A real .docx whose word/document.xml is `head` + `repeat`... (about `size` bytes) + the closing tags, streamed."""
    with zipfile.ZipFile(io.BytesIO(small_docx())) as src, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            if info.filename != "word/document.xml":
                dst.writestr(info, src.read(info))
                continue
            target = zipfile.ZipInfo("word/document.xml")
            target.compress_type = zipfile.ZIP_DEFLATED
            with dst.open(target, "w", force_zip64=True) as out:
                out.write(head)
                block = repeat * max(1, MiB // len(repeat))
                written = 0
                while written < size:
                    out.write(block)
                    written += len(block)
                out.write(_BODY_CLOSE)
    return path


def billion_laughs_docx(path: Path) -> Path:
    entities = ['<!ENTITY l0 "lol">'] + [f'<!ENTITY l{i} "{("&l" + str(i - 1) + ";") * 10}">' for i in range(1, 10)]
    head = (b'<?xml version="1.0"?>\n<!DOCTYPE w:document [' + "".join(entities).encode() + b"]>"
            b'<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"><w:body>'
            b"<w:p><w:r><w:t>&l9;</w:t></w:r></w:p>")
    return docx_with_document_xml(path, b"<w:p/>", 1, head=head)


def zip_of(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def tar_of(path: Path, members: dict[str, bytes], encoding: str = "utf-8") -> Path:
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT, encoding=encoding, errors="surrogateescape") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def _pdf(objects: list[bytes], trailer: bytes, xref: bool = True) -> bytes:
    """A PDF from numbered object bodies (1-based), with a classic xref table unless `xref` is False."""
    out = bytearray(b"%PDF-1.7\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    start = len(out)
    if xref:
        out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
        out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n" + trailer + b"\nstartxref\n%d\n%%%%EOF\n" % start
    return bytes(out)


def text_pdf(text: str = "A normal page of text.") -> bytes:
    content = b"BT /F1 12 Tf 72 720 Td (" + text.encode() + b") Tj ET"
    return _pdf([
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R /Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ], b"<< /Size 6 /Root 1 0 R >>")


def pdf_billion_objects() -> bytes:
    """An xref stream that declares 999,999,999 entries (pypdf: LimitReachedError)."""
    data = zlib.compress(b"\x01\x00\x00\x00\x00\x00\x00" * 4)
    head = text_pdf()[: text_pdf().index(b"xref\n")]
    offset = len(head)
    stream = (b"6 0 obj\n<< /Type /XRef /Size 999999999 /Index [0 999999999] /W [1 4 2] /Root 1 0 R "
              b"/Filter /FlateDecode /Length %d >>\nstream\n" % len(data) + data + b"\nendstream\nendobj\n")
    return head + stream + b"startxref\n%d\n%%%%EOF\n" % offset


def pdf_xref_subsection_bomb() -> bytes:
    """A classic xref table whose subsection header claims 999,999,999 entries."""
    pdf = text_pdf()
    return pdf.replace(b"xref\n0 6\n", b"xref\n0 999999999\n")


def pdf_deep_nesting(depth: int = 200_000) -> bytes:
    return _pdf([
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Junk " + b"[" * depth + b"]" * depth + b" >>",
    ], b"<< /Size 4 /Root 1 0 R >>")


def pdf_page_cycle() -> bytes:
    return _pdf([
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [2 0 R 3 0 R] /Count 2 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] >>",
    ], b"<< /Size 4 /Root 1 0 R >>")


def pdf_content_bomb(size: int = 200 * MiB) -> bytes:
    """One page whose content stream inflates to `size` bytes of spaces."""
    comp = zlib.compressobj(6)
    data = b"".join(comp.compress(b" " * MiB) for _ in range(size // MiB)) + comp.flush()
    return _pdf([
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R >>",
        b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(data) + data + b"\nendstream",
    ], b"<< /Size 5 /Root 1 0 R >>")


def zipcrypto(path: Path, name: str, data: bytes, password: bytes) -> Path:
    """A zip with one ZipCrypto-encrypted stored member (zipfile can read these but not write them)."""
    import binascii
    import struct

    keys = [0x12345678, 0x23456789, 0x34567890]

    def crc(c: int, b: int) -> int:
        return (binascii.crc32(bytes([b]), c ^ 0xFFFFFFFF) ^ 0xFFFFFFFF) & 0xFFFFFFFF

    def update(b: int) -> None:
        keys[0] = crc(keys[0], b)
        keys[1] = ((keys[1] + (keys[0] & 0xFF)) * 134775813 + 1) & 0xFFFFFFFF
        keys[2] = crc(keys[2], keys[1] >> 24)

    def encrypt(plain: bytes) -> bytes:
        out = bytearray()
        for b in plain:
            t = (keys[2] | 2) & 0xFFFF
            out.append(b ^ (((t * (t ^ 1)) >> 8) & 0xFF))
            update(b)
        return bytes(out)

    for b in password:
        update(b)
    crc32 = binascii.crc32(data) & 0xFFFFFFFF
    header = bytes(11) + bytes([crc32 >> 24])
    body = encrypt(header + data)
    fname = name.encode()
    local = struct.pack("<4sHHHHHIIIHH", b"PK\x03\x04", 20, 1, 0, 0, 0, crc32, len(body), len(data), len(fname), 0) + fname
    central = struct.pack("<4sHHHHHHIIIHHHHHII", b"PK\x01\x02", 20, 20, 1, 0, 0, 0, crc32, len(body), len(data),
                          len(fname), 0, 0, 0, 0, 0, 0) + fname
    end = struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, 1, 1, len(central), len(local) + len(body), 0)
    path.write_bytes(local + body + central + end)
    return path
