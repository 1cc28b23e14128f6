"""End-to-end wall time of `scoutdoc ask` on the example contract, and of a follow-up.

Three cases, each a fresh `scoutdoc` process as a user would run it:
- cold: an empty model directory, so the default model is pulled from PyPI first (skip with --no-cold);
- warm: the model already on disk, a new session (ingest, prefill the whole prompt, answer);
- follow-up: `ask -c` in that session (load the KV snapshot, prefill only the new turn, answer).

Reports the median wall time and the peak RSS of the process for each, plus the token figures the
command printed. Usage:

    python benchmarks/bench_e2e.py [--repeats 3] [--max-tokens 64] [--no-cold] [--model smollm2-135m]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONTRACT = ROOT / "examples" / "contract.pdf"
SCOUTDOC = Path(sys.executable).parent / "scoutdoc"


def timed(cmd: list[str], env: dict) -> tuple[float, int, dict]:
    """Wall seconds, peak RSS in MiB and the --json output of one run."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    stdout, stderr = proc.stdout.read(), proc.stderr.read()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{stderr.decode(errors='replace')}")
    rss_mib = usage.ru_maxrss // 1024  # Linux reports KiB
    return wall, rss_mib, json.loads(stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--model", default=None, help="model reference (default: scoutdoc's default model)")
    parser.add_argument("--no-cold", action="store_true", help="skip the run that pulls the model first")
    args = parser.parse_args()

    model_args = ["--model", args.model] if args.model else []
    ask = [str(SCOUTDOC), "ask", str(CONTRACT), "What is the termination notice period?",
           "--max-tokens", str(args.max_tokens), "--json", *model_args]
    follow = [str(SCOUTDOC), "ask", "-c", "Which law governs the agreement?",
              "--max-tokens", str(args.max_tokens), "--json", *model_args]
    rows: list[tuple[str, list[float], list[int], dict]] = []
    with tempfile.TemporaryDirectory(prefix="scoutdoc-bench-") as tmp:
        base = {**os.environ, "NO_COLOR": "1"}
        base.pop("SCOUTDOC_DB", None)
        if not args.no_cold:
            walls, rss, out = [], [], {}
            for i in range(args.repeats):
                env = {**base, "SCOUTDOC_HOME": f"{tmp}/cold{i}", "SCOUTDOC_MODELS": f"{tmp}/cold-models{i}"}
                w, r, out = timed(ask, env)
                walls.append(w)
                rss.append(r)
                shutil.rmtree(f"{tmp}/cold-models{i}", ignore_errors=True)
            rows.append(("ask, cold (model pulled first)", walls, rss, out))
        warm = {"walls": [], "rss": []}
        fu = {"walls": [], "rss": []}
        out_warm = out_fu = {}
        models = os.environ.get("SCOUTDOC_MODELS")
        for i in range(args.repeats):
            env = {**base, "SCOUTDOC_HOME": f"{tmp}/warm{i}"}
            if models:
                env["SCOUTDOC_MODELS"] = models
            w, r, out_warm = timed(ask, env)
            warm["walls"].append(w)
            warm["rss"].append(r)
            w, r, out_fu = timed(follow, env)
            fu["walls"].append(w)
            fu["rss"].append(r)
        rows.append(("ask, warm model cache", warm["walls"], warm["rss"], out_warm))
        rows.append(("follow-up `ask -c`", fu["walls"], fu["rss"], out_fu))

    print(f"machine: {platform.machine()} {platform.processor() or ''}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    print(f"command: {' '.join(sys.argv)}\n")
    print("| case | median wall (s) | runs (s) | peak RSS (MiB) | prompt tokens | cached | prefilled | generated | TTFT (s) | tokens/s |")
    print("| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, walls, rss, out in rows:
        s = out.get("stats", {})
        print(
            f"| {name} | {statistics.median(walls):.2f} | {', '.join(f'{w:.1f}' for w in walls)} | {max(rss)} | "
            f"{s.get('prompt_tokens')} | {s.get('cached_tokens')} | {s.get('prefilled_tokens')} | "
            f"{s.get('generated_tokens')} | {s.get('ttft_s')} | {s.get('tokens_per_s')} |"
        )


if __name__ == "__main__":
    main()
