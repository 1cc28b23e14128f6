"""Attention kernels and masks.

Queries and keys carry absolute positions so one function serves full prefill, chunked prefill and
decode: a RoPE layer of Llama 4 lets position p see key j iff j <= p and both sit in the same
chunk (chunks aligned to position 0, not a sliding window); every other layer is plain causal.
"""

import torch
import torch.nn.functional as F


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
    """q [Tq, Hq, d], k/v [Tk, Hkv, d] -> [Tq, Hq, d]; grouped-query heads share kv head h // (Hq/Hkv)."""
    mask = visible(q_pos, k_pos, chunk_size)
    out = F.scaled_dot_product_attention(
        q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1), attn_mask=mask, enable_gqa=True
    )
    return out.transpose(0, 1)
