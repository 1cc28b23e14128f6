"""KV caches behind one small interface the model calls from every attention layer.

The model hands each layer's new keys/values to `cache.attend(layer, q, k, v)` and the cache both
stores them and computes attention over everything the layer may see. Keeping the attention call
inside the cache is what lets a tiered cache stream offloaded blocks without the model knowing.

`HybridCache` is the long-context cache:

* chunked (RoPE) layers of Llama 4 keep only the keys of the current chunk: a query at p sees
  keys in [floor(p/C)*C, p], so after a step ending at `end` nothing before floor(end/C)*C is ever
  read again. Each holds at most C tokens, whatever the context length.
* global layers keep every token. The first tokens live in one contiguous buffer per layer on the
  compute device (up to `device_budget`), later ones in extents of whole blocks in host memory
  (pinned when the device is CUDA, up to `host_budget`), then in memory-mapped files under
  `disk_dir`. Attention over them is computed per tier/extent with its log-sum-exp and merged
  exactly (`attention.merge`), streaming offloaded extents to the device in position order.
"""

import math
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch

from ..errors import MemoryPlanError, ModelError
from .attention import attention_part, attention_window, merge, select_backend
from .config import ModelConfig
from .heap import release_freed_heap


class KVCache(Protocol):
    length: int  # tokens already stored (positions 0..length-1)

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Store k/v [T, Hkv, d] for positions length..length+T-1 and return attention of q [Tq, Hq, d],
        the queries of the last Tq <= T of those positions (the model's last layer asks for the final
        position only when nothing reads the other rows' outputs)."""
        ...

    def advance(self, n: int) -> None:
        """Called once after every layer has seen the same n new tokens."""
        ...

    def reserve(self, tokens: int) -> None:
        """The context will reach `tokens`: size growing buffers for it now, once."""
        ...


def kv_buffer(tokens: int, heads: int, dim: int, dtype: torch.dtype, device: torch.device | str = "cpu",
              pin: bool = False) -> torch.Tensor:
    """An empty KV buffer, indexed [token, head, dim] like every k/v here but stored head by head.

    Each head's keys then form one contiguous run, which the fused attention kernels read as they
    are: no heads-first copy of the whole history before a prompt piece's attention, and a decode
    step over 7000 keys of the default model takes 1.2 instead of 2.2 ms per layer in bf16 (1.3
    instead of 2.0 in fp32) when the keys come from memory rather than cache.
    """
    return torch.empty((heads, tokens, dim), dtype=dtype, device=device, pin_memory=pin).transpose(0, 1)


class ContiguousCache:
    """Every token of every layer in one growing buffer per layer: simple and exact, O(context) memory.

    Attention never builds a mask: a global layer's query piece sees all earlier keys plus itself
    causally, and a chunked layer's sub-piece (split at chunk boundaries) sees the earlier keys of
    its own chunk plus itself, so `attention_window` covers both.
    """

    def __init__(
        self,
        config: ModelConfig,
        dtype: torch.dtype,
        device: torch.device | str = "cpu",
        backend: str = "auto",
    ):
        self.config = config
        self.dtype = dtype
        self.device = torch.device(device)
        self.backend = select_backend(backend, self.device)
        self.length = 0
        self.k = [self._new(0) for _ in range(config.num_layers)]
        self.v = [self._new(0) for _ in range(config.num_layers)]
        self.chunk_of = [
            config.attention_chunk_size if config.layer_is_chunked(i) else None for i in range(config.num_layers)
        ]

    def reserve(self, tokens: int) -> None:
        for layer in range(self.config.num_layers):
            self._grow(layer, tokens, exact=True)

    def _grow(self, layer: int, needed: int, exact: bool = False) -> None:
        capacity = self.k[layer].shape[0]
        if needed <= capacity:
            return
        new_capacity = needed if exact else max(needed, 2 * capacity, 256)
        for buf in (self.k, self.v):
            grown = self._new(new_capacity)
            grown[: self.length] = buf[layer][: self.length]
            buf[layer] = grown
        if self.length and self.device.type == "cpu":
            release_freed_heap()  # before the next layer grows too: the old buffers would otherwise add up

    def _new(self, n: int) -> torch.Tensor:
        return kv_buffer(n, self.config.num_kv_heads, self.config.head_dim, self.dtype, self.device)

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        start, end = self.length, self.length + k.shape[0]
        q_from = end - q.shape[0]
        self._grow(layer, end)
        kb, vb = self.k[layer], self.v[layer]
        kb[start:end] = k
        vb[start:end] = v
        chunk = self.chunk_of[layer]
        if chunk is None:
            return attention_window(q, kb[:end], vb[:end], q_from, self.backend)
        outs = []
        pos = q_from
        while pos < end:
            lo = pos // chunk * chunk
            hi = min(end, lo + chunk)
            i = pos - q_from
            outs.append(attention_window(q[i : i + hi - pos], kb[lo:hi], vb[lo:hi], pos - lo, self.backend))
            pos = hi
        return outs[0] if len(outs) == 1 else torch.cat(outs)

    def advance(self, n: int) -> None:
        self.length += n


KV_DTYPES = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float8": torch.float8_e4m3fn,
    "float8_e4m3": torch.float8_e4m3fn,
    "float8_e5m2": torch.float8_e5m2,
}


def resolve_kv_dtype(name: str | torch.dtype | None, model_dtype: torch.dtype, device: torch.device | str) -> torch.dtype:
    """``--kv-dtype``: None/"model" keeps the model dtype; float8 needs a device that can cast it."""
    if name is None or name == "model":
        return model_dtype
    if isinstance(name, torch.dtype):
        dtype = name
    elif name in KV_DTYPES:
        dtype = KV_DTYPES[name]
    else:
        raise ModelError(f"unknown --kv-dtype {name!r}; choose model, {', '.join(KV_DTYPES)}")
    if dtype.itemsize == 1:
        try:
            torch.zeros(2, dtype=model_dtype, device=device).to(dtype).to(model_dtype)
        except (RuntimeError, TypeError) as exc:
            raise ModelError(f"--kv-dtype {name}: not supported on {device} ({exc}); use bfloat16 or float16") from exc
    return dtype


@dataclass
class CacheOptions:
    """Where the global-layer KV may live and how attention over it runs."""

    kv_dtype: torch.dtype | None = None  # None: the model dtype
    device_budget: int | None = None  # bytes of global-layer KV on the compute device; None: unbounded
    host_budget: int | None = None  # bytes in host memory; None: unbounded
    disk_dir: Path | None = None  # memory-mapped files beyond the host budget; None: no disk tier
    block_size: int = 256  # budgets and extents are whole blocks of this many tokens
    stream_tokens: int = 16384  # offloaded KV is stored and streamed in extents of at most this many tokens
    backend: str = "auto"  # attention backend, see attention.select_backend


@dataclass
class _Extent:
    """A run of offloaded global-layer KV: positions base..base+capacity-1 of one layer."""

    base: int
    k: torch.Tensor  # [capacity, Hkv, d]
    v: torch.Tensor
    tier: str  # "host" or "disk"

    @property
    def capacity(self) -> int:
        return self.k.shape[0]


class HybridCache:
    """Bounded chunk buffers for chunked layers, tiered blocks for global layers; exact attention."""

    def __init__(
        self,
        config: ModelConfig,
        dtype: torch.dtype,
        device: torch.device | str = "cpu",
        options: CacheOptions | None = None,
    ):
        self.config = config
        self.dtype = dtype
        self.device = torch.device(device)
        self.options = options or CacheOptions()
        self.kv_dtype = self.options.kv_dtype or dtype
        self.backend = select_backend(self.options.backend, self.device)
        self.length = 0
        self.chunk = config.attention_chunk_size
        self.local_layers = [i for i in range(config.num_layers) if config.layer_is_chunked(i)]
        self.global_layers = [i for i in range(config.num_layers) if not config.layer_is_chunked(i)]
        self.token_bytes = 2 * config.num_kv_heads * config.head_dim * self.kv_dtype.itemsize  # one layer
        block = self.options.block_size
        self.device_tokens = self._tokens_for(self.options.device_budget)
        self.host_tokens = self._tokens_for(self.options.host_budget)
        self.stream_tokens = max(block, self.options.stream_tokens // block * block)
        self.local_k = {i: self._new(0) for i in self.local_layers}
        self.local_v = {i: self._new(0) for i in self.local_layers}
        self.dev_k = {i: self._new(0) for i in self.global_layers}
        self.dev_v = {i: self._new(0) for i in self.global_layers}
        self.extents: dict[int, list[_Extent]] = {i: [] for i in self.global_layers}
        self._stage: tuple[torch.Tensor, torch.Tensor] | None = None

    def _new(self, n: int) -> torch.Tensor:
        return kv_buffer(n, self.config.num_kv_heads, self.config.head_dim, self.kv_dtype, self.device)

    # ----- sizes -------------------------------------------------------------------------------

    def _tokens_for(self, budget: int | None) -> int | None:
        """Whole blocks of tokens per global layer that fit a byte budget shared by all global layers."""
        if budget is None:
            return None
        per_block = self.options.block_size * self.token_bytes * max(1, len(self.global_layers))
        return int(budget) // per_block * self.options.block_size

    def local_tokens(self, layer: int) -> int:
        """Tokens a chunked layer holds now: the part of the current chunk already seen."""
        return self.length % self.chunk if self.chunk else 0

    def memory_bytes(self) -> dict[str, int]:
        """Bytes allocated per kind: local buffers, and global KV per tier (capacity, not fill)."""
        local = sum(t.nbytes for d in (self.local_k, self.local_v) for t in d.values())
        device = sum(t.nbytes for d in (self.dev_k, self.dev_v) for t in d.values())
        tiers = {"host": 0, "disk": 0}
        for extents in self.extents.values():
            for e in extents:
                tiers[e.tier] += e.k.nbytes + e.v.nbytes
        used = self.length * self.token_bytes * len(self.global_layers)
        return {
            "local": local,
            "global_device": device,
            "global_host": tiers["host"],
            "global_disk": tiers["disk"],
            "global_used": used,
        }

    # ----- the protocol ------------------------------------------------------------------------

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        k = k.to(self.kv_dtype)
        v = v.to(self.kv_dtype)
        if self.chunk and self.config.layer_is_chunked(layer):
            return self._attend_local(layer, q, k, v)
        return self._attend_global(layer, q, k, v)

    def advance(self, n: int) -> None:
        self.length += n

    def reserve(self, tokens: int) -> None:
        """Global layers' device buffers get their final size (within the device budget) before the
        prompt runs. Growing by doubling instead would copy them at every doubling and leave up to
        half of each buffer unused, on heap pages that earlier activations already made resident
        (about 20 MiB of peak RSS in a 7000-token prefill of the default model)."""
        for layer in self.global_layers:
            self._grow_device(layer, tokens, exact=True)

    def can_truncate(self, n: int) -> bool:
        """Whether the cache can drop back to its first n tokens: global layers always can; chunked
        layers only hold the current chunk, so n must lie in it or on a chunk boundary."""
        if not 0 <= n <= self.length:
            return False
        if not self.chunk or not self.local_layers:
            return True
        return n % self.chunk == 0 or n // self.chunk == self.length // self.chunk

    def truncate(self, n: int) -> bool:
        """Keep only positions 0..n-1 (e.g. to drop a turn's generated tail); False, and nothing
        changed, when the chunked layers no longer hold what position n needs (recompute instead)."""
        if not self.can_truncate(n):
            return False
        for layer, extents in self.extents.items():
            self.extents[layer] = [e for e in extents if e.base < n]
        self.length = n
        return True

    # ----- chunked layers ----------------------------------------------------------------------

    def _local_room(self, layer: int, needed: int) -> None:
        buf = self.local_k[layer]
        if needed <= buf.shape[0]:
            return
        capacity = min(self.chunk, max(needed, 2 * buf.shape[0], 64))
        held = self.length % self.chunk
        for store in (self.local_k, self.local_v):
            grown = self._new(capacity)
            grown[:held] = store[layer][:held]
            store[layer] = grown

    def _attend_local(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Keys are split at chunk boundaries; each run's queries see their own chunk's keys only."""
        c, start, total = self.chunk, self.length, k.shape[0]
        end = start + total
        q_from = end - q.shape[0]
        held = start % c
        outs = []
        pos = start
        while pos < end:
            lo = pos // c * c
            hi = min(end, lo + c)
            ks, vs = k[pos - start : hi - start], v[pos - start : hi - start]
            if pos == start and held:  # the chunk began in an earlier step: extend what it holds
                self._local_room(layer, held + hi - pos)
                self.local_k[layer][held : held + hi - pos] = ks
                self.local_v[layer][held : held + hi - pos] = vs
                ks, vs = self.local_k[layer][: held + hi - pos], self.local_v[layer][: held + hi - pos]
            if hi > q_from:  # ks/vs now hold positions lo..hi-1
                first = max(pos, q_from)
                outs.append(attention_window(q[first - q_from : hi - q_from], ks, vs, first - lo, self.backend))
            pos = hi
        keep_from = end // c * c
        if keep_from > start and end > keep_from:  # the piece crossed a boundary: keep the new chunk's head
            self._local_room(layer, end - keep_from)
            self.local_k[layer][: end - keep_from] = k[keep_from - start :]
            self.local_v[layer][: end - keep_from] = v[keep_from - start :]
        elif not held and end > start and keep_from <= start:  # a fresh chunk, nothing held before
            self._local_room(layer, total)
            self.local_k[layer][:total] = k
            self.local_v[layer][:total] = v
        return outs[0] if len(outs) == 1 else torch.cat(outs)

    # ----- global layers -----------------------------------------------------------------------

    def _attend_global(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        start, end, n = self.length, self.length + k.shape[0], q.shape[0]
        self._store_global(layer, start, k, v)
        if not self.extents[layer]:  # every key in the one device buffer
            return attention_window(q, self.dev_k[layer][:end], self.dev_v[layer][:end], end - n, self.backend)
        dev_end = min(end - n, self.dev_k[layer].shape[0] if self.device_tokens is None else self.device_tokens)
        parts = []
        if dev_end:
            parts.append(attention_part(q, self.dev_k[layer][:dev_end], self.dev_v[layer][:dev_end], False, self.backend))
        for ek, ev in self._stream(layer, end - n):
            parts.append(attention_part(q, ek, ev, False, self.backend))
        parts.append(attention_part(q, k[-n:], v[-n:], True, self.backend))
        return merge(parts)[0].to(q.dtype)

    def _stream(self, layer: int, end: int):
        """Offloaded KV of positions < end, in order, as device tensors (staged copies on CUDA)."""
        for e in self.extents[layer]:
            n = min(e.capacity, end - e.base)
            if n <= 0:
                break
            if self.device.type == "cpu":
                yield e.k[:n], e.v[:n]
                continue
            stage_k, stage_v = self._staging(max(n, self.stream_tokens))
            stage_k[:n].copy_(e.k[:n], non_blocking=True)
            stage_v[:n].copy_(e.v[:n], non_blocking=True)
            yield stage_k[:n], stage_v[:n]

    def _staging(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self._stage is None or self._stage[0].shape[0] < n:
            self._stage = (self._new(n), self._new(n))
        return self._stage

    def _store_global(self, layer: int, start: int, k: torch.Tensor, v: torch.Tensor) -> None:
        end = start + k.shape[0]
        dev_limit = end if self.device_tokens is None else min(end, self.device_tokens)
        if dev_limit > start:
            self._grow_device(layer, dev_limit)
            self.dev_k[layer][start:dev_limit] = k[: dev_limit - start]
            self.dev_v[layer][start:dev_limit] = v[: dev_limit - start]
        pos = max(start, dev_limit)
        if pos < end:
            self._store_offloaded(layer, pos, k[pos - start :], v[pos - start :])

    def _grow_device(self, layer: int, needed: int, exact: bool = False) -> None:
        buf = self.dev_k[layer]
        if needed <= buf.shape[0]:
            return
        block = self.options.block_size
        capacity = needed if exact else max(needed, 2 * buf.shape[0], block)
        capacity = math.ceil(capacity / block) * block
        if self.device_tokens is not None:
            capacity = min(capacity, self.device_tokens)
        for store in (self.dev_k, self.dev_v):
            grown = self._new(capacity)
            grown[: self.length] = store[layer][: self.length]
            store[layer] = grown
        if self.length and self.device.type == "cpu":
            release_freed_heap()  # before the next layer grows too: the old buffers would otherwise add up

    def _extent_for(self, layer: int, pos: int) -> _Extent:
        extents = self.extents[layer]
        if extents and pos < extents[-1].base + extents[-1].capacity:
            for e in reversed(extents):
                if e.base <= pos:
                    return e
        base = extents[-1].base + extents[-1].capacity if extents else (self.device_tokens or 0)
        host_used = sum(e.capacity for e in extents if e.tier == "host")
        host_left = None if self.host_tokens is None else self.host_tokens - host_used
        if host_left is None or host_left > 0:
            size = self.stream_tokens if host_left is None else min(self.stream_tokens, host_left)
            e = _Extent(base, *self._host_pair(size), tier="host")
        elif self.options.disk_dir is not None:
            e = _Extent(base, *self._disk_pair(self.stream_tokens), tier="disk")
        else:
            raise MemoryPlanError(
                f"the KV cache is full at {pos} tokens (device {self.device_tokens}, host {self.host_tokens} "
                "tokens per global layer); raise --kv-device-budget/--kv-host-budget, add --kv-disk DIR, "
                "use --kv-dtype float8, or shorten the context"
            )
        extents.append(e)
        return e

    def _host_pair(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        c, pin = self.config, self.device.type == "cuda"
        return tuple(kv_buffer(n, c.num_kv_heads, c.head_dim, self.kv_dtype, "cpu", pin) for _ in range(2))

    def _disk_pair(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """One memory-mapped file per extent (k then v); unlinked at once so it vanishes with the cache."""
        directory = Path(self.options.disk_dir)
        directory.mkdir(parents=True, exist_ok=True)
        shape = (2, self.config.num_kv_heads, n, self.config.head_dim)  # head-major, as in kv_buffer
        numel = math.prod(shape)
        fd, name = tempfile.mkstemp(prefix="kv-", suffix=".bin", dir=directory)
        try:
            os.ftruncate(fd, numel * self.kv_dtype.itemsize)
            both = torch.from_file(name, shared=True, size=numel, dtype=self.kv_dtype).view(shape)
        finally:
            os.close(fd)
            os.unlink(name)
        return both[0].transpose(0, 1), both[1].transpose(0, 1)

    # ----- snapshots support -------------------------------------------------------------------

    def global_pieces(self, layer: int, upto: int | None = None):
        """(k, v) pieces of a global layer in position order covering 0..upto-1, without copying."""
        upto = self.length if upto is None else upto
        dev_end = min(upto, self.dev_k[layer].shape[0])
        if dev_end:
            yield self.dev_k[layer][:dev_end], self.dev_v[layer][:dev_end]
        for e in self.extents[layer]:
            n = min(e.capacity, upto - e.base)
            if n <= 0:
                break
            yield e.k[:n], e.v[:n]

    def local_pieces(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        held = self.local_tokens(layer)
        return self.local_k[layer][:held], self.local_v[layer][:held]

    def tier_bounds(self, length: int) -> tuple[int, int]:
        """Where a `length`-token prefix of a global layer lives: positions below the first bound on
        the device, up to the second in host memory, the rest on disk."""
        dev = length if self.device_tokens is None else min(length, self.device_tokens)
        return dev, length if self.host_tokens is None else min(length, dev + self.host_tokens)

    def load_state(
        self,
        length: int,
        global_kv: Mapping[int, tuple[torch.Tensor, torch.Tensor]],
        local_kv: Mapping[int, tuple[torch.Tensor, torch.Tensor]],
        mapped: bool,
    ) -> None:
        """Fill an empty cache with a stored prefix. With `mapped`, tokens beyond the host budget
        stay in the given (memory-mapped, read-only) tensors as disk extents instead of being copied."""
        if self.length:
            raise ValueError("load_state needs an empty cache")
        # one layer at a time, each fetched only when its turn comes and released before the next
        for layer in local_kv:
            self._load_local(layer, *local_kv[layer])
        for layer in global_kv:
            self._load_global(layer, length, mapped, *global_kv[layer])
        self.length = length

    def _load_local(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> None:
        self._local_room(layer, k.shape[0])
        self.local_k[layer][: k.shape[0]] = k
        self.local_v[layer][: v.shape[0]] = v

    def _load_global(self, layer: int, length: int, mapped: bool, k: torch.Tensor, v: torch.Tensor) -> None:
        dev, host_end = self.tier_bounds(length)
        if dev:
            self._grow_device(layer, dev, exact=True)
            self.dev_k[layer][:dev] = k[:dev]
            self.dev_v[layer][:dev] = v[:dev]
        if mapped and self.options.disk_dir is not None and host_end < length:
            self._store_offloaded(layer, dev, k[dev:host_end], v[dev:host_end])
            for s in range(host_end, length, self.stream_tokens):
                e = min(length, s + self.stream_tokens)
                self.extents[layer].append(_Extent(s, k[s:e], v[s:e], tier="disk"))
        elif length > dev:
            self._store_offloaded(layer, dev, k[dev:length], v[dev:length])

    def _store_offloaded(self, layer: int, start: int, k: torch.Tensor, v: torch.Tensor) -> None:
        pos, end = start, start + k.shape[0]
        while pos < end:
            e = self._extent_for(layer, pos)
            off = pos - e.base
            n = min(end - pos, e.capacity - off)
            e.k[off : off + n].copy_(k[pos - start : pos - start + n])
            e.v[off : off + n].copy_(v[pos - start : pos - start + n])
            pos += n
