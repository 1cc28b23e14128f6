"""How many CPU threads to compute with: the cores this process may use, never a count that moves with load.

PyTorch starts one thread per core of the machine, but containers, cgroups and `taskset` often
give a process fewer (`os.sched_getaffinity`); threads beyond those only queue behind each other,
and every one of the hundreds of small operations in a decode step waits for its slowest thread.
So before each prompt the engine uses `choose(ceiling)`: the CPUs in this process's affinity mask,
never more than `ceiling` (the count torch had when the engine started, so a caller's
`torch.set_num_threads` still holds). `SCOUTDOC_THREADS` overrides it.

The count deliberately ignores how busy the cores are right now. A count sampled from the load
(tried: other processes' share of `/proc/stat`) changes the order of floating-point sums with the
machine's load, so the same question got a different greedy answer on a busy machine, and a
follow-up from a KV snapshot stopped matching a full recompute. On a machine shared with other
work, `SCOUTDOC_THREADS=1` is the lever.
"""

from __future__ import annotations

import os


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def choose(ceiling: int) -> int:
    """Threads for the next prompt: SCOUTDOC_THREADS when set, else the usable cores up to `ceiling`."""
    override = os.environ.get("SCOUTDOC_THREADS", "").strip()
    if override.isdigit() and int(override) > 0:
        return int(override)
    return max(1, min(ceiling, usable_cores()))
