"""Reading a GGUF file's header: its key/value metadata and its tensor table, without the tensor data.

Weights (`weights.py`), the tokenizer (its vocabulary lives in the metadata) and the model catalog
(`scoutdoc models info`) all start from this header. `gguf.GGUFReader` builds a numpy view per
metadata array element, which takes seconds and ~200 MB of Python objects for a vocabulary of
50k-200k strings; this plain `struct` reader takes a fraction of that.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ModelError
from .config import ModelConfig, from_gguf_metadata

_GGUF_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
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
        with open(path, "rb", buffering=1 << 20) as fh:
            fields = _parse_gguf_header(fh, tensors)
            if tensors:
                alignment = int(fields.get("general.alignment", 32))
                fields["__data_offset__"] = -(-fh.tell() // alignment) * alignment
            return fields
    except (OSError, struct.error, UnicodeDecodeError, ValueError) as exc:
        raise ModelError(f"cannot read GGUF file {path} ({exc}); it is truncated or damaged, download it again") from exc


MAX_ARRAY_DEPTH = 8  # arrays of arrays; the format's own keys nest at most one level


def _parse_gguf_header(buf, tensors: bool) -> dict[str, Any]:
    """Lengths and counts are checked against the bytes left in the file before anything is
    allocated, and nesting is bounded: a header claiming a 1 TiB string or 100,000 nested arrays is
    damage, not a MemoryError or a RecursionError."""
    size = os.fstat(buf.fileno()).st_size

    def take(n: int) -> bytes:
        if n > size - buf.tell():
            raise ValueError("a length in the header runs past the end of the file")
        return buf.read(n)

    def read(fmt: str):
        size = struct.calcsize(fmt)
        data = buf.read(size)
        if len(data) != size:
            raise ValueError("unexpected end of file")
        return struct.unpack(fmt, data)[0]

    def read_str() -> str:
        n = read("<Q")
        data = take(n)
        if len(data) != n:
            raise ValueError("unexpected end of file")
        return data.decode("utf-8", errors="surrogateescape")

    def read_value(vtype: int, depth: int = 0):
        if vtype == _GGUF_STRING:
            return read_str()
        if vtype == _GGUF_ARRAY:
            if depth >= MAX_ARRAY_DEPTH:
                raise ValueError(f"arrays nested more than {MAX_ARRAY_DEPTH} deep")
            etype, count = read("<I"), read("<Q")
            if etype in _GGUF_SCALARS and etype != 7:
                fmt = _GGUF_SCALARS[etype]
                width = struct.calcsize(fmt)
                data = take(width * count)
                if len(data) != width * count:
                    raise ValueError("unexpected end of file")
                return np.frombuffer(data, dtype=np.dtype(fmt)).tolist()
            if count > size - buf.tell():  # every element takes at least one byte
                raise ValueError("an array in the header runs past the end of the file")
            return [read_value(etype, depth + 1) for _ in range(count)]
        if vtype not in _GGUF_SCALARS:
            raise ValueError(f"unknown metadata type {vtype}")
        return read(_GGUF_SCALARS[vtype])

    if buf.read(4) != b"GGUF":
        raise ValueError("not a GGUF file (bad magic)")
    version = read("<I")
    if version < 2:
        raise ValueError(f"GGUF version {version} is too old")
    n_tensors, n_kv = read("<Q"), read("<Q")
    fields: dict[str, Any] = {}
    for _ in range(n_kv):
        key = read_str()
        fields[key] = read_value(read("<I"))
    if tensors:
        table = []
        for _ in range(n_tensors):
            name = read_str()
            n_dims = read("<I")
            shape = tuple(read("<Q") for _ in range(n_dims))
            table.append(GGUFTensorInfo(name=name, shape=shape, type=read("<I"), offset=read("<Q")))
        fields["__tensors__"] = table
    return fields


def gguf_config(fields: dict[str, Any], tensors: list[GGUFTensorInfo]) -> ModelConfig:
    """The model config a GGUF header describes; a file without an `output.weight` ties its LM head to
    the token embeddings."""
    config = from_gguf_metadata(fields)
    config.tie_word_embeddings = not any(t.name == "output.weight" for t in tensors)
    return config
