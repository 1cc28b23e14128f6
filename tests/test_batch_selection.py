"""Batch selection: archive member patterns, skipped vs failed sources, --out protection (fake engine)."""

import json
import zipfile
from pathlib import Path

import pytest
from fakes import FakeEngine
from rich.console import Console

from scoutdoc.batch import check_out, expand_inputs, run_batch, split_member_patterns
from scoutdoc.engines import GenerationParams
from scoutdoc.errors import UsageError
from scoutdoc.ingest import IngestOptions

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture
def inbox(tmp_path) -> Path:
    path = tmp_path / "inbox.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.write(EXAMPLES / "contract.pdf", "contracts/lease.pdf")
        zf.writestr("contracts/cover.txt", "Cover letter for the lease.\n")
        zf.writestr("other/minutes.txt", "Minutes: nothing about contracts.\n")
        zf.writestr("config/.env", "API_TOKEN=abc\n")
    return path


def test_patterns_that_match_nothing_on_disk_select_archive_members(inbox, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert split_member_patterns(expand_inputs([str(inbox), "contracts/*.pdf"])) == ([str(inbox)], ("contracts/*.pdf",))
    (tmp_path / "a.pdf").write_bytes(b"%PDF-")
    assert expand_inputs(["*.pdf"]) == ["a.pdf"]  # on disk first
    with pytest.raises(UsageError, match="matches no files"):
        expand_inputs(["contracts/*.pdf"])  # no archive to look into


def test_an_existing_results_file_is_not_overwritten(tmp_path):
    out = tmp_path / "results.jsonl"
    check_out(out, resume=False, force=False)  # absent: fine
    out.write_text('{"status": "ok"}\n')
    with pytest.raises(UsageError, match="--resume .* --force"):
        check_out(out, resume=False, force=False)
    check_out(out, resume=True, force=False)
    check_out(out, resume=False, force=True)


@pytest.fixture
def engine():
    return FakeEngine()


def _run(engine, inputs, tmp_path, **kwargs):
    return run_batch(
        [str(i) for i in inputs], engine=engine, db=tmp_path / "home" / "scoutdoc.db", out=tmp_path / "results.jsonl",
        question="Who signs?", params=GenerationParams(max_tokens=2, temperature=0.0), options=IngestOptions(),
        system=None, concurrency=1, model_ref="", console=Console(stderr=True, quiet=True), **kwargs,
    )


def _rows(tmp_path) -> list[dict]:
    return [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]


def test_member_pattern_selects_and_excluded_sources_are_skipped_not_failed(engine, inbox, tmp_path, monkeypatch):
    monkeypatch.setenv("SCOUTDOC_HOME", str(tmp_path / "home"))
    tally = _run(engine, [inbox, "contracts/*.pdf"], tmp_path, resume=False)
    assert [(r["source"].rsplit("!", 1)[-1], r["status"]) for r in _rows(tmp_path)] == [("contracts/lease.pdf", "ok")]
    assert (tally.ok, tally.failed) == (1, 0)
    with pytest.raises(UsageError, match="already exists"):
        _run(engine, [inbox], tmp_path, resume=False)
    with pytest.raises(UsageError, match="'nope/\\*.pdf' matches no file on disk and no member"):
        _run(engine, [inbox, "nope/*.pdf"], tmp_path, resume=False, force=True)

    tally = _run(engine, [inbox], tmp_path, resume=False, force=True)
    rows = {r["source"].rsplit("!", 1)[-1]: r for r in _rows(tmp_path)}
    assert rows["config/.env"]["status"] == "skipped" and rows["config/.env"]["code"] == "secret"
    assert (tally.ok, tally.excluded, tally.failed) == (3, 1, 0)
    again = _run(engine, [inbox], tmp_path, resume=True)
    assert (again.ok, again.skipped, again.excluded, again.failed) == (0, 3, 1, 0)
    assert sum(1 for r in _rows(tmp_path) if r["status"] == "skipped") == 1  # kept once, not retried
    assert not list((tmp_path / "home" / "snapshots").glob("*.kv"))  # batch keeps no snapshots by default
