"""Prefill and decode speed of scoutdoc's runtime against llama.cpp and transformers on the default model.

Every engine runs in its own subprocess (so its peak RSS is its own) on the same token ids: real
text (this repository's Python sources and docs) tokenized once by the parent. Per engine:
load time, prefill tokens/s at each prompt length (fresh cache each time), decode tokens/s for
greedy tokens after a 512-token prompt, process CPU seconds for each phase (wall time is
unreliable on a shared machine; CPU seconds / threads is what an idle machine would show), and
peak RSS over the whole run (the longest prefill dominates).

    python benchmarks/bench_runtime.py                        # all engines, 512/2048/7000, 128 decode
    python benchmarks/bench_runtime.py --engines scoutdoc --dtype float32 --json out.json
    python benchmarks/bench_runtime.py --engines scoutdoc,transformers --rounds 3   # alternate, median round
    python benchmarks/bench_runtime.py --paired 6 --lengths 7000    # scoutdoc vs transformers, in turn
    python benchmarks/bench_runtime.py --engines scoutdoc,scoutdoc:auto,scoutdoc:int8,llama_cpp  # --quantize
    git worktree add /tmp/old 6c655fa
    python benchmarks/bench_runtime.py --engines baseline,scoutdoc:auto --baseline /tmp/old/src --rounds 3

An engine `scoutdoc:Q` loads the model with `--quantize Q` (auto keeps the file's 4-bit matrices;
int8/int4 re-quantize); plain `scoutdoc` is the dense path (`--quantize none`). `baseline` (and
`baseline:Q`) is scoutdoc from the source tree `--baseline` names, for instance an older commit's:
the old code against the new in one run, on the same machine and the same tokens.

`--paired N` keeps scoutdoc and transformers loaded, each in its own process, and has them prefill the
same prompt in turn, N times each (who goes first alternates; the idle one waits on a pipe). Each pair
meets the same machine load, so the per-pair ratio holds where runs minutes apart do not; it measures
speed only.
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ENGINES = ("scoutdoc", "llama_cpp", "transformers")


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


class Timer:
    def __enter__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self.wall
        self.cpu = time.process_time() - self.cpu


def _median_run(fn, repeats: int) -> tuple[float, float]:
    walls, cpus = [], []
    for _ in range(repeats):
        with Timer() as t:
            fn()
        walls.append(t.wall)
        cpus.append(t.cpu)
    return statistics.median(walls), statistics.median(cpus)


# --- engines: each gets (gguf path, threads, dtype) and exposes prefill(ids) and decode(ids, n) ----------

def _scoutdoc(gguf: Path, threads: int, dtype: str, quantize: str = "none"):
    import torch

    torch.set_num_threads(threads)
    from scoutdoc.runtime import load_model

    # `none` is load_model's default: left out, a `baseline` from before --quantize existed loads too
    m = load_model(gguf, dtype=dtype, device="cpu", **({"quantize": quantize} if quantize != "none" else {}))

    def prefill(ids):
        m.prefill(ids)

    def decode(ids, n):
        # sized for the whole answer before the prompt, as `scoutdoc ask` does (generate_ids reserves
        # first); llama.cpp's context is allocated at load
        session = m.new_session()
        session.cache.reserve(len(ids) + n)
        m.prefill(ids[:-1], session)
        with Timer() as t:
            out = list(m.generate(ids, max_new_tokens=n + 1, session=session, stop_ids=[]))
        assert len(out) == n + 1  # one-token prefill + n decode steps (the last token is never fed)
        return t

    return prefill, decode


def _transformers(gguf: Path, threads: int, dtype: str):
    import torch

    torch.set_num_threads(threads)
    from transformers import AutoModelForCausalLM, DynamicCache

    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=getattr(torch, dtype)).eval()

    def prefill(ids):
        with torch.inference_mode():
            model(torch.tensor([ids]), past_key_values=DynamicCache(), logits_to_keep=1)

    def decode(ids, n):
        with torch.inference_mode():
            cache = DynamicCache()
            out = model(torch.tensor([ids[:-1]]), past_key_values=cache, logits_to_keep=1)
            token = ids[-1]
            with Timer() as t:
                for _ in range(n + 1):
                    out = model(torch.tensor([[token]]), past_key_values=cache)
                    token = int(out.logits[0, -1].argmax())
        return t

    return prefill, decode


def _llama_cpp(gguf: Path, threads: int, dtype: str):
    import llama_cpp
    import numpy as np
    from llama_compat import open_llama

    llm, _ = open_llama(str(gguf), n_ctx=8192, n_batch=512, n_ubatch=512, n_threads=threads, n_threads_batch=threads,
                        verbose=False)

    def prefill(ids):
        llm.reset()
        llm.eval(ids)

    def decode(ids, n):
        llm.reset()
        llm.eval(ids[:-1])
        token = ids[-1]
        with Timer() as t:
            for _ in range(n + 1):
                llm.eval([token])
                logits = llama_cpp.llama_get_logits_ith(llm._ctx.ctx, -1)  # scores are kept only with logits_all
                token = int(np.argmax(np.ctypeslib.as_array(logits, shape=(llm.n_vocab(),))))
        return t

    return prefill, decode


_FACTORIES = {"scoutdoc": _scoutdoc, "baseline": _scoutdoc, "transformers": _transformers, "llama_cpp": _llama_cpp}


def _factory(engine: str):
    """"scoutdoc:int8" -> the scoutdoc factory loading with --quantize int8."""
    name, _, quantize = engine.partition(":")
    factory = _FACTORIES[name]
    return (lambda *a: factory(*a, quantize)) if quantize else factory


def worker(engine: str, gguf: Path, ids_file: Path, lengths: list[int], decode_tokens: int, threads: int,
           dtype: str, repeats: int, decode_after: int = 512) -> dict:
    ids = json.loads(ids_file.read_text())
    rss_before = _peak_rss_mib()
    with Timer() as load:
        prefill, decode = _factory(engine)(gguf, threads, dtype)
    result = {"engine": engine, "load_s": load.wall, "rss_after_load_mib": _peak_rss_mib(),
              "rss_at_start_mib": rss_before, "prefill": {}}
    prefill(ids[:64])  # warm-up: first-call allocations and kernel selection
    for n in lengths:
        wall, cpu = _median_run(lambda: prefill(ids[:n]), repeats if n <= 2048 else 1)
        result["prefill"][n] = {"tok_s": n / wall, "wall_s": wall, "cpu_s": cpu, "tok_per_cpu_s": n / cpu}
    t = decode(ids[:decode_after], decode_tokens)
    result["decode"] = {"tokens": decode_tokens, "tok_s": decode_tokens / t.wall, "wall_s": t.wall, "cpu_s": t.cpu,
                        "ms_per_token": 1e3 * t.wall / decode_tokens}
    result["peak_rss_mib"] = _peak_rss_mib()
    return result


def serve(engine: str, gguf: Path, ids_file: Path, threads: int, dtype: str) -> None:
    """--paired's worker: load one engine, then prefill the first N ids for each N read from stdin and
    answer with the tokens/s."""
    ids = json.loads(ids_file.read_text())
    prefill = _factory(engine)(gguf, threads, dtype)[0]
    prefill(ids[:64])
    print("READY", flush=True)
    for line in sys.stdin:
        n = int(line)
        with Timer() as t:
            prefill(ids[:n])
        print(n / t.wall, flush=True)


def paired(gguf: Path, ids_file: Path, lengths: list[int], pairs: int, args_for_worker: list[str], env: dict) -> str:
    """scoutdoc against transformers, each in its own process, prefilling the same ids in turn (see --paired)."""
    procs = {
        name: subprocess.Popen([sys.executable, __file__, "--worker", f"serve-{name}", "--model", str(gguf),
                                "--ids", str(ids_file), *args_for_worker],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        for name in ("scoutdoc", "transformers")
    }

    def ask(name: str, n: int) -> float:
        procs[name].stdin.write(f"{n}\n")
        procs[name].stdin.flush()
        return float(procs[name].stdout.readline())

    try:
        for proc in procs.values():
            while not proc.stdout.readline().startswith("READY"):
                if proc.poll() is not None:
                    raise SystemExit(f"a --paired worker failed to start (exit {proc.returncode})")
        rows = ["| prompt tokens | pair | scoutdoc tok/s | transformers tok/s | ratio |",
                "| --- | --- | --- | --- | --- |"]
        for n in lengths:
            speed: dict[str, list[float]] = {name: [] for name in procs}
            for i in range(pairs):
                for name in list(procs)[:: 1 if i % 2 == 0 else -1]:  # who goes first alternates
                    speed[name].append(ask(name, n))
                rows.append(f"| {n} | {i + 1} | {speed['scoutdoc'][-1]:.0f} | {speed['transformers'][-1]:.0f} "
                            f"| {speed['scoutdoc'][-1] / speed['transformers'][-1]:.3f} |")
            ratios = [a / b for a, b in zip(speed["scoutdoc"], speed["transformers"])]
            rows.append(f"| {n} | median | {statistics.median(speed['scoutdoc']):.0f} "
                        f"| {statistics.median(speed['transformers']):.0f} | {statistics.median(ratios):.3f} |")
        return "\n".join(rows)
    finally:
        for proc in procs.values():
            proc.stdin.close()
            proc.wait()


def corpus_ids(gguf: Path, n: int) -> list[int]:
    """Real text (repository sources and docs) tokenized by transformers' GGUF tokenizer."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    text, ids = "", []
    files = sorted(ROOT.glob("src/**/*.py")) + sorted(ROOT.glob("docs/*.md")) + sorted(ROOT.glob("tests/**/*.py"))
    for f in files:
        text += f"\n# {f.relative_to(ROOT)}\n" + f.read_text(errors="replace")
        if len(text) > 6 * n:
            ids = tok.encode(text, add_special_tokens=False)
            if len(ids) >= n:
                return ids[:n]
    raise SystemExit(f"not enough text in the repository for {n} tokens")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m", help="catalog name or GGUF path")
    ap.add_argument("--engines", default=",".join(ENGINES))
    ap.add_argument("--lengths", default="512,2048,7000")
    ap.add_argument("--decode", type=int, default=128)
    ap.add_argument("--decode-after", type=int, default=512,
                    help="decode after a prompt of this many tokens (long documents: attention reads every one)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--dtype", default="bfloat16", help="torch dtype for scoutdoc and transformers")
    ap.add_argument("--repeats", type=int, default=3, help="median over this many runs (prompts up to 2048)")
    ap.add_argument("--rounds", type=int, default=1,
                    help="run the engines in turn this many times and report each engine's median round, so a "
                         "shared machine's changing load falls on every engine alike")
    ap.add_argument("--paired", type=int, default=0, metavar="N",
                    help="instead: scoutdoc and transformers (each in its own process) prefill in turn, N times each")
    ap.add_argument("--baseline", type=Path, help="the `src` directory engine `baseline` imports scoutdoc from")
    ap.add_argument("--json", type=Path, help="also write the raw results here")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--ids", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    lengths = [int(x) for x in args.lengths.split(",")]
    if "baseline" in {e.partition(":")[0] for e in args.engines.split(",")} and not args.baseline:
        ap.error("engine baseline needs --baseline SRC_DIR")

    if args.worker == "tokenize":
        args.ids.write_text(json.dumps(corpus_ids(Path(args.model), max(*lengths, args.decode_after))))
        return
    if args.worker and args.worker.startswith("serve-"):
        serve(args.worker.removeprefix("serve-"), Path(args.model), args.ids, args.threads, args.dtype)
        return
    if args.worker:
        res = worker(args.worker, Path(args.model), args.ids, lengths, args.decode, args.threads, args.dtype, args.repeats,
                     args.decode_after)
        print("RESULT " + json.dumps(res))
        return

    from scoutdoc.models import resolve

    gguf = Path(resolve(args.model))
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        ids_file = Path(tmp) / "ids.json"
        # Tokenize in a child too: Linux carries a parent's peak RSS into forked children's ru_maxrss.
        subprocess.run([sys.executable, __file__, "--worker", "tokenize", "--model", str(gguf), "--ids", str(ids_file),
                        "--lengths", args.lengths, "--decode-after", str(args.decode_after)], check=True)
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "TOKENIZERS_PARALLELISM": "false"}
        if args.paired:
            print(paired(gguf, ids_file, lengths, args.paired,
                         ["--threads", str(args.threads), "--dtype", args.dtype], env))
            return
        for round_no in range(1, args.rounds + 1):
            for engine in args.engines.split(","):
                cmd = [sys.executable, __file__, "--worker", engine, "--model", str(gguf), "--ids", str(ids_file),
                       "--lengths", args.lengths, "--decode", str(args.decode), "--decode-after", str(args.decode_after),
                       "--threads", str(args.threads),
                       "--dtype", args.dtype, "--repeats", str(args.repeats)]
                run_env = {**env, "PYTHONPATH": str(args.baseline.resolve())} if engine.startswith("baseline") else env
                proc = subprocess.run(cmd, capture_output=True, text=True, env=run_env)
                line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
                if proc.returncode or line is None:
                    print(f"{engine}: failed (exit {proc.returncode})\n{proc.stderr[-2000:]}", file=sys.stderr)
                    continue
                results.append({**json.loads(line.removeprefix("RESULT ")), "round": round_no})
                print(f"{engine}: round {round_no} done", file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    print(report([median_round([r for r in results if r["engine"] == e]) for e in dict.fromkeys(
        r["engine"] for r in results)], lengths, args))


def median_round(runs: list[dict]) -> dict:
    """One engine's rounds folded into one row: the median of every speed, the largest peak RSS."""
    med = statistics.median
    out = {"engine": runs[0]["engine"], "load_s": med(r["load_s"] for r in runs),
           "peak_rss_mib": max(r["peak_rss_mib"] for r in runs), "prefill": {}, "decode": {}}
    for n in runs[0]["prefill"]:
        out["prefill"][int(n)] = {k: med(r["prefill"][n][k] for r in runs) for k in ("tok_s", "tok_per_cpu_s")}
    out["decode"] = {k: med(r["decode"][k] for r in runs) for k in ("tok_s", "ms_per_token")}
    return out


def report(results: list[dict], lengths: list[int], args) -> str:
    head = "| engine | load s | " + " | ".join(f"prefill {n} tok/s (per CPU-s)" for n in lengths)
    after = "" if args.decode_after == 512 else f" after {args.decode_after}"
    head += f" | decode {args.decode}{after} tok/s (ms/token) | peak RSS MiB |"
    rows = [head, "|" + " --- |" * (len(lengths) + 4)]
    for r in results:
        cells = [f"{r['prefill'][n]['tok_s']:.0f} ({r['prefill'][n]['tok_per_cpu_s']:.0f})" for n in lengths]
        name = r["engine"] + (f" {args.dtype}" if r["engine"] != "llama_cpp" else " (Q4_1 native)")
        rows.append(f"| {name} | {r['load_s']:.2f} | " + " | ".join(cells)
                    + f" | {r['decode']['tok_s']:.1f} ({r['decode']['ms_per_token']:.1f}) | {r['peak_rss_mib']:.0f} |")
    return "\n".join(rows)


if __name__ == "__main__":
    main()
