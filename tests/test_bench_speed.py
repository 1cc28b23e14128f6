"""The speed and accuracy benchmarks stay runnable: each one's scoutdoc side runs a few tokens on the
real default model in process (slow), so an API change breaks CI rather than the next benchmark run."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def load(name: str):
    sys.path.insert(0, str(ROOT / "benchmarks"))  # their llama_compat import
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_bench_busy_scoutdoc_worker_reads_and_decodes_with_its_own_thread_choice(smollm2_gguf, monkeypatch):
    import torch

    monkeypatch.delenv("SCOUTDOC_THREADS", raising=False)
    bench = load("bench_busy")
    before = torch.get_num_threads()
    try:
        result = bench.worker("scoutdoc", str(smollm2_gguf), list(range(100, 140)), 3, None)
    finally:
        torch.set_num_threads(before)  # the worker sets the process's threads, as its subprocess would
    assert result["engine"] == "scoutdoc" and result["tokens_per_s"] > 0 and result["prompt_tokens_per_s"] > 0
    assert 1 <= result["threads"] <= len(os.sched_getaffinity(0))
    assert 1 <= result["prompt_threads"] <= len(os.sched_getaffinity(0))


@pytest.mark.slow
def test_bench_perplexity_scores_the_prompt_and_the_decode_path_alike(smollm2_gguf):
    bench = load("bench_perplexity")
    window = list(range(200, 224))
    whole = bench.scoutdoc_ppl(smollm2_gguf, [window], "float32", "none")
    stepwise = bench.scoutdoc_ppl(smollm2_gguf, [window], "float32", "none", decode=True)
    assert whole > 1 and abs(stepwise / whole - 1) < 1e-3  # the dense path: the same model either way
    assert bench.scoutdoc_ppl(smollm2_gguf, [window], "float32", "auto", decode=True) > 1


@pytest.mark.slow
def test_bench_runtime_scoutdoc_engine_prefills_and_decodes(smollm2_gguf):
    bench = load("bench_runtime")
    prefill, decode = bench._scoutdoc(smollm2_gguf, 1, "float32", "auto")
    prefill(list(range(100, 132)))
    assert decode(list(range(100, 132)), 2).wall > 0


def test_bench_runtime_baseline_needs_a_source_tree():
    import subprocess

    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_runtime.py"), "--engines", "scoutdoc,baseline"],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and "needs --baseline" in run.stderr
    assert load("bench_runtime")._factory("baseline:auto") is not None
