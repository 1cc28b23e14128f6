"""Prompt and decode speed on a busy machine: each engine idle, then with a background process keeping one core busy.

The question (issue 12): on a laptop that is doing something else, do the prompt and decode
collapse? Each engine runs in its own subprocess on the default model (same GGUF), prefills the same
prompt (`--prompt-tokens`, 2,000 by default) and decodes greedy tokens; prompt and decode tokens/s
are measured twice, once on the machine as it is and once while a separate process spins on one
core. Engines and threads:

- scoutdoc: what `scoutdoc ask` does (its default dtype and `--quantize`; each prompt piece and
  every few decode steps on the cores other processes leave free, `runtime.threads.LoadWatch`,
  watching from before the model loads); `--scoutdoc-threads N` fixes the count instead
  (SCOUTDOC_THREADS);
- llama.cpp (llama-cpp-python): all usable cores, as its users typically pass (`n_threads`);
- transformers: PyTorch's default threads (one per core).

Each condition runs the engines in turn, `--rounds` times (alternating order), and reports the
median. The ratio busy/idle per engine is the figure to watch (the goal: scoutdoc keeps at least
half its idle speed and stays ahead of transformers). On a machine shared with other jobs the
"idle" condition is whatever load those jobs make: print the load average with the numbers.

    python benchmarks/bench_busy.py [--engines scoutdoc,llama_cpp,transformers] [--tokens 64] [--prompt-tokens 2000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ENGINES = ("scoutdoc", "llama_cpp", "transformers")
PROMPT_TOKENS = 2000

_BURN = "while True:\n    pass\n"


def _prompt_ids(gguf: str, tokens: int) -> list[int]:
    """`tokens` tokens of real text (this repository's README and docs), tokenized by the model's own tokenizer."""
    from scoutdoc.runtime.tokenizer import Tokenizer

    text = "\n\n".join(p.read_text(encoding="utf-8") for p in [HERE.parent / "README.md", *sorted((HERE.parent / "docs").glob("*.md"))])
    ids = Tokenizer.from_gguf(gguf).encode(text, special=False)[:tokens]
    if len(ids) < tokens:
        raise SystemExit(f"only {len(ids)} tokens of text for a {tokens}-token prompt")
    return ids


def worker(engine: str, gguf: str, ids: list[int], tokens: int, threads: int | None) -> dict:
    """Runs in the subprocess: load, time the prompt, then time `tokens` greedy decode steps."""
    if engine == "scoutdoc":
        import torch

        from scoutdoc.engines import RuntimeOptions
        from scoutdoc.runtime import load_model
        from scoutdoc.runtime.threads import LoadWatch

        if threads:
            os.environ["SCOUTDOC_THREADS"] = str(threads)
        ceiling = torch.get_num_threads()
        watch = LoadWatch()  # as the embedded engine: watching from before the model loads
        options = RuntimeOptions()  # what `scoutdoc ask` runs: its dtype and --quantize defaults
        model = load_model(gguf, dtype=options.dtype, device="cpu", quantize=options.quantize)
        session = model.new_session()
        session.cache.reserve(len(ids) + tokens + 1)
        prompt_started = time.perf_counter()
        model.prefill(ids[:-1], session, threads=lambda: watch.threads(ceiling))
        prompt_s = time.perf_counter() - prompt_started
        prompt_threads = torch.get_num_threads()
        started = time.perf_counter()
        out = list(model.generate(ids, max_new_tokens=tokens + 1, session=session, stop_ids=[],
                                  threads=lambda: watch.threads(ceiling)))
        assert len(out) == tokens + 1
        used = torch.get_num_threads()
    elif engine == "llama_cpp":
        import llama_cpp
        import numpy as np

        from llama_compat import open_llama

        used = prompt_threads = threads or len(os.sched_getaffinity(0))
        llm, _ = open_llama(gguf, n_ctx=len(ids) + tokens + 16, n_threads=used, n_threads_batch=used, verbose=False)
        prompt_started = time.perf_counter()
        llm.eval(ids[:-1])
        prompt_s = time.perf_counter() - prompt_started
        token = ids[-1]
        started = time.perf_counter()
        for _ in range(tokens + 1):
            llm.eval([token])
            logits = llama_cpp.llama_get_logits_ith(llm._ctx.ctx, -1)
            token = int(np.argmax(np.ctypeslib.as_array(logits, shape=(llm.n_vocab(),))))
    else:
        import torch
        from transformers import AutoModelForCausalLM, DynamicCache

        used = prompt_threads = threads or torch.get_num_threads()
        torch.set_num_threads(used)
        model = AutoModelForCausalLM.from_pretrained(Path(gguf).parent, gguf_file=Path(gguf).name,
                                                     dtype=torch.float32).eval()
        with torch.inference_mode():
            cache = DynamicCache()
            prompt_started = time.perf_counter()
            model(torch.tensor([ids[:-1]]), past_key_values=cache, logits_to_keep=1)
            prompt_s = time.perf_counter() - prompt_started
            token = ids[-1]
            started = time.perf_counter()
            for _ in range(tokens + 1):
                out = model(torch.tensor([[token]]), past_key_values=cache)
                token = int(out.logits[0, -1].argmax())
    seconds = time.perf_counter() - started
    return {"engine": engine, "threads": used, "tokens_per_s": (tokens + 1) / seconds,
            "prompt_threads": prompt_threads, "prompt_tokens_per_s": (len(ids) - 1) / prompt_s}


def run_engine(engine: str, gguf: str, ids_file: Path, tokens: int, threads: int | None) -> dict:
    cmd = [sys.executable, __file__, "--worker", engine, "--gguf", gguf, "--ids", str(ids_file),
           "--tokens", str(tokens)] + (["--scoutdoc-threads", str(threads)] if threads else [])
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(HERE), str(HERE.parent / "src"), os.environ.get("PYTHONPATH", "")])})
    if proc.returncode != 0:
        raise SystemExit(f"{engine} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engines", default=",".join(ENGINES))
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--prompt-tokens", type=int, default=PROMPT_TOKENS)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--scoutdoc-threads", type=int, default=None, help="fix scoutdoc's threads (default: its own choice)")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--gguf", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--ids", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        ids = json.loads(Path(args.ids).read_text())
        threads = args.scoutdoc_threads if args.worker == "scoutdoc" else None
        print(json.dumps(worker(args.worker, args.gguf, ids, args.tokens, threads)))
        return

    from scoutdoc import models
    from scoutdoc.settings import DEFAULT_MODEL

    gguf = os.fspath(models.resolve(DEFAULT_MODEL))
    engines = [e for e in args.engines.split(",") if e]
    ids_file = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench_busy_ids_{os.getpid()}.json"
    ids_file.write_text(json.dumps(_prompt_ids(gguf, args.prompt_tokens)))
    results: dict[str, dict[str, list[dict]]] = {"idle": {e: [] for e in engines}, "busy": {e: [] for e in engines}}
    try:
        for condition in ("idle", "busy"):
            burner = subprocess.Popen([sys.executable, "-c", _BURN]) if condition == "busy" else None
            try:
                for r in range(args.rounds):
                    for engine in engines if r % 2 == 0 else reversed(engines):
                        results[condition][engine].append(
                            run_engine(engine, gguf, ids_file, args.tokens, args.scoutdoc_threads))
            finally:
                if burner is not None:
                    burner.kill()
                    burner.wait()
    finally:
        ids_file.unlink(missing_ok=True)

    print(f"a {args.prompt_tokens}-token prompt, then {args.tokens} greedy tokens, median of {args.rounds}; "
          f"{len(os.sched_getaffinity(0))} usable cores, load average {os.getloadavg()[0]:.1f}")
    print("| engine | threads idle / busy (prompt; decode) | prompt tok/s idle | one core busy | busy / idle "
          "| decode tok/s idle | one core busy | busy / idle |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for engine in engines:
        idle, busy = results["idle"][engine], results["busy"][engine]
        threads = (f"{idle[0]['prompt_threads']} / {busy[0]['prompt_threads']}; "
                   f"{idle[0]['threads']} / {busy[0]['threads']}")
        cells = []
        for key in ("prompt_tokens_per_s", "tokens_per_s"):
            a, b = (statistics.median(r[key] for r in runs) for runs in (idle, busy))
            cells.append(f"{a:.1f} | {b:.1f} | {b / a:.2f}")
        print(f"| {engine} | {threads} | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
