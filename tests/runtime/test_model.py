"""Model building blocks against transformers' own modules and the formulas in the Llama 4 notes."""

import math

import pytest
import torch

from scoutdoc.runtime.model import MoE
from scoutdoc.runtime.rope import apply_rope, inverse_frequencies, pairs_to_halves, rope_tables


@pytest.mark.parametrize(
    "scaling",
    [
        None,
        {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
         "original_max_position_embeddings": 8192},
        {"rope_type": "llama3", "factor": 16.0, "low_freq_factor": 1.0, "high_freq_factor": 1.0,
         "original_max_position_embeddings": 8192},
    ],
)
def test_inverse_frequencies_match_transformers(scaling):
    from transformers import LlamaConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    params = {"rope_type": "default", "rope_theta": 500000.0, **(scaling or {})}
    cfg = LlamaConfig(hidden_size=5120, num_attention_heads=40, head_dim=128, rope_parameters=params)
    if scaling:
        expected, _ = ROPE_INIT_FUNCTIONS["llama3"](cfg)
    else:
        expected = 1.0 / (500000.0 ** (torch.arange(0, 128, 2).float() / 128))
    ours = inverse_frequencies(128, 500000.0, scaling)
    torch.testing.assert_close(ours, expected, rtol=1e-6, atol=0)
    if scaling and scaling["high_freq_factor"] == 1.0:  # Scout: 35 frequencies kept, 29 divided by 16
        base = inverse_frequencies(128, 500000.0, None)
        assert (ours == base).sum() == 35 and torch.allclose(ours[35:], base[35:] / 16)


def test_pair_layout_reordered_to_rotate_half_gives_same_scores():
    """Adjacent-pair RoPE on the original rows == rotate-half RoPE on the rows from pairs_to_halves."""
    torch.manual_seed(0)
    heads, d, hidden, T = 3, 16, 24, 11
    wq, wk = torch.randn(heads * d, hidden), torch.randn(heads * d, hidden)
    x = torch.randn(T, hidden)
    inv = inverse_frequencies(d, 10000.0, None)
    angles = torch.arange(T).float()[:, None] * inv[None, :]

    def pair_rope(t):  # the complex-multiplication form used by Meta and HF Llama 4
        c = torch.view_as_complex(t.reshape(T, heads, d // 2, 2))
        return torch.view_as_real(c * torch.polar(torch.ones_like(angles), angles)[:, None, :]).reshape(T, heads, d)

    ref = torch.einsum("qhd,khd->hqk", pair_rope((x @ wq.T).view(T, heads, d)), pair_rope((x @ wk.T).view(T, heads, d)))
    cos, sin = rope_tables(torch.arange(T), inv, torch.float32)
    q = apply_rope((x @ pairs_to_halves(wq, heads).T).view(T, heads, d), cos, sin)
    k = apply_rope((x @ pairs_to_halves(wk, heads).T).view(T, heads, d), cos, sin)
    torch.testing.assert_close(torch.einsum("qhd,khd->hqk", q, k), ref, rtol=1e-5, atol=1e-4)


def _hf_moe_and_ours(top_k: int):
    from transformers import Llama4TextConfig
    from transformers.models.llama4.modeling_llama4 import Llama4TextMoe

    torch.manual_seed(0)
    cfg = Llama4TextConfig(hidden_size=32, intermediate_size=16, num_local_experts=5, num_experts_per_tok=top_k)
    hf = Llama4TextMoe(cfg).eval()
    for p in hf.parameters():
        torch.nn.init.normal_(p, std=0.3)
    ours = MoE(32, 16, 5, top_k)
    with torch.no_grad():
        ours.router.weight.copy_(hf.router.weight)
        ours.experts_gate_up.copy_(hf.experts.gate_up_proj.transpose(1, 2))
        ours.experts_down.copy_(hf.experts.down_proj.transpose(1, 2))
        sh = hf.shared_expert
        ours.shared.gate_up.weight.copy_(torch.cat([sh.gate_proj.weight, sh.up_proj.weight]))
        ours.shared.down.weight.copy_(sh.down_proj.weight)
    return hf, ours


@pytest.mark.parametrize("top_k", [1, 2])
@pytest.mark.parametrize("T", [1, 9])
def test_moe_matches_transformers(top_k, T):
    hf, ours = _hf_moe_and_ours(top_k)
    x = torch.randn(T, 32)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), hf(x)[0], rtol=1e-5, atol=1e-5)


def test_moe_computes_only_selected_experts():
    """Poison every expert the router does not pick: a dense evaluation would turn the output into NaN."""
    _, ours = _hf_moe_and_ours(1)
    x = torch.randn(6, 32)
    with torch.no_grad():
        expected = ours(x)
        chosen = set(ours.router(x).argmax(-1).tolist())
        for e in set(range(5)) - chosen:
            ours.experts_gate_up[e].fill_(float("nan"))
            ours.experts_down[e].fill_(float("nan"))
        assert len(chosen) < 5
        torch.testing.assert_close(ours(x), expected)


def test_temperature_scales_follow_published_values(tiny, tmp_path):
    from scoutdoc.runtime import load_model

    m = load_model(tiny.save(tiny.llama4(floor_scale=8192, attn_scale=0.1), tmp_path), device="cpu")
    p = torch.tensor([0, 8190, 8191, 16383, 65535, 1048575, 10485759])
    s = m.module.temperature_scales(p).flatten()
    expected = [1.0, 1.0, 1.0693, 1.1099, 1.2197, 1.4860, 1.7155]
    assert s.tolist() == pytest.approx(expected, abs=1e-4)
    assert s[2].item() == pytest.approx(1 + 0.1 * math.log(2), rel=1e-6)


# the tiny config ends on a dense NoPE (global) layer; the other one on an MoE RoPE (chunked) layer
@pytest.mark.parametrize("overrides", [{}, {"no_rope_layers": [1, 0, 0, 1], "moe_layers": [1, 3]}])
@pytest.mark.parametrize("kind", ["contiguous", "hybrid"])
@pytest.mark.parametrize("n", [16, 21])
def test_last_only_logits_equal_last_row(tiny, tmp_path, overrides, kind, n):
    """`last_only` runs the last layer for the final row alone, yet stores every row's keys: its
    logits equal the full forward's last row, and decoding after it goes on exactly."""
    from scoutdoc.runtime import load_model

    m = load_model(tiny.save(tiny.llama4(**overrides), tmp_path), device="cpu")
    ids = torch.arange(n + 3) % 128
    full = m.logits(ids)
    cache = m.new_cache(kind)
    with torch.inference_mode():
        last = m.module(ids[:n], cache, last_only=True)
        assert last.shape == (1, 128)
        torch.testing.assert_close(last[0], full[n - 1])
        for i in range(n, n + 3):
            torch.testing.assert_close(m.module(ids[i : i + 1], cache, last_only=True)[0], full[i])


def test_last_only_asks_the_last_layer_for_one_query(tiny, tmp_path):
    from scoutdoc.runtime import load_model
    from scoutdoc.runtime.reference import ContiguousCache

    class Recording(ContiguousCache):
        def attend(self, layer, q, k, v):
            self.seen.append((layer, q.shape[0], k.shape[0]))
            return super().attend(layer, q, k, v)

    m = load_model(tiny.save(tiny.llama4(), tmp_path), device="cpu")
    cache = Recording(m.config, torch.float32)
    cache.seen = []
    with torch.inference_mode():
        m.module(torch.arange(12), cache, last_only=True)
    assert cache.seen == [(0, 12, 12), (1, 12, 12), (2, 12, 12), (3, 1, 12)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rms_norm_matches_transformers(dtype):
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    from scoutdoc.runtime.model import RMSNorm

    torch.manual_seed(0)
    x = (torch.randn(37, 64) * 3).to(dtype)
    hf, ours = LlamaRMSNorm(64, eps=1e-5), RMSNorm(64, eps=1e-5)
    with torch.no_grad():
        hf.weight.copy_(torch.randn(64))
        ours.weight.copy_(hf.weight)
    hf, ours = hf.to(dtype), ours.to(dtype)
    before = x.clone()
    with torch.inference_mode():
        got = ours(x)
        assert torch.equal(x, before)  # the input (the residual stream) is left alone, fp32 included
        torch.testing.assert_close(got, hf(x), rtol=1e-6 if dtype == torch.float32 else None,
                                   atol=1e-6 if dtype == torch.float32 else None)


def test_matvec_kernel_switch_is_scoped():
    """Decode steps on CPU run with oneDNN off (its bf16 matrix-vector product is the slow one);
    the switch must be undone afterwards, also when the step fails, and never touch prompts."""
    from scoutdoc.runtime.model import _cpu_matvec_kernels

    assert torch.backends.mkldnn.enabled
    with _cpu_matvec_kernels(True):
        assert not torch.backends.mkldnn.enabled
    assert torch.backends.mkldnn.enabled
    with pytest.raises(RuntimeError), _cpu_matvec_kernels(True):
        raise RuntimeError("step failed")
    assert torch.backends.mkldnn.enabled
    with _cpu_matvec_kernels(False):
        assert torch.backends.mkldnn.enabled


def test_loading_a_model_does_not_import_meta_kernels(tiny, tmp_path):
    """Building the model on the meta device must not reach PyTorch's Python meta kernels: their
    first use imports sympy and ~800 other modules, ~67 MiB of resident memory for nothing."""
    import subprocess
    import sys

    path = tiny.save(tiny.llama4(), tmp_path)
    code = (
        "import sys\nfrom scoutdoc.runtime import load_model\n"
        f"m = load_model({str(path)!r}, dtype='bfloat16', device='cpu')\n"
        "m.prefill(list(range(20)))\n"
        "print(sorted(n for n in ('sympy', 'mpmath') if n in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
