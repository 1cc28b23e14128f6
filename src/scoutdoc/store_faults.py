"""Storage faults of the session database as one SessionError each: the path, what happened, what to do.

SQLite and the file system report a damaged file, a full disk, a missing directory or a foreign
database as assorted sqlite3 and OS errors deep inside any query; `guarded` wraps every public
`Store` method so the user sees exit code 6 and one line instead of an internal error.
"""

import errno
import functools
import sqlite3
from pathlib import Path

from .errors import SessionError


def storage_error(path: Path, exc: BaseException) -> SessionError:
    """What went wrong with the database file at `path`, and what the user can do, as one SessionError.

    The advice never tells anyone to delete or move their database: a damaged one may still hold
    sessions worth recovering, so recovery comes first and --db (another file) is the way around.
    """
    text = str(exc)
    low = text.lower()
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT) or "disk is full" in low:
        advice = "the disk holding it is full; free some space and run the command again (the database itself is fine)"
    elif isinstance(exc, (NotADirectoryError, FileExistsError)) or (isinstance(exc, OSError) and exc.errno == errno.ENOTDIR):
        advice = "a file stands where a directory should be; point SCOUTDOC_HOME or --db at a directory you can write to"
    elif isinstance(exc, PermissionError) or "readonly" in low or "read-only" in low or "permission" in low:
        advice = "it cannot be written here; check the permissions, or pass --db with a path you can write to"
    elif "not a database" in low or "malformed" in low or "corrupt" in low:
        advice = (f"it is damaged or not an SQLite file; keep a copy, try `sqlite3 {path} .recover`, "
                  "or pass --db with another path to start a new one")
    elif "unable to open" in low or isinstance(exc, OSError):
        advice = "its directory cannot be created or opened; check the path, or pass --db with another one"
    else:
        advice = "pass --db with another path, or run with --debug for details"
    return SessionError(f"session database {path}: {text}; {advice}")


def no_room_for_wal_index(exc: BaseException) -> bool:
    """SQLite could not size the WAL index file (`<db>-shm`), as on a full disk: every read fails so,
    while a connection in exclusive locking mode (index in memory) still reads. Python 3.10 has no
    error names; there any disk I/O error gets that one retry, which reports its own error if it fails."""
    name = getattr(exc, "sqlite_errorname", None)
    return name == "SQLITE_IOERR_SHMSIZE" or (name is None and "disk i/o error" in str(exc).lower())


def guarded(method):
    """Store methods raise SessionError (exit 6, with the path and advice) for any storage fault."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except (sqlite3.IntegrityError, sqlite3.ProgrammingError):
            raise  # our own mistakes, not the file's
        except (sqlite3.DatabaseError, OSError) as exc:
            raise storage_error(self.path, exc) from exc

    return wrapper


def escape_like(text: str) -> str:
    """`text` as a literal LIKE prefix (with ESCAPE '\\'): '%' and '_' in a session id are not wildcards."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
