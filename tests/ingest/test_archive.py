"""Archives: members ingested like files with `archive!member` sources; hostile members refused."""

import io
import os
import stat
import tarfile
import zipfile
from pathlib import Path

import docx

from scoutdoc.ingest import ArchiveLimits, IngestOptions, load_sources


def zip_bytes(members: dict[str, bytes], compression=zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def tar_bytes(members: list[tarfile.TarInfo | tuple[str, bytes]], mode: str = "w:gz") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as archive:
        for member in members:
            if isinstance(member, tarfile.TarInfo):
                archive.addfile(member)
            else:
                info = tarfile.TarInfo(member[0])
                info.size = len(member[1])
                archive.addfile(info, io.BytesIO(member[1]))
    return buffer.getvalue()


def docx_bytes(text: str) -> bytes:
    document = docx.Document()
    document.add_paragraph(text)
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


def snapshot(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def test_members_are_ingested_with_archive_paths(tmp_path):
    inner = tar_bytes([("notes/b.md", b"# inner markdown\n"), ("talk.vtt", b"WEBVTT\n\n00:00:01.000 --> 00:00:02.000\n<v Ann>Hi\n")])
    outer = zip_bytes({"docs/a.txt": b"alpha text\n", "report.docx": docx_bytes("docx inside zip"), "inner.tar.gz": inner, "empty/": b""})
    (tmp_path / "proj" / "sub").mkdir(parents=True)
    (tmp_path / "proj" / "sub" / "bundle.zip").write_bytes(outer)
    (tmp_path / "bundle.zip").write_bytes(outer)

    result = load_sources([tmp_path / "bundle.zip"])
    assert not result.skipped
    top = str(tmp_path / "bundle.zip")
    assert [(d.source, d.kind) for d in result.documents] == [
        (f"{top}!docs/a.txt", "text"),
        (f"{top}!report.docx", "docx"),
        (f"{top}!inner.tar.gz!notes/b.md", "text"),
        (f"{top}!inner.tar.gz!talk.vtt", "transcript"),
    ]
    in_dir = load_sources([tmp_path / "proj"])
    assert in_dir.documents[0].source == "sub/bundle.zip!docs/a.txt"
    assert in_dir.tree == "proj/\n└── sub/\n    └── bundle.zip"


def test_hostile_zip_members_are_refused_and_nothing_is_written(tmp_path):
    area = tmp_path / "area"
    area.mkdir()
    members = {
        "../evil.txt": b"zip slip",
        "../../etc/evil2.txt": b"zip slip",
        "/abs/evil3.txt": b"absolute",
        "C:/evil4.txt": b"drive",
        "..\\evil5.txt": b"windows slip",
        "good.txt": b"fine\n",
    }
    data = io.BytesIO(zip_bytes(members))
    with zipfile.ZipFile(data, "a") as archive:
        link = zipfile.ZipInfo("link-to-passwd")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(link, "/etc/passwd")
    (area / "hostile.zip").write_bytes(data.getvalue())
    before_area, before_parent = snapshot(area), snapshot(tmp_path)
    cwd_before = set(os.listdir(os.getcwd()))

    result = load_sources([area / "hostile.zip"])
    assert [d.source.split("!")[1] for d in result.documents] == ["good.txt"]
    reasons = {s.source.split("!")[1]: s.reason for s in result.skipped}
    assert "escapes" in reasons["../evil.txt"] and "escapes" in reasons["../../etc/evil2.txt"]
    assert "absolute" in reasons["/abs/evil3.txt"] and "absolute" in reasons["C:/evil4.txt"]
    assert "escapes" in reasons["..\\evil5.txt"]
    assert "symbolic link" in reasons["link-to-passwd"]
    assert {s.code for s in result.skipped} == {"unsafe"}
    assert snapshot(area) == before_area and snapshot(tmp_path) == before_parent
    assert set(os.listdir(os.getcwd())) == cwd_before
    assert not (tmp_path / "evil.txt").exists()


def test_hostile_tar_members_are_refused(tmp_path):
    sym = tarfile.TarInfo("sym")
    sym.type, sym.linkname = tarfile.SYMTYPE, "/etc/passwd"
    hard = tarfile.TarInfo("hard")
    hard.type, hard.linkname = tarfile.LNKTYPE, "good.txt"
    fifo = tarfile.TarInfo("pipe")
    fifo.type = tarfile.FIFOTYPE
    dev = tarfile.TarInfo("dev")
    dev.type = tarfile.CHRTYPE
    data = tar_bytes([("good.txt", b"ok\n"), ("../up.txt", b"x"), ("/abs.txt", b"x"), sym, hard, fifo, dev], mode="w:xz")
    (tmp_path / "t.tar.xz").write_bytes(data)
    result = load_sources([tmp_path / "t.tar.xz"])
    assert [d.source.split("!")[1] for d in result.documents] == ["good.txt"]
    reasons = {s.source.split("!")[1]: s.reason for s in result.skipped}
    assert "escapes" in reasons["../up.txt"] and "absolute" in reasons["/abs.txt"]
    assert "link" in reasons["sym"] and "link" in reasons["hard"]
    assert "special file" in reasons["pipe"] and "special file" in reasons["dev"]


def test_zip_bomb_is_refused(tmp_path):
    (tmp_path / "bomb.zip").write_bytes(zip_bytes({"zeros.txt": b"0" * (30 * 1024 * 1024)}))
    result = load_sources([tmp_path / "bomb.zip"])
    assert not result.documents
    assert "bomb" in result.skipped[0].reason


def test_tar_gz_bomb_is_refused(tmp_path):
    (tmp_path / "bomb.tgz").write_bytes(tar_bytes([("zeros.txt", b"0" * (30 * 1024 * 1024))]))
    result = load_sources([tmp_path / "bomb.tgz"], IngestOptions(max_file_size=64 * 1024 * 1024))
    assert not result.documents
    assert "bomb" in result.skipped[0].reason


def test_nesting_beyond_the_limit_is_refused(tmp_path):
    level = zip_bytes({"deepest.txt": b"level 4\n"})
    for depth in (3, 2, 1):
        level = zip_bytes({f"level{depth}.txt": f"level {depth}\n".encode(), f"l{depth + 1}.zip": level})
    (tmp_path / "l1.zip").write_bytes(level)
    result = load_sources([tmp_path / "l1.zip"], IngestOptions(archive=ArchiveLimits(max_depth=3)))
    assert [d.text for d in result.documents] == ["level 1", "level 2", "level 3"]
    (skip,) = result.skipped
    assert skip.source.endswith("l1.zip!l2.zip!l3.zip!l4.zip")
    assert "nested more than 3 levels" in skip.reason and skip.code == "limit"


def test_member_count_and_total_size_caps(tmp_path):
    (tmp_path / "many.zip").write_bytes(zip_bytes({f"f{i}.txt": b"x\n" for i in range(20)}))
    result = load_sources([tmp_path / "many.zip"], IngestOptions(archive=ArchiveLimits(max_members=10)))
    assert not result.documents and "over the cap of 10" in result.skipped[0].reason

    (tmp_path / "big.tar").write_bytes(tar_bytes([(f"f{i}.txt", os.urandom(3000).hex().encode()) for i in range(5)], mode="w"))
    result = load_sources([tmp_path / "big.tar"], IngestOptions(archive=ArchiveLimits(max_total_bytes=15000)))
    assert len(result.documents) == 2
    assert all("total uncompressed size" in s.reason for s in result.skipped) and len(result.skipped) == 3


def test_corrupt_archive_is_a_clean_skip(tmp_path):
    (tmp_path / "broken.zip").write_bytes(b"PK\x03\x04 truncated")
    (tmp_path / "broken.tar.gz").write_bytes(b"\x1f\x8b\x08\x00garbage")
    result = load_sources([tmp_path / "broken.zip", tmp_path / "broken.tar.gz"])
    assert not result.documents
    assert [s.reason.split(" (")[0] for s in result.skipped] == ["not a readable zip archive", "not a readable tar archive"]


def test_a_wrong_password_that_passes_zipcryptos_check_byte_does_not_stop_the_right_one(tmp_path):
    """ZipCrypto checks one byte of the password: about 1 wrong password in 256 passes, and the member
    then decrypts to noise (a CRC or inflate error); the next password is still tried."""
    from hostile.builders import zipcrypto

    archive = zipcrypto(tmp_path / "locked.zip", "inside.txt", b"The vault code is 4417.\n", b"s3cret")
    with zipfile.ZipFile(archive) as z:
        info = z.infolist()[0]

        def passes_the_check(pwd: str) -> bool:
            try:
                z.open(info, pwd=pwd.encode()).close()
                return True
            except RuntimeError:
                return False

        fooling = next(f"wrong{n}" for n in range(100_000) if passes_the_check(f"wrong{n}"))
    opened = load_sources([archive], IngestOptions(passwords=(fooling, "s3cret")))
    assert "vault code is 4417" in opened.documents[0].text
    alone = load_sources([archive], IngestOptions(passwords=(fooling,)))
    assert not alone.documents and alone.skipped[0].code != "encrypted"  # decrypted noise reads as damage


def test_an_archive_stops_holding_text_at_the_runs_cap_member_by_member(tmp_path, monkeypatch):
    import scoutdoc.ingest as ingest

    members = {f"m{i:02d}.txt": (f"member {i} " * 40).encode() for i in range(12)}  # 400 characters each
    path = tmp_path / "many.zip"
    path.write_bytes(zip_bytes(members))
    held = []  # how many documents the run holds after each member
    keep = ingest._keep

    def counting(out, document, cap):
        keep(out, document, cap)
        held.append(len(out.documents))

    monkeypatch.setattr(ingest, "_keep", counting)
    result = load_sources([path], IngestOptions(max_total_chars=1000))
    assert [d.source.rsplit("!", 1)[1] for d in result.documents] == ["m00.txt", "m01.txt"]
    assert len(result.skipped) == 10 and {s.code for s in result.skipped} == {"limit"}
    assert max(held) == 2  # never all twelve members' text at once


def test_an_empty_archive_says_so_and_a_zip_is_read_whatever_its_name(tmp_path):
    empty = tmp_path / "empty.zip"
    empty.write_bytes(zip_bytes({}))
    only_dirs = tmp_path / "dirs.tar.gz"
    info = tarfile.TarInfo("folder")
    info.type = tarfile.DIRTYPE
    only_dirs.write_bytes(tar_bytes([info]))
    result = load_sources([empty, only_dirs])
    assert [(s.reason, s.code) for s in result.skipped] == [("the archive holds no files", "empty")] * 2
    misnamed = tmp_path / "really-a-zip.tar.gz"
    misnamed.write_bytes(zip_bytes({"a.txt": b"hello from a zip\n"}))
    (document,) = load_sources([misnamed]).documents
    assert document.source.endswith("really-a-zip.tar.gz!a.txt") and "hello from a zip" in document.text
