"""Quantized weights: the plain formats every kernel layout is made from, and token tables kept in
GGUF's Q8_0 form in memory (int8 values with one scale per 32 of them).

Kernels for the formats live beside this file: `qlinear.py` (one matrix) and `qexperts.py` (an
MoE expert bank).

The token embedding is the largest single tensor of small models (28M of the default model's 135M
parameters) and, when tied, is also the LM head. Stored as Q8_0 it takes 1.06 bytes per value
instead of 2 (bf16) or 4 (fp32), and nothing is lost: every dequantized value fp16 scale x int8 is
exact in fp32, so a looked-up row equals the dense table's row bit for bit.

The tied LM head multiplies by the table without expanding it: one `_weight_int8pack_mm` per
32-wide block with unit scales gives the unscaled partial dot products, which are then scaled and
summed in fp32 (PyTorch's int8 kernel only takes one scale per output row, in the activation dtype;
fp16 scales rounded to bf16 would be less exact); prompts (more than one row) use dense blocks.
That keeps the dense model's logits, but a decode step pays 18 small products (4.2 ms for the
default model). A quantized model (`--quantize` other than none) therefore also gets a per-row
int8 copy of the table for its decode steps, and a 4-bit copy that shortlists a greedy step's
candidates (`qlinear.TiedQ8Head`).
"""

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    import numpy as np

Q8_BLOCK = 32


class Q8Table(nn.Module):
    """A [vocab, hidden] token table held as int8 values [blocks, vocab, 32] and fp32 scales
    [blocks, vocab]: block-major, so each block is one contiguous int8 matrix for the int8 kernel."""

    def __init__(self, values: torch.Tensor, scales: torch.Tensor, dtype: torch.dtype):
        super().__init__()
        self.dtype = dtype
        self.register_buffer("values", values.contiguous())
        self.register_buffer("scales", scales.contiguous())
        self.register_buffer("unit", torch.ones(values.shape[1], dtype=dtype, device=values.device))

    @property
    def shape(self) -> tuple[int, int]:
        blocks, vocab, _ = self.values.shape
        return vocab, blocks * Q8_BLOCK

    def rows(self, start: int = 0, end: int | None = None, ids: torch.Tensor | None = None) -> torch.Tensor:
        """Dequantized rows (ids, or start:end) in fp32: exactly the dense table's values."""
        values = self.values[:, start:end] if ids is None else self.values[:, ids]
        scales = self.scales[:, start:end] if ids is None else self.scales[:, ids]
        out = values.float().mul_(scales[..., None])  # [blocks, n, 32]
        return out.permute(1, 0, 2).reshape(out.shape[1], -1)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """The embedding lookup: rows for ids [T] -> [T, hidden] in the model dtype."""
        return self.rows(ids=ids).to(self.dtype)

    def requantized(self, *kinds: str, group: int = 32, rows_per_step: int = 1024) -> list["Quantized"]:
        """The table in other plain formats (`quantize`), one per kind, made a few rows at a time
        into preallocated tensors, so loading never holds a dense copy of the table; each block of
        rows is dequantized once for all the kinds."""
        vocab = self.shape[0]
        held: list[Quantized] = []
        for start in range(0, vocab, rows_per_step):
            rows = self.rows(start, start + rows_per_step)
            for i, kind in enumerate(kinds):
                part = quantize(rows, kind, group)
                if not start:
                    held.append(part.map_tensors(lambda t: t.new_empty(vocab, *t.shape[1:])))
                for whole, piece in zip(held[i].tensors(), part.tensors()):
                    whole[start : start + rows_per_step] = piece
        return held

    def project(self, x: torch.Tensor, rows_per_step: int = 8192) -> torch.Tensor:
        """x [T, hidden] times the table's transpose -> fp32 logits [T, vocab] (the tied LM head)."""
        vocab, hidden = self.shape
        if x.shape[0] == 1 and x.device.type == "cpu" and x.dtype == self.unit.dtype:
            parts = torch.cat([
                torch._weight_int8pack_mm(x[:, b * Q8_BLOCK : (b + 1) * Q8_BLOCK], self.values[b], self.unit)
                for b in range(self.values.shape[0])
            ])  # [blocks, vocab]: unscaled partial sums, each accumulated in fp32 by the kernel
            return parts.float().mul_(self.scales).sum(dim=0, keepdim=True)
        out = torch.empty(x.shape[0], vocab, dtype=torch.float32, device=x.device)
        for start in range(0, vocab, rows_per_step):
            block = self.rows(start, start + rows_per_step).to(x.dtype)
            out[:, start : start + block.shape[0]] = F.linear(x, block)
        return out


# --- quantized matrices in a plain form ------------------------------------------------------

QUANT_KINDS = ("int8", "int4", "fp8")
INT4_GROUP = 64  # values per int4 scale/zero pair when quantizing dense weights (GGUF Q4_0/Q4_1 keep 32)
FP8_MAX = 448.0  # largest finite float8_e4m3fn


@dataclass
class Quantized:
    """A [out, in] matrix in a plain quantized form that any kernel layout is made from.

    - int8: `values` int8, `scales` fp32 [out]; w = values * scale (per output channel, symmetric).
    - int4: `values` uint8 0..15 (one per byte), `scales`/`zeros` fp32 [out, in/group];
      w = (values - 8) * scale + zero (PyTorch's int4 kernels use exactly this convention).
    - fp8: `values` float8_e4m3fn, `scales` fp32 [out]; w = values * scale.

    Rows are independent, so rows can be concatenated (q|k|v, gate|up) or permuted (RoPE order)
    before the matrix is packed for its kernel, with no loss.
    """

    kind: str
    values: torch.Tensor
    scales: torch.Tensor
    zeros: torch.Tensor | None = None
    group: int = 0
    columns: int = 0  # the matrix's width when int4 values carry zero columns up to a whole group

    @property
    def shape(self) -> tuple[int, int]:
        return self.values.shape[0], self.columns or self.values.shape[1]

    def tensors(self) -> list[torch.Tensor]:
        """Values, scales and (int4) zeros: the per-row tensors."""
        return [t for t in (self.values, self.scales, self.zeros) if t is not None]

    def map_tensors(self, fn) -> "Quantized":
        """The same format with `fn` applied to each per-row tensor (`tensors`)."""
        zeros = None if self.zeros is None else fn(self.zeros)
        return Quantized(self.kind, fn(self.values), fn(self.scales), zeros, self.group, self.columns)

    def map_rows(self, fn) -> "Quantized":
        """Apply a row reordering `fn` ([out, ...] -> [out, ...]) to values and scales alike."""
        zeros = None if self.zeros is None else fn(self.zeros)
        scales = fn(self.scales) if self.scales.ndim == 2 else fn(self.scales[:, None])[:, 0]
        return Quantized(self.kind, fn(self.values), scales, zeros, self.group, self.columns)

    def to(self, device: torch.device) -> "Quantized":
        return self.map_tensors(lambda t: t.to(device))

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        if self.kind == "int4":
            out, width = self.values.shape
            groups = self.values.view(out, width // self.group, self.group).float().sub_(8)
            dense = groups.mul_(self.scales[..., None]).add_(self.zeros[..., None]).view(out, width)
            return dense[:, : self.shape[1]].to(dtype)
        return (self.values.float() * self.scales[:, None]).to(dtype)

    @staticmethod
    def cat(parts: list["Quantized"]) -> "Quantized":
        first = parts[0]
        zeros = None if first.zeros is None else torch.cat([p.zeros for p in parts])
        return Quantized(
            first.kind, torch.cat([p.values for p in parts]), torch.cat([p.scales for p in parts]), zeros,
            first.group, first.columns,
        )


def int4_group(width: int, group: int = INT4_GROUP) -> int:
    """The largest group of at most `group` values (a power of two from 32) that divides `width`;
    `group` itself when none does (the kernel then pads the input dimension)."""
    for g in (group, 128, 64, 32):
        if g <= group and width % g == 0:
            return g
    return group


def quantize(weight: torch.Tensor, kind: str, group: int = INT4_GROUP) -> Quantized:
    """Round a dense [out, in] matrix to `kind` (round to nearest; fp32 arithmetic)."""
    w = weight.detach().float()
    if kind == "int8":
        # Scales a bfloat16 holds exactly: the kernels take them in the activation dtype, and a scale
        # rounded after the values were fitted to it would bend a whole row by up to 0.4 %
        # (perplexity token by token: +0.35 % with rounded scales, +0.07 % with these).
        scales = w.abs().amax(dim=1).div_(127).clamp_(min=1e-12).to(torch.bfloat16).float()
        values = torch.round(w / scales[:, None]).clamp_(-127, 127).to(torch.int8)
        return Quantized("int8", values, scales)
    if kind == "fp8":
        scales = w.abs().amax(dim=1).div_(FP8_MAX).clamp_(min=1e-12)
        return Quantized("fp8", (w / scales[:, None]).to(torch.float8_e4m3fn), scales)
    if kind != "int4":
        raise ValueError(f"unknown quantization {kind!r}")
    out, width = w.shape
    group = int4_group(width, group)
    padded = -width % group
    if padded:  # zero columns: the kernel pads its input to match, so they add nothing
        w = torch.nn.functional.pad(w, (0, padded))
    groups = w.view(out, -1, group)
    low, high = torch.aminmax(groups, dim=-1)
    scales = (high - low).div_(15).clamp_(min=1e-12)
    # one new tensor, then in place: 2.5x faster than a new one per step (a token table on every load)
    values = (groups - low[..., None]).div_(scales[..., None]).round_().clamp_(0, 15).to(torch.uint8)
    return Quantized("int4", values.view(out, -1), scales, low + 8 * scales, group, width if padded else 0)


def from_ggml_blocks(raw: "np.ndarray", type_name: str, width: int) -> Quantized:
    """Rows of GGUF Q4_0 / Q4_1 blocks (uint8 [rows, bytes]) as int4 with groups of 32, exactly.

    Q4_0 block: fp16 d, 16 bytes of nibbles, w = d * (q - 8). Q4_1 block: fp16 d, fp16 m, 16 bytes,
    w = d * q + m. Within a block, value j < 16 is the low nibble of byte j and value j + 16 its
    high nibble. Both map onto w = (q - 8) * scale + zero with scale = d and zero = 0 or m + 8d.
    """
    import numpy as np

    rows = raw.shape[0]
    head = 2 if type_name == "Q4_0" else 4
    blocks = raw.reshape(rows, width // 32, head + 16)
    d = np.ascontiguousarray(blocks[..., :2]).view(np.float16)[..., 0].astype(np.float32)
    nibbles = torch.from_numpy(np.ascontiguousarray(blocks[..., head:]))
    values = torch.cat([nibbles & 15, nibbles >> 4], dim=-1).reshape(rows, width)
    scales = torch.from_numpy(d)
    if type_name == "Q4_0":
        zeros = torch.zeros_like(scales)
    else:
        m = np.ascontiguousarray(blocks[..., 2:4]).view(np.float16)[..., 0].astype(np.float32)
        zeros = torch.from_numpy(m) + 8 * scales
    return Quantized("int4", values, scales, zeros, 32)


def q8_0_to_int8(raw: "np.ndarray", width: int) -> Quantized:
    """Rows of GGUF Q8_0 blocks (fp16 d + 32 int8 per block) as int8 with one scale per row.

    PyTorch's int8 kernel takes one scale per output row, so the per-32 scales are folded into a
    per-row one and the values rounded again: the row's largest block keeps its values exactly,
    the others lose at most half a step of the row scale.
    """
    import numpy as np

    rows = raw.shape[0]
    blocks = raw.reshape(rows, width // 32, 34)
    d = torch.from_numpy(np.ascontiguousarray(blocks[..., :2]).view(np.float16)[..., 0].astype(np.float32))
    q = torch.from_numpy(np.ascontiguousarray(blocks[..., 2:]).view(np.int8))
    return quantize((q.float() * d[..., None]).view(rows, width), "int8")
