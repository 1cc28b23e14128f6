"""Token tables kept in GGUF's Q8_0 form in memory: int8 values with one scale per 32 of them.

The token embedding is the largest single tensor of small models (28M of the default model's 135M
parameters) and, when tied, is also the LM head. Stored as Q8_0 it takes 1.06 bytes per value
instead of 2 (bf16) or 4 (fp32), and nothing is lost: every dequantized value fp16 scale x int8 is
exact in fp32, so a looked-up row equals the dense table's row bit for bit.

The tied LM head multiplies by the table without expanding it: one `_weight_int8pack_mm` per
32-wide block with unit scales gives the unscaled partial dot products, which are then scaled and
summed in fp32 (PyTorch's int8 kernel only takes one scale per output row, in the activation dtype;
fp16 scales rounded to bf16 would be less exact). For a decode step of the default model that is
about 1 ms more than a bf16 GEMV over a dense table; prompts (more than one row) use dense blocks.
"""

import torch
import torch.nn.functional as F
from torch import nn

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


class TiedQ8Head(nn.Module):
    """The LM head of a tied model whose token table is a `Q8Table`."""

    def __init__(self, table: Q8Table):
        super().__init__()
        self.table = table

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.table.project(x)
