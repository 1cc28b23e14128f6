"""Hostile and broken sources through the real CLI (`inspect --json`, `inspect --dump`): each case in
its own process, under 600 MB peak RSS and 60 s, and a good file next to the hostile one is still read."""

import json
import os
import tarfile
import zipfile
from pathlib import Path

import pytest

from . import builders as b
from .runner import run_cli

pytestmark = pytest.mark.slow  # seconds per case (real processes, bombs, deadlines): CI runs them, the inner loop does not

GOOD = "GOODMARKER the good file is still read"
MiB = b.MiB


def _with_good(tmp_path: Path, name: str, data: bytes | None = None) -> Path:
    folder = tmp_path / "in"
    folder.mkdir(exist_ok=True)
    (folder / "good.txt").write_text(GOOD + "\n")
    if data is not None:
        (folder / name).write_bytes(data)
    return folder


def _report(run) -> dict:
    run.within_budget()
    assert run.rc == 0, run.err
    return json.loads(run.stdout.decode("utf-8"))  # strict: --json must be valid UTF-8


def _skip_for(report: dict, needle: str) -> dict:
    hits = [s for s in report["skipped"] if needle in s["path"]]
    assert hits, report["skipped"]
    return hits[0]


def _assert_isolated(tmp_path: Path, env: dict, case: str, hostile: str, data: bytes | None, reason_has: str = "") -> dict:
    folder = _with_good(tmp_path, hostile, data)
    report = _report(run_cli(case, ["inspect", str(folder), "--json"], env))
    assert any(s["path"] == "good.txt" for s in report["sources"]), report
    skip = _skip_for(report, hostile)
    assert reason_has in skip["reason"], skip
    return skip


# --- memory bombs ---------------------------------------------------------------------------------

@pytest.mark.parametrize("header", [tarfile.XHDTYPE, tarfile.GNUTYPE_LONGNAME], ids=["pax", "gnu-longname"])
def test_tar_with_huge_extended_header(tmp_path, env, header):
    archive = b.tar_gz_with_big_header(tmp_path / "bomb.tar.gz", header, 700 * MiB)
    run = run_cli(f"tar.gz with a 700 MiB {header.decode()} header", ["inspect", str(archive), "--json"], env)
    run.within_budget()
    assert run.rc == 3, run.err  # nothing usable: the header is refused before the member behind it
    assert "extended tar header" in run.err and "over the" in run.err


def test_docx_inflating_to_700_mib_alone_and_in_zip(tmp_path, env):
    bomb = b.docx_with_document_xml(tmp_path / "bomb.docx", b"<w:p><w:r><w:t>a</w:t></w:r></w:p>", 700 * MiB)
    run = run_cli("docx whose document.xml is 700 MiB", ["inspect", str(bomb), "--json"], env)
    run.within_budget()
    assert run.rc == 3 and "MB of XML" in run.err, run.err
    archive = b.zip_of(tmp_path / "in.zip", {"bomb.docx": bomb.read_bytes(), "good.txt": GOOD.encode()})
    report = _report(run_cli("700 MiB docx inside a zip", ["inspect", str(archive), "--json"], env))
    assert [s["path"] for s in report["sources"]] == [f"{archive}!good.txt"]
    assert "MB of XML" in _skip_for(report, "bomb.docx")["reason"]


def _padded(path: Path) -> Path:
    """Incompressible padding so the package passes the compression-ratio check and the XML caps must act."""
    with zipfile.ZipFile(path, "a") as package:
        package.writestr("word/media/pad.bin", os.urandom(2 * MiB))
    return path


def test_docx_dense_xml_over_and_within_the_element_cap(tmp_path, env):
    """60 MiB of empty elements (4.8M) need 1 GB as an lxml tree: refused by the element count, 350,000
    paragraphs by the paragraph count (python-docx would take a minute);
    a document just under the caps (560,000 elements, 93,000 paragraphs) parses within the budget."""
    over = _padded(b.docx_with_document_xml(tmp_path / "over.docx", b"<w:proofErr/>", 60 * MiB))
    long = _padded(b.docx_with_document_xml(tmp_path / "long.docx", b"<w:p/>", 2 * MiB))
    run = run_cli("docx with 350,000 empty paragraphs", ["inspect", str(long), "--json"], env)
    run.within_budget()
    assert run.rc == 3 and "paragraphs" in run.err, run.err
    run = run_cli("docx with 4.8M empty elements (padded past the ratio check)", ["inspect", str(over), "--json"], env)
    run.within_budget()
    assert run.rc == 3 and "XML elements" in run.err, run.err
    within = _padded(b.docx_with_document_xml(tmp_path / "within.docx", b"<w:p/><w:bookmarkStart/><w:bookmarkEnd/><w:proofErr/><w:proofErr/><w:proofErr/>", 6 * MiB))
    run = run_cli("docx with 560,000 elements, 93,000 paragraphs (under the caps)", ["inspect", str(within), "--json"], env)
    run.within_budget()
    assert run.rc == 3 and "no text" in run.err, run.err


def test_docx_entity_expansion_is_not_expanded(tmp_path, env):
    bomb = b.billion_laughs_docx(tmp_path / "laughs.docx")
    run = run_cli("docx billion laughs", ["inspect", str(bomb), "--json"], env)
    run.within_budget()
    assert "lollollol" not in run.out


def test_pdf_content_stream_bomb(tmp_path, env):
    skip = None
    folder = _with_good(tmp_path, "bomb.pdf", b.pdf_content_bomb())
    report = _report(run_cli("PDF page content inflating to 200 MiB", ["inspect", str(folder), "--json", "--max-file-size", "10M"], env))
    assert any(s["path"] == "good.txt" for s in report["sources"])
    skip = _skip_for(report, "bomb.pdf")
    assert skip["code"] in ("damaged", "no_text", "limit")


def test_zip_ratio_bomb_and_nesting_still_refused(tmp_path, env):
    inner = b.zip_of(tmp_path / "inner.zip", {"zeros.txt": b"\0" * (50 * MiB)})
    nested = inner.read_bytes()
    for level in range(4):
        nested = b.zip_of(tmp_path / f"n{level}.zip", {f"n{level}.zip": nested}).read_bytes()
    outer = b.zip_of(tmp_path / "outer.zip", {"bomb.zip": inner.read_bytes(), "deep.zip": nested, "good.txt": GOOD.encode()})
    report = _report(run_cli("zip bomb and 5-deep nesting", ["inspect", str(outer), "--json"], env))
    assert [s["path"] for s in report["sources"]] == [f"{outer}!good.txt"]
    codes = {s["code"] for s in report["skipped"]}
    assert codes <= {"unsafe", "limit"}, report["skipped"]


# --- one bad source is that source's skip ----------------------------------------------------------

PDF_CASES = {
    "xref-999999999": b.pdf_xref_subsection_bomb,
    "xref-stream-999999999": b.pdf_billion_objects,
    "nested-200000": b.pdf_deep_nesting,
    "page-cycle": b.pdf_page_cycle,
    "truncated": lambda: b.text_pdf()[:200],
    "garbage": lambda: b"%PDF-1.7\n" + os.urandom(4096),
}


@pytest.mark.parametrize("name", list(PDF_CASES))
def test_hostile_pdf_next_to_a_good_file(tmp_path, env, name):
    skip_or_doc = PDF_CASES[name]()
    folder = _with_good(tmp_path, f"{name}.pdf", skip_or_doc)
    report = _report(run_cli(f"PDF {name} in a folder", ["inspect", str(folder), "--json"], env))
    assert any(s["path"] == "good.txt" for s in report["sources"])
    hostile = [s for s in report["sources"] if s["path"] == f"{name}.pdf"] or [_skip_for(report, f"{name}.pdf")]
    assert hostile


def test_hostile_pdf_in_archive_dump_and_explicit(tmp_path, env):
    archive = b.zip_of(tmp_path / "mix.zip", {"bomb.pdf": b.pdf_xref_subsection_bomb(), "good.txt": GOOD.encode(),
                                              "deep.pdf": b.pdf_deep_nesting()})
    run = run_cli("PDF bombs in a zip, --dump", ["inspect", str(archive), "--dump"], env)
    run.within_budget()
    assert run.rc == 0 and GOOD in run.out, run.err
    assert "bomb.pdf" in run.err and "deep.pdf" in run.err
    alone = tmp_path / "alone.pdf"
    alone.write_bytes(b.pdf_xref_subsection_bomb())
    run = run_cli("PDF bomb named alone", ["inspect", str(alone)], env)
    run.within_budget()
    assert run.rc == 3 and "safety limit" in run.err, run.err


def test_damaged_archives_and_docx(tmp_path, env):
    good_zip = b.zip_of(tmp_path / "g.zip", {"a.txt": GOOD.encode()}).read_bytes()
    folder = _with_good(tmp_path, "trunc.zip", good_zip[: len(good_zip) // 2])
    (folder / "crc.zip").write_bytes(good_zip.replace(GOOD.encode()[:8], b"XXXXXXXX") if b"GOODMARK" in good_zip else good_zip[:-30])
    (folder / "trunc.tar.gz").write_bytes(b"\x1f\x8b\x08\x00" + os.urandom(500))
    (folder / "notzip.docx").write_bytes(b"PK\x03\x04 not really a docx")
    (folder / "empty.docx").write_bytes(b"")
    report = _report(run_cli("damaged zip, tar.gz and docx", ["inspect", str(folder), "--json"], env))
    assert [s["path"] for s in report["sources"] if s["path"] == "good.txt"]
    for name in ("trunc.zip", "trunc.tar.gz", "notzip.docx", "empty.docx"):
        _skip_for(report, name)


# --- names ---------------------------------------------------------------------------------------

def test_tar_member_name_not_utf8(tmp_path, env):
    name = b"caf\xe9-\xff.txt".decode("utf-8", "surrogateescape")
    archive = b.tar_of(tmp_path / "names.tar", {name: b"text in a badly named member\n"})
    run = run_cli("tar member name not UTF-8 (--json)", ["inspect", str(archive), "--json"], env)
    report = _report(run)
    assert report["sources"][0]["path"].endswith("caf\ufffd-\ufffd.txt")
    run = run_cli("tar member name not UTF-8 (--dump)", ["inspect", str(archive), "--dump"], env)
    run.within_budget()
    assert run.rc == 0
    run.stdout.decode("utf-8")


def test_control_characters_in_names_never_reach_the_terminal(tmp_path, env):
    evil = "evil\x1b[2J\x1b]0;owned\x07\nskipped forged.txt: fake line\r[bold]x[/bold].txt"
    archive = b.zip_of(tmp_path / "names.zip", {evil: b"text\n", "k\x1b[31m.env": b"A=1\n", "empty\nline": b""})
    folder = tmp_path / "dir"
    folder.mkdir()
    (folder / "new\nline.txt").write_text("x\n")
    (folder / "bell\x07.env").write_text("A=1\n")
    for label, args in (("inspect", ["inspect", str(archive), str(folder)]), ("--json", ["inspect", str(archive), str(folder), "--json"]),
                        ("--dump", ["inspect", str(archive), str(folder), "--dump"])):
        run = run_cli(f"control characters in names ({label})", args, env)
        run.within_budget()
        assert run.rc == 0, run.err
        for stream in (run.out, run.err):
            assert "\x1b" not in stream and "\x07" not in stream and "\r" not in stream
        assert not any(line.startswith("skipped forged") for line in run.err.splitlines())
        if label == "inspect":
            assert "[bold]x[/bold]" in run.err  # shown literally, not as markup


# --- secrets and special files ---------------------------------------------------------------------

SECRETS = {
    ".npmrc": "//registry.npmjs.org/:_authToken=npm_abcdefghijklmnopqrstuvwxyz0123456789\n",
    ".pypirc": "[pypi]\nusername = __token__\npassword = pypi-AgEIcHlwaS5vcmcCJGFiY2RlZmdoaWprbG1ub3BxcnN0dXZ3eHl6MDEyMzQ1Njc4OQ\n",
    ".git-credentials": "https://alice:s3cr3tpassw0rd@github.com\n",
    ".docker/config.json": '{"auths": {"https://index.docker.io/v1/": {"auth": "YWxpY2U6czNjcjN0cGFzc3cwcmQ="}}}\n',
    "deploy/settings.py": "AWS_ACCESS_KEY_ID = 'AKIAIOSFODNN7EXAMPLE'\n",
    "client.py": "HEADERS = {'Authorization': 'Bearer abcdef0123456789abcdef0123456789'}\n",
    "config.yaml": "service:\n  api_token: 9f8e7d6c5b4a39281706f5e4d3c2b1a0\n",
    "ci/github.sh": "export GH=ghp_abcdefghijklmnopqrstuvwxyz0123456789\n",
    "notes/slack.txt": "bot token xoxb-1234567890-abcdefghij\n",
}
SECRET_VALUES = ["npm_abcdef", "pypi-AgEI", "s3cr3tpassw0rd", "YWxpY2U6", "AKIAIOSFODNN7", "abcdef0123456789abcdef", "9f8e7d6c5b4a", "ghp_abc", "xoxb-123"]


def test_credentials_are_left_out_and_named(tmp_path, env):
    folder = _with_good(tmp_path, "x")
    (folder / "README.md").write_text("Set token = get_token() and password: see the wiki.\n")
    for rel, text in SECRETS.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text(text)
    archive = b.zip_of(tmp_path / "secrets.zip", {rel: text.encode() for rel, text in SECRETS.items()} | {"good.txt": GOOD.encode()})
    run = run_cli("credential files and tokens (--dump)", ["inspect", str(folder), str(archive), "--dump"], env)
    run.within_budget()
    assert run.rc == 0 and GOOD in run.out and "see the wiki" in run.out
    for value in SECRET_VALUES:
        assert value not in run.out, value
    for rel in SECRETS:
        assert rel in run.err, rel  # each one is named as left out
    run = run_cli("credential files with --include-secrets", ["inspect", str(folder), "--dump", "--include-secrets"], env)
    assert all(value in run.out for value in SECRET_VALUES)


def test_links_loops_and_fifos_have_reasons(tmp_path, env):
    folder = _with_good(tmp_path, "x")
    outside = tmp_path / "outside.txt"
    outside.write_text("outside the tree\n")
    (folder / "out-link.txt").symlink_to(outside)
    (folder / "loop-a").symlink_to(folder / "loop-b")
    (folder / "loop-b").symlink_to(folder / "loop-a")
    (folder / "dangling.txt").symlink_to(tmp_path / "missing")
    os.mkfifo(folder / "pipe.txt")
    report = _report(run_cli("links out of the tree, loops, dangling, FIFO", ["inspect", str(folder), "--json"], env))
    reasons = {s["path"]: s["reason"] for s in report["skipped"]}
    assert "outside" in reasons["out-link.txt"] and "loop" in reasons["loop-a"] and "dangling" in reasons["dangling.txt"]
    assert "not a regular file" in reasons["pipe.txt"]
    run = run_cli("FIFO and dangling link named", ["inspect", str(folder / "pipe.txt"), str(folder / "dangling.txt"), str(folder / "good.txt")], env)
    run.within_budget()
    assert run.rc == 0 and "pipe.txt" in run.err and "dangling" in run.err


# --- zip passwords ---------------------------------------------------------------------------------

def test_zip_member_password(tmp_path, env):
    archive = b.zipcrypto(tmp_path / "locked.zip", "inside.txt", GOOD.encode(), b"s3cret")
    run = run_cli("ZipCrypto member without password", ["inspect", str(archive)], env)
    run.within_budget()
    assert run.rc == 3 and "--password" in run.err
    run = run_cli("ZipCrypto member with a wrong password", ["inspect", str(archive), "--password", "nope"], env)
    assert run.rc == 3 and "no --password given opened it" in run.err
    run = run_cli("ZipCrypto member with its password", ["inspect", str(archive), "--dump", "--password", "nope", "--password", "s3cret"], env)
    run.within_budget()
    assert run.rc == 0 and GOOD in run.out


# --- size -----------------------------------------------------------------------------------------

def test_large_plain_text_named_explicitly(tmp_path, env):
    big = tmp_path / "big.txt"
    line = b"an ordinary line of a large log file, repeated many times over\n"
    with open(big, "wb") as f:
        for _ in range(60):
            f.write(line * (MiB // len(line)))
    run = run_cli("60 MB text file, inspect --json", ["inspect", str(big), "--json"], env)
    _report(run)


# --- .gitignore and --exclude patterns that make regexes backtrack ----------------------------------

def test_pathological_gitignore_against_a_deep_tree(tmp_path, env):
    folder = _with_good(tmp_path, "x")
    line = "/".join(["**/*a*"] * 6) + "/**/zzz"
    (folder / ".gitignore").write_text("\n".join([line] * 50 + ["*a*a*a*a*a*a*a*a*a*a*a*a*a*a*c"]) + "\n")
    deep = folder.joinpath(*["a" * 20] * 40)
    deep.mkdir(parents=True)
    (deep / "leaf.txt").write_text("deep leaf\n")
    report = _report(run_cli("`**/*a*/**` x6 .gitignore, 40-deep tree", ["inspect", str(folder), "--json"], env))
    assert any(s["path"].endswith("leaf.txt") for s in report["sources"])
    report = _report(run_cli("`**/*a*/**` x6 --exclude, 40-deep tree", ["inspect", str(folder), "--json", "--exclude", line], env))
    assert any(s["path"].endswith("leaf.txt") for s in report["sources"])
