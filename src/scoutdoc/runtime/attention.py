"""Attention kernels, masks, partial attention with log-sum-exp, and exact merging.

Queries and keys carry absolute positions so one function serves full prefill, chunked prefill and
decode: a RoPE layer of Llama 4 lets position p see key j iff j <= p and both sit in the same
chunk (chunks aligned to position 0, not a sliding window); every other layer is plain causal.

A tiered KV cache cannot hand one kernel all keys at once, so attention is computed in *parts*:
each part returns its output and the log-sum-exp (natural log) of its scores per query row, and
`merge` combines the parts exactly (flash-decoding). The cache only ever needs two mask shapes,
which every backend supports without a mask tensor:

* ``causal=False``: every key is visible to every query (keys strictly before the queries);
* ``causal=True``: keys and queries are the same positions (square, lower-triangular).

Backends: ``flash`` (flash-attn, CUDA, optional ``gpu`` extra), ``sdpa`` (PyTorch's fused kernels
that return the log-sum-exp), ``flex`` (FlexAttention, eager) and ``math`` (fp32 matmul, chunked
over keys so memory stays bounded; the reference).
The plain masked reference computations the tests compare against are in `reference.py`.
"""

import math
from collections.abc import Sequence
from functools import lru_cache

import torch
import torch.nn.functional as F

from ..errors import ModelError, UsageError

BACKENDS = ("auto", "flash", "sdpa", "flex", "math")

# Largest score matrix (elements) the math backend materialises at once; keys are split beyond it.
_MATH_MAX_SCORES = 1 << 24
# Below this many scores per head the fp32 math path beats a fused kernel's launch overhead.
_SDPA_MIN_SCORES = 64


@lru_cache(maxsize=None)
def flash_attn_available() -> bool:
    try:
        import flash_attn  # noqa: F401
    except Exception:  # an installed but broken wheel (ABI mismatch) is as good as absent
        return False
    return torch.cuda.is_available()


def flex_available() -> bool:
    try:
        from torch.nn.attention.flex_attention import flex_attention  # noqa: F401
    except ImportError:
        return False
    return True


def select_backend(name: str | None, device: torch.device | str) -> str:
    """Resolve ``--attn``: ``auto`` picks flash-attn on CUDA when installed, else SDPA.

    A forced backend that cannot run here raises ModelError rather than silently using another.
    """
    name = (name or "auto").lower()
    device = torch.device(device)
    if name not in BACKENDS:
        raise UsageError(f"unknown attention backend {name!r}; choose one of {', '.join(BACKENDS)}")
    if name == "auto":
        return "flash" if device.type == "cuda" and flash_attn_available() else "sdpa"
    if name == "flash":
        if device.type != "cuda":
            raise ModelError("--attn flash needs a CUDA device; use --attn sdpa (or auto) on this machine")
        if not flash_attn_available():
            raise ModelError(
                "--attn flash: flash-attn is not installed or does not load; "
                "install it with `pip install 'scoutdoc[gpu]'` or use --attn sdpa"
            )
    if name == "flex" and not flex_available():
        raise ModelError("--attn flex: this PyTorch has no FlexAttention; upgrade torch or use --attn sdpa")
    return name


def empty_part(q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    out = torch.zeros_like(q)
    lse = torch.full(q.shape[:2], -math.inf, dtype=torch.float32, device=q.device)
    return out, lse


def _math_part(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """fp32 reference; splits keys so the score matrix stays below _MATH_MAX_SCORES elements."""
    tq, hq, _ = q.shape
    step = max(1, _MATH_MAX_SCORES // max(1, tq * hq))
    parts = [_math_part_masked(q, k[s : s + step], v[s : s + step], causal, s) for s in range(0, k.shape[0], step)]
    out, lse = merge(parts)
    return out.to(q.dtype), lse


def _math_part_masked(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool, k_offset: int
) -> tuple[torch.Tensor, torch.Tensor]:
    tq, hq, d = q.shape
    tk, hkv, _ = k.shape
    g = hq // hkv
    # [Hkv, g*Tq, d] x [Hkv, d, Tk]: grouped heads share one key matrix without copying it.
    qf = q.float().reshape(tq, hkv, g, d).permute(1, 2, 0, 3).reshape(hkv, g * tq, d)
    scores = torch.bmm(qf, k.float().permute(1, 2, 0)) * (1.0 / math.sqrt(d))
    if causal:
        rows = torch.arange(tq, device=q.device).repeat(g)
        cols = torch.arange(k_offset, k_offset + tk, device=q.device)
        scores.masked_fill_(cols[None, :] > rows[:, None], -math.inf)
    lse = torch.logsumexp(scores, dim=-1)  # [Hkv, g*Tq]
    safe = torch.where(torch.isfinite(lse), lse, torch.zeros_like(lse))
    probs = torch.exp(scores - safe[..., None])
    out = torch.bmm(probs, v.float().permute(1, 0, 2))  # [Hkv, g*Tq, d]
    out = out.reshape(hkv, g, tq, d).permute(2, 0, 1, 3).reshape(tq, hq, d)
    lse = lse.reshape(hkv, g, tq).permute(2, 0, 1).reshape(tq, hq)
    return out, lse


def _sdpa_part(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """PyTorch's fused kernels that return the log-sum-exp (base e); the math path for tiny parts.

    These kernels want equal query and key head counts. Without a causal mask the query heads that
    share a KV head are folded into the query-length axis ([Hkv, g*Tq, d]), so K/V are read as they
    are; the causal (square) part expands K/V to every head instead, bounded by the piece size.
    """
    tq, hq, d = q.shape
    tk, hkv, _ = k.shape
    if tq * tk <= _SDPA_MIN_SCORES or q.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        return _math_part(q, k, v, causal)
    g = hq // hkv
    kb = _heads_first(k.to(q.dtype))[0]
    vb = _heads_first(v.to(q.dtype))[0]
    if causal:
        qb = _heads_first(q)[0]
        if g > 1:
            kb = kb.repeat_interleave(g, dim=0)
            vb = vb.repeat_interleave(g, dim=0)
    else:
        qb = q.reshape(tq, hkv, g, d).permute(1, 2, 0, 3).reshape(hkv, g * tq, d)
    out, lse = _fused(qb[None], kb[None], vb[None], causal)
    rows = qb.shape[1]
    out, lse = out[0], lse[0, :, :rows].float()
    if causal:
        return out.transpose(0, 1), lse.transpose(0, 1)
    out = out.reshape(hkv, g, tq, d).permute(2, 0, 1, 3).reshape(tq, hq, d)
    return out, lse.reshape(hkv, g, tq).permute(2, 0, 1).reshape(tq, hq)


def _heads_first(x: torch.Tensor) -> torch.Tensor:
    """[T, H, d] -> [1, H, T, d] with each head's rows contiguous: PyTorch's CPU flash kernel runs
    10-15% faster on long prompts so than on the token-major view (measured at 4k-7k tokens). A
    view of a cache buffer (`kvcache.kv_buffer`) already is, and is not copied."""
    y = x.transpose(0, 1)
    if y.stride(-1) != 1 or y.stride(-2) != y.shape[-1]:
        y = y.contiguous()
    return y[None]


def _fused(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """[1, H, T, d] inputs -> (out, lse [1, H, >=Tq]) from whichever fused kernel this device has."""
    if q.device.type == "cpu":
        return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, 0.0, causal)
    if q.dtype in (torch.float16, torch.bfloat16) and q.shape[-1] <= 256:
        res = torch.ops.aten._scaled_dot_product_flash_attention(q, k, v, 0.0, causal, False)
    else:
        res = torch.ops.aten._scaled_dot_product_efficient_attention(q, k, v, None, True, 0.0, causal)
    return res[0], res[1]


def _flash_part(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """flash-attn: the KV-cache variant for visible blocks (it reads cache blocks in place), the
    varlen-free causal kernel for the square part. Both return a base-e log-sum-exp [B, H, Tq]."""
    from flash_attn import flash_attn_func, flash_attn_with_kvcache

    dtype = q.dtype if q.dtype in (torch.float16, torch.bfloat16) else torch.bfloat16
    qb = q.to(dtype)[None]
    kb = k.to(dtype)[None]
    vb = v.to(dtype)[None]
    if causal:
        out, lse, _ = flash_attn_func(qb, kb, vb, causal=True, return_attn_probs=True)
    else:
        out, lse = flash_attn_with_kvcache(qb, kb, vb, causal=False, return_softmax_lse=True)
    return out[0].to(q.dtype), lse[0, :, : q.shape[0]].transpose(0, 1).float()


def _flex_part(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool) -> tuple[torch.Tensor, torch.Tensor]:
    import warnings

    from torch.nn.attention.flex_attention import AuxRequest, create_block_mask, flex_attention

    tq, tk = q.shape[0], k.shape[0]
    block_mask = None
    if causal:
        block_mask = create_block_mask(
            lambda b, h, qi, ki: ki <= qi, None, None, tq, tk, device=q.device.type
        )
    with warnings.catch_warnings():  # eager (uncompiled) flex is a deliberate choice here: it has the lse
        warnings.simplefilter("ignore", UserWarning)
        out, aux = flex_attention(
            q.transpose(0, 1)[None],
            k.to(q.dtype).transpose(0, 1)[None],
            v.to(q.dtype).transpose(0, 1)[None],
            block_mask=block_mask,
            enable_gqa=True,
            return_aux=AuxRequest(lse=True),
        )
    return out[0].transpose(0, 1), aux.lse[0].transpose(0, 1).float()


_PART = {"math": _math_part, "sdpa": _sdpa_part, "flash": _flash_part, "flex": _flex_part}


def attention_part(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool, backend: str = "sdpa"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention of q [Tq, Hq, d] over k/v [Tk, Hkv, d] -> (out [Tq, Hq, d], lse [Tq, Hq] fp32).

    ``causal=True`` requires Tq == Tk (the same positions); otherwise every key is visible.
    An empty key set gives out 0 and lse -inf, which `merge` weighs as nothing.
    """
    if k.shape[0] == 0:
        return empty_part(q)
    if backend == "auto":
        backend = select_backend("auto", q.device)
    return _PART[backend](q, k, v, causal)


def attention_plain(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool, backend: str = "sdpa"
) -> torch.Tensor:
    """Like `attention_part` without the log-sum-exp, for the common single-part case (decode on
    the device tier, prefill of a fresh chunk). A causal part goes to the public SDPA entry point
    (it handles grouped heads itself); visible blocks use the folded-heads kernel straight on the
    cache's buffer, which is much faster than SDPA's grouped-query path in bfloat16 on CPU and, in
    fp32, than `attention_part`'s heads-first copy of every key (a decode step over 7000 keys: 0.8
    against 1.65 ms per layer, identical results). The exception is a half-precision decode step
    over at most 2048 keys, where SDPA's grouped-query path wins (bf16, 30 layers of the default
    model with 540 keys each: 1.5 against 2.05 ms; with 7000 keys the folded kernel wins, 26 against 29 ms)."""
    if backend == "auto":
        backend = select_backend("auto", q.device)
    if causal and backend == "sdpa" and q.shape[0] > 1:
        # 4-D inputs: 3-D ones miss PyTorch's fused CPU kernel and fall back to the slow math path
        out = F.scaled_dot_product_attention(
            _heads_first(q), _heads_first(k.to(q.dtype)), _heads_first(v.to(q.dtype)), is_causal=True, enable_gqa=True
        )
        return out[0].transpose(0, 1)
    half = q.dtype in (torch.float16, torch.bfloat16)
    if backend == "sdpa" and q.shape[0] == 1 and half and k.dtype == q.dtype and k.shape[0] <= 2048 and q.device.type == "cpu":
        out = F.scaled_dot_product_attention(
            q.transpose(0, 1)[None], k.transpose(0, 1)[None], v.transpose(0, 1)[None], enable_gqa=True
        )
        return out[0].transpose(0, 1)
    if backend == "sdpa" and q.dtype == k.dtype and (half or (q.dtype == torch.float32 and q.device.type == "cpu")):
        # the folded-heads kernel without the log-sum-exp bookkeeping: fewer ops per decode step
        tq, hq, d = q.shape
        hkv = k.shape[1]
        g = hq // hkv
        qb = q.reshape(tq, hkv, g, d).permute(1, 2, 0, 3).reshape(hkv, g * tq, d)
        kb, vb = k.transpose(0, 1), v.transpose(0, 1)
        splits = _key_splits(tq, hkv, kb.shape[1], q.device)
        if splits > 1:
            out = _split_keys(qb, kb, vb, splits)
        else:
            out = _fused(qb[None], kb[None], vb[None], False)[0][0]
        return out.reshape(hkv, g, tq, d).permute(2, 0, 1, 3).reshape(tq, hq, d)
    return attention_part(q, k, v, causal and q.shape[0] > 1, backend)[0]


SPLIT_MIN_KEYS = 1024  # fewer keys per split than this cost more in calls than they gain in balance


def _key_splits(tq: int, hkv: int, keys: int, device: torch.device) -> int:
    """How many parts a CPU decode step splits its keys into so every thread gets equal work.

    PyTorch's CPU flash kernel parallelises over batch x heads only: a decode step of the default
    model has 3 KV heads, so on 2 threads one thread attends over two heads' keys while the other
    waits after one, and on 16 threads 13 wait. With the keys cut into S parts batched side by side,
    S x heads is a multiple of the thread count (7000 keys, 2 threads: 337 against 389 us a layer;
    16,000 keys: 725 against 884)."""
    if device.type != "cpu" or tq != 1:
        return 1
    threads = torch.get_num_threads()
    splits = threads // math.gcd(threads, hkv)
    return splits if splits > 1 and keys // splits >= SPLIT_MIN_KEYS else 1


def _split_keys(qb: torch.Tensor, kb: torch.Tensor, vb: torch.Tensor, splits: int) -> torch.Tensor:
    """Folded-heads attention of qb [Hkv, R, d] over kb/vb [Hkv, T, d] computed as `splits` equal
    key ranges batched in one kernel call (views, no copy; the T % splits keys left over form one
    more part), merged exactly by their log-sum-exp."""
    hkv, keys, d = kb.shape
    n = keys // splits
    kp = kb[:, : n * splits].reshape(hkv, splits, n, d).transpose(0, 1)
    vp = vb[:, : n * splits].reshape(hkv, splits, n, d).transpose(0, 1)
    out, lse = _fused(qb[None].expand(splits, -1, -1, -1), kp, vp, False)
    parts = [(out[i], lse[i, :, : qb.shape[1]]) for i in range(splits)]
    if keys > n * splits:
        tail_out, tail_lse = _fused(qb[None], kb[None, :, n * splits :], vb[None, :, n * splits :], False)
        parts.append((tail_out[0], tail_lse[0, :, : qb.shape[1]]))
    return merge(parts)[0].to(qb.dtype)


def attention_window(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, held: int, backend: str = "sdpa"
) -> torch.Tensor:
    """Causal attention of a piece q [T, Hq, d] whose keys k/v are `held` earlier keys (all visible)
    followed by the piece's own T keys, without building a mask.

    This is the only shape a cache needs for a contiguous run of positions (a global layer's whole
    history, or a chunked layer's current chunk): a fresh run is one causal call, a decode step one
    mask-free call, and a later prefill piece two parts merged exactly by their log-sum-exp.
    """
    if held == 0:
        return attention_plain(q, k, v, True, backend)
    if q.shape[0] == 1:
        return attention_plain(q, k, v, False, backend)
    parts = [
        attention_part(q, k[:held], v[:held], False, backend),
        attention_part(q, k[held:], v[held:], True, backend),
    ]
    return merge(parts)[0].to(q.dtype)


def merge(parts: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Combine partial attentions over disjoint key sets exactly: weights exp(lse_i - max lse).

    Returns (out fp32, lse fp32). Rows where every part is empty (lse -inf everywhere) give 0.
    """
    if len(parts) == 1:
        out, lse = parts[0]
        return out.float(), lse
    lses = torch.stack([lse for _, lse in parts])  # [P, Tq, Hq]
    top = lses.max(dim=0).values
    top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
    weights = torch.exp(lses - top)  # exp(-inf) = 0 for empty parts
    total = weights.sum(dim=0)
    weights /= torch.where(total > 0, total, torch.ones_like(total))
    # fp32 accumulation straight from the parts' own dtype: no fp32 copy of each part, no zero fill
    out = parts[0][0] * weights[0][..., None]
    for (part, _), w in zip(parts[1:], weights[1:]):
        out.addcmul_(part, w[..., None])
    return out, top + torch.log(total)
