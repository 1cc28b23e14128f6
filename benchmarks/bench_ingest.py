"""Ingestion throughput: a generated text PDF (pages/s) and a codebase (MB/s) against files-to-prompt.

Both code packers run as fresh subprocesses writing to /dev/null, so interpreter start-up and imports
count for both, and each child's own peak RSS comes from getrusage in a small wrapper. The same
packing through the library alone (no Typer, pydantic or rich) and both tools on a one-file
directory show how much of the time is fixed start-up rather than reading. The in-process library time of
`load_sources` + `pack` is reported as well. Repetitions are interleaved and the median is reported.

    python benchmarks/bench_ingest.py [--repo DIR] [--pages 1000] [--repeat 3] [--no-git-copy]
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


_LIBRARY_DUMP = "import sys; from scoutdoc.ingest.dump import dump_sources; dump_sources(sys.argv[1:], sys.stdout)"


_STARTUP = ("scoutdoc 1 file", "files-to-prompt 1 file", "python -c pass")


def _scoutdoc_cmd(directory: str) -> list[str]:
    return [sys.executable, "-c", "from scoutdoc.cli import main; main()", "inspect", "--dump", directory]


def bench_code(repo: Path, repeat: int) -> None:
    start, cpu_start = time.perf_counter(), time.process_time()
    result = load_sources([repo])
    packed = pack(result)
    in_process, in_process_cpu = time.perf_counter() - start, time.process_time() - cpu_start
    size = sum((repo / d.source.split("!")[0]).stat().st_size for d in result.documents)
    print(f"codebase {repo}: {len(result.documents)} files, {size / 1e6:.1f} MB selected, {len(result.skipped)} skipped, packed {len(packed) / 1e6:.1f} M chars")
    print(f"  in-process load_sources+pack: wall {in_process:.2f}s = {size / 1e6 / in_process:.1f} MB/s, CPU {in_process_cpu:.2f}s")
    ftp = shutil.which("files-to-prompt") or "files-to-prompt"
    with tempfile.TemporaryDirectory() as empty:
        Path(empty, "a.py").write_text("x = 1\n")
        commands = {
            "scoutdoc inspect --dump": _scoutdoc_cmd(str(repo)),
            "files-to-prompt": [ftp, str(repo), "--ignore", "__pycache__", "--ignore", "*.pyc"],
            # the same packing without the CLI: what Typer (which imports pydantic) and rich cost
            "scoutdoc library only": [sys.executable, "-c", _LIBRARY_DUMP, str(repo)],
            # fixed start-up costs, on a one-file directory
            "scoutdoc 1 file": _scoutdoc_cmd(empty),
            "files-to-prompt 1 file": [ftp, empty],
            "python -c pass": [sys.executable, "-c", "pass"],
        }
        runs: dict[str, list[tuple[float, float, float]]] = {name: [] for name in commands}
        for _ in range(repeat):
            for name, cmd in commands.items():
                runs[name].append(run_child(cmd))
    for name, samples in runs.items():
        wall = statistics.median(s[0] for s in samples)
        rss = max(s[1] for s in samples)
        cpu = statistics.median(s[2] for s in samples)
        rate = "" if name in _STARTUP else f" = {size / 1e6 / wall:.1f} MB/s"
        print(f"  {name:24s} wall median {wall:.2f}s{rate}, CPU median {cpu:.3f}s, peak RSS {rss:.0f} MiB; wall runs {', '.join(f'{s[0]:.2f}' for s in samples)}")


# GitHub's Python .gitignore, abridged: what a real repository carries, and both tools honour it
PYTHON_GITIGNORE = """__pycache__/
*.py[cod]
*$py.class
*.so
.Python
build/
develop-eggs/
dist/
downloads/
eggs/
.eggs/
lib64/
parts/
sdist/
var/
wheels/
*.egg-info/
.installed.cfg
*.egg
MANIFEST
*.manifest
*.spec
pip-log.txt
htmlcov/
.tox/
.coverage
.coverage.*
.cache
nosetests.xml
coverage.xml
*.cover
.hypothesis/
.pytest_cache/
*.mo
*.pot
*.log
local_settings.py
instance/
docs/_build/
target/
.ipynb_checkpoints
.python-version
*.sage.py
.env
.venv
env/
venv/
ENV/
.mypy_cache/
/site
.vscode
.idea
*.swp
.DS_Store
"""


def bench_git_copy(repo: Path, repeat: int) -> None:
    """The same files as a git repository with a typical .gitignore, where ignore matching has work to do."""
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / repo.name
        shutil.copytree(repo, copy, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        (copy / ".gitignore").write_text(PYTHON_GITIGNORE)
        subprocess.run(["git", "init", "-q", str(copy)], check=True)
        ftp = shutil.which("files-to-prompt") or "files-to-prompt"
        commands = {"scoutdoc inspect --dump": _scoutdoc_cmd(str(copy)), "files-to-prompt": [ftp, str(copy)]}
        runs: dict[str, list[tuple[float, float, float]]] = {name: [] for name in commands}
        for _ in range(repeat):
            for name, cmd in commands.items():
                runs[name].append(run_child(cmd))
    print(f"git repository copy of {repo.name} with a {len(PYTHON_GITIGNORE.splitlines())}-line Python .gitignore:")
    for name, samples in runs.items():
        wall = statistics.median(s[0] for s in samples)
        print(f"  {name:24s} wall median {wall:.2f}s, CPU median {statistics.median(s[2] for s in samples):.3f}s, peak RSS {max(s[1] for s in samples):.0f} MiB; wall runs {', '.join(f'{s[0]:.2f}' for s in samples)}")


def main() -> None:
    import transformers

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, default=Path(transformers.__file__).parent, help="directory to pack (default: the installed transformers package)")
    parser.add_argument("--pages", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-git-copy", action="store_true", help="skip the run on a git-repository copy with a .gitignore")
    args = parser.parse_args()
    print(f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, load avg {os.getloadavg()[0]:.1f}")
    bench_pdf(args.pages, args.repeat)  # first, so the process's peak RSS is the PDF's own
    bench_code(args.repo.resolve(), args.repeat)
    if not args.no_git_copy:
        bench_git_copy(args.repo.resolve(), args.repeat)


if __name__ == "__main__":
    main()
