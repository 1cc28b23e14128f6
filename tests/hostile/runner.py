"""Running the real `scoutdoc` console script on one hostile case under a time and memory budget.

Each case is a fresh process, so its peak RSS is its own: `os.wait4` returns the child's
resource usage (ru_maxrss, the kernel's exact high-water mark, not a sampled figure). The kernel
carries that mark across exec, so a child forked straight from pytest would start at pytest's own
RSS (over a gigabyte once the model tests have run); a small launcher process forks the case
instead and reports its figure. A case that runs past its time budget is killed, launcher and
case together, and reported as such. Every run is kept in `RUNS` so the
suite can print (and, with SCOUTDOC_HOSTILE_REPORT=path, write) the figures table for docs/.
"""

import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

SCOUTDOC = Path(sys.executable).parent / "scoutdoc"
RSS_BUDGET_MB = 600
TIME_BUDGET_S = 60
_LAUNCH = """
import os, sys
pid = os.fork()
if pid == 0:
    os.execv(sys.argv[2], sys.argv[2:])
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as f:
    f.write(str(usage.ru_maxrss))
sys.exit(os.waitstatus_to_exitcode(status) % 256)
"""


@dataclass
class Run:
    case: str
    args: list[str]
    rc: int
    stdout: bytes
    stderr: bytes
    seconds: float
    peak_rss_mb: float
    timed_out: bool

    @property
    def err(self) -> str:
        return self.stderr.decode("utf-8", "replace")

    @property
    def out(self) -> str:
        return self.stdout.decode("utf-8", "replace")

    def within_budget(self) -> None:
        """The budget every hostile case must hold, with the output in the message when it does not."""
        assert not self.timed_out, f"{self.case}: still running after {TIME_BUDGET_S}s"
        assert self.peak_rss_mb < RSS_BUDGET_MB, f"{self.case}: peak RSS {self.peak_rss_mb:.0f} MB"
        assert "internal error" not in self.err and "Traceback" not in self.err, f"{self.case}: {self.err[-2000:]}"


RUNS: list[Run] = []


def env_for(home: Path, **extra: str) -> dict[str, str]:
    env = {**os.environ, "SCOUTDOC_HOME": str(home), "NO_COLOR": "1", "COLUMNS": "200", **extra}
    for name in ("SCOUTDOC_DB", "SCOUTDOC_API_KEY"):
        env.pop(name, None)
    return env


def run_cli(case: str, args: list[str], env: dict[str, str], cwd: Path | None = None, timeout: float = TIME_BUDGET_S) -> Run:
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, tempfile.TemporaryDirectory() as tmp:
        maxrss = Path(tmp) / "maxrss"
        started = time.monotonic()
        proc = subprocess.Popen(
            [sys.executable, "-c", _LAUNCH, str(maxrss), str(SCOUTDOC), *args],
            stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env, cwd=cwd, start_new_session=True,
        )
        try:
            proc.wait(timeout=timeout)
            timed_out = False
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            timed_out = True
        seconds = time.monotonic() - started
        peak_kib = int(maxrss.read_text()) if maxrss.exists() and maxrss.read_text() else 0
        out.seek(0)
        err.seek(0)
        run = Run(case, args, proc.returncode, out.read(), err.read(), seconds, peak_kib / 1024, timed_out)
    RUNS.append(run)
    return run


def figures_table(runs: list[Run]) -> str:
    """The markdown table for docs/hostile.md."""
    worst = max(runs, key=lambda r: r.peak_rss_mb)
    longest = max(runs, key=lambda r: r.seconds)
    passed = sum(1 for r in runs if not r.timed_out and r.peak_rss_mb < RSS_BUDGET_MB)
    lines = [
        "| figure | value |", "| --- | --- |",
        f"| CLI runs (each one hostile case in a fresh process) | {len(runs)} |",
        f"| within the budget ({RSS_BUDGET_MB} MB peak RSS, {TIME_BUDGET_S} s) | {passed} |",
        f"| peak RSS of the worst case | {worst.peak_rss_mb:.0f} MB ({worst.case}) |",
        f"| longest case | {longest.seconds:.1f} s ({longest.case}) |",
        "", "| case | exit | seconds | peak RSS MB |", "| --- | ---: | ---: | ---: |",
    ]
    lines += [f"| {r.case} | {r.rc} | {r.seconds:.2f} | {r.peak_rss_mb:.0f} |" for r in sorted(runs, key=lambda r: r.case)]
    return "\n".join(lines) + "\n"
