"""A linear layer whose weight stays quantized in memory, multiplied by PyTorch's own kernels.

Formats (see `quant.Quantized`) and the kernel each one runs on:

| format | CPU | CUDA | fallback (any device) |
| --- | --- | --- | --- |
| int8, per output channel (W8A16) | `_weight_int8pack_mm` | `_weight_int8pack_mm` | dequantize + `F.linear` |
| int4, groups of 32-128 with zero points (W4A16) | `_weight_int4pack_mm_for_cpu` | `_weight_int4pack_mm` | same |
| fp8 e4m3, per output channel | - | `_scaled_mm` (W8A8, rows scaled on the fly; sm_89+) | same |

The kernels are PyTorch-internal operators whose packed layouts and dtype rules vary by version
and device, so `kernel_for` runs each one once on a small matrix against the fallback and the
layer falls back wherever it is missing or disagrees. The fallback keeps int4 as plain nibbles.

On the CPU the int8/int4 kernels only run fast with bfloat16 activations (fp32 and fp16 are 10-30x
slower than a dense product, torch 2.13), so an fp32 model hands them bfloat16 rows (W8A16 means
16-bit activations); and they beat dequantize-then-matmul only for a few rows, so prompts
dequantize one matrix at a time and run the dense product: prefill keeps oneDNN's speed, decode
reads 4-8x fewer bytes. Where the two cross depends on the CPU: about 16 rows on a Zen 4 VM (2.3x
at one row), about 64 on an AMX Xeon VM (1.9x at 32 rows, the default model's layers; about 120
before prompts dequantized with word operations). KERNEL_ROWS keeps the lower figure: a prompt
piece sent to the slower side costs more than one kept off the faster side.
"""

from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import nn

from .quant import Q8Table, Quantized, quantize

KERNEL_ROWS = 16  # up to this many rows the quantized kernels beat dequantize + dense product (CPU)
ANY_ROWS = ("int4cuda", "fp8mm")  # GPU kernels built for prompts too (tensor cores); int4cuda is opaque
COLUMN_BLOCK = 32  # int8 matrices get their columns padded to a multiple of this for the kernel
ROW_BLOCK = 64  # int4 matrices get their rows padded to a multiple of this (every packed layout's block)
PACK_ROWS = 64 * ROW_BLOCK  # rows packed at a time (whole blocks pack alone; a token table would take 113 MB at once)


def kernel_dtype(device_type: str, dtype: torch.dtype) -> torch.dtype:
    """The activation dtype the quantized kernels run in: bfloat16 unless the model runs fp16 on a GPU."""
    return dtype if device_type == "cuda" and dtype == torch.float16 else torch.bfloat16


@lru_cache(maxsize=None)
def kernel_for(kind: str, device_type: str) -> str | None:
    """The kernel layout for `kind` on this device, or None for the dequantize fallback: each
    candidate is packed from a small matrix and must reproduce the fallback's product."""
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(ROW_BLOCK * 2, 128, generator=generator)
    x = torch.randn(3, 128, generator=generator).to(torch.bfloat16)
    q = quantize(weight, kind, 32)
    want = F.linear(x.float(), q.dequantize())
    for layout in _CANDIDATES.get((kind, device_type), ()):
        try:
            layer = QuantLinear(q, torch.device(device_type), layout=layout)
            got = layer(x.to(device_type)).float().cpu()
            unpacks = kind != "int4" or _reads_as_packed(layer, q)
        except (RuntimeError, AttributeError, NotImplementedError, TypeError):
            continue
        if unpacks and (got - want).abs().max().item() <= 0.02 * want.abs().max().item():
            return layout
    return None


def _reads_as_packed(layer: "QuantLinear", q: Quantized) -> bool:
    """Whether an int4 layer's layout is read back as it was packed: its values, and its dense
    weight bit for bit as the plain nibbles give it (prompts multiply by that)."""
    plain = QuantLinear(q, torch.device("cpu"), layout="plain")
    return torch.equal(layer._int4_values().cpu(), q.values) and torch.equal(
        layer.dequantize(torch.float32).cpu(), plain.dequantize(torch.float32)
    )


_CANDIDATES = {
    ("int8", "cpu"): ("int8mm",),
    ("int8", "cuda"): ("int8mm",),
    ("int4", "cpu"): ("int4cpu64", "int4cpu32", "int4cpu16"),
    ("int4", "cuda"): ("int4cuda",),
    ("fp8", "cuda"): ("fp8mm",),
}


class QuantLinear(nn.Module):
    """`nn.Linear` without bias holding a `Quantized` weight in its kernel's layout."""

    def __init__(self, q: Quantized, device: torch.device, dtype: torch.dtype = torch.float32, layout: str | None = None):
        super().__init__()
        device = torch.device(device)
        self.kind, self.group = q.kind, q.group
        self.out_features, self.in_features = q.shape
        self.act_dtype = kernel_dtype(device.type, dtype)
        self.layout = layout if layout is not None else (kernel_for(q.kind, device.type) or "plain")
        q = q.to(device)
        if q.kind == "int4":
            self._pack_int4(q)
        else:  # the int8 kernel needs a width that is a multiple of 16 (wrong results or a crash otherwise)
            columns = -q.shape[1] % COLUMN_BLOCK if self.layout == "int8mm" else 0
            self.register_buffer("values", F.pad(q.values, (0, columns)) if columns else q.values.contiguous())
            self.register_buffer("scales", q.scales.to(self.act_dtype if self.layout == "int8mm" else torch.float32))
        self._set_shape_flags()

    def _pack_int4(self, q: Quantized) -> None:
        rows = -q.shape[0] % ROW_BLOCK
        values = F.pad(q.values, (0, 0, 0, rows))  # zero rows: their outputs are cut off
        scales, zeros = F.pad(q.scales, (0, 0, 0, rows)), F.pad(q.zeros, (0, 0, 0, rows))
        if self.layout.startswith("int4cpu"):  # rows a block at a time: the packer takes int32, 4 bytes a value
            packed = torch.cat([
                torch.ops.aten._convert_weight_to_int4pack_for_cpu(values[r : r + PACK_ROWS].to(torch.int32), 1)
                for r in range(0, values.shape[0], PACK_ROWS)
            ])
        elif self.layout == "int4cuda":
            width = values.shape[1]
            tiles = next(t for t in (8, 4, 2) if width % (t * 16) == 0)
            packed = torch.ops.aten._convert_weight_to_int4pack((values[:, ::2] << 4 | values[:, 1::2]).contiguous(), tiles)
        else:
            packed = (values[:, ::2] | values[:, 1::2] << 4).contiguous()
        self.register_buffer("packed", packed)
        # [in/group, out, 2]: the kernels' scales-and-zeros layout, in their activation dtype
        self.register_buffer("scale_zero", torch.stack([scales, zeros], dim=-1).transpose(0, 1).contiguous().to(self.act_dtype))

    @property
    def padded_in(self) -> int:
        return self.scale_zero.shape[0] * self.group if self.kind == "int4" else self.values.shape[1]

    def dequantize(self, dtype: torch.dtype) -> torch.Tensor:
        """The dense [out, in] weight in `dtype` (what the fallback and long prompts multiply by);
        from PyTorch's CPU int4 layout it is the transpose of a contiguous [in, out] matrix."""
        if self.kind != "int4":
            return (self.values[:, : self.in_features].to(dtype) * self.scales[:, None].to(dtype)).to(dtype)
        if self.layout.startswith("int4cpu"):
            return self._dequantize_cpu_layout(dtype).t()[: self.out_features, : self.in_features]
        values = self._int4_values()
        rows, width = values.shape
        sz = self.scale_zero.transpose(0, 1).float()  # [out, in/group, 2]
        scale, offset = sz[..., :1], sz[..., 1:] - 8 * sz[..., :1]  # w = q * scale + (zero - 8 * scale)
        # in fp32, cast once at the end: 1.5-2x faster than the same two ops in bfloat16 on the CPU
        groups = values.view(rows, -1, self.group).float().mul_(scale).add_(offset)
        return groups.view(rows, width)[: self.out_features, : self.in_features].to(dtype)

    def _dequantize_cpu_layout(self, dtype: torch.dtype) -> torch.Tensor:
        """W transposed, [padded in, padded out] in `dtype`, straight from the int4cpu layout.

        A prompt pays this once per matrix, so it is written for memory traffic (a 512-token prompt
        of the default model spent a third of its time here): the nibbles are unpacked 8 at a time
        with int32 operations into the signed bytes q - 8, the bytes become `dtype` as they are
        moved from the layout's [row block, in, row] order to [in, row] (which `F.linear` takes
        as a transposed weight at full speed), and one `addcmul` applies w = (q - 8) * scale + zero
        in fp32 arithmetic, rounded once, which is exactly what the fp32 path gave. 1.7x faster
        than unpacking to one byte a value and scaling in fp32 (50 against 86 ms for the default
        model's 120 matrices).
        """
        p = self.packed  # [rows, in/2]: blocks of B rows, k-major; byte = row d | row d + B/2 << 4
        block = int(self.layout.removeprefix("int4cpu"))
        rows, width = p.shape[0], p.shape[1] * 2
        words = p.view(torch.int32)
        low = _signed_nibbles(words.bitwise_and(_NIBBLES))  # rows d of each block
        high = _signed_nibbles(words.bitwise_right_shift(4).bitwise_and_(_NIBBLES))  # rows d + B/2
        out = torch.empty(width, rows // block, 2, block // 2, dtype=dtype, device=p.device)
        for half, nibbles in enumerate((low, high)):
            out[:, :, half].copy_(nibbles.view(rows // block, width, block // 2).transpose(0, 1))
        # [in/group, 1, out], contiguous: strided halves of scale_zero make addcmul 4x slower
        scale, zero = (self.scale_zero[..., i].to(dtype).contiguous()[:, None] for i in (0, 1))
        out = out.view(width // self.group, self.group, rows)
        return torch.addcmul(zero, out, scale, out=out).view(width, rows)

    def _int4_values(self) -> torch.Tensor:
        """uint8 [padded out, padded in], one value per byte, from whichever layout is held."""
        p = self.packed
        if self.layout == "plain":
            return torch.stack([p & 15, p >> 4], dim=-1).view(p.shape[0], -1)
        if self.layout.startswith("int4cpu"):  # blocks of B rows, k-major; byte = row d | row d + B/2 << 4
            block = int(self.layout.removeprefix("int4cpu"))
            rows, width = p.shape[0], p.shape[1] * 2
            p = p.reshape(rows // block, width, block // 2)
            return torch.stack([p & 15, p >> 4], dim=1).transpose(2, 3).reshape(rows, width)
        eye = torch.eye(self.padded_in, device=p.device, dtype=torch.bfloat16)  # opaque tiled layout: multiply out
        unit = torch.stack([torch.ones_like(self.scale_zero[..., 0]), torch.full_like(self.scale_zero[..., 0], 8)], -1)
        return torch._weight_int4pack_mm(eye, p, self.group, unit.to(torch.bfloat16)).t().round().to(torch.uint8)

    def dense_weight(self, x: torch.Tensor) -> torch.Tensor | None:
        """The dequantized weight when x is multiplied by it rather than by a kernel (no kernel
        here, or more rows than the kernel is fast for); None when the kernel runs."""
        rows = x.numel() // x.shape[-1]
        if self.layout == "plain" or (rows > KERNEL_ROWS and self.layout not in ANY_ROWS):
            return self.dequantize(x.dtype)
        return None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # A decode step runs this ~120 times for the default model, where each skipped no-op (a
        # `.to` to the same dtype, a reshape to the same shape) is a microsecond: rows that are
        # already the kernel's input go straight to it.
        if self.direct and x.dim() == 2 and x.shape[0] <= KERNEL_ROWS and x.dtype == self.act_dtype:
            return self._kernel(x)
        dense = self.dense_weight(x)
        if dense is not None:
            return F.linear(x, dense)
        shape = x.shape
        x2 = x.reshape(-1, shape[-1]).to(self.act_dtype)
        if self.pad_in:
            x2 = F.pad(x2, (0, self.pad_in))
        out = self._kernel(x2)
        if self.pad_out:
            out = out[:, : self.out_features]
        return out.to(x.dtype).reshape(*shape[:-1], self.out_features)

    def rows_of(self, x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """x [T, in] times the `rows` of an int8 weight alone: each output as `forward` computes it
        (the kernel sums every output row on its own; tests/runtime/test_qlinear.py holds this bit
        for bit), without reading the other rows."""
        if self.layout != "int8mm":
            raise ValueError("rows_of needs PyTorch's int8 kernel")
        x2 = F.pad(x.to(self.act_dtype), (0, self.pad_in)) if self.pad_in else x.to(self.act_dtype)
        return torch._weight_int8pack_mm(x2, self.values[rows], self.scales[rows]).to(x.dtype)

    def _kernel(self, x2: torch.Tensor) -> torch.Tensor:
        if self.layout.startswith("int4cpu"):
            return torch._weight_int4pack_mm_for_cpu(x2, self.packed, self.group, self.scale_zero)
        if self.layout == "int8mm":
            return torch._weight_int8pack_mm(x2, self.values, self.scales)
        if self.layout == "fp8mm":
            return _fp8_matmul(x2, self.values, self.scales)
        return torch._weight_int4pack_mm(x2, self.packed, self.group, self.scale_zero)

    def _set_shape_flags(self) -> None:
        """Columns the kernel's input is padded with, whether its output has rows to cut off, and
        whether neither is so (`direct`: a few rows in the kernel's dtype need no reshaping)."""
        self.pad_in = self.padded_in - self.in_features
        held_rows = self.scale_zero.shape[1] if self.kind == "int4" else self.values.shape[0]
        self.pad_out = held_rows != self.out_features
        self.direct = self.layout != "plain" and not self.pad_in and not self.pad_out

    @property
    def nbytes(self) -> int:
        return sum(b.nbytes for b in self.buffers())

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, {self.kind}, layout={self.layout}"


_NIBBLES = 0x0F0F0F0F


def _signed_nibbles(nibbles: torch.Tensor) -> torch.Tensor:
    """int32 words of four nibbles 0..15, one per byte, as int8 bytes q - 8: q + 120 stays inside its
    byte (at most 135, no carry), and flipping the top bit subtracts 128 in two's complement."""
    return nibbles.add_(0x78787878).bitwise_xor_(0x80808080 - (1 << 32)).view(torch.int8)


def _fp8_matmul(x: torch.Tensor, weight: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """W8A8 on Hopper: rows of x scaled into e4m3 on the fly, fp32 row and column scales."""
    row_scale = x.abs().amax(dim=1, keepdim=True).float().clamp_(min=1e-12) / 448.0
    x8 = (x.float() / row_scale).to(torch.float8_e4m3fn)
    return torch._scaled_mm(x8, weight.t(), scale_a=row_scale, scale_b=scales[None, :].float(), out_dtype=x.dtype)


def shortlist_decode_head(quantize_as: str, device_type: str) -> bool:
    """Whether a tied Q8_0 head gets `TiedQ8Head`'s quantized decode copies: the model runs
    quantized matrices anyway and PyTorch's int4 and int8 kernels run here (the loader and the
    memory planner both ask this, so the plan counts exactly what loading builds)."""
    return quantize_as != "none" and all(kernel_for(kind, device_type) for kind in ("int4", "int8"))


SHORTLIST = 32  # decode candidates whose logits come from the int8 copy


class TiedQ8Head(nn.Module):
    """The LM head of a tied model whose token table is a `Q8Table`.

    Prompts multiply by the table's exact rows (`Q8Table.project`), which costs a decode step 18
    small products (4.2 ms for the default model). With `fast_decode` (`shortlist_decode_head`) a
    decode step multiplies by a per-row int8 copy of the table instead (28 MiB): 2.3 ms, a fifth of
    the step, bound by memory reads. Greedy decoding needs less (`ranked`).
    """

    def __init__(self, table: Q8Table, fast_decode: bool = False):
        super().__init__()
        self.table = table
        self.rank = self.decode = None
        if fast_decode:
            int4, int8 = table.requantized("int4", "int8", group=32)
            self.rank = QuantLinear(int4, table.values.device, table.dtype)
            self.decode = QuantLinear(int8, table.values.device, table.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.decode is None or x.shape[0] != 1:
            return self.table.project(x)
        return self.decode(x).float()

    def ranked(self, x: torch.Tensor) -> torch.Tensor:
        """One row's logits for greedy decoding: the vocabulary ranked with a 4-bit copy of the
        table (about 1 ms, 17 MiB), and the SHORTLIST best-ranked tokens' logits taken from the int8
        copy, the very values `forward` gives them. The pick is `forward`'s unless its winner ranks
        below SHORTLIST in 4-bit: over 401 decode steps of the default model it always ranked in the
        top 4, and the QA benchmark's 42 answers came out identical. The other logits keep their
        4-bit values (token-by-token perplexity +0.9 % if they were read), so only greedy asks."""
        if self.rank is None:
            return self(x)
        logits = self.rank(x).float()
        shortlist = logits[0].topk(SHORTLIST).indices
        logits[0, shortlist] = self.decode.rows_of(x, shortlist).float()[0]
        return logits
