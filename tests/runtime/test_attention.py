"""Partial attention with log-sum-exp and its exact merge, per backend, against the masked reference."""

import math

import pytest
import torch

from scoutdoc.errors import ModelError, UsageError
from scoutdoc.runtime import attention
from scoutdoc.runtime.attention import attention_part, attention_plain, merge, select_backend
from scoutdoc.runtime.reference import attend, partial_attention, visible


def tensors(tq, tk, hq=8, hkv=2, d=16, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(tq, hq, d, generator=g).to(dtype)
    k = torch.randn(tk, hkv, d, generator=g).to(dtype)
    v = torch.randn(tk, hkv, d, generator=g).to(dtype)
    return q, k, v


def reference_lse(q, k, q_pos, k_pos, chunk):
    g = q.shape[1] // k.shape[1]
    kk = k.repeat_interleave(g, dim=1)
    scores = torch.einsum("qhd,khd->qhk", q.double(), kk.double()) / math.sqrt(q.shape[-1])
    mask = visible(q_pos, k_pos, chunk)
    return torch.logsumexp(scores.masked_fill(~mask[:, None, :], -math.inf), dim=-1)


@pytest.mark.parametrize("backend", ["math", "sdpa", "flex"])
@pytest.mark.parametrize("tq, past", [(1, 50), (7, 0), (40, 90), (100, 200)])
def test_split_and_merge_equals_full(backend, tq, past):
    q, k, v = tensors(tq, past + tq)
    pos = torch.arange(past + tq)
    want = attend(q, k, v, pos[past:], pos)
    splits = [0, past // 3, past // 2, past]
    parts = [attention_part(q, k[a:b], v[a:b], False, backend) for a, b in zip(splits, splits[1:])]
    parts.append(attention_part(q, k[past:], v[past:], True, backend))
    out, lse = merge(parts)
    assert (out - want).abs().max() <= 1e-5
    assert (lse.double() - reference_lse(q, k, pos[past:], pos, None)).abs().max() <= 1e-4


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
def test_fused_sdpa_with_grouped_heads_matches_math(causal, dtype, tol):
    q, k, v = tensors(80, 80 if causal else 300, hq=8, hkv=2, dtype=dtype)
    out, lse = attention_part(q, k, v, causal, "sdpa")
    ref_out, ref_lse = attention_part(q.float(), k.float(), v.float(), causal, "math")
    assert (out.float() - ref_out).abs().max() <= tol and (lse - ref_lse).abs().max() <= tol * 10


def test_math_splits_large_key_sets(monkeypatch):
    monkeypatch.setattr(attention, "_MATH_MAX_SCORES", 256)
    q, k, v = tensors(9, 100)
    pos = torch.arange(100)
    out, _ = attention_part(q, k, v, False, "math")
    assert (out - attend(q, k, v, torch.arange(100, 109), pos)).abs().max() <= 1e-5


def test_fully_masked_rows_weigh_nothing():
    """A block no query of a row may see: lse -inf, out 0, and the merge stays finite and exact."""
    q, k, v = tensors(6, 20)
    q_pos = torch.arange(14, 20)
    k_pos = torch.arange(20)
    chunk = 16  # queries 14, 15 sit in chunk 0; 16..19 in chunk 1
    early, late = partial_attention(q, k[:16], v[:16], q_pos, k_pos[:16], chunk), partial_attention(
        q, k[16:], v[16:], q_pos, k_pos[16:], chunk
    )
    assert torch.isinf(early[1][2:]).all() and (early[0][2:] == 0).all()
    assert torch.isinf(late[1][:2]).all()
    out, lse = merge([early, late])
    assert torch.isfinite(out).all()
    assert (out - attend(q, k, v, q_pos, k_pos, chunk)).abs().max() <= 1e-5
    empty = attention_part(q, k[:0], v[:0], False)
    assert (merge([empty, empty])[0] == 0).all()


def test_plain_matches_part():
    q, k, v = tensors(12, 12)
    assert (attention_plain(q, k, v, True, "sdpa") - attention_part(q, k, v, True, "math")[0]).abs().max() <= 1e-5
    q1 = q[:1]
    assert (attention_plain(q1, k, v, False, "sdpa") - attention_part(q1, k, v, False, "math")[0]).abs().max() <= 1e-5
    # a decode step reads a prefix of the cache's larger buffer in place
    q, k, v = tensors(1, 1000)
    want = attention_part(q, k[:700], v[:700], False, "math")[0]
    assert (attention_plain(q, k[:700], v[:700], False, "sdpa") - want).abs().max() <= 1e-5


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
@pytest.mark.parametrize("threads, keys", [(2, 3001), (4, 4096), (16, 20000)])
def test_decode_step_with_keys_split_across_threads_matches_math(monkeypatch, dtype, tol, threads, keys):
    """A long decode step on a CPU splits its keys so every thread gets work (`_key_splits`); the
    parts, and the keys left over, are merged exactly, from the cache's heads-first buffer."""
    monkeypatch.setattr(attention.torch, "get_num_threads", lambda: threads)
    q, k, v = tensors(1, keys, hq=9, hkv=3, dtype=dtype)
    assert attention._key_splits(1, 3, keys, q.device) == {2: 2, 4: 4, 16: 16}[threads]
    buffer_k = torch.empty(3, keys + 100, 16, dtype=dtype).transpose(0, 1)  # as kvtiers.kv_buffer lays it out
    buffer_v = torch.empty_like(buffer_k)
    buffer_k[:keys], buffer_v[:keys] = k, v
    want = attention_part(q.float(), k.float(), v.float(), False, "math")[0]
    got = attention_plain(q, buffer_k[:keys], buffer_v[:keys], False, "sdpa")
    assert got.dtype == dtype and (got.float() - want).abs().max() <= tol


def test_key_splits_give_every_thread_equal_work(monkeypatch):
    for threads, hkv, want in [(2, 3, 2), (16, 8, 2), (16, 3, 16), (4, 4, 1), (2, 2, 1)]:
        monkeypatch.setattr(attention.torch, "get_num_threads", lambda t=threads: t)
        assert attention._key_splits(1, hkv, 100_000, torch.device("cpu")) == want
        assert (want * hkv) % threads == 0 or want == 1
    assert attention._key_splits(1, 3, 1500, torch.device("cpu")) == 1  # too few keys to be worth it
    assert attention._key_splits(2, 3, 100_000, torch.device("cpu")) == 1  # prompts: rows give the work


def test_bfloat16_parts_are_close():
    q, k, v = tensors(64, 128, dtype=torch.bfloat16)
    pos = torch.arange(128)
    parts = [attention_part(q, k[:64], v[:64], False, "sdpa"), attention_part(q, k[64:], v[64:], True, "sdpa")]
    want = attend(q.float(), k.float(), v.float(), pos[64:], pos)
    assert (merge(parts)[0] - want).abs().max() <= 2e-2


def test_backend_choice():
    assert select_backend(None, "cpu") == "sdpa"
    assert select_backend("auto", "cpu") == "sdpa"
    assert select_backend("math", "cpu") == "math"
    with pytest.raises(ModelError, match="CUDA"):
        select_backend("flash", "cpu")
    with pytest.raises(UsageError, match="unknown attention backend"):
        select_backend("fast", "cpu")
