"""`batch` bookkeeping on hostile input, in process with the fake engine of tests/fakes.py:
one line per document (identical contents included), a hostile PDF in an archive still gets its line,
and an input far over the context is refused from its size before anything is tokenized."""

import json
from pathlib import Path

import pytest
from fakes import FakeEngine
from rich.console import Console

from scoutdoc.batch import run_batch
from scoutdoc.engines import GenerationParams
from scoutdoc.errors import ContextTooLongError
from scoutdoc.ingest import IngestOptions

from . import builders as b

pytestmark = pytest.mark.slow  # seconds per case (real processes, bombs, deadlines): CI runs them, the inner loop does not


class CountingEngine(FakeEngine):
    """The shared fake engine, also recording how many characters it was asked to tokenize."""

    def __init__(self, context_limit: int = 100_000) -> None:
        super().__init__(context_limit=context_limit)
        self.tokenized_chars = 0

    def count_tokens(self, text: str) -> int:
        self.tokenized_chars += len(text)
        return super().count_tokens(text)

    def prompt_tokens(self, prompt) -> int:
        self.tokenized_chars += sum(len(m.content) for m in prompt.messages)
        return super().prompt_tokens(prompt)


def _batch(tmp_path: Path, inputs: list[str], engine=None, resume: bool = False) -> list[dict]:
    out = tmp_path / "results.jsonl"
    run_batch(inputs, engine=engine or CountingEngine(), db=tmp_path / "s.db", out=out, question="What is it?",
              params=GenerationParams(max_tokens=8), options=IngestOptions(), system=None, resume=resume,
              concurrency=1, model_ref="", console=Console(stderr=True, quiet=True))
    return [json.loads(line) for line in out.read_text().splitlines()]


def test_identical_contents_get_one_line_each_also_on_resume(tmp_path):
    same = b"the same words in two members\n"
    archive = b.zip_of(tmp_path / "twins.zip", {"a.txt": same, "b.txt": same, "c.txt": b"different\n"})
    rows = _batch(tmp_path, [str(archive)])
    assert sorted(r["source"] for r in rows) == [f"{archive}!{n}.txt" for n in "abc"]
    assert all(r["status"] == "ok" for r in rows)
    rows = _batch(tmp_path, [str(archive)], resume=True)
    assert sorted(r["source"] for r in rows) == [f"{archive}!{n}.txt" for n in "abc"]


def test_hostile_pdfs_in_an_archive_get_their_line(tmp_path):
    archive = b.zip_of(tmp_path / "mix.zip", {"bomb.pdf": b.pdf_xref_subsection_bomb(), "deep.pdf": b.pdf_deep_nesting(),
                                              "good.txt": b"a good document\n"})
    rows = {r["source"].rsplit("!", 1)[-1]: r for r in _batch(tmp_path, [str(archive)])}
    assert set(rows) == {"bomb.pdf", "deep.pdf", "good.txt"}
    assert rows["good.txt"]["status"] == "ok"
    assert rows["bomb.pdf"]["status"] == "skipped" and "safety limit" in rows["bomb.pdf"]["error"]  # a cap: left out
    assert rows["deep.pdf"]["status"] == "error"


def test_oversized_input_refused_before_tokenizing(tmp_path):
    from scoutdoc.session import start_session
    from scoutdoc.store import Store

    big = tmp_path / "big.log"
    big.write_text("word " * 2_000_000)  # 10 MB: at least 39,000 tokens by size alone, over 8,192
    engine = CountingEngine(context_limit=8192)
    with Store(tmp_path / "s.db") as store, pytest.raises(ContextTooLongError, match="at least"):
        start_session(store, engine, paths=[str(big)], options=IngestOptions(), question="q?",
                      params=GenerationParams(max_tokens=8), on_text=lambda piece: None, notice=lambda m: None,
                      fit="full")
    assert engine.tokenized_chars == 0
