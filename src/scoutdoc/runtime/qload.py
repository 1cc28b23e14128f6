"""Deciding at load which decoder matrices stay (or become) quantized, and collecting them.

`--quantize` takes one of:
- `none`: every matrix dense in the model dtype (a quantized GGUF is dequantized, as before);
- `int8`, `int4`, `fp8`: every decoder matrix in that format; dense checkpoints are quantized one
  tensor at a time while loading, so the dense model is never held whole;
- `auto`: keep what the file has where a kernel runs it on this device: GGUF Q4_0/Q4_1 as int4
  (exactly), Q8_0 and Q6_K as int8, Q4_K/Q5_K as int4 (re-quantized to the nearest format the
  kernels run), FP8 checkpoints as fp8; dense checkpoints stay dense.

Attention q|k|v and gate|up are fused in the model: rows are quantized independently in every
format, so each part is quantized as it arrives and the parts are concatenated quantized. Parts
of one fused matrix in different formats (llama.cpp's Q4_K_M files keep some matrices in Q6_K)
are brought to int8, the finer of the two.
"""

from dataclasses import dataclass, field

import torch
from torch import nn

from ..errors import UsageError
from .heap import release_freed_heap
from .qexperts import QuantExperts
from .qlinear import ROW_BLOCK, QuantLinear, kernel_for
from .quant import INT4_GROUP, QUANT_KINDS, Quantized, from_ggml_blocks, q8_0_to_int8, quantize

QUANTIZE_CHOICES = ("auto", "none", *QUANT_KINDS)
GGUF_NATIVE = {"Q4_0": "int4", "Q4_1": "int4", "Q8_0": "int8"}  # repacked, no second rounding of Q4
GGUF_NEAREST = {"Q4_K": "int4", "Q5_K": "int4", "Q6_K": "int8"}  # dequantized, then re-quantized
# Quantizing dense weights frees each dense part and quantize's temporaries between the packed
# matrices that stay, and such holes in the heap add up: a 105 MB fp32 checkpoint loaded as int4 grew
# the process by 0.25-0.84x its size. Trimming the heap after every TRIM_EVERY bytes of dense input
# bounds that (0.22-0.39x in 8 runs); trimming after every matrix would double the default model's
# load time (0.43 to 0.87 s), and its GGUF matrices arrive quantized, so they never count here.
TRIM_EVERY = 8 << 20
DECODER_MATRICES = {"q", "k", "v", "o", "gate", "up", "down", "exp_gate_up", "exp_gate", "exp_up", "exp_down",
                    "sh_gate", "sh_up", "sh_down"}


def check_quantize(value: str | None) -> str:
    value = (value or "none").lower()
    if value not in QUANTIZE_CHOICES:
        raise UsageError(f"unknown --quantize {value!r}; choose one of {', '.join(QUANTIZE_CHOICES)}")
    return value


def gguf_target(type_name: str, quantize_as: str, device_type: str) -> str | None:
    """The format a GGUF matrix of ggml type `type_name` is held in (None: dense)."""
    if quantize_as in QUANT_KINDS:
        return quantize_as
    if quantize_as != "auto":
        return None
    kind = GGUF_NATIVE.get(type_name) or GGUF_NEAREST.get(type_name)
    return kind if kind and kernel_for(kind, device_type) else None


def describe_gguf(type_counts: dict[str, int], quantize_as: str, device_type: str) -> str:
    """One line for `models info`: how the file's matrix types are held once loaded."""
    parts = []
    for name, n in sorted(type_counts.items()):
        target = gguf_target(name, quantize_as, device_type)
        if target is None:
            how = "dense"
        elif GGUF_NATIVE.get(name) == target:
            how = target + (" (kept, one scale per row)" if name == "Q8_0" else " (kept)")
        else:
            how = target + " (re-quantized)"
        parts.append(f"{n} x {name} -> {how}")
    return "; ".join(parts)


def from_gguf_rows(raw, type_name: str, width: int, target: str) -> Quantized | None:
    """A GGUF matrix's raw blocks (uint8 [rows, bytes]) straight into `target`, when its blocks map
    onto it without going through a dense copy; None when the caller must dequantize first."""
    if target == "int4" and type_name in ("Q4_0", "Q4_1"):
        return from_ggml_blocks(raw, type_name, width)
    if target == "int8" and type_name == "Q8_0":
        return q8_0_to_int8(raw, width)
    return None


def fp8_matrix(values: torch.Tensor, scale: torch.Tensor) -> Quantized | torch.Tensor:
    """An FP8 checkpoint matrix with its `weight_scale`: per row or per tensor stays fp8; block
    scales ([out/b, in/b]) are applied, giving a dense matrix."""
    rows = values.shape[0]
    if scale.numel() in (1, rows):
        return Quantized("fp8", values, scale.float().flatten().expand(rows).contiguous())
    block_rows, block_cols = -(-rows // scale.shape[0]), -(-values.shape[1] // scale.shape[1])
    full = scale.float().repeat_interleave(block_rows, 0)[:rows].repeat_interleave(block_cols, 1)
    return values.float() * full[:, : values.shape[1]]


@dataclass
class QuantParts:
    """Decoder matrices held quantized while a checkpoint loads, keyed by the model's parameter name.

    `add` takes one part of a parameter (slot of slots: q|k|v, gate|up) for one expert or for all.
    A finished matrix is packed for its kernel at once (`QuantLinear`, or `QuantExperts` for a
    bank), so the plain form (one int4 value per byte) lives only until its parameter is complete.
    """

    kind: str | None  # the format dense parts are quantized to (None: only already quantized ones)
    num_experts: int
    device: torch.device
    dtype: torch.dtype
    enabled: bool = True  # False: `--quantize none`, every matrix dense (FP8 checkpoints too)
    group: int = INT4_GROUP
    done: dict[str, QuantLinear | QuantExperts] = field(default_factory=dict)
    pending: dict[str, dict[tuple[int, int], Quantized]] = field(default_factory=dict)
    dense_since_trim: int = 0  # bytes of dense weights quantized since the heap was last trimmed

    def wants(self, part: str, tensor) -> bool:
        quantized = isinstance(tensor, Quantized) or self.kind is not None
        return self.enabled and part in DECODER_MATRICES and quantized

    def add(self, target: str, slot: int, slots: int, tensor, expert: int | None = None) -> None:
        """Store one part. A whole bank ([E, out, in] tensor, or a Quantized of E * out rows) is split by expert."""
        bank = target.endswith(("experts_gate_up", "experts_down"))
        if bank and expert is None:
            rows = tensor.shape[0] // self.num_experts if isinstance(tensor, Quantized) else None
            for e in range(self.num_experts):
                piece = tensor.map_rows(lambda t, e=e: t[e * rows : (e + 1) * rows]) if rows else tensor[e]
                self.add(target, slot, slots, piece, e)
            return
        if isinstance(tensor, Quantized) and self.kind not in (None, tensor.kind):
            tensor = tensor.dequantize()  # an FP8 file loaded --quantize int4, say
        if isinstance(tensor, Quantized):
            q = tensor
        else:
            self.dense_since_trim += tensor.nbytes
            q = quantize(tensor, self.kind, self.group)
        parts = self.pending.setdefault(target, {})
        parts[(expert or 0, slot)] = q
        if len(parts) < slots * (self.num_experts if bank else 1):
            return
        del self.pending[target]
        if bank:
            fused = [_fuse([parts.pop((e, s)) for s in range(slots)]) for e in range(self.num_experts)]
            self.done[target] = QuantExperts(fused, self.device, self.dtype)
        else:
            self.done[target] = QuantLinear(_fuse([parts[(0, s)] for s in range(slots)]), self.device, self.dtype)
        if self.dense_since_trim >= TRIM_EVERY:
            self.dense_since_trim = 0
            release_freed_heap()


def _fuse(parts: list[Quantized]) -> Quantized:
    if len(parts) == 1:
        return parts[0]
    if len({(p.kind, p.group, p.columns) for p in parts}) > 1:
        parts = [quantize(p.dequantize(), "int8") for p in parts]
    return Quantized.cat(parts)


def install(model: nn.Module, done: dict[str, QuantLinear | QuantExperts]) -> None:
    """Put each quantized matrix into the model in place of its dense parameter (still on meta)."""
    for target, module in done.items():
        path, _, leaf = target.rpartition(".")
        if isinstance(module, QuantExperts):  # an expert bank: the parameter itself is replaced
            parent = model.get_submodule(path)
            delattr(parent, leaf)
            setattr(parent, leaf, module)
        else:  # "....qkv.weight": the Linear is replaced
            parent_path, _, name = path.rpartition(".")
            setattr(model.get_submodule(parent_path), name, module)


def quantized_bytes(out_features: int, in_features: int, kind: str, group: int = INT4_GROUP) -> int:
    """Bytes of one [out, in] matrix once packed for its kernel: int4 nibbles with a bf16 scale and
    zero per group (rows padded to the packing block), int8/fp8 values with one scale per row."""
    if kind == "int4":
        rows = -(-out_features // ROW_BLOCK) * ROW_BLOCK
        return rows * -(-in_features // group) * (group // 2 + 2 * 2)
    return out_features * in_features + out_features * 4
