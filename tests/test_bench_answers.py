"""benchmarks/bench_answers.py stays runnable: the QA set is well formed, and a two-question run of
both engines (slow: the real default model and llama.cpp) produces scores, so an API change breaks CI."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_answers", ROOT / "benchmarks" / "bench_answers.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_answers"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_the_qa_set_has_thirty_questions_with_keywords_over_existing_sources():
    bench = load_bench()
    items = bench.load_items()
    assert len(items) >= 30 and len({it.id for it in items}) == len(items)
    for item in items:
        assert item.question.strip() and item.keywords and all(k.strip() for k in item.keywords)
        for source in item.sources:
            assert not Path(source).is_absolute()
            if not source.startswith("../shared/"):  # the shared corpus is beside the repository, when there
                assert (ROOT / source).exists(), source
    corpus = [it for it in items if all(s.startswith("../shared/corpus/") for s in it.sources)]
    assert len(corpus) >= 20  # most questions are about documents nobody on the project wrote


def test_an_answer_is_right_when_it_holds_a_keyword():
    bench = load_bench()
    assert bench.right("The notice period is Sixty (60) days.", ["60", "sixty"])
    assert not bench.right("Fourteen days.", ["60", "sixty"])


@pytest.mark.slow
def test_a_quick_run_scores_both_engines(tmp_path, smollm2_gguf, monkeypatch):
    monkeypatch.setenv("SCOUTDOC_MODELS", str(smollm2_gguf.parent))
    bench = load_bench()
    out = tmp_path / "qa.json"
    result = bench.main(["--quick", "--limit", "1", "--json", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    for engine in ("scoutdoc", "llama.cpp"):
        score = result["summary"][engine]
        assert score["total"] == 1 and 0 <= score["right"] <= 1
        assert score["noted_right"] + score["noted_wrong"] == bool(result["items"][0][engine]["unsupported"])
        [item] = result["items"]
        assert item[engine]["answer"] and not item[engine]["error"]
    assert result["items"][0]["scoutdoc"]["fit"]["strategy"] == "full"


@pytest.mark.slow
def test_sampled_answers_follow_their_seed(smollm2_gguf, monkeypatch):
    monkeypatch.setenv("SCOUTDOC_MODELS", str(smollm2_gguf.parent))
    bench = load_bench()
    run = ["--quick", "--limit", "1", "--engines", "scoutdoc", "--temperature", "1.5"]
    answers = [bench.main(run + ["--seed", seed])["items"][0]["scoutdoc"]["answer"] for seed in ("1", "1", "2")]
    assert answers[0] == answers[1] != answers[2]


def test_the_summary_set_lists_facts_over_existing_sources():
    bench = load_bench()
    items = bench.load_items(bench.SUMMARIES)
    assert len(items) >= 8 and len({it.id for it in items}) == len(items)
    for item in items:
        assert not item.question and item.keywords and all(k.strip("|").strip() for k in item.keywords)
        assert all((ROOT / s).exists() for s in item.sources if not s.startswith("../shared/"))
    assert bench.coverage("Northwind bills EUR 2400 a month.", ["Northwind", "2,400|2400", "Ireland"]) == 2 / 3


def test_the_follow_up_set_asks_each_follow_up_after_a_first_question():
    bench = load_bench()
    items = bench.load_items(bench.FOLLOWUPS)
    assert len(items) >= 10 and len({it.id for it in items}) == len(items)
    for item in items:
        assert item.earlier.strip() and item.question.strip() and item.keywords
        assert all((ROOT / s).exists() for s in item.sources if not s.startswith("../shared/"))


def test_the_absent_set_counts_an_answer_right_when_it_says_the_documents_do_not_answer():
    bench = load_bench()
    items = bench.load_items(bench.ABSENT)
    assert len(items) >= 10 and len({it.id for it in items}) == len(items)
    assert all((ROOT / s).exists() for it in items for s in it.sources if not s.startswith("../shared/"))
    [item] = [it for it in items if it.id == "absent-contract-ceo"]
    assert bench.right("The documents do not mention a CEO.", item.keywords)
    assert not bench.right("The CEO is Ana Duarte.", item.keywords)


@pytest.mark.slow
def test_a_quick_follow_up_run_scores_the_follow_up(smollm2_gguf, monkeypatch):
    monkeypatch.setenv("SCOUTDOC_MODELS", str(smollm2_gguf.parent))
    result = load_bench().main(["--followups", "--quick", "--limit", "1"])
    [item] = result["items"]
    for engine in ("scoutdoc", "llama.cpp"):
        assert item[engine]["answer"] and not item[engine]["error"] and result["summary"][engine]["total"] == 1


@pytest.mark.slow
def test_a_quick_summary_run_scores_coverage(smollm2_gguf, monkeypatch):
    monkeypatch.setenv("SCOUTDOC_MODELS", str(smollm2_gguf.parent))
    result = load_bench().main(["--summaries", "--quick", "--limit", "1", "--engines", "scoutdoc"])
    [item] = result["items"]
    assert item["scoutdoc"]["answer"] and item["scoutdoc"]["verdict"].endswith("%")
    assert 0 <= result["summary"]["scoutdoc"]["coverage"] <= 100 and result["summary"]["scoutdoc"]["total"] == 1
