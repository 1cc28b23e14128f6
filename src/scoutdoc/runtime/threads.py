"""How many CPU threads to compute with: the cores this process may use that other work leaves free.

PyTorch starts one thread per physical core. On a machine where other processes already keep some
cores busy, those extra threads do not add compute: they queue behind the other work, and every
one of the hundreds of small operations in a decode step waits for its slowest thread (OpenMP
threads spin, then sleep, between operations). Measured on a 2-core machine shared with other
jobs (load average ~12), one thread answered a benchmark question in ~20 s where two took minutes.

So before each prompt the engine picks `choose(ceiling)`: the CPUs in this process's affinity mask
(`os.sched_getaffinity`, which containers and `taskset` narrow) less the share other processes used
over a short sample of `/proc/stat`, never more than `ceiling` (the count torch had when the engine
started, so a caller's `torch.set_num_threads` still holds). `SCOUTDOC_THREADS` overrides it.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

SAMPLE_S = 0.1


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def _cpu_times(cpus: set[int]) -> tuple[int, int]:
    """(busy, total) jiffies summed over `cpus`, from /proc/stat."""
    busy = total = 0
    for line in Path("/proc/stat").read_text().splitlines():
        name, *fields = line.split()
        if not name.startswith("cpu") or name == "cpu" or int(name[3:]) not in cpus:
            continue
        values = [int(v) for v in fields[:8]]
        idle = values[3] + values[4]  # idle + iowait
        total += sum(values)
        busy += sum(values) - idle
    return busy, total


def busy_cores(sample_s: float = SAMPLE_S) -> float:
    """How many of this process's CPUs other work kept busy over the last `sample_s` seconds (0 when
    /proc/stat cannot be read). Called while this process is idle, so the busy time is others'."""
    try:
        cpus = os.sched_getaffinity(0)
        busy0, total0 = _cpu_times(cpus)
        time.sleep(sample_s)
        busy1, total1 = _cpu_times(cpus)
    except (AttributeError, OSError, ValueError):
        return 0.0
    if total1 <= total0:
        return 0.0
    return len(cpus) * (busy1 - busy0) / (total1 - total0)


def free_cores(sample_s: float = SAMPLE_S) -> int:
    """The usable cores other work leaves free (at least one)."""
    cores = usable_cores()
    return max(1, min(cores, int(cores - busy_cores(sample_s) + 0.5)))


def choose(ceiling: int) -> int:
    """Threads for the next prompt: SCOUTDOC_THREADS when set, else `free_cores()` up to `ceiling`."""
    override = os.environ.get("SCOUTDOC_THREADS", "").strip()
    if override.isdigit() and int(override) > 0:
        return int(override)
    return max(1, min(ceiling, free_cores()))
