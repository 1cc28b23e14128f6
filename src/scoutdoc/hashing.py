"""The sha256 of a file, read in 1 MiB blocks: model downloads are checked with it, and sessions
notice a changed source file with it."""

import hashlib
import stat
from pathlib import Path

from .progress import Progress


def sha256_file(path: Path | str, progress: Progress | None = None) -> str:
    """The hex digest of the file at `path`, reporting bytes read to `progress` if given. OSError
    when it is not a regular file: opening a pipe waits for a writer, and /dev/zero never ends (a
    session's source replaced by one hung every follow-up)."""
    h = hashlib.sha256()
    path = Path(path)
    info = path.stat()
    if not stat.S_ISREG(info.st_mode):
        raise OSError(f"{path} is not a regular file")
    total, done = info.st_size, 0
    with path.open("rb") as fh:
        while block := fh.read(1 << 20):
            h.update(block)
            done += len(block)
            if progress:
                progress(done, total, "B")
    return h.hexdigest()
