"""Errors a user can cause, one family per stage.

Each carries a message that says what happened and what to do, and the exit code the CLI uses, so
the CLI can print one line and exit without knowing which stage failed.
"""


class ScoutdocError(Exception):
    exit_code = 1


class UsageError(ScoutdocError):
    exit_code = 2


class IngestError(ScoutdocError):
    """Nothing usable could be read from the sources."""

    exit_code = 3


class ContextTooLongError(ScoutdocError):
    exit_code = 4


class ModelError(ScoutdocError):
    exit_code = 5


class SessionError(ScoutdocError):
    exit_code = 6


class SnapshotError(SessionError):
    """A KV snapshot belongs to another model/tokenizer/dtype, or is truncated or corrupt; recompute instead."""


class EngineError(ScoutdocError):
    """A remote engine could not be reached or answered with an error."""

    exit_code = 7


class MemoryPlanError(ScoutdocError):
    """A run would not fit in the memory budgets; raised before any work starts."""

    exit_code = 8


class BatchError(ScoutdocError):
    """A batch answered no document: each failed (the reasons are in its results file)."""

    exit_code = 9


INTERRUPTED_EXIT_CODE = 130
