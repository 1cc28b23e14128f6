"""Where scoutdoc keeps its files, and the defaults every command shares.

All paths come from here so tests can point everything at a temporary directory with
`SCOUTDOC_HOME`.
"""

import os
from pathlib import Path

import platformdirs

from .errors import SessionError

DEFAULT_MODEL = "smollm2-135m"


def home() -> Path:
    """The data directory: database, KV snapshots and (unless overridden) the model cache."""
    override = os.environ.get("SCOUTDOC_HOME")
    path = Path(override) if override else Path(platformdirs.user_data_dir("scoutdoc"))
    return _ensure_dir(path, "data directory")


def _ensure_dir(path: Path, what: str) -> Path:
    """`path`, created if missing; SessionError (exit 6) naming it when that is impossible."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        reason = "a file stands in its place" if isinstance(exc, (FileExistsError, NotADirectoryError)) else (exc.strerror or str(exc))
        raise SessionError(
            f"the {what} {path} cannot be created ({reason}); point SCOUTDOC_HOME at a directory you can write to"
        ) from exc
    return path


def models_dir() -> Path:
    """Downloaded model files. `SCOUTDOC_MODELS` lets several homes share one copy of the weights."""
    override = os.environ.get("SCOUTDOC_MODELS")
    if override:
        path = Path(override)
    elif os.environ.get("SCOUTDOC_HOME"):
        path = home() / "models"
    else:
        path = Path(platformdirs.user_cache_dir("scoutdoc")) / "models"
    return _ensure_dir(path, "models directory")


def db_path() -> Path:
    return Path(os.environ.get("SCOUTDOC_DB") or home() / "scoutdoc.db")


def snapshots_dir() -> Path:
    return _ensure_dir(home() / "snapshots", "snapshots directory")


SNAPSHOT_BUDGET_ENV = "SCOUTDOC_SNAPSHOT_BUDGET"
DEFAULT_SNAPSHOT_BUDGET = "4GiB"  # KV snapshots kept on disk, all sessions together; least recently used go first


def snapshot_budget_text() -> str:
    """The snapshot budget as the user wrote it (`SCOUTDOC_SNAPSHOT_BUDGET`), or the default."""
    return os.environ.get(SNAPSHOT_BUDGET_ENV, "").strip() or DEFAULT_SNAPSHOT_BUDGET


SNAPSHOT_DTYPE_ENV = "SCOUTDOC_SNAPSHOT_DTYPE"  # kv (default: the cache's own dtype), bfloat16 or float16
