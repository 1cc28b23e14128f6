"""Tiny Llama 4 and dense Llama models with quantized decoder matrices against the same model dense.

Tolerances are relative to the dense logits (RMS of the difference over RMS of the logits), for
a model initialised with std 0.02 (the usual scale; std 0.2 makes the tiny models so chaotic that
even bfloat16 moves logits by ~20 %): int8 within 5 %, fp8 within 15 %, int4 within 60 % (random
Gaussian weights are int4's worst case: one group of 64 spans the whole row of the tiny model);
greedy tokens equal for int8.
"""

import pytest
import torch

from scoutdoc.runtime import load_model
from scoutdoc.runtime.model import MoE
from scoutdoc.runtime.qexperts import QuantExperts, quantize_model
from scoutdoc.runtime.qlinear import QuantLinear

IDS = [(i * 7) % 100 for i in range(24)]
TOLERANCE = {"int8": 0.05, "fp8": 0.15, "int4": 0.6}


@pytest.fixture(scope="module", params=["llama4", "llama"])
def checkpoint(request, tiny, tmp_path_factory):
    make = tiny.llama4 if request.param == "llama4" else tiny.llama
    return tiny.save(make(initializer_range=0.02), tmp_path_factory.mktemp(request.param))


def _relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    return ((got - want).square().mean() / want.square().mean()).sqrt().item()


@pytest.mark.parametrize("kind", ["int8", "int4", "fp8"])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_quantized_logits_close_to_dense(checkpoint, kind, dtype):
    dense = load_model(checkpoint, dtype=dtype, device="cpu")
    quantized = load_model(checkpoint, dtype=dtype, device="cpu", quantize=kind)
    assert quantized.fingerprint != dense.fingerprint
    want = dense.logits(IDS)
    assert _relative_error(quantized.logits(IDS), want) <= TOLERANCE[kind]
    # decoding runs the kernels (one row), prompts the dequantized matrices: both stay close
    session, last = quantized.prefill(IDS[:-1])
    _, step = quantized.prefill(IDS, session)
    assert _relative_error(step[None], want[-1:]) <= TOLERANCE[kind]


def test_int8_greedy_tokens_equal_dense(checkpoint):
    dense = load_model(checkpoint, device="cpu")
    int8 = load_model(checkpoint, device="cpu", quantize="int8")
    assert list(int8.generate(IDS, 16, stop_ids=[])) == list(dense.generate(IDS, 16, stop_ids=[]))


def test_every_decoder_matrix_is_quantized_and_small(tiny, tmp_path):
    path = tiny.save(tiny.llama4(initializer_range=0.02), tmp_path)
    model = load_model(path, device="cpu", quantize="int4").module
    names = {name for name, m in model.named_modules() if isinstance(m, QuantLinear | QuantExperts)}
    assert {"layers.0.attn.qkv", "layers.0.attn.o", "layers.0.ffn.gate_up", "layers.0.ffn.down",
            "layers.1.ffn.shared.gate_up", "layers.1.ffn.shared.down",
            "layers.1.ffn.experts_gate_up", "layers.1.ffn.experts_down"} <= names
    assert not any("router" in name or "lm_head" in name or "embed" in name for name in names)
    layers = [m for m in model.modules() if isinstance(m, QuantLinear)]
    held = sum(m.nbytes for m in layers)
    assert held < sum(m.out_features * m.in_features * 4 for m in layers) / 5  # 4-bit values, bf16 scales/zeros


@pytest.mark.parametrize("kind", ["int8", "int4"])
@pytest.mark.parametrize("rows", [1, 9, 40])
def test_quantized_expert_bank_matches_dense_bank(kind, rows):
    """The MoE with quantized banks computes what the MoE computes with the banks' dequantized values."""
    torch.manual_seed(0)
    moe = MoE(64, 32, 5, 2)
    for p in moe.parameters():
        torch.nn.init.normal_(p, std=0.3)
    quantized = MoE(64, 32, 5, 2)
    quantized.load_state_dict(moe.state_dict())
    holder = torch.nn.Module()
    holder.layers = torch.nn.ModuleList([quantized])
    quantize_model(holder, kind)
    assert isinstance(quantized.experts_gate_up, QuantExperts) and quantized.experts_gate_up.shape == (5, 64, 64)
    with torch.no_grad():  # the dense twin holds exactly the quantized values (bf16 scales included)
        moe.experts_gate_up.copy_(quantized.experts_gate_up.dequantize(torch.float32))
        moe.experts_down.copy_(quantized.experts_down.dequantize(torch.float32))
        moe.shared.gate_up.weight.copy_(quantized.shared.gate_up.dequantize(torch.float32))
        moe.shared.down.weight.copy_(quantized.shared.down.dequantize(torch.float32))
        x = torch.randn(rows, 64)
        want, got = moe(x), quantized(x)
    # experts given a few rows run the bf16-activation kernels (bf16 rounding); more rows use the
    # dequantized matrices
    assert (got - want).abs().max().item() <= 2e-2 * want.abs().max().item()
