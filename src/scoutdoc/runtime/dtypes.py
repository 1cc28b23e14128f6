"""The dtype names users write (`--dtype`, `--kv-dtype`, the planner's figures) and the torch dtypes
they stand for: one table for weights, the KV cache and the memory planner."""

import torch

DTYPES = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
    "float8": torch.float8_e4m3fn,
    "float8_e4m3": torch.float8_e4m3fn,
    "float8_e5m2": torch.float8_e5m2,
}
WEIGHT_DTYPES = ("float32", "bfloat16", "float16")  # what weights and activations compute in; float8 is KV only


def auto_dtype(device: torch.device | str) -> str:
    """What `--dtype auto` computes in on `device`: bfloat16 where the hardware multiplies it natively
    (CUDA GPUs from Ampere on, CPUs with AMX or AVX512-BF16), float16 on older GPUs, else float32.

    On a CPU with AMX, bfloat16 prefills 1.4-3x faster than float32 and decodes 1.15x faster, and the
    default model answered the QA benchmark equally well in both (docs/benchmarks.md). Without native
    support bfloat16 is emulated and slower than float32. A GPU that is planned for but absent
    (`models info --device cuda` on a laptop) counts as a current one.
    """
    device = torch.device(device)
    if device.type == "cuda":
        if not torch.cuda.is_available() or torch.cuda.is_bf16_supported(including_emulation=False):
            return "bfloat16"
        return "float16"
    if device.type == "cpu" and _cpu_computes_bf16():
        return "bfloat16"
    return "float32"


def _cpu_computes_bf16() -> bool:
    # torch.cpu's own feature probes (private, x86 only): absent ones count as no support
    probes = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in probes)
