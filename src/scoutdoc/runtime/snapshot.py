"""KV snapshots of a token prefix: save once, continue later in another process.

The file is a valid safetensors file (readable with `safetensors.safe_open`), written by hand so a
cache larger than RAM can be streamed tier by tier instead of collected in memory first:

* ``token_ids`` (I64), then per global layer ``global.{i}.k`` / ``.v`` [length, Hkv, d] and per
  chunked layer ``local.{i}.k`` / ``.v`` [tokens of the current chunk, Hkv, d], in the KV dtype;
* ``__metadata__``: format tag, the caller's fingerprint (model, tokenizer, dtype...), the cache
  layout, and a sha256 of the header (with that field zeroed) followed by the payload, filled in
  after the payload, in place: the header keeps its length. An edited header is caught like a
  flipped payload byte; with ``verify=False`` the header's structure is still validated.

It is written to a temporary file in the same directory, fsynced, then renamed, so a crash
never leaves a half-written snapshot under the real name; the temporary files of killed runs
(`.<name>.<pid>.tmp` whose process is gone) are removed by the next save in that directory. Truncation is caught from the file size
alone; corruption by the checksum (one sequential read, skippable with ``verify=False``). Loading
reads one tensor at a time straight into a buffer that is copied into the cache, unless tokens go
beyond the host budget: then the file is mapped (`torch.from_file`) and those tokens stay in it
as the cache's disk tier.
"""

import hashlib
import json
import os
import struct
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from ..errors import SnapshotError, UsageError
from ..settings import SNAPSHOT_DTYPE_ENV
from .config import ModelConfig
from .heap import release_freed_heap
from .kvcache import CacheOptions, HybridCache

FORMAT = "scoutdoc-kv/2"  # 2: the checksum covers the header
_ZERO_SHA = "0" * 64
_MAX_HEADER = 64 * 1024 * 1024  # a header for thousands of layers is a few hundred KB
_ST_DTYPES = {
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.float8_e4m3fn: "F8_E4M3",
    torch.float8_e5m2: "F8_E5M2",
    torch.int64: "I64",
}
_TORCH_DTYPES = {v: k for k, v in _ST_DTYPES.items()}
_PIECE_TOKENS = 16384  # device tensors are copied to the host this many tokens at a time


def store_dtype_setting() -> torch.dtype | None:
    """The dtype snapshots are written in, from SCOUTDOC_SNAPSHOT_DTYPE; None: the KV cache's own.

    The default keeps follow-ups exact: a model run in bfloat16 or float16 already has a 16-bit
    cache and so 16-bit snapshots, and a float32 run keeps float32 ones. `bfloat16` or `float16`
    halves a float32 run's snapshots, and its follow-ups then differ from a recompute by that rounding.
    """
    name = os.environ.get(SNAPSHOT_DTYPE_ENV, "").strip().lower()
    if name in ("", "kv"):
        return None
    if name not in ("bfloat16", "float16"):
        raise UsageError(f"{SNAPSHOT_DTYPE_ENV}={name!r}: use kv (the cache's own dtype), bfloat16 or float16")
    return getattr(torch, name)


def layout_of(config: ModelConfig, kv_dtype: torch.dtype) -> dict[str, Any]:
    """What the stored tensors mean; a snapshot only fits a cache with the same layout."""
    return {
        "num_layers": config.num_layers,
        "global_layers": [i for i in range(config.num_layers) if not config.layer_is_chunked(i)],
        "attention_chunk_size": config.attention_chunk_size,
        "num_kv_heads": config.num_kv_heads,
        "head_dim": config.head_dim,
        "kv_dtype": str(kv_dtype).removeprefix("torch."),
    }


def _pieces(tensor: torch.Tensor):
    for s in range(0, tensor.shape[0], _PIECE_TOKENS):
        yield tensor[s : s + _PIECE_TOKENS]


def save_snapshot(
    cache: HybridCache, token_ids: list[int], fingerprint: dict[str, Any], path: Path | str,
    store_dtype: torch.dtype | None = None,
) -> int:
    """Write the cache's KV for `token_ids` (its whole length) to `path`; returns the file size in bytes.

    `store_dtype` (a 16-bit float) writes a float32 cache at half the size; loading casts it back, so
    a follow-up then differs from a recompute by that rounding. None keeps the cache's own dtype.
    """
    if len(token_ids) != cache.length:
        raise ValueError(f"snapshot of {cache.length} cached tokens given {len(token_ids)} token ids")
    path = Path(path)
    config, n = cache.config, cache.length
    kv = store_dtype if store_dtype is not None and cache.kv_dtype.itemsize > store_dtype.itemsize else cache.kv_dtype
    shape_tail = [config.num_kv_heads, config.head_dim]
    ids = torch.tensor(token_ids, dtype=torch.int64)
    entries: list[tuple[str, torch.dtype, list[int], list]] = [("token_ids", torch.int64, [n], [ids])]
    for layer in cache.global_layers:
        pieces = list(cache.global_pieces(layer))
        entries.append((f"global.{layer}.k", kv, [n, *shape_tail], [p[0] for p in pieces]))
        entries.append((f"global.{layer}.v", kv, [n, *shape_tail], [p[1] for p in pieces]))
    for layer in cache.local_layers:
        k, v = cache.local_pieces(layer)
        entries.append((f"local.{layer}.k", kv, [k.shape[0], *shape_tail], [k]))
        entries.append((f"local.{layer}.v", kv, [v.shape[0], *shape_tail], [v]))

    header: dict[str, Any] = {}
    offset = 0
    for name, dtype, shape, _ in entries:
        size = dtype.itemsize
        for dim in shape:
            size *= dim
        header[name] = {"dtype": _ST_DTYPES[dtype], "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    metadata = {
        "format": FORMAT,
        "fingerprint": json.dumps(fingerprint, sort_keys=True),
        "layout": json.dumps(layout_of(config, cache.kv_dtype), sort_keys=True),
        "length": str(n),
        "sha256": _ZERO_SHA,
    }

    def header_bytes() -> bytes:
        raw = json.dumps({"__metadata__": metadata, **header}, separators=(",", ":")).encode()
        return raw + b" " * (-(8 + len(raw)) % 8)  # payload starts 8-byte aligned

    digest = hashlib.sha256()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path.parent)
    try:
        with open(tmp, "wb") as f:
            head = header_bytes()
            digest.update(struct.pack("<Q", len(head)) + head)
            f.write(struct.pack("<Q", len(head)))
            f.write(head)
            for _, dtype, _, tensors in entries:
                for tensor in tensors:
                    for piece in _pieces(tensor):
                        raw = piece.detach().to("cpu", dtype).contiguous().view(torch.uint8).numpy()
                        digest.update(raw)
                        f.write(raw)
            metadata["sha256"] = digest.hexdigest()
            f.seek(8)
            f.write(header_bytes())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path.stat().st_size


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True


def remove_stale_temps(directory: Path) -> None:
    """Delete `.<name>.<pid>.tmp` files whose writer is no longer running (killed mid-save)."""
    for tmp in directory.glob(".*.tmp"):
        pid = tmp.name.rsplit(".", 2)[-2]
        if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
            tmp.unlink(missing_ok=True)


def _validate(header: dict[str, Any], path: Path, payload: int) -> None:
    """The header's own structure: every tensor a known dtype, an int shape, and offsets that tile the
    payload exactly, so a hand-edited header fails here instead of deep in a load."""
    bad = SnapshotError(f"KV snapshot {path} has a damaged header; recompute the prefix")
    spans = []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(info, dict) or info.get("dtype") not in _TORCH_DTYPES:
            raise bad
        shape, offsets = info.get("shape"), info.get("data_offsets")
        if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
            raise bad
        if not isinstance(offsets, list) or len(offsets) != 2 or not all(isinstance(o, int) for o in offsets):
            raise bad
        size = _TORCH_DTYPES[info["dtype"]].itemsize
        for dim in shape:
            size *= dim
        if offsets[1] - offsets[0] != size:
            raise bad
        spans.append(offsets)
    end = 0
    for start, stop in sorted(spans):
        if start != end:
            raise bad
        end = stop
    if end != payload:
        raise SnapshotError(f"KV snapshot {path} is truncated ({payload} payload bytes, expected {end}); recompute the prefix")


def read_header(path: Path | str) -> tuple[dict[str, Any], int]:
    """(header dict, payload offset) after checking the file holds everything the header promises."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head_len = struct.unpack("<Q", f.read(8))[0] if size >= 8 else None
            if head_len is None or head_len > size - 8 or head_len > _MAX_HEADER:
                raise SnapshotError(f"KV snapshot {path} is truncated or not a snapshot; recompute the prefix")
            header = json.loads(f.read(head_len))
    except FileNotFoundError as exc:
        raise SnapshotError(f"no snapshot at {path}; recompute the prefix") from exc
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise SnapshotError(f"KV snapshot {path} is unreadable ({exc}); recompute the prefix") from exc
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else None
        raise SnapshotError(f"{path} is not a scoutdoc KV snapshot of this version ({found!r}); recompute the prefix")
    _validate(header, path, size - 8 - head_len)
    return header, 8 + head_len


def _verify(path: Path, start: int, expected: str) -> None:
    """sha256 of the header (its checksum field zeroed, as when it was computed) and the payload."""
    digest = hashlib.sha256()
    buf = bytearray(1 << 20)
    view = memoryview(buf)
    with open(path, "rb") as f:
        head = f.read(start)
        marker = b'"sha256":"' + expected.encode() + b'"'
        if len(expected) != 64 or head.count(marker) != 1:
            raise SnapshotError(f"KV snapshot {path} has a damaged header (checksum field); recompute the prefix")
        digest.update(head.replace(marker, b'"sha256":"' + _ZERO_SHA.encode() + b'"'))
        while n := f.readinto(buf):
            digest.update(view[:n])
    if digest.hexdigest() != expected:
        raise SnapshotError(f"KV snapshot {path} is corrupt (checksum mismatch); recompute the prefix")


def _compare(kind: str, stored: dict[str, Any], expected: dict[str, Any], path: Path) -> None:
    diff = sorted(k for k in set(stored) | set(expected) if stored.get(k) != expected.get(k))
    if diff:
        detail = ", ".join(f"{k}: snapshot {stored.get(k)!r} vs now {expected.get(k)!r}" for k in diff)
        raise SnapshotError(f"KV snapshot {path} was made for a different {kind} ({detail}); recompute the prefix")


class _Layers(Mapping):
    """layer -> (k, v) of one kind ("global" or "local"), fetched only when asked for, so a load
    holds at most one layer's stored copy beside the cache."""

    def __init__(self, tensor: Callable[[str], torch.Tensor], kind: str, layers: list[int]):
        self.tensor, self.kind, self.layers = tensor, kind, layers

    def __getitem__(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        if layer not in self.layers:
            raise KeyError(layer)
        return self.tensor(f"{self.kind}.{layer}.k"), self.tensor(f"{self.kind}.{layer}.v")

    def __iter__(self) -> Iterator[int]:
        return iter(self.layers)

    def __len__(self) -> int:
        return len(self.layers)


def load_snapshot(
    path: Path | str,
    expected_fingerprint: dict[str, Any],
    config: ModelConfig,
    dtype: torch.dtype,
    device: torch.device | str = "cpu",
    options: CacheOptions | None = None,
    verify: bool = True,
) -> tuple[HybridCache, list[int]]:
    """A HybridCache holding the snapshot's prefix, and its token ids.

    Raises SnapshotError when the snapshot belongs to another model/tokenizer/dtype/layout or is
    truncated or corrupt, so the caller can fall back to recomputing the prefix.
    """
    path = Path(path)
    header, start = read_header(path)
    meta = header["__metadata__"]
    try:
        fingerprint = json.loads(meta["fingerprint"])
        layout = json.loads(meta["layout"])
        length = int(meta["length"])
    except (KeyError, ValueError, TypeError) as exc:
        raise SnapshotError(f"KV snapshot {path} has a damaged header ({exc}); recompute the prefix") from exc
    _compare("model, tokenizer or dtype", fingerprint, expected_fingerprint, path)
    options = options or CacheOptions()
    _compare("cache layout or kv dtype", layout, layout_of(config, options.kv_dtype or dtype), path)
    if verify:
        _verify(path, start, str(meta.get("sha256", "")))

    cache = HybridCache(config, dtype, device, options)
    _, host_end = cache.tier_bounds(length)
    # A snapshot stored in a narrower dtype than the cache is cast on the way in, so it cannot serve
    # as the cache's disk tier in place.
    stored = {v["dtype"] for k, v in header.items() if k not in ("__metadata__", "token_ids")}
    in_place = options.disk_dir is not None and host_end < length and stored <= {_ST_DTYPES[cache.kv_dtype]}
    with open(path, "rb") as f:
        if in_place:
            # tokens beyond the host budget stay in the mapped file as the cache's disk tier
            data = torch.from_file(str(path), shared=False, size=path.stat().st_size, dtype=torch.uint8)

            def tensor(name: str) -> torch.Tensor:
                info = header[name]
                b, e = info["data_offsets"]
                return data[start + b : start + e].view(_TORCH_DTYPES[info["dtype"]]).view(info["shape"])
        else:
            # Plain reads into one reused buffer per role (k, v, token ids): a mapping would keep every
            # page it copied resident until the load ends, doubling the peak memory of a follow-up
            # (+154 MiB at 7000 tokens), and fresh buffers per layer fragment the heap. A tensor is
            # only valid until the next layer is fetched, which is how `load_state` consumes them.
            staging: dict[str, torch.Tensor] = {}

            def tensor(name: str) -> torch.Tensor:
                info = header[name]
                b, e = info["data_offsets"]
                role = name.rsplit(".", 1)[-1]
                if role not in staging or staging[role].numel() < e - b:
                    staging[role] = torch.empty(e - b, dtype=torch.uint8)
                raw = staging[role][: e - b]
                f.seek(start + b)
                if f.readinto(memoryview(raw.numpy())) != e - b:
                    raise SnapshotError(f"KV snapshot {path} is truncated; recompute the prefix")
                return raw.view(_TORCH_DTYPES[info["dtype"]]).view(info["shape"])

        try:
            cache.load_state(
                length,
                _Layers(tensor, "global", cache.global_layers),
                _Layers(tensor, "local", cache.local_layers),
                mapped=in_place,
            )
            token_ids = tensor("token_ids").tolist()
        except KeyError as exc:
            raise SnapshotError(f"KV snapshot {path} lacks tensor {exc}; recompute the prefix") from exc
    release_freed_heap()
    return cache, token_ids
