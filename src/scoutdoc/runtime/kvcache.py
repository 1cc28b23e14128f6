"""KV caches behind one small interface the model calls from every attention layer.

The model hands each layer's new keys/values to `cache.attend(layer, q, k, v)` and the cache both
stores them and computes attention over everything the layer may see. Keeping the attention call
inside the cache is what lets a tiered cache stream offloaded blocks without the model knowing.

`HybridCache` is the long-context cache:

* chunked (RoPE) layers of Llama 4 keep only the keys of the current chunk: a query at p sees
  keys in [floor(p/C)*C, p], so after a step ending at `end` nothing before floor(end/C)*C is ever
  read again. Each holds at most C tokens, whatever the context length.
* global layers keep every token, placed in tiers (device, host memory, disk) by `kvtiers.TieredKV`.
  Attention over them is computed per tier/extent with its log-sum-exp and merged exactly
  (`attention.merge`), streaming offloaded extents to the device in position order.

This module assembles attention from those pieces; `kvtiers.py` decides where the pieces live.
`reference.ContiguousCache` is the plain cache the hybrid one is tested against.
"""

from collections.abc import Mapping
from typing import Protocol

import torch

from ..errors import ModelError, UsageError
from .attention import attention_part, attention_window, merge, select_backend
from .config import ModelConfig
from .dtypes import DTYPES
from .kvtiers import CacheOptions, TieredKV


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


def resolve_kv_dtype(name: str | torch.dtype | None, model_dtype: torch.dtype, device: torch.device | str) -> torch.dtype:
    """``--kv-dtype``: None/"model" keeps the model dtype; float8 needs a device that can cast it."""
    if name is None or name == "model":
        return model_dtype
    if isinstance(name, torch.dtype):
        dtype = name
    elif name in DTYPES:
        dtype = DTYPES[name]
    else:
        raise UsageError(f"unknown --kv-dtype {name!r}; choose model, {', '.join(DTYPES)}")
    if dtype.itemsize == 1:
        try:
            torch.zeros(2, dtype=model_dtype, device=device).to(dtype).to(model_dtype)
        except (RuntimeError, TypeError) as exc:
            raise ModelError(f"--kv-dtype {name}: not supported on {device} ({exc}); use bfloat16 or float16") from exc
    return dtype


class HybridCache(TieredKV):
    """Bounded chunk buffers for chunked layers, tiered blocks for global layers; exact attention."""

    def __init__(
        self,
        config: ModelConfig,
        dtype: torch.dtype,
        device: torch.device | str = "cpu",
        options: CacheOptions | None = None,
    ):
        super().__init__(config, dtype, device, options)
        self.backend = select_backend(self.options.backend, self.device)
        self.chunk = config.attention_chunk_size
        self.local_layers = [i for i in range(config.num_layers) if config.layer_is_chunked(i)]
        self.local_k = {i: self._new(0) for i in self.local_layers}
        self.local_v = {i: self._new(0) for i in self.local_layers}

    # ----- sizes -------------------------------------------------------------------------------

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
        if k.dtype != self.kv_dtype:
            k, v = k.to(self.kv_dtype), v.to(self.kv_dtype)
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

    # ----- snapshots support -------------------------------------------------------------------

    def local_pieces(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        held = self.local_tokens(layer)
        return self.local_k[layer][:held], self.local_v[layer][:held]

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

