"""`scoutdoc inspect --dump`: the packed text of some sources, written without holding it all.

The directory tree comes first in the packed text but is only known once every file has been read,
so each packed document is parked in a temporary file as soon as it is read and the file is copied
out after the tree. Peak memory then follows the largest file rather than the whole codebase (a
53 MB package needed over 100 MiB when every document was kept until the end).
"""

import os
import shutil
import tempfile
from collections.abc import Iterable
from typing import TextIO

from ..progress import Progress
from . import load_sources
from .document import Document, IngestResult
from .options import IngestOptions
from .pack import pack_document, tree_block, write_pack

_COPY_CHUNK = 1 << 20


class SpilledPack:
    """`load` reads sources like load_sources while parking their packed text; `write` emits it all.

    Loading and writing are separate steps so a caller can show a progress bar while loading and
    write to stdout only once the bar is gone. The result of `load` has every document's segments
    dropped (source, kind, hash and meta stay): enough to report skips and warnings.
    """

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.buffer = getattr(stream, "buffer", None)
        if os.linesep != "\n":  # the text layer translates newlines there: go through it
            self.buffer = None
        self.encoding, self.errors = stream.encoding or "utf-8", stream.errors or "strict"
        self.spill = tempfile.TemporaryFile() if self.buffer is not None else None

    def __enter__(self) -> "SpilledPack":
        return self

    def __exit__(self, *exc: object) -> None:
        if self.spill is not None:
            self.spill.close()

    def load(self, paths: Iterable[str | os.PathLike], options: IngestOptions | None = None, progress: Progress | None = None) -> IngestResult:
        if self.spill is None:  # no byte layer to copy into: keep the documents and pack them at the end
            return load_sources(paths, options, progress)
        return load_sources(paths, options, progress, on_document=self._park)

    def _park(self, document: Document) -> Document:
        text = pack_document(document)
        self.spill.write((f"\n\n{text}" if self.spill.tell() else text).encode(self.encoding, self.errors))
        document.segments = []  # a fresh document nobody else holds yet: dropping its text frees it
        return document

    def write(self, result: IngestResult) -> None:
        """Write `pack()` of the loaded sources, byte for byte, given the result `load` returned."""
        if self.spill is None:
            write_pack(result, self.stream)
            return
        parked = self.spill.tell()
        self.stream.flush()
        if result.tree:
            self.buffer.write(f"{tree_block(result.tree)}{chr(10) * 2 if parked else ''}".encode(self.encoding, self.errors))
        if result.tree or parked:
            self.spill.seek(0)
            shutil.copyfileobj(self.spill, self.buffer, _COPY_CHUNK)
            self.buffer.write("\n".encode(self.encoding, self.errors))
        self.buffer.flush()


def dump_sources(paths: Iterable[str | os.PathLike], stream: TextIO, options: IngestOptions | None = None, progress: Progress | None = None) -> IngestResult:
    """Write `pack(load_sources(paths, options))` to `stream`; the result as `SpilledPack.load` gives it."""
    with SpilledPack(stream) as spilled:
        result = spilled.load(paths, options, progress)
        spilled.write(result)
    return result
