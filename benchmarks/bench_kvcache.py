"""Peak RSS and KV bytes of HybridCache versus context length, plus snapshot save/load time.

Each context length runs in a fresh subprocess (peak RSS is per process) that prefills the cache
through the real `attend` path in pieces of one attention chunk, with random q/k/v of Scout's
attention shape (8 KV heads x 128, chunk 8192, one global layer per three chunked layers; 8 query
heads instead of 40 to keep the CPU time down — query heads do not change KV bytes). Expected:
local-layer bytes flat once the context passes one chunk, global-layer bytes linear, bytes/token
of the global part = global layers x 2 x 8 x 128 x dtype size.

    python benchmarks/bench_kvcache.py                       # 1k..64k tokens, bf16
    python benchmarks/bench_kvcache.py --contexts 1024 131072 --layers 4
"""

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = """
import json, resource, sys, tempfile, time
from pathlib import Path
import torch
from scoutdoc.runtime.config import ModelConfig
from scoutdoc.runtime.kvcache import CacheOptions, HybridCache
from scoutdoc.runtime.reference import ContiguousCache
from scoutdoc.runtime.snapshot import load_snapshot, save_snapshot

n, layers, heads, chunk, dtype_name, snap_dir = sys.argv[1:]
n, layers, heads, chunk = int(n), int(layers), int(heads), int(chunk)
dtype = getattr(torch, dtype_name)
raw = {"model_type": "llama4_text", "vocab_size": 1024, "hidden_size": heads * 128, "num_hidden_layers": layers,
       "num_attention_heads": heads, "num_key_value_heads": 8, "head_dim": 128, "attention_chunk_size": chunk,
       "no_rope_layers": [int((i + 1) % 4 != 0) for i in range(layers)]}
config = ModelConfig.from_hf(raw)
cache = HybridCache(config, dtype, "cpu", CacheOptions(reserve_tokens=n + 5))
torch.manual_seed(0)
t0 = time.perf_counter()
local_peak = 0
with torch.inference_mode():
    while cache.length < n:
        t = min(chunk, n - cache.length)
        q = torch.randn(t, heads, 128, dtype=dtype)
        kv = torch.randn(t, 8, 128, dtype=dtype)
        for layer in range(layers):
            cache.attend(layer, q, kv, kv)
        cache.advance(t)
        local_peak = max(local_peak, cache.memory_bytes()["local"])
    prefill_s = time.perf_counter() - t0
    peak_fill = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    def decode_ms(c, steps=5):
        q1 = torch.randn(1, heads, 128, dtype=dtype)
        for layer in range(layers):  # warm-up step
            c.attend(layer, q1, q1[:, :8], q1[:, :8])
        c.advance(1)
        t0 = time.perf_counter()
        for _ in range(steps):
            for layer in range(layers):
                c.attend(layer, q1, q1[:, :8], q1[:, :8])
            c.advance(1)
        return (time.perf_counter() - t0) / steps * 1e3

    hybrid_ms = decode_ms(cache)
    # the plain all-layers cache at the same length, filled directly (no prefill needed to time decode)
    plain = ContiguousCache(config, dtype)
    for layer in range(layers):
        plain.k[layer] = torch.randn(n + 64, 8, 128, dtype=dtype)
        plain.v[layer] = torch.randn(n + 64, 8, 128, dtype=dtype)
    plain.length = n
    plain_ms = decode_ms(plain)
    del plain
mem = cache.memory_bytes()
path = Path(snap_dir) / f"snap-{n}.safetensors"
ids = list(range(cache.length))
t0 = time.perf_counter()
size = save_snapshot(cache, ids, {"model": "bench"}, path)
save_s = time.perf_counter() - t0
t0 = time.perf_counter()
loaded, _ = load_snapshot(path, {"model": "bench"}, config, dtype, "cpu", verify=False)
load_s = time.perf_counter() - t0
t0 = time.perf_counter()
load_snapshot(path, {"model": "bench"}, config, dtype, "cpu", verify=True)
load_verified_s = time.perf_counter() - t0
print(json.dumps({"context": n, "peak_rss": peak_fill, **mem, "local_peak": local_peak, "prefill_s": prefill_s,
                  "decode_ms": hybrid_ms, "plain_decode_ms": plain_ms,
                  "snapshot_bytes": size, "save_s": save_s, "load_s": load_s, "load_verified_s": load_verified_s,
                  "global_layers": config.num_global_layers}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # off chunk boundaries, so the chunked layers hold a partial chunk at the end
    parser.add_argument("--contexts", type=int, nargs="+", default=[1000, 4000, 16000, 64000])
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--chunk", type=int, default=8192)
    parser.add_argument("--dtype", default="bfloat16")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as snap_dir:
        for n in args.contexts:
            cmd = [sys.executable, "-c", CHILD, str(n), str(args.layers), str(args.heads), str(args.chunk), args.dtype, snap_dir]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            rows.append(json.loads(out.strip().splitlines()[-1]))
            Path(snap_dir, f"snap-{n}.safetensors").unlink(missing_ok=True)
    mib = 1 << 20
    print(f"layers {args.layers} ({rows[0]['global_layers']} global), q heads {args.heads}, kv 8x128, "
          f"chunk {args.chunk}, {args.dtype}; baseline RSS of an empty process is included")
    print("| context | peak RSS MiB (prefill) | local KV MiB (peak) | global KV MiB | global B/token | prefill s "
          "| decode ms/token hybrid / all-global | snapshot MiB | save s | load s (mmap) | load s (+sha256) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        per_token = r["global_used"] / (r["context"] + 6)
        print(f"| {r['context']:,} | {r['peak_rss'] / mib:.0f} | {r['local_peak'] / mib:.1f} | {r['global_used'] / mib:.1f} "
              f"| {per_token:,.0f} | {r['prefill_s']:.1f} | {r['decode_ms']:.1f} / {r['plain_decode_ms']:.1f} "
              f"| {r['snapshot_bytes'] / mib:.1f} "
              f"| {r['save_s']:.2f} | {r['load_s']:.2f} | {r['load_verified_s']:.2f} |")
    print(f"(this process: {resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024:.0f} MiB max child RSS)")


if __name__ == "__main__":
    main()
