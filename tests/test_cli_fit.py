"""`--fit` through the CLI with a fake engine: the notice, `stats.fit` in --json, `sessions show`, exit 4 with --fit full;
and the note on an answer's names that the documents lack, which travels the same way."""

from __future__ import annotations

import json
import random
import sys

import pytest
from fakes import FakeEngine, SaysEngine

from scoutdoc.cli import answer, main

WORDS = "river ledger copper lantern meadow signal harbor orchard quarry timber valley summit".split()


@pytest.fixture
def cli(tmp_path, monkeypatch, capsys):
    """Runs `scoutdoc ARGS` in process on a fake engine with a 1,200-token window; (exit code, stdout, stderr)."""
    monkeypatch.setenv("SCOUTDOC_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("SCOUTDOC_DB", raising=False)
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setattr(answer, "open_engine_for", lambda choice: FakeEngine(context_limit=1200))

    def run(*args: str) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "argv", ["scoutdoc", *args])
        code = 0
        try:
            main()
        except SystemExit as exc:
            code = exc.code or 0
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.fixture
def long_text(tmp_path):
    rng = random.Random(3)
    lines = [" ".join(rng.choice(WORDS) for _ in range(12)) + "." for _ in range(800)]
    lines[401] = "The vault combination is 4417 PELICAN."
    path = tmp_path / "long.txt"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_ask_retrieves_tells_the_user_and_records_how(cli, long_text):
    code, out, err = cli("ask", long_text, "What is the vault combination?", "--json", "--max-tokens", "16")
    assert code == 0
    fit = json.loads(out)["stats"]["fit"]
    assert fit["strategy"] == "retrieve" and 0 < fit["passages_used"] < fit["passages_total"]
    assert f"answered from {fit['passages_used']} of {fit['passages_total']} passages" in err
    assert json.loads(out)["notes"] == [f"answered from {fit['passages_used']} of {fit['passages_total']} passages, "
                                        f"{fit['where']}"]  # what stderr says, for scripts too
    code, out, _ = cli("sessions", "show", json.loads(out)["session_id"])
    assert code == 0 and f"retrieve: {fit['passages_used']} of {fit['passages_total']} passages" in out


def test_fit_full_refuses_with_exit_4(cli, long_text):
    code, out, err = cli("ask", long_text, "What is the vault combination?", "--fit", "full")
    assert code == 4 and out == "" and "holds 1,200" in err


def test_summarize_reads_every_part(cli, long_text):
    code, out, err = cli("summarize", long_text, "--json", "--max-tokens", "16")
    fit = json.loads(out)["stats"]["fit"]
    assert code == 0 and fit["strategy"] == "map-reduce" and fit["windows"] > 1
    assert err.count("reading part") == fit["windows"]


def test_an_unknown_strategy_is_a_usage_error(cli, long_text):
    code, _, err = cli("ask", long_text, "Q?", "--fit", "guess")
    assert code == 2 and "'guess' is not a fit strategy" in err


def test_an_answer_naming_what_the_documents_lack_is_noted_everywhere(cli, tmp_path, monkeypatch):
    """On stderr after the answer's line, in --json's notes, and with the answer in the session."""
    doc = tmp_path / "minutes.txt"
    doc.write_text("The meeting is on Tuesday.\n")
    monkeypatch.setattr(answer, "open_engine_for", lambda choice: SaysEngine("It is on Monday"))
    note = 'the answer names "Monday", which the documents do not contain: check it against them'
    code, out, err = cli("ask", str(doc), "When is the meeting?")
    assert code == 0 and out == "It is on Monday\n" and f"note: {note}" in err  # the note after the answer's line
    code, out, _ = cli("ask", str(doc), "When is the meeting?", "--json")
    sid = json.loads(out)["session_id"]
    assert json.loads(out)["notes"] == [note]
    code, out, _ = cli("sessions", "show", sid)
    assert f"*Note: {note}*" in out
    code, out, _ = cli("sessions", "show", sid, "--json")
    assert [t["unsupported"] for t in json.loads(out)["turns"]] == [[], ["Monday"]]


def test_an_answer_cut_by_the_token_limit_says_so_in_the_session(cli, tmp_path, monkeypatch):
    doc = tmp_path / "minutes.txt"
    doc.write_text("The meeting is on Tuesday.\n")
    monkeypatch.setattr(answer, "open_engine_for", lambda choice: SaysEngine("It is on Tuesday at noon"))
    sid = json.loads(cli("ask", str(doc), "When?", "--max-tokens", "3", "--json")[1])["session_id"]
    assert "cut off by --max-tokens*" in cli("sessions", "show", sid)[1]
    sid = json.loads(cli("ask", str(doc), "When?", "--json")[1])["session_id"]
    assert "cut off" not in cli("sessions", "show", sid)[1]
