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
