"""What a newcomer reads from the real console script: warnings, JSON errors, sessions, models info, batch.

Everything here stops before a model loads, except the two tests marked slow (the default model).
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from scoutdoc.store import Store, TurnRecord

SCOUTDOC = Path(sys.executable).parent / "scoutdoc"
MOJIBAKE = "\ue001\ue002\ue003 \ufffd\ufffd\ue010\ue011 \ue020\ue021\ue022 ok\n"


def run(tmp_path: Path, *args: str, **env_extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "SCOUTDOC_HOME": str(tmp_path / "home"), "NO_COLOR": "1", "COLUMNS": "200", **env_extra}
    env.pop("SCOUTDOC_DB", None)
    return subprocess.run([str(SCOUTDOC), *args], env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)


def test_garbled_text_warns_and_strict_skips_it(tmp_path):
    (tmp_path / "scan.txt").write_text(MOJIBAKE, encoding="utf-8")
    shown = run(tmp_path, "inspect", "scan.txt")
    assert shown.returncode == 0 and "warning scan.txt:" in shown.stderr and "private-use" in shown.stderr
    strict = run(tmp_path, "inspect", "scan.txt", "--strict", "--json")
    assert strict.returncode == 3
    report = json.loads(strict.stdout)  # one object: the report says why, no error object after it
    assert report["skipped"][0]["code"] == "garbled" and "--strict" in report["skipped"][0]["reason"]


def test_errors_under_json_are_json_on_stdout_too(tmp_path):
    proc = run(tmp_path, "ask", "missing.pdf", "Who pays?", "--json")
    assert proc.returncode == 3
    error = json.loads(proc.stdout)["error"]
    assert error["type"] == "IngestError" and error["exit_code"] == 3 and "nothing could be ingested" in error["message"]
    assert "error:" in proc.stderr  # the line for people stays
    plain = run(tmp_path, "ask", "missing.pdf", "Who pays?")
    assert plain.returncode == 3 and plain.stdout == ""


def _session(home: Path, answer: str, snapshot_bytes: int = 0) -> str:
    with Store(home / "scoutdoc.db") as store:
        sid = store.create_session(title="notes.txt", command="ask", engine="embedded", model="smollm2-135m", system="",
                                   prefix_tokens=10, context_limit=8192, sources=[])
        snapshot = None
        if snapshot_bytes:
            (home / "snapshots").mkdir(parents=True, exist_ok=True)
            (home / "snapshots" / f"{sid}-0001.kv").write_bytes(b"\0" * snapshot_bytes)
            snapshot = dict(path=f"{sid}-0001.kv", tokens=10, fingerprint="fp", bytes=snapshot_bytes)
        store.add_exchange(sid, TurnRecord("user", "What is the notice period?"), TurnRecord("assistant", answer),
                           snapshot=snapshot)
    return sid


def test_search_keeps_brackets_in_the_text(tmp_path):
    _session(tmp_path / "home", "The [notice] [period] is 14 days.")
    proc = run(tmp_path, "sessions", "search", "days")
    assert proc.returncode == 0 and "The [notice] [period] is 14 days" in proc.stderr, proc.stderr
    assert "1 match" in proc.stderr and "1 match(es)" not in proc.stderr
    hits = json.loads(run(tmp_path, "sessions", "search", "days", "--json").stdout)
    assert hits[0]["snippet"].endswith("[days].")


def test_sessions_list_shows_model_and_snapshot_size_and_prune_frees_it(tmp_path):
    home = tmp_path / "home"
    old = _session(home, "First.", snapshot_bytes=3 * 2**20)
    time.sleep(0.05)
    new = _session(home, "Second.", snapshot_bytes=2 * 2**20)
    listed = run(tmp_path, "sessions", "list")
    assert "smollm2-135m" in listed.stderr and "3.00 MiB" in listed.stderr and "5.00 MiB of the 4.00 GiB budget" in listed.stderr
    rows = {r["id"]: r for r in json.loads(run(tmp_path, "sessions", "list", "--json").stdout)}
    assert rows[old]["snapshot_bytes"] == 3 * 2**20 and rows[new]["model"] == "smollm2-135m"
    pruned = run(tmp_path, "sessions", "prune", "--budget", "2M", "--json")
    assert pruned.returncode == 0, pruned.stderr
    assert json.loads(pruned.stdout) | {} == {"removed": 1, "orphans": 0, "freed_bytes": 3 * 2**20, "kept": 1,
                                              "kept_bytes": 2 * 2**20, "budget_bytes": 2 * 2**20}
    assert not (home / "snapshots" / f"{old}-0001.kv").exists() and (home / "snapshots" / f"{new}-0001.kv").exists()
    bad = run(tmp_path, "sessions", "prune", "--budget", "lots")
    assert bad.returncode == 2 and "not a size" in bad.stderr


def test_in_a_narrow_pipe_ids_and_notes_stay_whole_on_their_lines(tmp_path):
    sid = _session(tmp_path / "home", "The notice period is 14 days.", snapshot_bytes=2**20)
    listed = run(tmp_path, "sessions", "list", COLUMNS="60")
    assert sid in listed.stderr  # not folded over two lines
    assert any(line.startswith("KV snapshots:") and line.endswith("frees space") for line in listed.stderr.splitlines())
    found = run(tmp_path, "sessions", "search", "notice", COLUMNS="60")
    assert sid in found.stderr


def test_sessions_delete_speaks_json_and_search_needs_a_word(tmp_path):
    sid = _session(tmp_path / "home", "The notice period is 14 days.", snapshot_bytes=2**10)
    for query in ("", "*", "--"):
        refused = run(tmp_path, "sessions", "search", "--", query)
        assert refused.returncode == 2 and "holds no word to search for" in refused.stderr
    deleted = run(tmp_path, "sessions", "delete", sid[:6], "--json")
    assert deleted.returncode == 0 and json.loads(deleted.stdout) == {"deleted": sid, "snapshot_files_removed": 1}


def test_inspect_refuses_dump_with_json(tmp_path):
    (tmp_path / "notes.txt").write_text("The meeting is on Tuesday.\n")
    proc = run(tmp_path, "inspect", "notes.txt", "--dump", "--json")
    assert proc.returncode == 2 and "give one of them" in proc.stderr


def test_batch_refuses_an_existing_output_before_loading_a_model(tmp_path):
    (tmp_path / "notes.txt").write_text("The meeting is on Tuesday.\n")
    (tmp_path / "results.jsonl").write_text('{"status": "ok"}\n')
    proc = run(tmp_path, "batch", "notes.txt", "--question", "When?", "--model", "no-such-model")
    assert proc.returncode == 2 and "--resume" in proc.stderr and "--force" in proc.stderr
    assert "no-such-model" not in proc.stderr  # refused before the model was looked at


def test_models_info_of_a_config_and_on_a_missing_gpu(tmp_path):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64, "intermediate_size": 128,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 100,
        "max_position_embeddings": 1024, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
    }))
    text = run(tmp_path, "models", "info", str(config))
    assert text.returncode == 0 and "no weights (a config.json only)" in text.stdout and "0.0 MiB" not in text.stdout
    assert text.stderr == ""  # no bar drawn into a pipe, nor the empty line stopping it left
    assert json.loads(run(tmp_path, "models", "info", str(config), "--json").stdout)["size_on_disk_bytes"] is None
    huge = [run(tmp_path, "models", "info", str(config), "--context", "1T", "--device", "cpu", *flag) for flag in ((), ("--json",))]
    assert huge[0].returncode == huge[1].returncode  # text and JSON agree on the exit code
    assert "fits: NO" in huge[0].stdout and json.loads(huge[1].stdout)["fits"] is False
    assert "reads at most 1,024 tokens" in huge[0].stdout and "reads at most" not in text.stdout
    if not __import__("torch").cuda.is_available():
        gpu = run(tmp_path, "models", "info", str(config), "--context", "1k", "--device", "cuda")
        assert gpu.returncode == 0 and "fits: yes" not in gpu.stdout and "PyTorch sees no CUDA GPU" in gpu.stdout


def test_interrupted_starts_its_own_line(capsys):
    from scoutdoc.cli import _fail
    from scoutdoc.cli.answer import _stream_to_stdout

    _stream_to_stdout("The notice per")
    with pytest.raises(SystemExit) as exit_:
        _fail("Interrupted", "", 130)
    out, err = capsys.readouterr()
    assert exit_.value.code == 130 and out == "The notice per\n" and err.strip() == "interrupted"


@pytest.mark.slow
def test_an_answer_cut_by_max_tokens_says_so(tmp_path, smollm2_gguf):
    (tmp_path / "notes.txt").write_text("The meeting is on Tuesday at ten, in room four, with Ana and Tom.\n")
    models = str(smollm2_gguf.parent)
    proc = run(tmp_path, "ask", "notes.txt", "Describe the meeting in detail.", "--max-tokens", "3", SCOUTDOC_MODELS=models)
    assert proc.returncode == 0, proc.stderr
    assert "the answer was cut off at --max-tokens 3" in proc.stderr
    assert "3 tokens generated, finish: length" in proc.stderr
    as_json = json.loads(run(tmp_path, "ask", "-c", "And who?", "--max-tokens", "2", "--json", SCOUTDOC_MODELS=models).stdout)
    assert as_json["truncated"] is True and as_json["stats"]["finish_reason"] == "length"
    listed = json.loads(run(tmp_path, "sessions", "list", "--json").stdout)
    assert listed[0]["model"] == "smollm2-135m"  # the catalog name, not the GGUF's internal one


def test_the_first_use_of_a_catalog_model_downloads_it_with_a_bar(monkeypatch):
    from scoutdoc import models
    from scoutdoc.cli import engine

    pulled: list[str] = []

    def pull(name, progress=None):
        progress(50, 100, "bytes")
        pulled.append(name)

    monkeypatch.setattr(models, "is_pulled", lambda name: False)
    monkeypatch.setattr(models, "pull", pull)
    engine._pull_first("smollm2-135m")
    engine._pull_first("/models/own.gguf")  # not a catalog name: nothing to download
    assert pulled == ["smollm2-135m"]


def test_empty_paths_ids_and_text_that_is_not_utf8_are_usage_errors(tmp_path):
    """An unset "$FILE" read the whole working directory, `sessions delete ""` deleted a session, and
    a question with bytes that are not UTF-8 (lone surrogates in Python) ended in an internal error."""
    (tmp_path / "notes.txt").write_text("The fee is 40 euros.\n")
    for args in (["ask", "", "Who pays?"], ["inspect", ""], ["batch", "", "-q", "Who pays?"]):
        proc = run(tmp_path, *args)
        assert proc.returncode == 2 and "empty path" in proc.stderr, args
    proc = run(tmp_path, "sessions", "delete", "")
    assert proc.returncode != 0 and "session id is empty" in proc.stderr
    bad = "bad \udcff question"
    for args in (["ask", "notes.txt", bad], ["ask", "notes.txt", "ok?", "--system", bad],
                 ["batch", "notes.txt", "-q", bad], ["summarize", "notes.txt", "--instruction", bad]):
        proc = subprocess.run([str(SCOUTDOC), *args], env={**os.environ, "SCOUTDOC_HOME": str(tmp_path / "home"),
                              "NO_COLOR": "1"}, capture_output=True, timeout=300, cwd=tmp_path)
        assert proc.returncode == 2 and b"not valid UTF-8" in proc.stderr, args
    proc = run(tmp_path, "ask", "notes.txt", "ok?", "--seed", "99999999999999999999999", "--temperature", "1")
    assert proc.returncode == 2 and "--seed" in proc.stderr
    for device in ("bogus", "xpu"):
        proc = run(tmp_path, "ask", "notes.txt", "ok?", "--device", device)
        assert proc.returncode == 2 and "--device" in proc.stderr and "Traceback" not in proc.stderr
