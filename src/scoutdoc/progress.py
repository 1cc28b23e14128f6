"""The progress callback every long-running stage accepts; the CLI draws it with rich."""

from typing import Protocol


class Progress(Protocol):
    def __call__(self, done: int, total: int, unit: str) -> None: ...
