"""Quantized linears: every kernel layout against dequantize + F.linear, and the formats against dense."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from scoutdoc.runtime.qlinear import KERNEL_ROWS, QuantLinear, kernel_for
from scoutdoc.runtime.quant import Quantized, from_ggml_blocks, q8_0_to_int8, quantize

CPU = torch.device("cpu")
# odd sizes, sizes that are not a multiple of the 64-row block, and widths that cut a group
SHAPES = [(96, 160), (7, 33), (130, 64), (64, 200), (1, 32)]


def _layouts(kind: str) -> list[str]:
    found = kernel_for(kind, "cpu")
    return ["plain"] + ([found] if found else [])


@pytest.mark.parametrize("kind, group", [("int8", 0), ("int4", 32), ("int4", 64), ("int4", 128), ("fp8", 0)])
@pytest.mark.parametrize("out_features, in_features", SHAPES)
def test_quantize_error_is_within_one_step(kind, group, out_features, in_features):
    torch.manual_seed(0)
    w = torch.randn(out_features, in_features)
    q = quantize(w, kind, group or 64)
    dense = q.dequantize()[:, :in_features]
    if kind == "int8":
        assert (dense - w).abs().max() <= 0.5 * q.scales.max() + 1e-6
    elif kind == "int4":
        step = q.scales.repeat_interleave(q.group, dim=1)[:, :in_features]
        assert ((dense - w).abs() <= 0.5 * step + 1e-5).all()
        assert q.group <= group and (in_features % q.group == 0 or q.group == group)
    else:
        assert ((dense - w).abs() <= w.abs() / 8 + q.scales[:, None] * 2**-6).all()  # e4m3: 3 mantissa bits


@pytest.mark.parametrize("kind", ["int8", "int4"])
@pytest.mark.parametrize("out_features, in_features", SHAPES)
@pytest.mark.parametrize("rows", [1, 3, KERNEL_ROWS + 1])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_kernel_matches_dequantize_then_linear(kind, out_features, in_features, rows, dtype):
    torch.manual_seed(1)
    q = quantize(torch.randn(out_features, in_features), kind, 32)
    x = torch.randn(rows, in_features).to(dtype)
    for layout in _layouts(kind):
        layer = QuantLinear(q, CPU, dtype, layout=layout)
        dense = layer.dequantize(torch.float32)
        assert dense.shape == (out_features, in_features)
        # the layer's own dense weight is the format's, up to its bfloat16 scales and zeros
        ref = q.dequantize()[:, :in_features]
        zeros = 0 if q.zeros is None else q.zeros.abs().max().item()
        assert (dense - ref).abs().max() <= 2**-8 * (ref.abs().max().item() + zeros)
        want = F.linear(x.float(), dense)
        got = layer(x)
        assert got.dtype == dtype and got.shape == (rows, out_features)
        tol = 2**-7 * (x.float().abs() @ dense.abs().t()).max().item() + 1e-5  # bf16 activations or output
        assert (got.float() - want).abs().max() <= tol, layout


def _pack_cpu_blocks(values: torch.Tensor, block: int) -> torch.Tensor:
    """uint8 values [rows, in] in the int4cpu{block} layout as `QuantLinear._int4_values` reads it:
    blocks of `block` rows, k-major, byte = row d | row d + block/2 << 4."""
    rows, width = values.shape
    v = values.view(rows // block, 2, block // 2, width)
    return (v[:, 0] | v[:, 1] << 4).transpose(1, 2).reshape(rows, width // 2).contiguous()


@pytest.mark.parametrize("block", [64, 32, 16])
@pytest.mark.parametrize("out_features, in_features", SHAPES + [(200, 96)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_int4_cpu_layouts_dequantize_bit_for_bit_like_the_plain_layout(block, out_features, in_features, dtype):
    """Prompts multiply by the int4cpu layouts' dequantized weight, unpacked with word operations
    straight from the packed blocks: every value must be the one the plain nibbles give. Each block
    size is packed by hand here (PyTorch's packer makes the one its CPU runs, which `kernel_for`
    checks against the plain values)."""
    torch.manual_seed(5)
    q = quantize(torch.randn(out_features, in_features) * 3 + 1, "int4", 32)
    plain = QuantLinear(q, CPU, dtype, layout="plain")
    layer = QuantLinear(q, CPU, dtype, layout="plain")
    layer.layout, layer.packed = f"int4cpu{block}", _pack_cpu_blocks(plain._int4_values(), block)
    assert torch.equal(layer._int4_values(), plain._int4_values())
    got = layer.dequantize(dtype)
    assert got.shape == (out_features, in_features) and got.dtype == dtype
    assert torch.equal(got, plain.dequantize(dtype))


@pytest.mark.parametrize("out_features, in_features", SHAPES)
def test_int8_rows_of_equals_those_rows_of_forward(out_features, in_features):
    """The decode head takes a shortlist's logits from `rows_of`: they must be the very values the
    whole product gives those rows (`qlinear.TiedQ8Head`), whatever rows are picked."""
    if kernel_for("int8", "cpu") is None:
        pytest.skip("PyTorch's int8 kernel does not run here")
    torch.manual_seed(4)
    layer = QuantLinear(quantize(torch.randn(out_features, in_features), "int8"), CPU, torch.bfloat16)
    x = torch.randn(1, in_features).to(torch.bfloat16)
    rows = torch.randperm(out_features)[: max(1, out_features // 3)]
    assert torch.equal(layer.rows_of(x, rows), layer(x)[:, rows])


def test_fp8_fallback_matches_dense():
    torch.manual_seed(2)
    q = quantize(torch.randn(48, 80), "fp8")
    layer = QuantLinear(q, CPU, torch.float32)
    x = torch.randn(5, 80)
    torch.testing.assert_close(layer(x), F.linear(x, q.dequantize()), rtol=1e-5, atol=1e-5)
    assert layer.values.dtype == torch.float8_e4m3fn and layer.nbytes < 48 * 80 * 2


def test_int4_is_held_at_half_a_byte_per_value():
    q = quantize(torch.randn(256, 512), "int4", 64)
    for layout in _layouts("int4"):
        layer = QuantLinear(q, CPU, layout=layout)
        assert layer.packed.nbytes == 256 * 512 // 2
        assert layer.nbytes == 256 * 512 // 2 + 256 * 512 // 64 * 2 * 2  # + bf16 scale and zero per group


def test_cpu_kernels_are_found():
    """This project's CPUs (x86-64 with AVX2 or AVX-512) run both int kernels; elsewhere the fallback runs."""
    if torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512"):
        assert kernel_for("int8", "cpu") == "int8mm"
        assert kernel_for("int4", "cpu") is not None
    assert kernel_for("fp8", "cpu") is None


def test_rows_concatenate_and_permute_before_packing():
    torch.manual_seed(3)
    a, b = torch.randn(32, 64), torch.randn(16, 64)
    for kind in ("int8", "int4"):
        joined = Quantized.cat([quantize(a, kind, 32), quantize(b, kind, 32)])
        torch.testing.assert_close(joined.dequantize(), quantize(torch.cat([a, b]), kind, 32).dequantize())
        flipped = joined.map_rows(lambda t: t.flip(0))
        torch.testing.assert_close(flipped.dequantize(), joined.dequantize().flip(0))


@pytest.mark.parametrize("type_name", ["Q4_0", "Q4_1", "Q8_0"])
def test_gguf_blocks_convert(type_name):
    import gguf

    qt = gguf.GGMLQuantizationType[type_name]
    w = np.random.default_rng(0).standard_normal((24, 96)).astype(np.float32)
    raw = gguf.quants.quantize(w, qt)
    want = torch.from_numpy(gguf.quants.dequantize(raw, qt))
    if type_name == "Q8_0":
        q = q8_0_to_int8(raw, 96)
        assert q.kind == "int8"
        assert (q.dequantize() - want).abs().max() <= 0.5 * q.scales.max() + 1e-6
    else:
        q = from_ggml_blocks(raw, type_name, 96)
        assert q.kind == "int4" and q.group == 32
        torch.testing.assert_close(q.dequantize(), want, rtol=0, atol=1e-6)  # exact: the same numbers
