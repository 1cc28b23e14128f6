"""How many CPU threads to compute with: the cores other processes leave free, prompts and decode alike.

PyTorch starts one thread per core of the machine, but containers, cgroups and `taskset` often
give a process fewer (`os.sched_getaffinity`); threads beyond those only queue behind each other.
On a machine where another process keeps a core busy, a thread sharing that core is descheduled
for whole time slices while the others wait for it at every operation: on a 2-core machine with
one core spun by another process, two threads decoded under 3 tokens/s, and a 7,443-token prompt
took 31 s to its first token where one thread took 9.6 (docs/benchmarks.md). `LoadWatch` measures what other processes used since its last
look (the machine's busy time less this process's own, no sleeping) and `threads` gives the cores
they left free, never more than `ceiling` (the count torch had when the engine started, so a
caller's `torch.set_num_threads` still holds). The embedded engine asks `PROCESS_WATCH`, started
when `scoutdoc.runtime` is imported, before loading the model (so that importing torch is its first
look), before every prompt piece and every few decode steps (loading on the free cores too took
that `ask` from 17.8 to 14.3 s).

The price is reproducibility under load: a bfloat16 prompt's matrix products sum in an order that
depends on the thread count (oneDNN splits some shapes by thread), so a prompt read on a busy
machine can give a near-tie token the other way than on an idle one. Answers were not reproducible
bit for bit across processes anyway (README: MKL's single-row products), and a first answer that
takes minutes is worse. A decode step's sums are each made by one thread at any count
(tests/runtime/test_threads.py holds this bit for bit). `SCOUTDOC_THREADS` fixes the count for
prompts and decode alike.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

MIN_WINDOW_S = 0.05  # shorter looks are a few clock ticks of /proc/stat: too coarse to judge the load
# Others' use of a core beyond which it counts as taken. A process spinning on one core of two gets only 1/2-2/3 of it while
# two decode threads compete with it, and two threads then decode at 3 tok/s against 44 with one.
BUSY_SHARE = 0.3


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def _override() -> int | None:
    value = os.environ.get("SCOUTDOC_THREADS", "").strip()
    return int(value) if value.isdigit() and int(value) > 0 else None


def _busy_seconds(cpus: set[int]) -> float | None:
    """CPU-seconds all processes spent busy on `cpus` since boot (None without /proc/stat)."""
    if not cpus:
        return None
    busy = 0
    try:
        for line in Path("/proc/stat").read_text().splitlines():
            name, *fields = line.split()
            if name.startswith("cpu") and name != "cpu" and int(name[3:]) in cpus:
                values = [int(v) for v in fields[:8]]
                busy += sum(values) - values[3] - values[4]  # less idle and iowait
    except (OSError, ValueError, IndexError):
        return None
    return busy / os.sysconf("SC_CLK_TCK")


def _own_seconds() -> float:
    t = os.times()
    return t.user + t.system


class LoadWatch:
    """Cores that other processes kept busy between two looks, from /proc/stat and this process's
    own CPU time: nothing sleeps, so a look costs microseconds and can be taken while working."""

    def __init__(self) -> None:
        try:
            self.cpus = os.sched_getaffinity(0)
        except (AttributeError, OSError):
            self.cpus = set()
        self._mark = self._sample()
        self.free = len(self.cpus) or usable_cores()

    def _sample(self) -> tuple[float, float | None, float]:
        return time.monotonic(), _busy_seconds(self.cpus), _own_seconds()

    def free_cores(self) -> int:
        """The usable cores others left free since the last look (at least one); the previous
        answer when too little time has passed to tell."""
        now = self._sample()
        (t0, busy0, own0), (t1, busy1, own1) = self._mark, now
        if busy0 is None or busy1 is None:
            return self.free
        if t1 - t0 >= MIN_WINDOW_S:
            others = max(0.0, (busy1 - busy0) - (own1 - own0)) / (t1 - t0)
            taken = math.ceil(others - BUSY_SHARE) if others > BUSY_SHARE else 0
            self.free = max(1, len(self.cpus) - taken)
            self._mark = now
        return self.free

    def threads(self, ceiling: int) -> int:
        """Threads for the next prompt piece or decode steps: SCOUTDOC_THREADS, else the free cores
        up to `ceiling`."""
        return _override() or max(1, min(ceiling, self.free_cores()))


PROCESS_WATCH = LoadWatch()  # this process's view of others' load, from the runtime's import on
