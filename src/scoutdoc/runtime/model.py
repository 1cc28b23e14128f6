"""The decoder: one code path for Llama 4 text models (MoE, RoPE/NoPE, chunked attention) and dense Llama.

Plain PyTorch in the gpt-fast style: batch 1, no padding, tensors shaped [T, ...]. Positions come
from the cache (`cache.length ..`), and each layer hands its keys/values to `cache.attend`, which
stores them and applies the layer's mask, so the model never builds masks itself.

Weights arrive already normalised by `weights.py`: q/k rows in rotate-half order, q|k|v fused into
one matrix and gate|up fused into one, so a layer runs few large matmuls and few Python-level ops
(decode speed on CPU is dominated by per-op dispatch, not FLOPs).
"""

from contextlib import contextmanager
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig
from .kvcache import KVCache
from .qexperts import expert_linear
from .qlinear import QuantLinear, TiedQ8Head
from .quant import Q8Table
from .rope import apply_rope, inverse_frequencies, rope_tables


class RMSNorm(nn.Module):
    """HF order: normalise in fp32, cast back to the activation dtype, then multiply by the weight."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return unit_rms(x, self.eps).mul_(self.weight)


def unit_rms(x: torch.Tensor, eps: float) -> torch.Tensor:
    """x / rms(x) over the last dim (also Llama 4's weightless QK-norm), in HF's order: the mean
    square and the scaling in fp32, then cast back to the activation dtype.

    One explicit fp32 copy, scaled in place, then one cast back: 0.33 ms for 2048 bf16 rows of the
    default model, against 0.57 ms when `vector_norm(dtype=fp32)` and a mixed-dtype `mul` convert
    x on their own (three copies), and about 1.6 ms for `F.rms_norm`; all give identical results.
    """
    xf = x.float()  # x itself when it is already fp32: then it must not be scaled in place
    norm = torch.linalg.vector_norm(xf, dim=-1, keepdim=True)
    inv = torch.rsqrt(norm.mul_(norm).div_(_constant(x.shape[-1])).add_(_constant(eps)))
    if xf is x:
        return x * inv
    return xf.mul_(inv).to(x.dtype)


@lru_cache(maxsize=None)
def _constant(value: float) -> torch.Tensor:
    """A 0-dim fp32 tensor for in-place arithmetic: a Python number is wrapped and cast on every
    call (about 1 us each, and a decode step of the default model runs 61 norms of 4 such ops);
    the results are the same bits."""
    return torch.tensor(value, dtype=torch.float32)


class SwiGLU(nn.Module):
    """down(silu(gate(x)) * up(x)) with gate and up fused in one [2F, H] matrix (gate rows first)."""

    def __init__(self, hidden: int, width: int):
        super().__init__()
        self.width = width
        self.gate_up = nn.Linear(hidden, 2 * width, bias=False)
        self.down = nn.Linear(width, hidden, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if isinstance(self.gate_up, nn.Linear):
            w = self.gate_up.weight if x.shape[0] > 1 else None
        else:  # a quantized weight dequantized for a prompt, as QuantLinear itself would (None: its kernel)
            w = self.gate_up.dense_weight(x) if isinstance(self.gate_up, QuantLinear) else None
        if w is None:  # decode, a packed weight, or a quantized kernel
            gate_up = self.gate_up(x)
            return self.down(F.silu(gate_up[..., : self.width]).mul_(gate_up[..., self.width :]))
        # Prompts with a dense weight: two GEMMs on row slices of it (no copy). oneDNN runs them
        # faster than one [2F, H] GEMM (64 against 79 ms at 7000 tokens, bf16), and their contiguous
        # outputs let silu and the product work in place.
        gate = F.silu(F.linear(x, w[: self.width]), inplace=True)
        return self.down(gate.mul_(F.linear(x, w[self.width :])))


class MoE(nn.Module):
    """Top-k router with sigmoid scores applied to each expert's *input*, plus an always-on shared expert.

    Only the selected experts run: tokens are grouped by expert, so cost grows with k, not with the
    number of experts. Expert weights are [E, out, in] so each expert is an `F.linear` (or, once
    quantized, a `qexperts.QuantExperts` bank that runs the same product on its own kernel).
    """

    def __init__(self, hidden: int, width: int, num_experts: int, top_k: int):
        super().__init__()
        self.width = width
        self.top_k = top_k
        self.num_experts = num_experts
        self.router = nn.Linear(hidden, num_experts, bias=False)
        self.experts_gate_up = nn.Parameter(torch.empty(num_experts, 2 * width, hidden))
        self.experts_down = nn.Parameter(torch.empty(num_experts, hidden, width))
        self.shared = SwiGLU(hidden, width)

    def _expert(self, e: int, x: torch.Tensor) -> torch.Tensor:
        gate, up = expert_linear(self.experts_gate_up, e, x).split(self.width, dim=-1)
        return expert_linear(self.experts_down, e, F.silu(gate) * up)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.router(x)
        top_logits, top_experts = torch.topk(logits, self.top_k, dim=-1)
        scores = torch.sigmoid(top_logits.float()).to(x.dtype)  # [T, k]
        out = self.shared(x)
        if x.shape[0] == 1:  # decode: no grouping needed
            for slot, e in enumerate(top_experts[0].tolist()):
                out = out + self._expert(e, x * scores[:, slot : slot + 1])
            return out
        flat_experts = top_experts.flatten()
        order = torch.argsort(flat_experts, stable=True)
        counts = torch.bincount(flat_experts, minlength=self.num_experts).tolist()
        token_of = order // self.top_k
        scaled = x[token_of] * scores.flatten()[order][:, None]
        start = 0
        for e, n in enumerate(counts):
            if n:
                rows = slice(start, start + n)
                out.index_add_(0, token_of[rows], self._expert(e, scaled[rows]))
                start += n
        return out


class Attention(nn.Module):
    def __init__(self, config: ModelConfig, layer: int):
        super().__init__()
        self.layer = layer
        self.num_heads = config.num_heads
        self.num_kv_heads = config.num_kv_heads
        self.head_dim = config.head_dim
        self.eps = config.rms_norm_eps
        self.uses_rope = config.layer_uses_rope[layer]
        self.qk_norm = config.use_qk_norm and self.uses_rope
        self.temperature = config.attn_temperature_tuning and not self.uses_rope
        qkv_rows = (config.num_heads + 2 * config.num_kv_heads) * config.head_dim
        self.qkv = nn.Linear(config.hidden_size, qkv_rows, bias=False)
        self.o = nn.Linear(config.num_heads * config.head_dim, config.hidden_size, bias=False)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        q_scale: torch.Tensor | None,
        cache: KVCache,
        last_only: bool = False,
    ) -> torch.Tensor:
        """Attention output for every row of x, or with `last_only` for its last row alone (every
        row's keys and values still go to the cache)."""
        T = x.shape[0]
        nq, nkv, d = self.num_heads, self.num_kv_heads, self.head_dim
        qkv = self.qkv(x).view(T, nq + 2 * nkv, d)
        qk, v = qkv[:, : nq + nkv], qkv[:, nq + nkv :]
        if self.uses_rope:
            qk = apply_rope(qk, cos, sin)  # q and k in one call
            if self.qk_norm:
                qk = unit_rms(qk, self.eps)
        q, k = qk[:, :nq], qk[:, nq:]
        if last_only:
            q = q[-1:]
            q_scale = None if q_scale is None else q_scale[-1:]
        if self.temperature:
            q = (q * q_scale).to(x.dtype)
        out = cache.attend(self.layer, q, k, v)
        return self.o(out.reshape(q.shape[0], nq * d))


# The feed-forward part of a long prompt runs this many rows at a time: its [rows, 2F] intermediate
# is the largest activation (for Llama 3 8B, 8192 rows would be 470 MB), while attention needs the
# whole piece at once to stay one fused kernel call.
FFN_ROWS = 2048


class Block(nn.Module):
    def __init__(self, config: ModelConfig, layer: int):
        super().__init__()
        self.attn_norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.attn = Attention(config, layer)
        self.ffn_norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        if config.layer_is_moe[layer]:
            self.ffn: nn.Module = MoE(
                config.hidden_size, config.intermediate_size, config.num_experts, config.experts_per_token
            )
        else:
            self.ffn = SwiGLU(config.hidden_size, config.intermediate_size_mlp)

    def forward(self, x, cos, sin, q_scale, cache, last_only: bool = False):
        """With `last_only` the output is the last row alone: the last layer of a prefill piece
        needs every row's keys and values but only the final row's hidden state."""
        h = (x[-1:] if last_only else x) + self.attn(self.attn_norm(x), cos, sin, q_scale, cache, last_only)
        for start in range(0, h.shape[0], FFN_ROWS):  # rows are independent here: bound the activations
            rows = h[start : start + FFN_ROWS]
            rows += self.ffn(self.ffn_norm(rows))
        return h


class Transformer(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        # `_weight` skips nn.Embedding's normal_() init: the loader assigns the checkpoint's tensor, and
        # normal_ on the meta device would import PyTorch's Python meta kernels (~67 MiB of RSS).
        self.embed = nn.Embedding(
            config.vocab_size, config.hidden_size, _weight=torch.empty(config.vocab_size, config.hidden_size)
        )
        self.layers = nn.ModuleList(Block(config, i) for i in range(config.num_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.register_buffer(
            "inv_freq",
            inverse_frequencies(config.head_dim, config.rope_theta, config.rope_scaling),
            persistent=False,
        )
        self._needs_temperature = config.attn_temperature_tuning and not all(config.layer_uses_rope)

    def tie_weights(self) -> None:
        self.lm_head.weight = self.embed.weight

    def use_q8_table(self, table: Q8Table, fast_decode: bool = False) -> None:
        """Look tokens up in a quantized table (and, when tied, project onto it) instead of a dense
        one; `fast_decode`: see `TiedQ8Head`."""
        self.embed = table
        if self.config.tie_word_embeddings:
            self.lm_head = TiedQ8Head(table, fast_decode)

    def temperature_scales(self, positions: torch.Tensor) -> torch.Tensor:
        """fp32 [T, 1, 1] query scales for NoPE layers: 1 + attn_scale * ln(1 + floor((p + 1) / floor_scale))."""
        c = self.config
        p = positions.to(torch.float32)
        return (torch.log1p(torch.floor((p + 1.0) / c.floor_scale)) * c.attn_scale + 1.0)[:, None, None]

    def forward(self, ids: torch.Tensor, cache: KVCache, last_only: bool = False, greedy: bool = False) -> torch.Tensor:
        """Logits [T, vocab] (or [1, vocab] with `last_only`) for ids [T] at positions cache.length..

        `greedy`: the caller only takes the highest logit (greedy decoding, with or without a
        repetition penalty), so a head may compute only the best candidates' logits exactly
        (`TiedQ8Head.ranked`); perplexity, sampling and log-probabilities get exact logits."""
        T = ids.shape[0]
        with _cpu_matvec_kernels(T == 1 and ids.device.type == "cpu"):
            x = self.embed(ids)
            positions = torch.arange(cache.length, cache.length + T, device=ids.device)
            cos, sin = rope_tables(positions, self.inv_freq, x.dtype)
            q_scale = self.temperature_scales(positions) if self._needs_temperature else None
            last = len(self.layers) - 1
            for i, block in enumerate(self.layers):
                x = block(x, cos, sin, q_scale, cache, last_only and i == last)
            cache.advance(T)
            h = self.norm(x)
            if greedy and T == 1 and isinstance(self.lm_head, TiedQ8Head):
                return self.lm_head.ranked(h)
            return self.lm_head(h)


@contextmanager
def _cpu_matvec_kernels(active: bool):
    """Route one-row matmuls (a decode step) to PyTorch's own CPU kernels instead of oneDNN's.

    For bfloat16, oneDNN's matrix-vector product is 2-3x slower than PyTorch's native one on
    CPU (torch 2.13, AVX-512 BF16: 121 GEMVs of the default model take ~33 ms against ~13 ms),
    while oneDNN wins from two rows up, so prefill keeps it. fp32 and fp16 are unaffected.
    """
    if not active or not torch.backends.mkldnn.enabled:
        yield
        return
    torch.backends.mkldnn.enabled = False
    try:
        yield
    finally:
        torch.backends.mkldnn.enabled = True
