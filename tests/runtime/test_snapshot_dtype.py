"""Snapshots written narrower than their float32 cache (SCOUTDOC_SNAPSHOT_DTYPE): half the size, cast back on load."""

import pytest
import torch

from scoutdoc.errors import UsageError
from scoutdoc.runtime.config import ModelConfig
from scoutdoc.runtime.kvcache import CacheOptions, HybridCache
from scoutdoc.runtime.snapshot import load_snapshot, read_header, save_snapshot, store_dtype_setting

FP = {"model": "tiny-llama4@abc", "tokenizer": "tok@1", "dtype": "float32"}


@pytest.fixture
def filled(tiny):
    config = ModelConfig.from_hf(tiny.LLAMA4)
    n = 20
    g = torch.Generator().manual_seed(0)
    shape = (n, config.num_kv_heads, config.head_dim)
    cache = HybridCache(config, torch.float32)
    cache.load_state(n, {i: (torch.randn(shape, generator=g), torch.randn(shape, generator=g)) for i in cache.global_layers},
                     {i: (torch.randn(shape, generator=g)[-4:], torch.randn(shape, generator=g)[-4:]) for i in cache.local_layers},
                     mapped=False)
    return config, cache, list(range(n))


@pytest.mark.parametrize("store", [torch.bfloat16, torch.float16])
def test_sixteen_bit_snapshot_of_a_float32_cache_is_half_the_size_and_loads_rounded(tmp_path, filled, store):
    config, cache, ids = filled
    full = save_snapshot(cache, ids, FP, tmp_path / "full.kv")
    half = save_snapshot(cache, ids, FP, tmp_path / "half.kv", store_dtype=store)
    assert half < 0.6 * full
    loaded, loaded_ids = load_snapshot(tmp_path / "half.kv", FP, config, torch.float32)
    assert loaded_ids == ids and loaded.kv_dtype == torch.float32
    layer = cache.global_layers[0]
    want = torch.cat([p[0] for p in cache.global_pieces(layer)])
    got = torch.cat([p[0] for p in loaded.global_pieces(layer)])
    assert torch.equal(got, want.to(store).float())  # exactly the rounding, nothing else


def test_sixteen_bit_snapshot_loads_into_a_cache_with_a_disk_tier(tmp_path, filled):
    config, cache, ids = filled
    save_snapshot(cache, ids, FP, tmp_path / "half.kv", store_dtype=torch.bfloat16)
    options = CacheOptions(host_budget=0, device_budget=0, disk_dir=tmp_path / "tier", block_size=4)
    loaded, _ = load_snapshot(tmp_path / "half.kv", FP, config, torch.float32, options=options)
    layer = cache.global_layers[0]
    want = torch.cat([p[1] for p in cache.global_pieces(layer)]).bfloat16().float()
    assert torch.equal(torch.cat([p[1] for p in loaded.global_pieces(layer)]), want)


def test_a_cache_already_sixteen_bit_is_stored_as_it_is(tmp_path, filled):
    config, cache, ids = filled
    narrow = HybridCache(config, torch.bfloat16)
    narrow.load_state(len(ids), {i: tuple(t.bfloat16() for t in torch.cat([torch.stack(p) for p in cache.global_pieces(i)], 1))
                                 for i in cache.global_layers}, {}, mapped=False)
    save_snapshot(narrow, ids, FP, tmp_path / "a.kv", store_dtype=torch.float16)
    header, _ = read_header(tmp_path / "a.kv")
    assert {v["dtype"] for k, v in header.items() if k.startswith("global.")} == {"BF16"}


def test_setting(monkeypatch):
    monkeypatch.delenv("SCOUTDOC_SNAPSHOT_DTYPE", raising=False)
    assert store_dtype_setting() is None
    monkeypatch.setenv("SCOUTDOC_SNAPSHOT_DTYPE", "BFloat16")
    assert store_dtype_setting() == torch.bfloat16
    monkeypatch.setenv("SCOUTDOC_SNAPSHOT_DTYPE", "int4")
    with pytest.raises(UsageError, match="SCOUTDOC_SNAPSHOT_DTYPE"):
        store_dtype_setting()
