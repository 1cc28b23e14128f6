"""Keeping KV snapshots within a disk budget: least recently used first out, and `sessions prune`.

A snapshot saves a follow-up from recomputing its documents, but costs tens of KB per token (373 MB
for an 8k-token repository in float32), and every session and batch document used to keep one
forever. The budget (`SCOUTDOC_SNAPSHOT_BUDGET`, default 4 GiB) bounds all of them together: after
each new snapshot the least recently used ones are deleted until the rest fit. A session's last use
is its last turn (`sessions.updated_at`), which is also when its snapshot was last read or written.
A pruned session still works; its next follow-up recomputes the documents once.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from .settings import SNAPSHOT_BUDGET_ENV, snapshot_budget_text, snapshots_dir
from .store import Store, remove_snapshot_file, snapshot_file
from .units import parse_size

ORPHAN_AGE_S = 600  # an unrecorded file younger than this may be a snapshot another process is saving


@dataclass
class Pruned:
    removed: list[str] = field(default_factory=list)  # recorded paths of the snapshots deleted
    freed: int = 0  # bytes, orphan files included
    kept: int = 0  # snapshots left
    kept_bytes: int = 0
    orphans: int = 0  # files in the snapshot directory no session referred to


def snapshot_budget() -> int:
    """Bytes all snapshots together may take, from SCOUTDOC_SNAPSHOT_BUDGET (e.g. 2GiB, 500M, 0)."""
    return parse_size(snapshot_budget_text(), option=SNAPSHOT_BUDGET_ENV)


def _file_size(recorded: str) -> int:
    try:
        return snapshot_file(recorded).stat().st_size
    except OSError:
        return 0


def prune_snapshots(store: Store, budget: int, protect: str | None = None, orphans: bool = False) -> Pruned:
    """Delete the least recently used snapshots until the rest fit in `budget` bytes.

    `protect` (a recorded path, the snapshot just written) is kept unless it alone is over the budget.
    With `orphans`, snapshot files no record refers to (left by a crash) are deleted too.
    """
    result = Pruned()
    rows = store.snapshots_by_use()
    rows.sort(key=lambda r: r["path"] != protect)  # stable: the protected one first, then by use
    total = 0
    doomed: list[int] = []
    for row in rows:
        size = row["bytes"] or _file_size(row["path"])
        if total + size <= budget:
            total += size
            result.kept += 1
        else:
            doomed.append(row["id"])
            result.freed += size
    result.kept_bytes = total
    result.removed = store.delete_snapshot_records(doomed)
    for path in result.removed:
        remove_snapshot_file(path)
    if orphans:
        _remove_orphans(store, result)
    return result


def _remove_orphans(store: Store, result: Pruned) -> None:
    recorded = {snapshot_file(r["path"]).resolve() for r in store.snapshots_by_use()}
    cutoff = time.time() - ORPHAN_AGE_S
    for path in snapshots_dir().iterdir():
        try:
            info = path.stat()
        except OSError:
            continue
        if not path.is_file() or path.resolve() in recorded or info.st_mtime > cutoff:
            continue
        path.unlink(missing_ok=True)
        result.orphans += 1
        result.freed += info.st_size
