"""Ingestion throughput: a generated text PDF (pages/s) and a codebase (MB/s) against files-to-prompt.

Both code packers run as fresh subprocesses writing to /dev/null, so interpreter start-up and imports
count for both, and each child's own peak RSS comes from os.wait4. The in-process library time of
`load_sources` + `pack` is reported as well. Repetitions are interleaved and the median is reported.

    python benchmarks/bench_ingest.py [--repo DIR] [--pages 1000] [--repeat 3]
"""

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from scoutdoc.ingest import load_sources, pack
from scoutdoc.ingest.pdf import read_pdf


def make_pdf(path: Path, pages: int) -> None:
    from fpdf import FPDF

    pdf = FPDF()
    pdf.set_font("helvetica", size=10)
    paragraph = "The quick brown fox jumps over the lazy dog while the committee reviews clause {n}. " * 6
    for n in range(1, pages + 1):
        pdf.add_page()
        for k in range(4):
            pdf.multi_cell(0, 5, paragraph.format(n=f"{n}.{k}"), new_x="LMARGIN", new_y="NEXT")
    pdf.output(str(path))


_WRAPPER = """
import os, resource, subprocess, sys, time
with open(os.devnull, "wb") as sink:
    start = time.perf_counter()
    code = subprocess.call(sys.argv[1:], stdout=sink, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - start
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
print(code, wall, usage.ru_maxrss, usage.ru_utime + usage.ru_stime)
"""


def run_child(cmd: list[str]) -> tuple[float, float, float]:
    """(wall seconds, peak RSS MiB, CPU seconds) of `cmd` with stdout to /dev/null.

    CPU time (user + system) is reported beside wall time because the benchmark machine is shared:
    wall time includes waiting for a core, CPU time does not.

    It runs under a small wrapper process so its peak RSS is its own: a child forked straight from
    this (large) benchmark process would start with our resident pages already counted.
    """
    out = subprocess.run([sys.executable, "-c", _WRAPPER, *cmd], capture_output=True, text=True, check=True).stdout.split()
    if out[0] != "0":
        raise SystemExit(f"command failed ({out[0]}): {' '.join(cmd)}")
    return float(out[1]), int(out[2]) / 1024, float(out[3])  # ru_maxrss is KiB on Linux


def bench_pdf(pages: int, repeat: int) -> None:
    cache = Path(tempfile.gettempdir()) / f"scoutdoc-bench-{pages}p.pdf"
    if not cache.exists():
        start = time.perf_counter()
        make_pdf(cache, pages)
        print(f"generated {cache} ({cache.stat().st_size / 1e6:.1f} MB) in {time.perf_counter() - start:.1f}s")
    data = cache.read_bytes()
    times, cpu = [], []
    for _ in range(repeat):
        start, cpu_start = time.perf_counter(), time.process_time()
        document = read_pdf(cache.name, data)
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - cpu_start)
    assert document.meta["pages"] == pages and len(document.segments) == pages
    median = statistics.median(times)
    print(f"PDF {pages} pages: wall median {median:.2f}s = {pages / median:.0f} pages/s, CPU median {statistics.median(cpu):.2f}s ({document.chars / 1e6:.2f} M chars); wall runs {', '.join(f'{t:.2f}' for t in times)}")
    print(f"  peak RSS of the benchmark process after the PDF runs: {_self_maxrss():.0f} MiB")


def _self_maxrss() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench_code(repo: Path, repeat: int) -> None:
    start, cpu_start = time.perf_counter(), time.process_time()
    result = load_sources([repo])
    packed = pack(result)
    in_process, in_process_cpu = time.perf_counter() - start, time.process_time() - cpu_start
    size = sum((repo / d.source.split("!")[0]).stat().st_size for d in result.documents)
    print(f"codebase {repo}: {len(result.documents)} files, {size / 1e6:.1f} MB selected, {len(result.skipped)} skipped, packed {len(packed) / 1e6:.1f} M chars")
    print(f"  in-process load_sources+pack: wall {in_process:.2f}s = {size / 1e6 / in_process:.1f} MB/s, CPU {in_process_cpu:.2f}s")
    scoutdoc_cmd = [sys.executable, "-c", "from scoutdoc.cli import main; main()", "inspect", "--dump", str(repo)]
    ftp = shutil.which("files-to-prompt") or "files-to-prompt"
    ftp_cmd = [ftp, str(repo), "--ignore", "__pycache__", "--ignore", "*.pyc"]
    runs: dict[str, list[tuple[float, float, float]]] = {"scoutdoc inspect --dump": [], "files-to-prompt": []}
    for _ in range(repeat):
        runs["scoutdoc inspect --dump"].append(run_child(scoutdoc_cmd))
        runs["files-to-prompt"].append(run_child(ftp_cmd))
    for name, samples in runs.items():
        wall = statistics.median(s[0] for s in samples)
        rss = max(s[1] for s in samples)
        cpu = statistics.median(s[2] for s in samples)
        print(f"  {name:24s} wall median {wall:.2f}s = {size / 1e6 / wall:.1f} MB/s, CPU median {cpu:.2f}s, peak RSS {rss:.0f} MiB; wall runs {', '.join(f'{s[0]:.2f}' for s in samples)}")


def main() -> None:
    import transformers

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, default=Path(transformers.__file__).parent, help="directory to pack (default: the installed transformers package)")
    parser.add_argument("--pages", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, load avg {os.getloadavg()[0]:.1f}")
    bench_pdf(args.pages, args.repeat)  # first, so the process's peak RSS is the PDF's own
    bench_code(args.repo.resolve(), args.repeat)


if __name__ == "__main__":
    main()
