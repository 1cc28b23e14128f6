"""Rotary position tables (with llama3 frequency scaling) and the one rotation kernel the model uses.

Checkpoints come in two row layouts for q/k projections: "rotate-half" (NeoX; HF dense Llama
safetensors) and "adjacent pairs" (Meta / HF Llama 4 safetensors, every llama.cpp GGUF). The loader
normalises everything to rotate-half (`pairs_to_halves`), so the model has a single kernel here.
"""

import math
from typing import Any

import torch


def inverse_frequencies(head_dim: int, theta: float, scaling: dict[str, Any] | None) -> torch.Tensor:
    """fp32 [head_dim/2] inverse frequencies; llama3 scaling divides the long wavelengths by `factor`."""
    # fp32 like transformers, so long-position angles agree bit for bit with the reference.
    # An explicit CPU device: under the loader's meta-device context an arange would go to
    # PyTorch's Python meta kernels, whose first use imports ~800 modules (sympy; ~67 MiB of RSS).
    inv = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64, device="cpu").float() / head_dim))
    if scaling:
        factor = float(scaling["factor"])
        low = float(scaling.get("low_freq_factor", 1.0))
        high = float(scaling.get("high_freq_factor", 4.0))
        orig = float(scaling["original_max_position_embeddings"])
        wavelen = 2 * math.pi / inv
        low_wavelen, high_wavelen = orig / low, orig / high
        scaled = torch.where(wavelen > low_wavelen, inv / factor, inv)
        if high != low:  # with low == high the blended band is empty (Llama 4 Scout)
            smooth = (orig / wavelen - low) / (high - low)
            blended = (1 - smooth) * scaled / factor + smooth * scaled
            medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
            scaled = torch.where(medium, blended, scaled)
        inv = scaled
    return inv


def rope_tables(positions: torch.Tensor, inv_freq: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """The tables `apply_rope` takes for these absolute positions, computed in fp32 then cast:
    cos [T, 1, 1, head_dim/2] and the signed sin [T, 1, 2, head_dim/2] (-sin for the first half)."""
    angles = positions.to(torch.float32)[:, None] * inv_freq[None, :]
    sin = angles.sin()
    return angles.cos().to(dtype)[:, None, None, :], torch.stack((-sin, sin), dim=1).to(dtype)[:, None]


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate-half RoPE on x [T, H, d]: dimension j pairs with j + d/2.

    With x as [T, H, 2, d/2], the rotation is x * cos + x.flip(halves) * signed sin: the same
    products and sums as the textbook (x1 cos - x2 sin, x2 cos + x1 sin), in four kernels instead
    of nine (a decode step runs this once per layer, where the count of small operations is the cost).
    """
    halves = x.unflatten(-1, (2, -1))
    return (halves * cos).add_(halves.flip(-2) * sin).flatten(-2)


def pairs_to_halves(weight: torch.Tensor, num_heads: int) -> torch.Tensor:
    """Reorder q/k projection rows within each head from adjacent pairs (2j, 2j+1) to halves (j, j+d/2).

    An adjacent-pair rotation of rows [0,1,2,3,...] equals a rotate-half rotation of the rows
    reordered to [0,2,4,...,1,3,5,...]; q·k is unchanged because q and k get the same reordering.
    """
    out_features, in_features = weight.shape
    head_dim = out_features // num_heads
    return (
        weight.reshape(num_heads, head_dim // 2, 2, in_features).transpose(1, 2).reshape(out_features, in_features)
    )
