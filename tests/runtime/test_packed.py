"""oneDNN-packed fp32 weights: the same products as F.linear, used where they help and nowhere else."""

import pytest
import torch
import torch.nn.functional as F

from scoutdoc.runtime.packed import PackedLinear, pack_linears, packs_linears

needs_packing = pytest.mark.skipif(not packs_linears(torch.float32, "cpu"), reason="no oneDNN packing here")


@needs_packing
@pytest.mark.parametrize("rows", [1, 7, 300])
def test_packed_linear_matches_f_linear(rows):
    torch.manual_seed(0)
    weight = torch.randn(96, 80)
    layer = PackedLinear(weight)
    x = torch.randn(80, rows).t()  # a non-contiguous input too
    torch.testing.assert_close(layer(x), F.linear(x, weight), rtol=1e-5, atol=1e-5)
    assert layer.packed.nbytes == weight.nbytes


def test_only_fp32_on_cpu_is_packed():
    assert not packs_linears(torch.bfloat16, "cpu") and not packs_linears(torch.float16, "cpu")
    assert not packs_linears(torch.float32, "cuda")


@needs_packing
def test_fp32_model_packs_decoder_linears_and_computes_the_same(tiny, tmp_path, monkeypatch):
    from scoutdoc.runtime import weights
    from scoutdoc.runtime.reference import ContiguousCache

    ckpt = weights.open_checkpoint(tiny.save(tiny.llama4(), tmp_path))
    packed = weights.build_model(ckpt, torch.float32, torch.device("cpu"))
    names = {name for name, module in packed.named_modules() if isinstance(module, PackedLinear)}
    assert {"layers.0.attn.qkv", "layers.0.attn.o", "layers.0.ffn.gate_up", "layers.0.ffn.down",
            "layers.1.ffn.shared.gate_up", "layers.1.ffn.shared.down"} <= names
    assert not any("router" in name or "lm_head" in name for name in names)

    monkeypatch.setattr(weights, "packs_linears", lambda dtype, device_type: False)
    dense = weights.build_model(ckpt, torch.float32, torch.device("cpu"))
    assert not any(isinstance(module, PackedLinear) for module in dense.modules())
    ids = torch.arange(30) % 128
    with torch.inference_mode():
        want = dense(ids, ContiguousCache(ckpt.config, torch.float32))
        got = packed(ids, ContiguousCache(ckpt.config, torch.float32))
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@needs_packing
def test_pack_linears_leaves_biased_layers_dense():
    from torch import nn

    model = nn.Module()
    model.layers = nn.ModuleList([nn.Sequential(nn.Linear(4, 4, bias=False), nn.Linear(4, 4))])
    pack_linears(model)
    assert isinstance(model.layers[0][0], PackedLinear) and isinstance(model.layers[0][1], nn.Linear)
