"""Perplexity of the default model with quantized decoder matrices, beside llama.cpp's on the same tokens.

Text: this repository's docs/*.md and README.md (written for this project, so not in the model's
training data), tokenized once with the model's own tokenizer, cut into windows of --ctx tokens;
every window starts from an empty cache and every token after a window's first is scored.

scoutdoc runs (dtype --dtype):
- `none`: the GGUF's matrices dequantized to a dense model (the reference: the default model is
  published as Q4_1, so "dense" means those Q4_1 values held in bfloat16);
- `auto`: the Q4_1 matrices kept as int4 (groups of 32, scales and zeros rounded to bfloat16);
- `int8`: re-quantized to int8 with one scale per row.
llama.cpp (llama-cpp-python, `logits_all=True`) on the Q4_1 file itself and on its Q8_0 and Q4_0
re-quantizations (`llama_model_quantize` with `allow_requantize`; no unquantized original is at hand).

    python benchmarks/bench_perplexity.py                      # 8 windows of 512 tokens
    python benchmarks/bench_perplexity.py --tokens 16384 --ctx 1024 --json out.json
    python benchmarks/bench_perplexity.py --decode             # scoutdoc's decode path, token by token
"""

import argparse
import ctypes
import json
import math
import multiprocessing
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent


def corpus_ids(tokenizer, tokens: int) -> list[int]:
    files = sorted((ROOT / "docs").glob("*.md")) + [ROOT / "README.md"]
    text = "\n\n".join(f.read_text(encoding="utf-8") for f in files)
    ids = tokenizer.encode(text)
    if len(ids) < tokens:
        raise SystemExit(f"the docs hold {len(ids)} tokens; ask for at most that many with --tokens")
    return ids[:tokens]


def nll_of(logits: torch.Tensor, window: list[int]) -> tuple[float, int]:
    """Sum of -log p(token | previous tokens of the window) over the window's tokens after the first."""
    logp = torch.log_softmax(logits[:-1].float(), dim=-1)
    target = torch.tensor(window[1:])
    return -logp.gather(1, target[:, None]).sum().item(), len(window) - 1


def scoutdoc_ppl(path: Path, windows: list[list[int]], dtype: str, quantize: str, decode: bool = False) -> float:
    from scoutdoc.runtime import load_model

    model = load_model(path, dtype=dtype, device="cpu", quantize=quantize)
    total, count = 0.0, 0
    for window in windows:
        nll, n = nll_of(decode_logits(model, window) if decode else model.logits(window), window)
        total, count = total + nll, count + n
    return math.exp(total / count)


def decode_logits(model, window: list[int]) -> torch.Tensor:
    """Logits of every position computed one token at a time, as decode steps are: the quantized
    kernels and the decode head run (a whole window at once would take the prompt path instead,
    which multiplies by dequantized weights)."""
    cache = model.new_session().cache
    with torch.inference_mode():
        return torch.cat([model.module(torch.tensor([token]), cache).float() for token in window])


def llama_cpp_ppl(path: Path, windows: list[list[int]], threads: int) -> float:
    from llama_compat import open_llama

    llm, _ = open_llama(str(path), n_ctx=max(len(w) for w in windows), logits_all=True, n_threads=threads,
                        verbose=False)
    total, count = 0.0, 0
    for window in windows:
        llm.reset()
        llm.eval(window)
        logits = torch.from_numpy(np.array(llm.scores[: len(window)], dtype=np.float32))
        nll, n = nll_of(logits, window)
        total, count = total + nll, count + n
    return math.exp(total / count)


def requantize(src: Path, dst: Path, ftype: str) -> Path:
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{ftype}")
    params.allow_requantize = True
    if llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params)) != 0:
        raise SystemExit(f"llama.cpp could not quantize {src} to {ftype}")
    return dst


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m", help="catalog name or GGUF path")
    ap.add_argument("--tokens", type=int, default=4096)
    ap.add_argument("--ctx", type=int, default=512)
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip-llama-cpp", action="store_true")
    ap.add_argument("--decode", action="store_true",
                    help="score scoutdoc one token at a time (its decode path) instead of whole windows")
    ap.add_argument("--quantize", default="none,int8,auto", help="scoutdoc's --quantize values to run")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from scoutdoc.models import resolve
    from scoutdoc.runtime.tokenizer import Tokenizer

    gguf = Path(resolve(args.model).path)
    ids = corpus_ids(Tokenizer.from_gguf(gguf), args.tokens)
    windows = [ids[s : s + args.ctx] for s in range(0, len(ids) - 1, args.ctx)]
    rows = []
    for quantize in args.quantize.split(","):
        start = time.perf_counter()
        ppl = scoutdoc_ppl(gguf, windows, args.dtype, quantize, args.decode)
        path = ", token by token" if args.decode else ""
        rows.append({"engine": f"scoutdoc {args.dtype} --quantize {quantize}{path}", "ppl": ppl,
                     "seconds": time.perf_counter() - start})
        print(rows[-1], flush=True)
    if not args.skip_llama_cpp:
        with tempfile.TemporaryDirectory() as tmp:
            files = {"Q4_1 (the file)": gguf, "Q8_0": requantize(gguf, Path(tmp) / "q8_0.gguf", "Q8_0"),
                     "Q4_0": requantize(gguf, Path(tmp) / "q4_0.gguf", "Q4_0")}
            for name, path in files.items():
                start = time.perf_counter()
                try:  # in a child process: a crash inside llama.cpp ends that row, not the run
                    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
                        ppl = pool.submit(llama_cpp_ppl, path, windows, args.threads).result()
                except BrokenProcessPool:
                    print(f"llama.cpp {name}: the llama-cpp-python process crashed", flush=True)
                    continue
                rows.append({"engine": f"llama.cpp {name}", "ppl": ppl, "seconds": time.perf_counter() - start})
                print(rows[-1], flush=True)
    base = rows[0]["ppl"]
    print(f"\n{len(windows)} windows of up to {args.ctx} tokens, {sum(len(w) - 1 for w in windows)} tokens scored\n")
    print("| engine | perplexity | vs dense | seconds |\n| --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['engine']} | {r['ppl']:.4f} | {100 * (r['ppl'] / base - 1):+.2f} % | {r['seconds']:.0f} |")
    if args.json:
        args.json.write_text(json.dumps({"args": vars(args) | {"json": str(args.json)}, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
