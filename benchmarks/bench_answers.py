"""Answer quality: scoutdoc's default answers against llama.cpp's chat completion on the same GGUF.

Each line of `benchmarks/qa/questions.jsonl` names sources (paths relative to the repository root;
the shared corpus is reached as `../shared/corpus/...`, never copied in), a question with a short
known answer, and keywords: an answer counts as right when it contains any of them, case-insensitive.

- scoutdoc answers exactly as `scoutdoc ask` would: `session.start_session` with default
  `GenerationParams`, the embedded engine and the default model (fit strategy, prompt layout and
  sampling defaults included), into a throw-away SCOUTDOC_HOME.
- llama.cpp (llama-cpp-python) answers with `create_chat_completion` on the same GGUF file, with the
  same packed documents as the system message (`prompt.system_text`) and the question as the user
  message, its own sampling defaults, a fixed seed and the same answer budget. When the documents
  exceed the model's window it cannot answer; such questions are counted wrong and reported
  separately ("long"), and both engines' scores are also given over the questions that fit.

`--followups` runs `benchmarks/qa/followups.jsonl` instead: two-turn conversations whose second
question names its subject only by a pronoun ("And who can give it?"); the first is asked and
answered, then the follow-up (scoutdoc with `session.continue_session`, as `scoutdoc ask -c` does;
llama.cpp with its own first answer in the messages), and only the follow-up is scored.

`--absent` runs `benchmarks/qa/absent.jsonl` instead: questions the documents do not answer, where
an answer is right when it says so ("does not mention", "no information", ...) instead of inventing one.

`--summaries` runs `benchmarks/qa/summaries.jsonl` instead: no question, each source summarized
(scoutdoc as `scoutdoc summarize` does, map-reduce when it exceeds the window; llama.cpp with the
same instruction as the user message), scored by the share of the listed facts a summary mentions
(each fact a set of keywords split by "|", any one of them will do).

Usage (from the repository root, the `bench` or `test` extra installed):

    python benchmarks/bench_answers.py [--limit N | --quick] [--engines scoutdoc,llama.cpp]
                                       [--max-tokens N] [--json OUT.json] [--show] [--summaries | --followups | --absent]
                                       [--temperature T --seed S]

`--quick` runs the first two questions with 48-token answers (what CI's test does).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))  # llama_compat beside this file
QUESTIONS = ROOT / "benchmarks" / "qa" / "questions.jsonl"
SUMMARIES = ROOT / "benchmarks" / "qa" / "summaries.jsonl"  # no question: `scoutdoc summarize`'s own instruction
FOLLOWUPS = ROOT / "benchmarks" / "qa" / "followups.jsonl"  # a first question, then the scored follow-up
ABSENT = ROOT / "benchmarks" / "qa" / "absent.jsonl"  # questions the documents do not answer
ENGINES = ("scoutdoc", "llama.cpp")


@dataclass
class Item:
    id: str
    sources: list[str]
    keywords: list[str]  # a summary's: each a fact it should mention, alternatives split by "|"
    question: str = ""  # none: a summary, asked with `scoutdoc summarize`'s instruction for these sources
    earlier: str = ""  # a follow-up's first question, asked and answered before it

    def paths(self) -> list[str]:
        """The sources as a user in the current directory would type them: from the repository root,
        exactly as written here. Each document's header in the prompt names its source so, and an
        absolute path would make the prompts, and so the answers, depend on where the checkout is."""
        return [s if Path(s).is_absolute() else os.path.relpath(ROOT / s) for s in self.sources]

    def available(self) -> bool:
        return all(Path(p).exists() for p in self.paths())


@dataclass
class Answer:
    text: str
    seconds: float
    error: str = ""
    fit: dict = field(default_factory=dict)


def progress(engine: str, item: Item, answer: Answer) -> None:
    verdict = "right" if right(answer.text, item.keywords) else "error" if answer.error else "wrong"
    print(f"{engine}: {item.id}: {verdict} ({answer.seconds:.0f} s)", file=sys.stderr, flush=True)


def load_items(path: Path = QUESTIONS) -> list[Item]:
    return [Item(**json.loads(line)) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def right(answer: str, keywords: list[str]) -> bool:
    low = answer.lower()
    return any(k.lower() in low for k in keywords)


def coverage(summary: str, facts: list[str]) -> float:
    """The share of `facts` a summary mentions (a fact: keywords split by "|", any one will do)."""
    return sum(right(summary, fact.split("|")) for fact in facts) / len(facts)


@lru_cache(maxsize=None)
def _ingested(paths: tuple[str, ...]):
    """The sources read once per run: the window check, the llama.cpp prompt and a summary's
    instruction all need them (scoutdoc's own answers read them again, as `scoutdoc ask` does)."""
    from scoutdoc.ingest import IngestOptions, load_sources, require_documents

    return require_documents(load_sources(list(paths), IngestOptions()))


def ask_text(item: Item) -> str:
    """The user message: the question, or for a summary the instruction `scoutdoc summarize` gives."""
    from scoutdoc.prompt import summary_instruction

    if item.question:
        return item.question
    return summary_instruction(d.kind for d in _ingested(tuple(item.paths())).documents)


def documents_text(item: Item) -> str:
    """The packed documents both engines get: what `scoutdoc ask` puts in the system message."""
    from scoutdoc.ingest import pack
    from scoutdoc.prompt import system_text

    return system_text(pack(_ingested(tuple(item.paths()))))


def scoutdoc_answers(items: list[Item], gguf: str, max_tokens: int | None, dtype: str | None = None,
                     sampling: dict | None = None) -> list[Answer]:
    """Each question as a new `ask` session, through the library the CLI uses; sessions and KV
    snapshots go to a throw-away SCOUTDOC_HOME. `sampling` (temperature, top_p, seed) replaces
    `ask`'s greedy default, to see how much sampled answers differ from it."""
    from scoutdoc.engines import GenerationParams, open_engine
    from scoutdoc.errors import ScoutdocError
    from scoutdoc.ingest import IngestOptions
    from scoutdoc.session import continue_session, start_session
    from scoutdoc.store import Store

    params = GenerationParams(**({} if max_tokens is None else {"max_tokens": max_tokens}), **(sampling or {}))
    engine = open_engine("embedded", model=gguf, **({"dtype": dtype} if dtype else {}))
    out = []
    saved = os.environ.get("SCOUTDOC_HOME")
    with tempfile.TemporaryDirectory(prefix="scoutdoc-qa-") as home, Store(Path(home) / "qa.db") as store:
        os.environ["SCOUTDOC_HOME"] = home
        try:
            for item in items:
                started = time.perf_counter()
                try:
                    result = start_session(store, engine, paths=item.paths(), options=IngestOptions(),
                                           question=item.earlier or ask_text(item), params=params,
                                           on_text=lambda piece: None, notice=lambda message: None,
                                           summary=not item.question)
                    if item.earlier:  # only the follow-up is scored and timed
                        started = time.perf_counter()
                        result = continue_session(store, engine, session_id=result.session_id, question=item.question,
                                                  params=params, on_text=lambda piece: None, notice=lambda message: None)
                except ScoutdocError as exc:
                    out.append(Answer("", time.perf_counter() - started, f"{type(exc).__name__}: {exc}"))
                    progress("scoutdoc", item, out[-1])
                    continue
                fit = getattr(result, "fit", None)
                out.append(Answer(result.answer, time.perf_counter() - started,
                                  fit=fit.as_dict() if hasattr(fit, "as_dict") else {}))
                progress("scoutdoc", item, out[-1])
        finally:
            if saved is None:
                os.environ.pop("SCOUTDOC_HOME", None)
            else:
                os.environ["SCOUTDOC_HOME"] = saved
    return out


def llama_answers(items: list[Item], gguf: str, max_tokens: int | None, threads: int, seed: int = 0) -> list[Answer]:
    """llama.cpp's chat completion with its default sampling, the same documents and question."""
    from llama_compat import open_llama

    from scoutdoc.engines import GenerationParams

    llm, amx_off = open_llama(gguf, n_ctx=0, n_threads=threads, n_threads_batch=threads, seed=seed, verbose=False)
    if amx_off:
        print("llama.cpp: extra buffer types (AMX, repacking) off: this machine faults on AMX tiles", file=sys.stderr)
    budget = max_tokens or GenerationParams().max_tokens
    out = []
    for item in items:
        started = time.perf_counter()
        messages = [{"role": "system", "content": documents_text(item)}, {"role": "user", "content": ask_text(item)}]
        try:
            if item.earlier:
                messages[1]["content"] = item.earlier
                first = llm.create_chat_completion(messages=messages, max_tokens=budget, seed=seed)
                messages += [{"role": "assistant", "content": first["choices"][0]["message"]["content"] or ""},
                             {"role": "user", "content": item.question}]
                started = time.perf_counter()
            reply = llm.create_chat_completion(messages=messages, max_tokens=budget, seed=seed)
            out.append(Answer(reply["choices"][0]["message"]["content"] or "", time.perf_counter() - started))
        except ValueError as exc:  # "Requested tokens (...) exceed context window of ..."
            out.append(Answer("", time.perf_counter() - started, str(exc)))
        llm.reset()
        progress("llama.cpp", item, out[-1])
    return out


def fits_window(item: Item, tokenizer, window: int) -> bool:
    """Whether the whole prompt fits the model's `window` with the default answer budget (for a
    follow-up, with the first question and an answer as long as the budget before it)."""
    from scoutdoc.engines import GenerationParams
    from scoutdoc.engines.chat import render
    from scoutdoc.prompt import Message, Prompt

    earlier = [Message("user", item.earlier), Message("assistant", "")] if item.earlier else []
    prompt = Prompt([Message("system", documents_text(item))], [*earlier, Message("user", ask_text(item))])
    return len(render(tokenizer, prompt).ids) + GenerationParams().max_tokens * (2 if item.earlier else 1) <= window


def verdict(item: Item, answer: Answer) -> str:
    if item.question:
        return "right" if right(answer.text, item.keywords) else ("error" if answer.error else "wrong")
    return "error" if answer.error else f"{100 * coverage(answer.text, item.keywords):.0f} %"


def unsupported_names(item: Item, answer: Answer) -> list[str]:
    """What `scoutdoc ask` would note of this answer: its names and numbers that neither the
    documents nor the questions contain (`grounding`), checked the same way for either engine."""
    from scoutdoc.session import unsupported_names as names

    return names(answer.text, documents_text(item), [q for q in (item.question, item.earlier) if q])


def score(
    items: list[Item], answers: dict[str, list[Answer]], fits: list[bool], noted: dict[str, list[list[str]]],
) -> dict:
    """Per engine: questions right, or for summaries the mean share of the facts mentioned; and how
    many right and wrong answers name what the documents lack (`noted`, from `unsupported_names`)."""
    summary = {}
    for engine, got in answers.items():
        seconds = round(sum(a.seconds for a in got), 1)
        if not items[0].question:
            cover = [coverage(a.text, it.keywords) for it, a in zip(items, got)]
            fit_cover = [c for c, f in zip(cover, fits) if f]
            summary[engine] = {"coverage": round(100 * sum(cover) / len(cover), 1), "total": len(cover),
                               "coverage_fitting": round(100 * sum(fit_cover) / max(1, len(fit_cover)), 1),
                               "fitting": len(fit_cover), "seconds": seconds}
            continue
        ok = [right(a.text, it.keywords) for it, a in zip(items, got)]
        fit_ok = [o for o, f in zip(ok, fits) if f]
        named = [bool(names) for names in noted[engine]]
        summary[engine] = {
            "right": sum(ok), "total": len(ok), "percent": round(100 * sum(ok) / max(1, len(ok)), 1),
            "right_fitting": sum(fit_ok), "fitting": len(fit_ok), "seconds": seconds,
            "noted_right": sum(n and o for n, o in zip(named, ok)), "noted_wrong": sum(n and not o for n, o in zip(named, ok)),
        }
    return summary


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, default=None, help="only the first N questions")
    parser.add_argument("--quick", action="store_true", help="two questions, 48-token answers (CI)")
    parser.add_argument("--only", default="", help="comma-separated question ids")
    parser.add_argument("--summaries", action="store_true",
                        help="the summary set instead: `scoutdoc summarize` on each source, scored by the facts it mentions")
    parser.add_argument("--followups", action="store_true",
                        help="the follow-up set instead: a first question, then a follow-up naming its subject by a pronoun")
    parser.add_argument("--absent", action="store_true",
                        help="the absent set instead: questions the documents do not answer, right when the answer says so")
    parser.add_argument("--sample", type=int, default=None, help="N questions spread evenly over the set")
    parser.add_argument("--dtype", default=None, help="scoutdoc's --dtype (default: scoutdoc's default)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for both engines (default: all usable)")
    parser.add_argument("--engines", default=",".join(ENGINES))
    parser.add_argument("--max-tokens", type=int, default=None, help="answer budget (default: scoutdoc's default)")
    parser.add_argument("--temperature", type=float, default=None,
                        help="scoutdoc samples at this temperature (top-p 0.9) instead of its greedy default")
    parser.add_argument("--seed", type=int, default=0, help="scoutdoc's sampling seed, with --temperature")
    parser.add_argument("--json", dest="json_out", default=None, help="write every answer and the scores here")
    parser.add_argument("--show", action="store_true", help="print each answer")
    args = parser.parse_args(argv)
    if args.quick:
        args.limit, args.max_tokens = args.limit or 2, args.max_tokens or 48
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    unknown = set(engines) - set(ENGINES)
    if unknown:
        parser.error(f"unknown engine(s) {', '.join(sorted(unknown))}; choose from {', '.join(ENGINES)}")

    chosen = SUMMARIES if args.summaries else FOLLOWUPS if args.followups else ABSENT if args.absent else QUESTIONS
    items = [it for it in load_items(chosen) if it.available()]
    if args.only:
        wanted = set(args.only.split(","))
        items = [it for it in items if it.id in wanted]
    if args.sample and args.sample < len(items):
        items = [items[round(i * (len(items) - 1) / (args.sample - 1))] for i in range(args.sample)] if args.sample > 1 else items[:1]
    items = items[: args.limit] if args.limit else items
    if not items:
        raise SystemExit("no questions to run (is ../shared/corpus there?)")
    from scoutdoc import models
    from scoutdoc.settings import DEFAULT_MODEL

    gguf = os.fspath(models.resolve(DEFAULT_MODEL))
    threads = args.threads or len(os.sched_getaffinity(0))
    import torch

    torch.set_num_threads(threads)
    from scoutdoc.runtime.tokenizer import load_tokenizer
    from scoutdoc.runtime.weights import open_checkpoint

    # the tokenizer and configuration only, once: loading the model here would hold a second,
    # float32 copy of it beside the engine's
    tokenizer, window = load_tokenizer(gguf), open_checkpoint(gguf).config.max_position_embeddings
    fits = [fits_window(it, tokenizer, window) for it in items]
    answers: dict[str, list[Answer]] = {}
    if "scoutdoc" in engines:
        sampling = {} if args.temperature is None else {"temperature": args.temperature, "top_p": 0.9, "seed": args.seed}
        answers["scoutdoc"] = scoutdoc_answers(items, gguf, args.max_tokens, args.dtype, sampling)
    if "llama.cpp" in engines:
        answers["llama.cpp"] = llama_answers(items, gguf, args.max_tokens, threads)
    noted = {e: [unsupported_names(it, a) if it.question else [] for it, a in zip(items, got)]
             for e, got in answers.items()}
    summary = score(items, answers, fits, noted)

    print(f"{len(items)} questions ({sum(fits)} fit the window), machine: {platform.machine()}, "
          f"{len(os.sched_getaffinity(0))} usable cores, load average {os.getloadavg()[0]:.1f}")
    header = "| id | fits | " + " | ".join(answers) + " |"
    print(header + "\n|" + " --- |" * (2 + len(answers)))
    for n, item in enumerate(items):
        cells = [verdict(item, answers[e][n]) for e in answers]
        print(f"| {item.id} | {'yes' if fits[n] else 'no'} | " + " | ".join(cells) + " |")
        if args.show:
            for e in answers:
                a = answers[e][n]
                print(f"    {e}: {(a.text or a.error)[:300]!r}")
    for e, s in summary.items():
        if args.summaries:
            print(f"{e}: {s['coverage']} % of the facts mentioned over {s['total']} summaries, {s['coverage_fitting']} % "
                  f"over the {s['fitting']} that fit, {s['seconds']} s")
            continue
        print(f"{e}: {s['right']}/{s['total']} right ({s['percent']} %), {s['right_fitting']}/{s['fitting']} "
              f"of those that fit, {s['seconds']} s; names or numbers the documents lack in "
              f"{s['noted_wrong']}/{s['total'] - s['right']} wrong and {s['noted_right']}/{s['right']} right answers")
    result = {"summary": summary, "items": [
        {"id": it.id, "fits": f, **{e: {"answer": answers[e][n].text, "verdict": verdict(it, answers[e][n]),
                                          "right": bool(it.question) and right(answers[e][n].text, it.keywords),
                                          "error": answers[e][n].error, "seconds": round(answers[e][n].seconds, 2),
                                          "fit": answers[e][n].fit,
                                          **({"unsupported": noted[e][n]} if it.question else {}),
                                          } for e in answers}}
        for n, (it, f) in enumerate(zip(items, fits))]}
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(result, indent=1, ensure_ascii=False), encoding="utf-8")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
