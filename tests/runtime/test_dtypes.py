import pytest
import torch

from scoutdoc.errors import UsageError
from scoutdoc.runtime import dtypes
from scoutdoc.runtime.weights import resolve_dtype


@pytest.mark.parametrize("amx, avx512_bf16, want", [
    (True, False, "bfloat16"), (False, True, "bfloat16"), (True, True, "bfloat16"), (False, False, "float32"),
])
def test_auto_is_bfloat16_only_on_a_cpu_that_computes_it(monkeypatch, amx, avx512_bf16, want):
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    assert dtypes.auto_dtype("cpu") == want
    assert resolve_dtype("auto", "cpu") == dtypes.DTYPES[want]


def test_auto_without_the_probes_is_float32(monkeypatch):
    """The probes are private PyTorch functions: a build without them must not fail, only choose float32."""
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported")
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported")
    assert dtypes.auto_dtype("cpu") == "float32"


def test_auto_plans_for_an_absent_gpu_in_bfloat16(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert dtypes.auto_dtype("cuda") == "bfloat16"


@pytest.mark.parametrize("bf16, want", [(True, "bfloat16"), (False, "float16")])
def test_auto_on_a_gpu_follows_its_bfloat16_support(monkeypatch, bf16, want):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: bf16)
    assert dtypes.auto_dtype("cuda") == want


def test_explicit_names_pass_through_and_unknown_ones_name_auto():
    assert resolve_dtype("float32", "cpu") == torch.float32
    with pytest.raises(UsageError, match="use auto or one of float32"):
        resolve_dtype("float64", "cpu")
