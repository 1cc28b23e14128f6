"""Reading a GGUF file's header: its key/value metadata and its tensor table, without the tensor data.

Weights (`weights.py`), the tokenizer (its vocabulary lives in the metadata) and the model catalog
(`scoutdoc models info`) all start from this header. `gguf.GGUFReader` builds a numpy view per
metadata array element, which takes seconds and ~200 MB of Python objects for a vocabulary of
50k-200k strings; this plain `struct` reader takes a fraction of that.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ModelError
from .config import ModelConfig, from_gguf_metadata

_SCALARS = {t: struct.Struct(fmt) for t, fmt in
            {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}.items()}
_GGUF_STRING, _GGUF_ARRAY = 8, 9


@dataclass(frozen=True)
class GGUFTensorInfo:
    name: str
    shape: tuple[int, ...]  # GGUF order: fastest-varying dimension first
    type: int  # ggml type id
    offset: int


def read_gguf_metadata(path: Path | str, *, tensors: bool = False) -> dict[str, Any]:
    """A GGUF file's key/value metadata as Python values, reading only the header. With `tensors=True`
    the result also has `"__tensors__"`: the tensor table (names, shapes, types) without any data,
    and `"__data_offset__"`: where the tensor data starts (the header's end, aligned).
    """
    path = Path(path)
    try:
        with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as view:
            fields, end = _parse_gguf_header(view, tensors)
            if tensors:
                alignment = int(fields.get("general.alignment", 32))
                fields["__data_offset__"] = -(-end // alignment) * alignment
            return fields
    except (OSError, struct.error, UnicodeDecodeError, ValueError) as exc:
        raise ModelError(f"cannot read GGUF file {path} ({exc}); it is truncated or damaged, download it again") from exc


MAX_ARRAY_DEPTH = 8  # arrays of arrays; the format's own keys nest at most one level
_U32, _U64 = struct.Struct("<I"), struct.Struct("<Q")


def _parse_gguf_header(view: mmap.mmap, tensors: bool) -> tuple[dict[str, Any], int]:
    """The fields and where the header ends. The file is read through a memory map with one offset:
    separate reads of a buffered file took 0.08 s for the default model's 98k vocabulary strings and
    merges (0.05 s now), and every `ask` reads the header twice. Lengths and counts are checked against the bytes left in the file before
    anything is allocated, and nesting is bounded: a header claiming a 1 TiB string or 100,000
    nested arrays is damage, not a MemoryError or a RecursionError."""
    size = len(view)
    pos = 0

    def read(unpacker: struct.Struct):
        nonlocal pos
        if pos + unpacker.size > size:
            raise ValueError("unexpected end of file")
        (value,) = unpacker.unpack_from(view, pos)
        pos += unpacker.size
        return value

    def take(n: int) -> bytes:
        nonlocal pos
        if n > size - pos:
            raise ValueError("a length in the header runs past the end of the file")
        pos += n
        return view[pos - n : pos]

    def read_str() -> str:
        return take(read(_U64)).decode("utf-8", errors="surrogateescape")

    def read_value(vtype: int, depth: int = 0):
        if vtype == _GGUF_STRING:
            return read_str()
        if vtype == _GGUF_ARRAY:
            if depth >= MAX_ARRAY_DEPTH:
                raise ValueError(f"arrays nested more than {MAX_ARRAY_DEPTH} deep")
            etype, count = read(_U32), read(_U64)
            if etype in _SCALARS and etype != 7:
                dtype = np.dtype(_SCALARS[etype].format)
                return np.frombuffer(take(dtype.itemsize * count), dtype=dtype).tolist()
            if count > size - pos:  # every element takes at least one byte
                raise ValueError("an array in the header runs past the end of the file")
            if etype == _GGUF_STRING:  # a vocabulary: the one long array, read without a call per element
                return [read_str() for _ in range(count)]
            return [read_value(etype, depth + 1) for _ in range(count)]
        if vtype not in _SCALARS:
            raise ValueError(f"unknown metadata type {vtype}")
        return read(_SCALARS[vtype])

    if take(4) != b"GGUF":
        raise ValueError("not a GGUF file (bad magic)")
    version = read(_U32)
    if version < 2:
        raise ValueError(f"GGUF version {version} is too old")
    n_tensors, n_kv = read(_U64), read(_U64)
    fields: dict[str, Any] = {}
    for _ in range(n_kv):
        key = read_str()
        fields[key] = read_value(read(_U32))
    if tensors:
        table = []
        for _ in range(n_tensors):
            name = read_str()
            n_dims = read(_U32)
            shape = tuple(read(_U64) for _ in range(n_dims))
            table.append(GGUFTensorInfo(name=name, shape=shape, type=read(_U32), offset=read(_U64)))
        fields["__tensors__"] = table
    return fields, pos


def gguf_config(fields: dict[str, Any], tensors: list[GGUFTensorInfo]) -> ModelConfig:
    """The model config a GGUF header describes; a file without an `output.weight` ties its LM head to
    the token embeddings."""
    config = from_gguf_metadata(fields)
    config.tie_word_embeddings = not any(t.name == "output.weight" for t in tensors)
    return config
