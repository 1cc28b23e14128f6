"""`scoutdoc inspect`: JSON report shape, --dump equals pack(), skips as one line each, exit codes."""

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from scoutdoc.cli import app, parse_size
from scoutdoc.errors import IngestError
from scoutdoc.ingest import load_sources, pack


def make_inputs(tmp_path):
    root = tmp_path / "proj"
    (root / "pkg").mkdir(parents=True)
    (root / "pkg" / "mod.py").write_text("x = 1\ny = 2\n")
    (root / "notes.md").write_text("# notes\n")
    (root / "photo.bin").write_bytes(b"\x00\xff" * 64)
    return root


def test_inspect_json(tmp_path):
    root = make_inputs(tmp_path)
    result = CliRunner().invoke(app, ["inspect", "--json", "--tree", str(root), str(tmp_path / "missing.pdf")])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert [(s["path"], s["kind"], s["tokens"]) for s in report["sources"]] == [("notes.md", "text", None), ("pkg/mod.py", "code", None)]
    assert report["sources"][1]["chars"] == len("x = 1\ny = 2")
    assert {(s["path"], s["code"]) for s in report["skipped"]} == {("photo.bin", "binary"), (str(tmp_path / "missing.pdf"), "not_found")}
    assert report["totals"]["sources"] == 2 and report["totals"]["skipped"] == 2
    assert report["totals"]["packed_chars"] == len(pack(load_sources([root])))
    assert [d["directory"] for d in report["directories"]] == [".", "pkg"]


def test_inspect_dump_is_exactly_pack(tmp_path):
    root = make_inputs(tmp_path)
    result = CliRunner().invoke(app, ["inspect", "--dump", str(root)])
    assert result.exit_code == 0
    assert result.stdout == pack(load_sources([root]))


def test_inspect_table_and_options(tmp_path):
    root = make_inputs(tmp_path)
    result = CliRunner().invoke(app, ["inspect", "--exclude", "pkg/", "--max-file-size", "1k", str(root)])
    assert result.exit_code == 0
    assert "notes.md" in result.output and "mod.py" not in result.output


def test_nothing_ingested_exits_3_with_one_line_per_source(tmp_path):
    missing = tmp_path / "nope.txt"
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    proc = subprocess.run(
        [sys.executable, "-c", "from scoutdoc.cli import main; main()", "inspect", "--json", str(missing), str(empty)],
        capture_output=True, text=True, env={"SCOUTDOC_HOME": str(tmp_path / "home"), "PATH": "/usr/bin:/bin", "COLUMNS": "300"},
    )
    assert proc.returncode == 3
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert any(str(missing) in line and "no such file" in line for line in lines)
    assert any(str(empty) in line and "empty file" in line for line in lines)
    assert lines[-1].startswith("error: nothing could be ingested")


def test_parse_size():
    assert parse_size("4M") == 4 * 1024 * 1024
    assert parse_size("500k") == 500 * 1024
    assert parse_size("1.5GB") == int(1.5 * 1024**3)
    assert parse_size("123") == 123


@pytest.mark.slow
def test_inspect_counts_tokens_with_a_model_tokenizer(tmp_path, smollm2_gguf):
    from scoutdoc.runtime.tokenizer import load_tokenizer

    root = make_inputs(tmp_path)
    result = CliRunner().invoke(app, ["inspect", "--json", "--model", str(smollm2_gguf), str(root)])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    tokenizer = load_tokenizer(smollm2_gguf)
    assert report["totals"]["tokens"] == len(tokenizer.encode(pack(load_sources([root]))))
    assert all(isinstance(s["tokens"], int) and s["tokens"] > 0 for s in report["sources"])


def test_inspect_password_flag_opens_encrypted_pdf(corpus):
    path = corpus / "pdf" / "encryption" / "r6-both-passwords.pdf"
    locked = CliRunner().invoke(app, ["inspect", "--json", str(path)])
    assert isinstance(locked.exception, IngestError) and locked.exception.exit_code == 3
    assert json.loads(locked.stdout)["skipped"][0]["code"] == "encrypted"
    opened = CliRunner().invoke(app, ["inspect", "--json", "--password", "wrong", "--password", "foo", str(path)])
    assert opened.exit_code == 0, opened.output
    assert json.loads(opened.stdout)["sources"][0]["pages"] == 1
