"""Time to first token of a follow-up question: scoutdoc's KV snapshot against llama.cpp's saved state.

For each document length (default about 2k and 7k prompt tokens of the default model) and each
engine, in separate processes so each has its own peak RSS:

1. first turn (one process): prefill document + question cold and time the first token (TTFT; this
   is also what answering a follow-up costs without a saved state, since it re-reads the document),
   finish a short answer, then save the state to a file (time, bytes);
2. follow-up (a fresh process, model already loaded): load the state from that file, prefill the
   follow-up turn, first token. The TTFT counted here includes reading the state file.

scoutdoc runs through the engine API that `ask` / `ask -c` use (`EmbeddedEngine.prefill(prompt,
snapshot=...)`, `generate`, `save`, `load`). llama.cpp runs through llama-cpp-python (`Llama.generate`,
which reuses the longest cached token prefix, and `save_state` / `load_state`, pickled to a file).
Both engines get the same prompt text rendered by scoutdoc's chat template, tokenized by each engine
itself; each follow-up carries the answer that engine gave. Both use greedy decoding and `--threads`
(default 2) threads.

    python benchmarks/bench_followup.py [--tokens 2000 7000] [--repeats 3] [--repeats-long 1]
        [--engines scoutdoc llamacpp] [--model smollm2-135m] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = [ROOT / "examples", ROOT.parent / "shared" / "corpus"]
QUESTION_1 = "What is the termination notice period, and which law governs the agreement?"
QUESTION_2 = "Who are the parties to the agreement, and what does each of them have to deliver?"
ANSWER_TOKENS = 16  # a short first answer: its length only moves a few tokens into the follow-up
MARK = "\x00ANSWER\x00"
THREADS = 2


def _setup_torch() -> None:
    import torch

    torch.set_num_threads(THREADS)


def _documents_text() -> str:
    """The examples and the shared sample corpus, packed as `ask` packs them."""
    from scoutdoc.ingest import IngestOptions, load_sources, pack

    return pack(load_sources([str(p) for p in SOURCES if p.exists()], IngestOptions()))


def prepare(model: str, tokens: int) -> dict:
    """Prompt texts with about `tokens` tokens in the first turn; the follow-up's with a placeholder answer."""
    from scoutdoc.engines import Message
    from scoutdoc.models import resolve
    from scoutdoc.prompt import build_prompt
    from scoutdoc.runtime.tokenizer import load_tokenizer

    path = resolve(model).path
    tok = load_tokenizer(path)
    base = _documents_text()
    text = base
    while len(tok.encode(text, special=False)) < tokens:
        text += "\n\n" + base  # the sources are shorter than the longest target: read them again

    def first(doc: str) -> str:
        msgs = build_prompt(doc, [], QUESTION_1).messages
        return tok.apply_chat_template([{"role": m.role, "content": m.content} for m in msgs], add_generation_prompt=True)

    lo, hi = 0, len(text)
    while lo < hi:  # the longest document cut whose first-turn prompt stays within `tokens`
        mid = (lo + hi + 1) // 2
        if len(tok.encode(first(text[:mid]), special=True)) <= tokens:
            lo = mid
        else:
            hi = mid - 1
    doc = text[:lo]
    history = [Message("user", QUESTION_1), Message("assistant", MARK)]
    msgs = build_prompt(doc, history, QUESTION_2).messages
    follow = tok.apply_chat_template([{"role": m.role, "content": m.content} for m in msgs], add_generation_prompt=True)
    return {"model_path": str(path), "document": doc, "first_text": first(doc), "follow_text": follow,
            "first_tokens": len(tok.encode(first(doc), special=True))}


# --- scoutdoc -------------------------------------------------------------------------------


def _engine(model_path: str):
    from scoutdoc.engines.embedded import EmbeddedEngine

    _setup_torch()
    t = time.perf_counter()
    engine = EmbeddedEngine(model_path)
    return engine, time.perf_counter() - t


def scoutdoc_first(job: dict) -> dict:
    from scoutdoc.engines import GenerationParams
    from scoutdoc.prompt import build_prompt

    engine, model_load_s = _engine(job["model_path"])
    prompt = build_prompt(job["document"], [], QUESTION_1)
    prompt_tokens = engine.prompt_tokens(prompt)  # tokenized before the clock starts, as `ask` checks the fit first
    ttfts, saves, answer, state = [], [], "", None
    for _ in range(job["repeats"]):
        state = engine.prefill(prompt)
        answer = "".join(engine.generate(state, GenerationParams(max_tokens=ANSWER_TOKENS)))
        ttfts.append(state.stats.ttft_s)
    for _ in range(job["repeats"]):
        t = time.perf_counter()
        size = engine.save(state, Path(job["state_file"]))
        saves.append(time.perf_counter() - t)
    return {"model_load_s": model_load_s, "prompt_tokens": prompt_tokens, "ttft_s": ttfts, "answer": answer,
            "state_tokens": len(state.session.ids), "save_s": saves, "state_bytes": size}


def scoutdoc_follow(job: dict) -> dict:
    from scoutdoc.engines import GenerationParams, Message
    from scoutdoc.prompt import build_prompt

    engine, model_load_s = _engine(job["model_path"])
    prompt = build_prompt(job["document"], [Message("user", QUESTION_1), Message("assistant", job["answer"])], QUESTION_2)
    prompt_tokens = engine.prompt_tokens(prompt)
    rows = []
    for _ in range(job["repeats"]):
        t0 = time.perf_counter()
        snap = engine.load(Path(job["state_file"]))
        t1 = time.perf_counter()
        state = engine.prefill(prompt, snapshot=snap)
        t2 = time.perf_counter()
        stream = engine.generate(state, GenerationParams(max_tokens=8))
        next(stream)
        t3 = time.perf_counter()
        stream.close()  # only the first token is timed; closing leaves the turn unfinished, as an interrupt would
        rows.append({"load_s": t1 - t0, "prefill_s": t2 - t1, "first_token_s": t3 - t2, "ttft_s": t3 - t0,
                     "cached": state.stats.cached_tokens, "prefilled": state.stats.prefilled_tokens})
        del snap, state, stream
    return {"model_load_s": model_load_s, "prompt_tokens": prompt_tokens, "rows": rows}


# --- llama.cpp ------------------------------------------------------------------------------


def _llama(model_path: str):
    from llama_compat import open_llama

    t = time.perf_counter()
    llm, _ = open_llama(model_path, n_ctx=8192, n_threads=THREADS, n_threads_batch=THREADS, verbose=False)
    return llm, time.perf_counter() - t


def _greedy(llm, tokens: list[int]):
    return llm.generate(tokens, temp=0.0, top_k=1, top_p=1.0, min_p=0.0, repeat_penalty=1.0)


def llamacpp_first(job: dict) -> dict:
    llm, model_load_s = _llama(job["model_path"])
    tokens = llm.tokenize(job["first_text"].encode(), add_bos=False, special=True)
    ttfts, saves, out = [], [], []
    for _ in range(job["repeats"]):
        llm.reset()
        t0 = time.perf_counter()
        gen = _greedy(llm, tokens)
        out = [next(gen)]
        ttfts.append(time.perf_counter() - t0)
        for tok in gen:
            if tok == llm.token_eos() or len(out) >= ANSWER_TOKENS:
                break
            out.append(tok)
        gen.close()
    out = [t for t in out if t != llm.token_eos()]
    size = 0
    for _ in range(job["repeats"]):
        t = time.perf_counter()
        with open(job["state_file"], "wb") as f:
            pickle.dump(llm.save_state(), f, protocol=pickle.HIGHEST_PROTOCOL)
        saves.append(time.perf_counter() - t)
        size = os.path.getsize(job["state_file"])
    return {"model_load_s": model_load_s, "prompt_tokens": len(tokens), "ttft_s": ttfts,
            "answer": llm.detokenize(out).decode(errors="replace").strip(), "state_tokens": llm.n_tokens,
            "save_s": saves, "state_bytes": size}


def llamacpp_follow(job: dict) -> dict:
    llm, model_load_s = _llama(job["model_path"])
    tokens = llm.tokenize(job["follow_text"].replace(MARK, job["answer"]).encode(), add_bos=False, special=True)
    rows = []
    for _ in range(job["repeats"]):
        t0 = time.perf_counter()
        with open(job["state_file"], "rb") as f:
            llm.load_state(pickle.load(f))
        t1 = time.perf_counter()
        cached = llm.n_tokens
        gen = _greedy(llm, tokens)
        next(gen)
        t2 = time.perf_counter()
        gen.close()
        rows.append({"load_s": t1 - t0, "prefill_s": t2 - t1, "first_token_s": 0.0, "ttft_s": t2 - t0,
                     "cached": cached, "prefilled": len(tokens) - cached})
    return {"model_load_s": model_load_s, "prompt_tokens": len(tokens), "rows": rows}


WORKERS = {"scoutdoc_first": scoutdoc_first, "scoutdoc_follow": scoutdoc_follow,
           "llamacpp_first": llamacpp_first, "llamacpp_follow": llamacpp_follow}


# --- driver ---------------------------------------------------------------------------------


def run_worker(kind: str, job: dict, tmp: Path) -> tuple[dict, int]:
    """Run one phase in a fresh interpreter; its result and its peak RSS in MiB."""
    job_file, out_file = tmp / f"{kind}.job.json", tmp / f"{kind}.out.json"
    job_file.write_text(json.dumps(job))
    proc = subprocess.Popen([sys.executable, __file__, "--worker", kind, str(job_file), str(out_file)], cwd=ROOT)
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"worker {kind} failed")
    return json.loads(out_file.read_text()), usage.ru_maxrss // 1024


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, nargs="+", default=[2000, 7000])
    parser.add_argument("--repeats", type=int, default=3, help="repeats per measurement")
    parser.add_argument("--repeats-long", type=int, default=1, help="repeats of the cold prefill above 4k tokens")
    parser.add_argument("--engines", nargs="+", default=["scoutdoc", "llamacpp"], choices=["scoutdoc", "llamacpp"])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--threads", type=int, default=THREADS, help="torch and llama.cpp threads")
    parser.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        kind, job_file, out_file = args.worker
        job = json.loads(Path(job_file).read_text())
        globals()["THREADS"] = job.get("threads", THREADS)
        result = prepare(job["model"], job["tokens"]) if kind == "prepare" else WORKERS[kind](job)
        Path(out_file).write_text(json.dumps(result))
        return

    print(f"command: {' '.join(sys.argv)}", flush=True)
    print(f"load average at start: {_load()}", flush=True)
    results = []
    with tempfile.TemporaryDirectory(prefix="scoutdoc-followup-") as tmpdir:
        tmp = Path(tmpdir)
        for n in args.tokens:
            texts, _ = run_worker("prepare", {"model": args.model, "tokens": n}, tmp)
            texts["threads"] = args.threads
            for engine in args.engines:
                state_file = str(tmp / f"{engine}-{n}.state")
                first_repeats = args.repeats_long if n > 4000 else args.repeats
                job = {**texts, "repeats": first_repeats, "state_file": state_file}
                first, rss_first = run_worker(f"{engine}_first", job, tmp)
                job = {**texts, "repeats": args.repeats, "state_file": state_file, "answer": first["answer"]}
                follow, rss_follow = run_worker(f"{engine}_follow", job, tmp)
                rows = follow["rows"]
                med = {k: statistics.median(r[k] for r in rows) for k in ("load_s", "prefill_s", "first_token_s", "ttft_s")}
                results.append({"engine": engine, "target": n, "first": first, "follow": follow, "med": med,
                                "rss_first": rss_first, "rss_follow": rss_follow})
                print(json.dumps({"engine": engine, "target": n, "first_prompt_tokens": first["prompt_tokens"],
                                  "cold_ttft_s": first["ttft_s"], "save_s": first["save_s"],
                                  "state_bytes": first["state_bytes"], "state_tokens": first["state_tokens"],
                                  "answer": first["answer"], "follow_prompt_tokens": follow["prompt_tokens"],
                                  "follow_rows": rows, "model_load_s": [first["model_load_s"], follow["model_load_s"]],
                                  "rss_mib": [rss_first, rss_follow]}), flush=True)
    print(f"load average at end: {_load()}\n")
    print("| engine | prompt tokens (1st / follow-up) | cold TTFT, re-reading the document (s) | save state (s) | state MiB "
          "| follow-up TTFT incl. load (s) | = load + prefill + 1st token (s) | cached / prefilled | model load (s) "
          "| peak RSS MiB (1st / follow-up) |")
    print("| --- | --- | ---: | ---: | ---: | ---: | --- | --- | ---: | --- |")
    for r in results:
        f, fo, m = r["first"], r["follow"], r["med"]
        row = fo["rows"][0]
        print(f"| {r['engine']} | {f['prompt_tokens']} / {fo['prompt_tokens']} | {statistics.median(f['ttft_s']):.2f} "
              f"| {statistics.median(f['save_s']):.2f} | {f['state_bytes'] / 2**20:.1f} | **{m['ttft_s']:.2f}** "
              f"| {m['load_s']:.2f} + {m['prefill_s']:.2f} + {m['first_token_s']:.2f} | {row['cached']} / {row['prefilled']} "
              f"| {fo['model_load_s']:.1f} | {r['rss_first']} / {r['rss_follow']} |")


if __name__ == "__main__":
    main()
