"""HybridCache against the all-in-memory reference: same attention outputs for the same q/k/v,
whatever the tiers, piece sizes and chunk boundaries; bounded local layers; snapshots."""

import json
import os
import subprocess
import sys

import pytest
import torch

from scoutdoc.errors import MemoryPlanError, SnapshotError, UsageError
from scoutdoc.runtime.config import ModelConfig
from scoutdoc.runtime.kvcache import CacheOptions, HybridCache, resolve_kv_dtype
from scoutdoc.runtime.reference import ContiguousCache, attend
from scoutdoc.runtime.snapshot import load_snapshot, save_snapshot

C = 8


@pytest.fixture
def config(tiny) -> ModelConfig:
    return ModelConfig.from_hf(tiny.LLAMA4)


def qkv(config: ModelConfig, n: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    shape = (config.num_layers, n)
    q = torch.randn(*shape, config.num_heads, config.head_dim, generator=g)
    k = torch.randn(*shape, config.num_kv_heads, config.head_dim, generator=g)
    v = torch.randn(*shape, config.num_kv_heads, config.head_dim, generator=g)
    return q, k, v


def reference(config, q, k, v, start, end):
    pos = torch.arange(end)
    outs = []
    for layer in range(config.num_layers):
        chunk = config.attention_chunk_size if config.layer_is_chunked(layer) else None
        outs.append(attend(q[layer, start:end], k[layer, :end], v[layer, :end], pos[start:end], pos, chunk))
    return outs


def run(cache, config, q, k, v, pieces, queries=None):
    """Feed consecutive pieces; return max |cache - reference| over every piece and layer.

    With `queries`, each piece asks for the outputs of its last `queries` positions only (all of a
    shorter piece's) while storing every position's keys."""
    worst = 0.0
    for n in pieces:
        s, e = cache.length, cache.length + n
        qs = s if queries is None else max(s, e - queries)
        want = reference(config, q, k, v, qs, e)
        for layer in range(config.num_layers):
            got = cache.attend(layer, q[layer, qs:e], k[layer, s:e], v[layer, s:e])
            assert got.shape == want[layer].shape
            worst = max(worst, (got - want[layer]).abs().max().item())
        cache.advance(n)
    return worst


def tiered(tmp_path, config, **kw):
    # one block of 4 tokens on the device, two on the host, the rest on disk in extents of 8 tokens
    per_token = 2 * config.num_kv_heads * config.head_dim * 4 * config.num_global_layers
    opts = CacheOptions(
        device_budget=4 * per_token, host_budget=8 * per_token, disk_dir=tmp_path / "kv",
        block_size=4, stream_tokens=8, **kw,
    )
    return HybridCache(config, torch.float32, "cpu", opts)


# prompts ending before, on and after chunk boundaries, then decode across C-1, C, C+1 of later chunks
PLANS = [
    [C - 1, 1, 1, 1] + [1] * 20,
    [C, 1, 1] + [1] * 20,
    [C + 1] + [1] * 20,
    [2 * C] + [1] * 10 + [5, 7, 3 * C + 3, 1, 1],
    [3, 5, 13, 1, 2 * C - 1, 1, 1],
    [45, 1, 1, 1],
]


@pytest.mark.parametrize("pieces", PLANS)
@pytest.mark.parametrize("backend", ["sdpa", "math"])
def test_unbounded_matches_reference(config, pieces, backend):
    q, k, v = qkv(config, sum(pieces))
    cache = HybridCache(config, torch.float32, "cpu", CacheOptions(backend=backend))
    assert run(cache, config, q, k, v, pieces) <= 1e-5


@pytest.mark.parametrize("pieces", PLANS)
def test_tiered_matches_unbounded(tmp_path, config, pieces):
    q, k, v = qkv(config, sum(pieces), seed=1)
    cache = tiered(tmp_path, config)
    assert run(cache, config, q, k, v, pieces) <= 1e-5
    mem = cache.memory_bytes()
    assert mem["global_device"] > 0 and mem["global_host"] > 0 and mem["global_disk"] > 0


@pytest.mark.parametrize("pieces", PLANS)
@pytest.mark.parametrize("queries", [1, 3])
def test_last_queries_only(tmp_path, config, pieces, queries):
    """A piece may ask for its last positions' outputs alone (the model's last layer does): every
    position's keys are still stored, so later pieces see the same history in every cache."""
    q, k, v = qkv(config, sum(pieces), seed=6)
    caches = [
        HybridCache(config, torch.float32),
        tiered(tmp_path, config),
        ContiguousCache(config, torch.float32),
        HybridCache(config, torch.float32, "cpu", CacheOptions(backend="math")),
    ]
    for cache in caches:
        assert run(cache, config, q, k, v, pieces, queries) <= 1e-5


def test_kv_is_stored_head_major_and_read_in_place(tmp_path, config):
    """Each head's keys are one contiguous run, so attention reads the cache without a copy."""
    from scoutdoc.runtime.attention import _heads_first

    q, k, v = qkv(config, 20, seed=7)
    layer = config.num_layers - 1  # a global (NoPE) layer of the tiny config
    for cache in (HybridCache(config, torch.float32), ContiguousCache(config, torch.float32), tiered(tmp_path, config)):
        run(cache, config, q, k, v, [20])
        stored = cache.k[layer][:20] if isinstance(cache, ContiguousCache) else next(cache.global_pieces(layer))[0]
        assert torch.equal(stored, k[layer, : stored.shape[0]])
        assert _heads_first(stored).data_ptr() == stored.data_ptr()
        assert stored.transpose(0, 1).stride()[1:] == (config.head_dim, 1)


def test_contiguous_and_hybrid_agree(config):
    q, k, v = qkv(config, 40, seed=2)
    a = ContiguousCache(config, torch.float32)
    b = HybridCache(config, torch.float32)
    for n in [11, 1, 1, 9, 8, 1, 1, 1, 7]:
        s, e = a.length, a.length + n
        for layer in range(config.num_layers):
            ga = a.attend(layer, q[layer, s:e], k[layer, s:e], v[layer, s:e])
            gb = b.attend(layer, q[layer, s:e], k[layer, s:e], v[layer, s:e])
            assert torch.allclose(ga, gb, atol=1e-5)
        a.advance(n)
        b.advance(n)


def test_local_layers_stay_bounded(config):
    n = 40 * C + 3
    q, k, v = qkv(config, n, seed=3)
    cache = HybridCache(config, torch.float32)
    for piece in [C + 5] + [3] * ((n - C - 5) // 3) + [(n - C - 5) % 3]:
        s = cache.length
        for layer in range(config.num_layers):
            cache.attend(layer, q[layer, s : s + piece], k[layer, s : s + piece], v[layer, s : s + piece])
        cache.advance(piece)
    for layer in cache.local_layers:
        assert cache.local_k[layer].shape[0] <= C
        assert cache.local_tokens(layer) == n % C
    for layer in cache.global_layers:
        assert sum(piece[0].shape[0] for piece in cache.global_pieces(layer)) == n


def test_truncate_then_continue(tmp_path, config):
    """Dropping a generated tail and continuing equals never having generated it."""
    q, k, v = qkv(config, 40, seed=9)
    cache = tiered(tmp_path, config)
    run(cache, config, q, k, v, [21, 1, 1])
    assert not cache.can_truncate(15) and not cache.truncate(15) and cache.length == 23  # chunk 1 is gone
    assert cache.truncate(16) and cache.length == 16  # a boundary needs no local KV
    assert run(cache, config, q, k, v, [3, 1]) <= 1e-5  # the reference sees the same q/k/v at 16..19
    assert cache.truncate(18) and cache.length == 18
    assert run(cache, config, q, k, v, [6, 1, 1, 9]) <= 1e-5
    assert not cache.truncate(41)


def test_dense_model_is_all_global():
    dense = ModelConfig.from_hf({
        "architectures": ["LlamaForCausalLM"], "vocab_size": 64, "hidden_size": 32, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 48,
    })
    cache = HybridCache(dense, torch.float32)
    assert cache.local_layers == [] and cache.global_layers == [0, 1]
    q, k, v = qkv(dense, 30, seed=4)
    assert run(cache, dense, q, k, v, [17, 1, 1, 11]) <= 1e-5


def test_full_cache_without_disk_is_refused(config):
    per_token = 2 * config.num_kv_heads * config.head_dim * 4 * config.num_global_layers
    cache = HybridCache(config, torch.float32, "cpu", CacheOptions(device_budget=4 * per_token, host_budget=4 * per_token, block_size=4))
    q, k, v = qkv(config, 12)
    with pytest.raises(MemoryPlanError, match="--kv-disk"):
        run(cache, config, q, k, v, [12])


@pytest.mark.parametrize("kv_dtype, tol", [(torch.bfloat16, 3e-2), (torch.float8_e4m3fn, 2e-1)])
def test_lower_precision_kv_is_consistent(config, kv_dtype, tol):
    """New keys are rounded like stored ones, so piecewise == one shot up to summation order."""
    q, k, v = qkv(config, 30, seed=5)
    outs = []
    for pieces in ([30], [9, 1, 1, 5, 14]):
        cache = HybridCache(config, torch.float32, "cpu", CacheOptions(kv_dtype=kv_dtype))
        got = []
        for n in pieces:
            s = cache.length
            got.append(torch.stack([cache.attend(i, q[i, s : s + n], k[i, s : s + n], v[i, s : s + n]) for i in range(4)]))
            cache.advance(n)
        outs.append(torch.cat(got, dim=1))
    assert cache.local_k[0].dtype == kv_dtype
    assert (outs[0] - outs[1]).abs().max() <= 1e-5
    want = torch.stack(reference(config, q, k, v, 0, 30))
    assert 0 < (outs[0] - want).abs().max() <= tol  # rounded, but close


def test_resolve_kv_dtype():
    assert resolve_kv_dtype("float8", torch.float32, "cpu") == torch.float8_e4m3fn
    assert resolve_kv_dtype(None, torch.bfloat16, "cpu") == torch.bfloat16
    assert resolve_kv_dtype("model", torch.float16, "cpu") == torch.float16
    with pytest.raises(UsageError, match="--kv-dtype"):
        resolve_kv_dtype("int3", torch.float32, "cpu")


# ----- snapshots ---------------------------------------------------------------------------------

FP = {"model": "tiny-llama4@abc", "tokenizer": "tok@1", "dtype": "float32"}


def _prefill(config, q, k, v, n, cache):
    run(cache, config, q, k, v, [n])
    return list(range(100, 100 + n))


def test_snapshot_refuses_other_model_and_dtype(tmp_path, config):
    q, k, v = qkv(config, 10)
    cache = HybridCache(config, torch.float32)
    ids = _prefill(config, q, k, v, 10, cache)
    path = tmp_path / "s.safetensors"
    save_snapshot(cache, ids, FP, path)
    with pytest.raises(SnapshotError, match="model"):
        load_snapshot(path, {**FP, "model": "other@def"}, config, torch.float32)
    with pytest.raises(SnapshotError, match="dtype"):
        load_snapshot(path, {**FP, "dtype": "bfloat16"}, config, torch.float32)
    with pytest.raises(SnapshotError, match="kv"):
        load_snapshot(path, FP, config, torch.float32, options=CacheOptions(kv_dtype=torch.bfloat16))


def test_snapshot_truncated_or_corrupt_is_detected(tmp_path, config):
    q, k, v = qkv(config, 10)
    cache = HybridCache(config, torch.float32)
    ids = _prefill(config, q, k, v, 10, cache)
    path = tmp_path / "s.safetensors"
    size = save_snapshot(cache, ids, FP, path)
    data = path.read_bytes()
    path.write_bytes(data[: size - 7])
    with pytest.raises(SnapshotError, match="truncated"):
        load_snapshot(path, FP, config, torch.float32)
    corrupt = bytearray(data)
    corrupt[-3] ^= 0xFF
    path.write_bytes(bytes(corrupt))
    with pytest.raises(SnapshotError, match="checksum"):
        load_snapshot(path, FP, config, torch.float32)
    path.write_bytes(b"not a snapshot")
    with pytest.raises(SnapshotError):
        load_snapshot(path, FP, config, torch.float32)
    with pytest.raises(SnapshotError, match="no snapshot"):
        load_snapshot(tmp_path / "missing", FP, config, torch.float32)


def test_snapshot_is_readable_by_safetensors(tmp_path, config):
    from safetensors import safe_open

    q, k, v = qkv(config, 11)
    cache = HybridCache(config, torch.bfloat16, "cpu", CacheOptions(block_size=4))
    ids = _prefill(config, q.bfloat16(), k.bfloat16(), v.bfloat16(), 11, cache)
    path = tmp_path / "s.safetensors"
    save_snapshot(cache, ids, FP, path)
    with safe_open(str(path), framework="pt") as f:
        assert f.get_tensor("token_ids").tolist() == ids
        assert torch.equal(f.get_tensor("global.1.k"), k[1, :11].bfloat16())
        assert torch.equal(f.get_tensor("local.0.v"), v[0, 8:11].bfloat16())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads peak RSS from /proc")
def test_snapshot_load_holds_about_one_layer_beside_the_cache(tmp_path, tiny):
    """Loading copies stored layers into the cache one at a time from plain reads: the peak is the
    cache plus about a layer, not the cache plus the whole file (what a memory map of it costs)."""
    hf_config = {**tiny.LLAMA, "num_hidden_layers": 4}
    config = ModelConfig.from_hf(hf_config)  # dense: every layer global
    n = 1 << 16  # 8 MiB per fp32 k or v tensor, 64 MiB in all
    shape = (n, config.num_kv_heads, config.head_dim)
    cache = HybridCache(config, torch.float32)
    cache.load_state(n, {i: (torch.rand(shape), torch.rand(shape)) for i in cache.global_layers}, {}, mapped=False)
    path = tmp_path / "big.safetensors"
    save_snapshot(cache, list(range(n)), FP, path)
    script = f"""
import json
import torch
from scoutdoc.runtime.config import ModelConfig
from scoutdoc.runtime.snapshot import load_snapshot
def hwm():
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM")) / 1024
config = ModelConfig.from_hf(json.loads({json.dumps(json.dumps(hf_config))}))
open("/proc/self/clear_refs", "w").write("5")
before = hwm()
cache, ids = load_snapshot({str(path)!r}, {FP!r}, config, torch.float32)
print(hwm() - before)
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    # the cache is 64 MiB, the reused read buffers 16; a mapped file would add another 64
    assert float(out) < 64 + 40, out


# ----- with the real model ------------------------------------------------------------------------

from scoutdoc.runtime import load_model  # noqa: E402
from scoutdoc.runtime.generate import Session  # noqa: E402


@pytest.fixture(scope="module")
def llama4(tiny, tmp_path_factory):
    hf = tiny.llama4(seed=11)  # own weights: loaded models are cached by weights fingerprint
    path = tiny.save(hf, tmp_path_factory.mktemp("llama4"))
    return hf, load_model(path, dtype="float32", device="cpu"), path


def tiered_for(model, tmp_path) -> HybridCache:
    c = model.config
    per_token = 2 * c.num_kv_heads * c.head_dim * 4 * c.num_global_layers
    opts = CacheOptions(
        device_budget=4 * per_token, host_budget=8 * per_token, disk_dir=tmp_path / "kv", block_size=4, stream_tokens=8
    )
    return HybridCache(c, torch.float32, "cpu", opts)


def decode_logits(model, session, ids, start):
    out = []
    with torch.inference_mode():
        for p in range(start, len(ids)):
            out.append(model.module(torch.tensor(ids[p : p + 1]), session.cache)[-1].float())
            session.ids.append(ids[p])
    return torch.stack(out)


@pytest.mark.parametrize("prefill_len, piece", [(7, 3), (8, 5), (9, 4), (16, 16), (17, 12)])
def test_model_with_tiered_cache_matches_transformers(llama4, tmp_path, prefill_len, piece):
    """Prompts ending at C-1, C, C+1 and on 2C; pieces crossing chunk boundaries; decode to 40."""
    hf, ours, _ = llama4
    ids = torch.randint(0, 128, (40,), generator=torch.Generator().manual_seed(7)).tolist()
    with torch.no_grad():
        want = hf(torch.tensor(ids)[None]).logits[0].float()
    results = []
    for cache in (HybridCache(ours.config, torch.float32), tiered_for(ours, tmp_path)):
        session, last = ours.prefill(ids[:prefill_len], session=Session(cache), chunk=piece)
        results.append(torch.cat([last[None], decode_logits(ours, session, ids, prefill_len)]))
    unbounded, tiered = results
    assert (tiered - unbounded).abs().max() <= 1e-5
    assert (unbounded - want[prefill_len - 1 :]).abs().max() <= 1e-4
    assert tiered_for(ours, tmp_path).local_layers  # the config has chunked layers to bound


SNAPSHOT_CHILD = """
import sys, torch
from scoutdoc.runtime import load_model
from scoutdoc.runtime.generate import Session
from scoutdoc.runtime.kvcache import CacheOptions
from scoutdoc.runtime.snapshot import load_snapshot
model_dir, snap, kv_dir, out, *ids = sys.argv[1:]
ids = [int(i) for i in ids]
model = load_model(model_dir, dtype="float32", device="cpu")
c = model.config
per_token = 2 * c.num_kv_heads * c.head_dim * 4 * c.num_global_layers
opts = CacheOptions(device_budget=4 * per_token, host_budget=4 * per_token, disk_dir=kv_dir, block_size=4, stream_tokens=8)
fp = {"model": model.fingerprint, "tokenizer": "none", "dtype": "float32"}
cache, prefix = load_snapshot(snap, fp, c, torch.float32, "cpu", opts)
session = Session(cache, list(prefix))
logits = []
with torch.inference_mode():
    for p in range(len(prefix), len(ids)):
        logits.append(model.module(torch.tensor(ids[p : p + 1]), session.cache)[-1].float())
torch.save({"prefix": prefix, "logits": torch.stack(logits), "tiers": cache.memory_bytes()}, out)
"""


def test_snapshot_continue_in_fresh_process_equals_recompute(llama4, tmp_path):
    import subprocess
    import sys

    _, ours, model_dir = llama4
    ids = torch.randint(0, 128, (33,), generator=torch.Generator().manual_seed(8)).tolist()
    n_prefix = 21  # ends mid-chunk: the local layers' partial chunk must travel too
    session, _ = ours.prefill(ids[:n_prefix], session=Session(tiered_for(ours, tmp_path)), chunk=6)
    fp = {"model": ours.fingerprint, "tokenizer": "none", "dtype": "float32"}
    path = tmp_path / "snap.safetensors"
    save_snapshot(session.cache, session.ids, fp, path)
    out = tmp_path / "out.pt"
    subprocess.run(
        [sys.executable, "-c", SNAPSHOT_CHILD, str(model_dir), str(path), str(tmp_path / "kv2"), str(out), *map(str, ids)],
        check=True,
    )
    got = torch.load(out)
    assert got["prefix"] == ids[:n_prefix]
    assert got["tiers"]["global_disk"] > 0  # the tail stayed in the mapped snapshot
    in_memory = decode_logits(ours, session, ids, n_prefix)  # the cache that was saved, continued here
    assert (got["logits"] - in_memory).abs().max() <= 1e-5
    recompute = ours.logits(ids)[n_prefix:]  # one full forward: different summation order only
    assert (got["logits"] - recompute).abs().max() <= 5e-5


def test_snapshot_header_edits_are_detected(tmp_path, config):
    """The checksum covers the header: an edited length field, shape or metadata value is caught
    (with verify=False the structure check still catches what would break the load)."""
    import struct

    q, k, v = qkv(config, 10)
    cache = HybridCache(config, torch.float32)
    ids = _prefill(config, q, k, v, 10, cache)
    path = tmp_path / "s.safetensors"
    save_snapshot(cache, ids, FP, path)
    data = path.read_bytes()
    head_len = struct.unpack("<Q", data[:8])[0]
    header = data[8 : 8 + head_len]
    edits = {
        "length field": struct.pack("<Q", head_len - 8) + data[8:],
        "huge length field": struct.pack("<Q", 1 << 62) + data[8:],
        "metadata value": data[:8] + header.replace(b'"length":"10"', b'"length":"11"') + data[8 + head_len :],
        "shape": data[:8] + header.replace(b'"shape":[10,', b'"shape":[11,', 1) + data[8 + head_len :],
    }
    for what, edited in edits.items():
        path.write_bytes(edited)
        with pytest.raises(SnapshotError):
            load_snapshot(path, FP, config, torch.float32)
        if what != "metadata value":  # structure problems are found without the checksum too
            with pytest.raises(SnapshotError):
                load_snapshot(path, FP, config, torch.float32, verify=False)
    meta = json.loads(header)["__metadata__"]
    assert len(meta["sha256"]) == 64 and meta["format"] == "scoutdoc-kv/2"


def test_stale_snapshot_temps_are_removed(tmp_path, config):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".old.kv.{dead.stdout.strip()}.tmp"
    live = tmp_path / f".other.kv.{os.getppid()}.tmp"
    stale.write_bytes(b"half a snapshot")
    live.write_bytes(b"a snapshot being written")
    q, k, v = qkv(config, 10)
    cache = HybridCache(config, torch.float32)
    ids = _prefill(config, q, k, v, 10, cache)
    save_snapshot(cache, ids, FP, tmp_path / "new.kv")
    assert not stale.exists() and live.exists()


@pytest.mark.parametrize("kv_dtype", [torch.float8_e4m3fn, torch.float16])
def test_a_bfloat16_model_decodes_over_a_kv_cache_of_another_dtype(config, kv_dtype):
    """`--kv-dtype float8` (which the memory planner suggests) and float16 with the bfloat16 default:
    the one-row decode path handed SDPA keys of another dtype than the query (an internal error)."""
    q, k, v = (t.to(torch.bfloat16) for t in qkv(config, 12, seed=6))
    cache = HybridCache(config, torch.bfloat16, "cpu", CacheOptions(kv_dtype=kv_dtype))
    got = []
    for n in [9, 1, 1, 1]:
        s = cache.length
        got.append(torch.stack([cache.attend(i, q[i, s : s + n], k[i, s : s + n], v[i, s : s + n]) for i in range(4)]))
        cache.advance(n)
    out = torch.cat(got, dim=1).float()
    assert out.dtype == torch.float32 and cache.local_k[0].dtype == kv_dtype
    want = torch.stack(reference(config, *(t.float() for t in (q, k, v)), 0, 12))
    assert (out - want).abs().max() <= 2e-1
