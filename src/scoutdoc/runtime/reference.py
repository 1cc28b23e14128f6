"""The plain reference implementations the fast paths are tested (and benchmarked) against.

None of these is on the path `scoutdoc ask` runs: `attend` is masked attention over all keys,
`partial_attention` the same for an arbitrary key set with its log-sum-exp, and `ContiguousCache`
keeps every token of every layer in one growing buffer (`LoadedModel.new_cache("contiguous")`). The
hybrid cache and the mask-free split kernels must agree with them.
"""

import math

import torch
import torch.nn.functional as F

from .attention import attention_part, attention_window, empty_part, select_backend
from .config import ModelConfig
from .heap import release_freed_heap
from .kvtiers import kv_buffer


def visible(q_pos: torch.Tensor, k_pos: torch.Tensor, chunk_size: int | None) -> torch.Tensor:
    """Boolean [Tq, Tk] mask of which keys each query may attend to."""
    mask = k_pos[None, :] <= q_pos[:, None]
    if chunk_size is not None:
        mask &= (k_pos[None, :] // chunk_size) == (q_pos[:, None] // chunk_size)
    return mask


def attend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    q_pos: torch.Tensor,
    k_pos: torch.Tensor,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """q [Tq, Hq, d], k/v [Tk, Hkv, d] -> [Tq, Hq, d]; grouped-query heads share kv head h // (Hq/Hkv).

    The plain masked computation over all keys: the reference the caches' mask-free and split paths
    are tested against, not a hot path."""
    mask = visible(q_pos, k_pos, chunk_size)
    out = F.scaled_dot_product_attention(
        q.transpose(0, 1)[None], k.transpose(0, 1)[None], v.transpose(0, 1)[None], attn_mask=mask, enable_gqa=True
    )
    return out[0].transpose(0, 1)


def partial_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    q_pos: torch.Tensor,
    k_pos: torch.Tensor,
    chunk_size: int | None = None,
    backend: str = "sdpa",
) -> tuple[torch.Tensor, torch.Tensor]:
    """General-position partial attention -> (out, lse), for arbitrary key sets such as one block.

    Uses the mask-free kernels when the visibility pattern allows it and the fp32 masked reference
    otherwise. Rows that see no key get out 0 and lse -inf (no NaN).
    """
    if k.shape[0] == 0:
        return empty_part(q)
    mask = visible(q_pos, k_pos, chunk_size)
    if bool(mask.all()):
        return attention_part(q, k, v, False, backend)
    if torch.equal(q_pos, k_pos) and torch.equal(mask, torch.ones_like(mask).tril()):
        return attention_part(q, k, v, True, backend)
    tq, hq, d = q.shape
    hkv = k.shape[1]
    g = hq // hkv
    qf = q.float().reshape(tq, hkv, g, d).permute(1, 2, 0, 3)  # [Hkv, g, Tq, d]
    scores = torch.einsum("hgqd,khd->hgqk", qf, k.float()) / math.sqrt(d)
    scores = scores.masked_fill(~mask, -math.inf)
    lse = torch.logsumexp(scores, dim=-1)
    safe = torch.where(torch.isfinite(lse), lse, torch.zeros_like(lse))
    out = torch.einsum("hgqk,khd->qhgd", torch.exp(scores - safe[..., None]), v.float()).reshape(tq, hq, d)
    return out.to(q.dtype), lse.permute(2, 0, 1).reshape(tq, hq)


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
