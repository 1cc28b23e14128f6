"""KV caches behind one small interface the model calls from every attention layer.

The model hands each layer's new keys/values to `cache.attend(layer, q, k, v)` and the cache both
stores them and computes attention over everything the layer may see. Keeping the attention call
inside the cache is what lets a tiered cache stream offloaded blocks without the model knowing.
"""

from typing import Protocol

import torch

from .attention import attend
from .config import ModelConfig


class KVCache(Protocol):
    length: int  # tokens already stored (positions 0..length-1)

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Store k/v [T, Hkv, d] for positions length..length+T-1 and return attention of q [T, Hq, d]."""
        ...

    def advance(self, n: int) -> None:
        """Called once after every layer has seen the same n new tokens."""
        ...


class ContiguousCache:
    """Every token of every layer in one growing buffer per layer: simple and exact, O(context) memory."""

    def __init__(self, config: ModelConfig, dtype: torch.dtype, device: torch.device | str = "cpu"):
        self.config = config
        self.dtype = dtype
        self.device = torch.device(device)
        self.length = 0
        shape = (0, config.num_kv_heads, config.head_dim)
        self.k = [torch.empty(shape, dtype=dtype, device=self.device) for _ in range(config.num_layers)]
        self.v = [torch.empty(shape, dtype=dtype, device=self.device) for _ in range(config.num_layers)]

    def _grow(self, layer: int, needed: int) -> None:
        capacity = self.k[layer].shape[0]
        if needed <= capacity:
            return
        new_capacity = max(needed, 2 * capacity, 256)
        for buf in (self.k, self.v):
            grown = torch.empty((new_capacity, *buf[layer].shape[1:]), dtype=self.dtype, device=self.device)
            grown[: self.length] = buf[layer][: self.length]
            buf[layer] = grown

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        start, end = self.length, self.length + q.shape[0]
        self._grow(layer, end)
        self.k[layer][start:end] = k
        self.v[layer][start:end] = v
        positions = torch.arange(end, device=self.device)
        chunk = self.config.attention_chunk_size if self.config.layer_is_chunked(layer) else None
        return attend(q, self.k[layer][:end], self.v[layer][:end], positions[start:end], positions, chunk)

    def advance(self, n: int) -> None:
        self.length += n
