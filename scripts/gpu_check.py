"""GPU check for the attention backends, the tiered KV cache and prefill throughput (CUDA only).

1. Every attention backend available on the GPU (flash-attn, SDPA, FlexAttention, math) gives the
   same split-and-merged attention as the CPU fp32 reference (random tiny shapes, chunk boundaries).
2. The HybridCache on the GPU with a tiny device budget (pinned host + disk tiers) gives the same
   outputs as the CPU unbounded cache, through the tiny Llama 4 *model* when transformers is
   installed (logits), else at the attention level.
3. Prefill throughput of a Scout-shaped model with one chunked and one global layer (real
   dimensions: hidden 5120, 40/8 heads x 128, 16 experts x 8192, vocab 202048; random weights),
   per available backend, plus host->device streaming rate of offloaded global KV during decode.

Exits 2 with one line when there is no CUDA device. Runs in a few minutes on one H100.
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

from scoutdoc.runtime.attention import attention_part, flash_attn_available, flex_available, merge
from scoutdoc.runtime.config import ModelConfig
from scoutdoc.runtime.kvcache import CacheOptions, HybridCache
from scoutdoc.runtime.reference import attend

TINY = {
    "model_type": "llama4_text", "vocab_size": 128, "hidden_size": 64,
    "intermediate_size": 32, "intermediate_size_mlp": 96,
    "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16,
    "num_local_experts": 4, "num_experts_per_tok": 1, "moe_layers": [1, 2], "no_rope_layers": [1, 0, 1, 0],
    "attention_chunk_size": 8, "attn_temperature_tuning": True, "floor_scale": 4, "attn_scale": 0.5,
    "use_qk_norm": True, "rms_norm_eps": 1e-05, "hidden_act": "silu", "max_position_embeddings": 256,
    "initializer_range": 0.2,
    "rope_parameters": {"rope_type": "llama3", "rope_theta": 10000.0, "factor": 16.0, "low_freq_factor": 1.0,
                        "high_freq_factor": 1.0, "original_max_position_embeddings": 64},
    "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0, "tie_word_embeddings": False, "attention_bias": False,
}
SCOUT_LAYERS = {
    "model_type": "llama4_text", "hidden_size": 5120, "intermediate_size": 8192, "intermediate_size_mlp": 16384,
    "num_hidden_layers": 2, "num_attention_heads": 40, "num_key_value_heads": 8, "head_dim": 128,
    "vocab_size": 202048, "num_local_experts": 16, "num_experts_per_tok": 1, "interleave_moe_layer_step": 1,
    "no_rope_layers": [1, 0], "attention_chunk_size": 8192, "use_qk_norm": True, "attn_temperature_tuning": True,
    "rope_theta": 500000.0, "rope_scaling": {"rope_type": "llama3", "factor": 16.0, "low_freq_factor": 1.0,
                                             "high_freq_factor": 1.0, "original_max_position_embeddings": 8192},
}
FAILURES: list[str] = []


def check(name: str, err: float, tol: float) -> None:
    ok = err <= tol
    print(f"  {'ok  ' if ok else 'FAIL'} {name}: max abs err {err:.2e} (tol {tol:.0e})")
    if not ok:
        FAILURES.append(name)


def backends(device: str) -> list[str]:
    names = ["math", "sdpa"]
    if flex_available():
        names.append("flex")
    if device == "cuda" and flash_attn_available():
        names.append("flash")
    return names


def check_backends(device: str) -> None:
    print("1. split attention per backend vs CPU fp32 reference")
    g = torch.Generator().manual_seed(0)
    for tq, past, hq, hkv, d in [(1, 777, 40, 8, 128), (300, 1000, 40, 8, 128), (64, 0, 8, 2, 64)]:
        q = torch.randn(tq, hq, d, generator=g)
        k = torch.randn(past + tq, hkv, d, generator=g)
        v = torch.randn(past + tq, hkv, d, generator=g)
        pos = torch.arange(past + tq)
        want = attend(q, k, v, pos[past:], pos)
        for backend in backends(device):
            for dtype, tol in [(torch.float32, 1e-4), (torch.bfloat16, 3e-2)]:
                if backend == "flash" and dtype == torch.float32:
                    continue
                qd, kd, vd = (t.to(device, dtype) for t in (q, k, v))
                cut = past // 3
                parts = [attention_part(qd, kd[a:b], vd[a:b], False, backend) for a, b in [(0, cut), (cut, past)]]
                parts.append(attention_part(qd, kd[past:], vd[past:], True, backend))
                out = merge(parts)[0].float().cpu()
                check(f"{backend:5s} {str(dtype)[6:]:8s} tq={tq} past={past} hq={hq}", (out - want).abs().max().item(), tol)


def tiny_budget(config: ModelConfig, tmp: Path, itemsize: int) -> CacheOptions:
    per_token = 2 * config.num_kv_heads * config.head_dim * itemsize * config.num_global_layers
    return CacheOptions(device_budget=4 * per_token, host_budget=8 * per_token, disk_dir=tmp / "kv", block_size=4,
                        stream_tokens=8)


def check_offload(device: str, tmp: Path) -> None:
    print("2. tiered cache on the GPU (device -> pinned host -> disk) vs CPU unbounded")
    try:
        from transformers import Llama4ForCausalLM, Llama4TextConfig
    except ImportError:
        Llama4ForCausalLM = None
    if Llama4ForCausalLM is not None:
        from scoutdoc.runtime import load_model
        from scoutdoc.runtime.generate import Session

        torch.manual_seed(0)
        hf = Llama4ForCausalLM(Llama4TextConfig(**TINY)).eval()
        hf.save_pretrained(tmp / "tiny")
        ids = torch.randint(0, 128, (40,), generator=torch.Generator().manual_seed(1)).tolist()
        cpu = load_model(tmp / "tiny", dtype="float32", device="cpu")
        gpu = load_model(tmp / "tiny", dtype="float32", device=device)
        want = cpu.logits(ids)
        for backend in backends(device):
            if backend == "flash":
                continue  # fp32 model; flash-attn runs in half precision (checked in step 1)
            opts = tiny_budget(gpu.config, tmp, 4)
            opts.backend = backend
            cache = HybridCache(gpu.config, torch.float32, device, opts)
            session, last = gpu.prefill(ids[:9], session=Session(cache), chunk=4)
            got = [last.cpu()]
            with torch.inference_mode():
                for p in range(9, len(ids)):
                    got.append(gpu.module(torch.tensor(ids[p : p + 1], device=device), session.cache)[-1].float().cpu())
            tiers = cache.memory_bytes()
            assert tiers["global_host"] and tiers["global_disk"], tiers
            check(f"model logits, {backend} tiered on {device}", (torch.stack(got) - want[8:]).abs().max().item(), 1e-4)
        return
    print("  (transformers not installed: attention-level check)")
    config = ModelConfig.from_hf(TINY)
    g = torch.Generator().manual_seed(2)
    q = torch.randn(4, 40, 4, 16, generator=g)
    k = torch.randn(4, 40, 2, 16, generator=g)
    ref = HybridCache(config, torch.float32, "cpu")
    cache = HybridCache(config, torch.float32, device, tiny_budget(config, tmp, 4))
    worst = 0.0
    for n in [9, 1, 1, 7, 1, 5, 16]:
        s = ref.length
        for layer in range(4):
            a = ref.attend(layer, q[layer, s : s + n], k[layer, s : s + n], k[layer, s : s + n])
            b = cache.attend(layer, *(t[layer, s : s + n].to(device) for t in (q, k, k)))
            worst = max(worst, (a - b.cpu()).abs().max().item())
        ref.advance(n)
        cache.advance(n)
    check(f"attention, tiered on {device}", worst, 1e-4)


# --allow-cpu shrinks the Scout-shaped model so the same code path can be exercised without a GPU.
CPU_SHRINK = {"hidden_size": 320, "intermediate_size": 256, "vocab_size": 4096, "num_local_experts": 4}


def scout_model(device: str):
    from scoutdoc.runtime.model import Transformer
    from scoutdoc.runtime.rope import inverse_frequencies

    config = ModelConfig.from_hf({**SCOUT_LAYERS, **(CPU_SHRINK if device == "cpu" else {})})
    with torch.device("meta"):
        model = Transformer(config)
    model = model.to(dtype=torch.bfloat16).to_empty(device=device)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.fill_(1.0) if "norm" in name else p.normal_(0.0, 0.02)
    model.inv_freq = inverse_frequencies(config.head_dim, config.rope_theta, config.rope_scaling).to(device)
    return config, model.eval()


def bench_prefill(device: str, tokens: int, piece: int) -> None:
    print(f"3. Scout-shaped prefill (1 chunked + 1 global layer, bf16, {tokens} tokens in pieces of {piece})")
    config, model = scout_model(device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    ids = torch.randint(0, config.vocab_size, (tokens,), device=device)
    for backend in backends(device):
        if backend in ("math", "flex"):
            continue  # reference / eager paths, not meant for 8k-token pieces
        cache = HybridCache(config, torch.bfloat16, device, CacheOptions(backend=backend, reserve_tokens=tokens + 64))
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        with torch.inference_mode():
            model(ids[:256], HybridCache(config, torch.bfloat16, device, CacheOptions(backend=backend)), last_only=True)
            sync()
            start = time.perf_counter()
            for s in range(0, tokens, piece):
                model(ids[s : s + piece], cache, last_only=True)
            sync()
            took = time.perf_counter() - start
            t0 = time.perf_counter()
            for _ in range(8):
                model(ids[:1], cache, last_only=True)
            sync()
            decode_ms = (time.perf_counter() - t0) / 8 * 1e3
        peak = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else float("nan")
        print(f"  {backend:5s}: prefill {tokens / took:,.0f} tok/s per 2 layers ({took:.1f} s), "
              f"decode {decode_ms:.1f} ms/token at {tokens} ctx, peak GPU {peak:.1f} GiB")
    del model


def bench_streaming(device: str, tokens: int) -> None:
    print(f"4. decode over host-resident global KV ({tokens:,} tokens, one global layer, bf16)")
    config = ModelConfig.from_hf({**SCOUT_LAYERS, "num_hidden_layers": 1, "no_rope_layers": [0]})
    per_layer_token = 2 * 8 * 128 * 2
    opts = CacheOptions(device_budget=0, stream_tokens=16384)
    cache = HybridCache(config, torch.bfloat16, device, opts)
    kv = torch.randn(8192, 8, 128, dtype=torch.bfloat16, device=device)
    q = torch.randn(8192, 40, 128, dtype=torch.bfloat16, device=device)
    with torch.inference_mode():
        while cache.length < tokens:
            n = min(8192, tokens - cache.length)
            cache._store_global(0, cache.length, kv[:n], kv[:n])  # fill without the O(N^2) prefill
            cache.advance(n)
        sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
        cache.attend(0, q[:1], kv[:1], kv[:1])
        cache.advance(1)
        sync()
        start = time.perf_counter()
        cache.attend(0, q[:1], kv[:1], kv[:1])
        sync()
        took = time.perf_counter() - start
    gbytes = cache.length * per_layer_token / 1e9
    print(f"  one decode step: {took * 1e3:.1f} ms for {gbytes:.2f} GB of host KV -> {gbytes / took:.1f} GB/s "
          f"(pinned: {cache.extents[0][0].k.is_pinned() if device == 'cuda' else 'n/a'})")


def main() -> int:
    parser = argparse.ArgumentParser(description="scoutdoc GPU check")
    parser.add_argument("--allow-cpu", action="store_true", help="run the same checks on CPU with small sizes")
    parser.add_argument("--tokens", type=int, default=32768)
    parser.add_argument("--stream-tokens", type=int, default=262144)
    args = parser.parse_args()
    if not torch.cuda.is_available() and not args.allow_cpu:
        print("gpu_check: no CUDA device visible to PyTorch (torch.cuda.is_available() is False); "
              "run this on a machine with an NVIDIA GPU and a CUDA build of torch", file=sys.stderr)
        return 2
    device = "cuda" if torch.cuda.is_available() else "cpu"
    name = torch.cuda.get_device_name() if device == "cuda" else "CPU"
    print(f"device: {name}; torch {torch.__version__}; flash-attn: {flash_attn_available()}; "
          f"backends: {', '.join(backends(device))}")
    with tempfile.TemporaryDirectory() as tmp:
        check_backends(device)
        check_offload(device, Path(tmp))
    bench_prefill(device, args.tokens, min(8192, args.tokens))
    bench_streaming(device, args.stream_tokens)
    if FAILURES:
        print(f"FAILED: {len(FAILURES)} check(s): {', '.join(FAILURES)}")
        return 1
    print("all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
