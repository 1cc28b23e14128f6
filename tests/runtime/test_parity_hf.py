"""Our runtime against transformers on tiny random checkpoints saved by transformers (fp32, batch 1).

Each comparison covers a full forward over 5+ attention chunks and a prefill followed by
token-by-token decode across chunk boundaries, checked step by step against HF's full forward.
Every comparison runs on each cache kind: the plain contiguous cache, the hybrid cache with no
budgets (the default), and the hybrid cache with one-block device and host budgets, so its global
layers' KV spills through the host tier onto the disk tier and attention streams it back.
"""

import pytest
import torch

from scoutdoc.runtime import load_model
from scoutdoc.runtime.kvcache import CacheOptions

TOL = 1e-4
CACHE_KINDS = ["contiguous", "hybrid", "hybrid-tiered"]
BLOCK = 8  # tokens per tier block in the tiered cache: a 42-token run fills device, host and disk


def make_cache(model, kind: str, disk_dir):
    if kind == "contiguous":
        return model.new_cache("contiguous")
    if kind == "hybrid":
        return model.new_cache()
    c = model.config
    n_global = sum(not c.layer_is_chunked(i) for i in range(c.num_layers))
    block_bytes = BLOCK * 2 * c.num_kv_heads * c.head_dim * model.dtype.itemsize * n_global
    options = CacheOptions(device_budget=block_bytes, host_budget=block_bytes, disk_dir=disk_dir,
                           block_size=BLOCK, stream_tokens=2 * BLOCK)
    return model.new_cache("hybrid", options)


def assert_tiers_used(cache, kind: str) -> None:
    """Guard against a tiered run that never left the device tier."""
    if kind == "hybrid-tiered":
        used = cache.memory_bytes()
        assert used["global_device"] > 0 and used["global_host"] > 0 and used["global_disk"] > 0, used


@pytest.fixture(scope="module", params=["llama4", "llama"])
def pair(request, tiny, tmp_path_factory):
    hf = tiny.llama4() if request.param == "llama4" else tiny.llama()
    path = tiny.save(hf, tmp_path_factory.mktemp(request.param))
    return hf, load_model(path, dtype="float32", device="cpu")


def reference(hf, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return hf(ids[None]).logits[0].float()


@pytest.mark.parametrize("kind", CACHE_KINDS)
def test_full_forward_matches_transformers(pair, kind, tmp_path):
    hf, ours = pair
    ids = torch.randint(0, hf.config.vocab_size, (44,), generator=torch.Generator().manual_seed(1))
    cache = make_cache(ours, kind, tmp_path)
    with torch.inference_mode():
        logits = ours.module(ids, cache).float()
    assert (logits - reference(hf, ids)).abs().max() <= TOL
    assert_tiers_used(cache, kind)


@pytest.mark.parametrize("kind", CACHE_KINDS)
@pytest.mark.parametrize("prefill_len, chunk", [(13, 5), (8, 8), (1, 512)])
def test_prefill_then_decode_matches_full_forward(pair, prefill_len, chunk, kind, tmp_path):
    hf, ours = pair
    ids = torch.randint(0, hf.config.vocab_size, (42,), generator=torch.Generator().manual_seed(2))
    ref = reference(hf, ids)
    session = ours.new_session(make_cache(ours, kind, tmp_path))
    session, last = ours.prefill(ids[:prefill_len].tolist(), session=session, chunk=chunk)
    assert (last - ref[prefill_len - 1]).abs().max() <= TOL
    for p in range(prefill_len, len(ids)):  # crosses the 8-token chunk boundaries at 16, 24, 32, 40
        with torch.inference_mode():
            step = ours.module(ids[p : p + 1], session.cache)[-1].float()
        assert (step - ref[p]).abs().max() <= TOL, f"position {p}"
    assert session.cache.length == len(ids)
    assert_tiers_used(session.cache, kind)


def test_llama4_features_are_exercised(pair):
    """Guard against a parity test that passes because a feature is inert on this config."""
    hf, ours = pair
    if ours.config.arch != "llama4":
        pytest.skip("llama4 only")
    c = ours.config
    assert c.use_qk_norm and c.attn_temperature_tuning and c.rope_scaling and c.attention_chunk_size == 8
    assert c.layer_uses_rope == [True, False, True, False] and c.layer_is_moe == [False, True, True, False]
    ids = torch.randint(0, c.vocab_size, (40,), generator=torch.Generator().manual_seed(3))
    base = ours.logits(ids)
    c.attention_chunk_size = None  # same weights, chunking off: logits must move a lot
    try:
        assert (ours.logits(ids) - base).abs().max() > 0.1
    finally:
        c.attention_chunk_size = 8
