"""Loading checkpoints: safetensors (single, sharded, multimodal prefix), GGUF (llama and llama4 names), bad files."""

import json
import shutil
import struct

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from scoutdoc.errors import ModelError, UsageError
from scoutdoc.runtime import load_model
from scoutdoc.runtime.gguf import read_gguf_metadata
from scoutdoc.runtime.weights import fingerprint, open_checkpoint


def hf_logits(hf, ids):
    with torch.no_grad():
        return hf(ids[None]).logits[0]


IDS = torch.randint(0, 128, (40,), generator=torch.Generator().manual_seed(5))


# --- GGUF written the way llama.cpp's converter lays it out ---------------------------------

def _halves_to_pairs(w: torch.Tensor, heads: int) -> torch.Tensor:
    """llama.cpp's converter permutes HF Llama q/k rows from rotate-half to adjacent pairs."""
    out, inp = w.shape
    return w.reshape(heads, 2, out // heads // 2, inp).transpose(1, 2).reshape(out, inp)


def write_gguf(path, hf, arch: str, qtype: str = "F32"):
    import gguf

    c = hf.config
    w = gguf.GGUFWriter(str(path), arch)
    w.add_block_count(c.num_hidden_layers)
    w.add_context_length(c.max_position_embeddings)
    w.add_embedding_length(c.hidden_size)
    w.add_head_count(c.num_attention_heads)
    w.add_head_count_kv(c.num_key_value_heads)
    w.add_key_length(c.head_dim)
    w.add_value_length(c.head_dim)
    w.add_layer_norm_rms_eps(c.rms_norm_eps)
    w.add_rope_freq_base(c.rope_parameters["rope_theta"])
    w.add_vocab_size(c.vocab_size)
    if arch == "llama4":
        w.add_feed_forward_length(c.intermediate_size_mlp)
        w.add_expert_feed_forward_length(c.intermediate_size)
        w.add_expert_count(c.num_local_experts)
        w.add_expert_used_count(c.num_experts_per_tok)
        w.add_interleave_moe_layer_step(c.interleave_moe_layer_step)
    else:
        w.add_feed_forward_length(c.intermediate_size)
    tensors = {}
    inv = hf.model.rotary_emb.inv_freq
    base = 1.0 / (c.rope_parameters["rope_theta"] ** (torch.arange(0, c.head_dim, 2).float() / c.head_dim))
    tensors["rope_freqs.weight"] = base / inv  # llama3 scaling as divisors, like llama.cpp's converter
    layer_names = {
        "input_layernorm.weight": "attn_norm", "post_attention_layernorm.weight": "ffn_norm",
        "self_attn.q_proj.weight": "attn_q", "self_attn.k_proj.weight": "attn_k",
        "self_attn.v_proj.weight": "attn_v", "self_attn.o_proj.weight": "attn_output",
        "mlp.gate_proj.weight": "ffn_gate", "mlp.up_proj.weight": "ffn_up", "mlp.down_proj.weight": "ffn_down",
        "feed_forward.gate_proj.weight": "ffn_gate", "feed_forward.up_proj.weight": "ffn_up",
        "feed_forward.down_proj.weight": "ffn_down", "feed_forward.router.weight": "ffn_gate_inp",
        "feed_forward.shared_expert.gate_proj.weight": "ffn_gate_shexp",
        "feed_forward.shared_expert.up_proj.weight": "ffn_up_shexp",
        "feed_forward.shared_expert.down_proj.weight": "ffn_down_shexp",
    }
    for name, t in hf.state_dict().items():
        t = t.detach().float()
        if name == "model.embed_tokens.weight":
            tensors["token_embd.weight"] = t
        elif name == "model.norm.weight":
            tensors["output_norm.weight"] = t
        elif name == "lm_head.weight" and not c.tie_word_embeddings:
            tensors["output.weight"] = t
        elif name.startswith("model.layers."):
            n, rest = name.removeprefix("model.layers.").split(".", 1)
            if rest == "feed_forward.experts.gate_up_proj":
                f = t.shape[-1] // 2
                tensors[f"blk.{n}.ffn_gate_exps.weight"] = t[:, :, :f].transpose(1, 2)
                tensors[f"blk.{n}.ffn_up_exps.weight"] = t[:, :, f:].transpose(1, 2)
            elif rest == "feed_forward.experts.down_proj":
                tensors[f"blk.{n}.ffn_down_exps.weight"] = t.transpose(1, 2)
            else:
                if arch == "llama" and rest == "self_attn.q_proj.weight":
                    t = _halves_to_pairs(t, c.num_attention_heads)
                if arch == "llama" and rest == "self_attn.k_proj.weight":
                    t = _halves_to_pairs(t, c.num_key_value_heads)
                tensors[f"blk.{n}.{layer_names[rest]}.weight"] = t
    for name, t in tensors.items():
        data = t.contiguous().numpy()
        is_matrix = data.ndim >= 2 and name != "rope_freqs.weight"
        qt = gguf.GGMLQuantizationType[qtype if is_matrix else "F32"]
        w.add_tensor(name, gguf.quants.quantize(data, qt), raw_dtype=qt)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.fixture(scope="module")
def gguf_llama4(tiny, tmp_path_factory):
    # llama.cpp's llama4 GGUF fixes NoPE on every 4th layer and chunk/floor 8192, so the HF twin must too.
    hf = tiny.llama4(no_rope_layers=None, moe_layers=None, interleave_moe_layer_step=2,
                     attention_chunk_size=8192, floor_scale=8192, attn_scale=0.1)
    return hf, write_gguf(tmp_path_factory.mktemp("g4") / "tiny-llama4.gguf", hf, "llama4")


@pytest.fixture(scope="module")
def gguf_llama(tiny, tmp_path_factory):
    hf = tiny.llama(vocab_size=128)
    return hf, write_gguf(tmp_path_factory.mktemp("g") / "tiny-llama.gguf", hf, "llama")


@pytest.mark.parametrize("which", ["gguf_llama4", "gguf_llama"])
def test_gguf_matches_transformers(which, request):
    hf, path = request.getfixturevalue(which)
    ours = load_model(path, dtype="float32", device="cpu")
    if which == "gguf_llama4":
        assert ours.config.layer_uses_rope == [True, True, True, False]
        assert ours.config.layer_is_moe == [False, True, False, True]
    assert (ours.logits(IDS) - hf_logits(hf, IDS)).abs().max() <= 1e-4


@pytest.mark.parametrize("qtype", ["F16", "BF16", "Q8_0", "Q4_0", "Q4_1"])
def test_gguf_quantised_types_load(gguf_llama, tmp_path, qtype):
    """Against an HF twin whose matrices went through the same quantise/dequantise round trip: exact."""
    import copy

    import gguf

    hf, _ = gguf_llama
    twin = copy.deepcopy(hf)
    qt = gguf.GGMLQuantizationType[qtype]
    with torch.no_grad():
        for p in twin.parameters():
            if p.ndim == 2:  # rows of [out, in] are quantised in blocks along `in`, as in GGUF
                p.copy_(torch.from_numpy(gguf.quants.dequantize(gguf.quants.quantize(p.numpy(), qt), qt)))
    ours = load_model(write_gguf(tmp_path / f"q-{qtype}.gguf", hf, "llama", qtype), dtype="float32", device="cpu")
    assert (ours.logits(IDS) - hf_logits(twin, IDS)).abs().max() <= 1e-4


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_q8_0_token_table_stays_quantized(gguf_llama, tmp_path, dtype):
    """A Q8_0 token table is kept as int8 values and fp32 scales: lookups are the dense rows exactly,
    and the tied LM head's one-row path (every decode step) matches the dense product."""
    import gguf

    from scoutdoc.runtime.qlinear import TiedQ8Head
    from scoutdoc.runtime.quant import Q8Table

    hf, _ = gguf_llama
    ours = load_model(write_gguf(tmp_path / "q8.gguf", hf, "llama", "Q8_0"), dtype=dtype, device="cpu")
    table = ours.module.embed
    assert isinstance(table, Q8Table) and isinstance(ours.module.lm_head, TiedQ8Head)
    qt = gguf.GGMLQuantizationType.Q8_0
    weight = hf.model.embed_tokens.weight.detach().numpy()
    dense = torch.from_numpy(gguf.quants.dequantize(gguf.quants.quantize(weight, qt), qt))
    assert table.values.nbytes + table.scales.nbytes < 0.3 * dense.nbytes
    assert torch.equal(table.rows(), dense)
    ids = torch.tensor([5, 0, 127, 5])
    assert torch.equal(table(ids), dense[ids].to(table.dtype))

    x = torch.randn(1, dense.shape[1], generator=torch.Generator().manual_seed(1)).to(table.dtype)
    want = x.float() @ dense.t()
    # bf16: each 32-wide partial sum is rounded once, like the output of a bf16 matrix product
    tol = 1e-5 if dtype == "float32" else 2**-8 * (x.float().abs() @ dense.abs().t()).max().item()
    assert (table.project(x) - want).abs().max() <= tol
    assert (table.project(x.expand(3, -1)) - want).abs().max() <= tol  # the dense-block path for prompts
    if dtype == "float32":
        _, last = ours.prefill(IDS.tolist())  # a one-row head, as in decoding
        assert (last - ours.logits(IDS)[-1]).abs().max() <= 1e-4


def test_quantized_model_decodes_through_int8_and_a_4bit_shortlist(gguf_llama, tmp_path):
    """With --quantize auto a decode step multiplies by a per-row int8 copy of the Q8_0 table (one
    kernel call instead of one per 32-wide block): logits close to the exact head's. Greedy steps
    rank the vocabulary with a 4-bit copy and take the SHORTLIST best-ranked logits from the int8
    copy: the int8 product's very values there, so greedy picks its token. Prompts keep the exact table."""
    from scoutdoc.runtime.qlinear import SHORTLIST, shortlist_decode_head

    if not shortlist_decode_head("auto", "cpu"):
        pytest.skip("PyTorch's int4 or int8 kernel does not run here")
    hf, _ = gguf_llama
    path = write_gguf(tmp_path / "q8.gguf", hf, "llama", "Q8_0")
    exact = load_model(path, dtype="float32", device="cpu").module.lm_head
    fast = load_model(path, dtype="float32", device="cpu", quantize="auto").module.lm_head
    assert exact.decode is None and fast.rank.kind == "int4" and fast.decode.layout == "int8mm"
    generator = torch.Generator().manual_seed(2)
    for _ in range(5):
        x = torch.randn(1, fast.table.shape[1], generator=generator)
        want, int8, ranked = exact(x), fast(x), fast.ranked(x)
        assert int8.dtype == ranked.dtype == torch.float32 and int8.shape == ranked.shape == want.shape
        assert (int8 - want).abs().max() <= 0.02 * want.abs().max()
        shortlist = fast.rank(x).float()[0].topk(SHORTLIST).indices  # what the 4-bit copy ranked highest
        assert torch.equal(ranked[0, shortlist], int8[0, shortlist])
        assert ranked.argmax() == int8.argmax()
        assert (ranked - want).abs().max() <= 0.1 * want.abs().max()
    assert torch.equal(fast(x.expand(3, -1)), exact(x.expand(3, -1)))  # prompts: the exact table


def test_q8_0_tied_head_stays_dense_where_the_int8_kernel_does_not_run(tiny):
    from scoutdoc.runtime.config import ModelConfig
    from scoutdoc.runtime.weights import keeps_q8_table

    tied, untied = ModelConfig.from_hf(tiny.LLAMA), ModelConfig.from_hf(tiny.LLAMA4)
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert keeps_q8_table(tied, torch.bfloat16, cpu) and keeps_q8_table(tied, torch.float32, cpu)
    assert not keeps_q8_table(tied, torch.float16, cpu) and not keeps_q8_table(tied, torch.bfloat16, cuda)
    assert keeps_q8_table(untied, torch.float16, cuda)  # a lookup-only table works anywhere


# K-quants: gguf-py can read but not write them, so llama.cpp's own quantizer makes the files. Correct
# decoding shows as the quantisation error of each bit width (it halves per bit: 7.1 %, 3.6 %, 1.8 % of
# the weights' norm on this model); a misread scale, minimum or bit plane gives errors of order 100 %.
K_QUANT_ERROR = {"Q4_K": 0.09, "Q5_K": 0.045, "Q6_K": 0.0225, "F32": 0.0}


@pytest.fixture(scope="module")
def k_quant_ggufs(tiny, tmp_path_factory):
    import ctypes

    import llama_cpp

    hf = tiny.llama(vocab_size=256, hidden_size=256, intermediate_size=512, num_attention_heads=4,
                    num_key_value_heads=2, head_dim=64, num_hidden_layers=2)  # rows of 256: K-quant blocks
    folder = tmp_path_factory.mktemp("kquant")
    source = write_gguf(folder / "f32.gguf", hf, "llama")
    files = {}
    for ftype in ("Q4_K_M", "Q5_K_M", "Q6_K"):
        params = llama_cpp.llama_model_quantize_default_params()
        params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{ftype}")
        files[ftype] = folder / f"{ftype}.gguf"
        assert llama_cpp.llama_model_quantize(str(source).encode(), str(files[ftype]).encode(),
                                              ctypes.byref(params)) == 0
    return source, files


@pytest.mark.parametrize("ftype, expected", [("Q4_K_M", {"Q4_K", "Q6_K"}), ("Q5_K_M", {"Q5_K", "Q6_K"}),
                                             ("Q6_K", {"Q6_K"})])
def test_gguf_k_quants_written_by_llama_cpp(k_quant_ggufs, ftype, expected):
    import gguf

    from scoutdoc.runtime.weights import _gguf_name, _iter_gguf

    source, files = k_quant_ggufs
    ckpt = open_checkpoint(files[ftype])
    types = {_gguf_name(t.name): gguf.GGMLQuantizationType(t.type).name for t in ckpt.gguf_tensors}
    assert set(types.values()) - {"F32"} == expected
    reference = dict(_iter_gguf(open_checkpoint(source), torch.float32))
    for name, tensor in _iter_gguf(ckpt, torch.float32):
        error = ((tensor - reference[name]).norm() / reference[name].norm()).item()
        assert error <= K_QUANT_ERROR[types[name]], (name, types[name], error)
    logits = load_model(files[ftype], dtype="float32", device="cpu").logits(IDS)
    assert logits.shape == (len(IDS), 256) and torch.isfinite(logits).all()


# --- safetensors variants -----------------------------------------------------------------------

def test_sharded_safetensors(tiny, tmp_path):
    hf = tiny.llama4()
    tiny.save(hf, tmp_path, max_shard_size="40KB")
    assert (tmp_path / "model.safetensors.index.json").exists()
    assert len(open_checkpoint(tmp_path).files) > 1
    ours = load_model(tmp_path, dtype="float32", device="cpu")
    assert (ours.logits(IDS) - hf_logits(hf, IDS)).abs().max() <= 1e-4


def test_multimodal_checkpoint_prefix_and_vision_tensors(tiny, tmp_path):
    hf = tiny.llama4()
    state = {f"language_model.{k}": v.contiguous() for k, v in hf.state_dict().items()}
    state["vision_model.patch_embedding.linear.weight"] = torch.zeros(8, 4)
    save_file(state, tmp_path / "model.safetensors")
    text = hf.config.to_dict()
    (tmp_path / "config.json").write_text(json.dumps({
        "architectures": ["Llama4ForConditionalGeneration"], "model_type": "llama4",
        "text_config": text, "vision_config": {},
    }))
    ours = load_model(tmp_path, dtype="float32", device="cpu")
    assert (ours.logits(IDS) - hf_logits(hf, IDS)).abs().max() <= 1e-4


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precision_dtypes(tiny, tmp_path, dtype):
    hf = tiny.llama4()
    ours = load_model(tiny.save(hf, tmp_path), dtype=dtype, device="cpu")
    assert all(p.dtype == getattr(torch, dtype) for p in ours.module.parameters())
    ref = hf_logits(hf, IDS)
    # the tiny model's init std 0.2 amplifies rounding; this only guards against gross errors
    assert torch.corrcoef(torch.stack([ours.logits(IDS).flatten(), ref.flatten()]))[0, 1] > 0.99


def test_fingerprint_depends_on_weights_and_dtype(tiny, tmp_path):
    a = tiny.save(tiny.llama(seed=0), tmp_path / "a")
    b = tiny.save(tiny.llama(seed=1), tmp_path / "b")
    fa = fingerprint(open_checkpoint(a), torch.float32)
    assert fa == fingerprint(open_checkpoint(a), torch.float32)
    assert fa != fingerprint(open_checkpoint(a), torch.bfloat16)
    assert fa != fingerprint(open_checkpoint(b), torch.float32)
    c = tiny.save(tiny.llama(seed=0, rms_norm_eps=1e-6), tmp_path / "c")  # same weights, other config
    assert fa != fingerprint(open_checkpoint(c), torch.float32)


# --- errors a user can cause --------------------------------------------------------------------

def _truncate(path, fraction=0.6):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])


def test_truncated_safetensors(tiny, tmp_path):
    tiny.save(tiny.llama(), tmp_path)
    _truncate(tmp_path / "model.safetensors")
    with pytest.raises(ModelError, match=r"model\.safetensors.*download"):
        load_model(tmp_path, device="cpu")


@pytest.mark.parametrize("fraction", [0.6, 0.001])
def test_truncated_gguf(gguf_llama, tmp_path, fraction):
    _, path = gguf_llama
    broken = tmp_path / "broken.gguf"
    shutil.copy(path, broken)
    _truncate(broken, fraction)
    with pytest.raises(ModelError, match=r"broken\.gguf.*download"):
        load_model(broken, device="cpu")


def test_unknown_architecture_hf(tiny, tmp_path):
    tiny.save(tiny.llama(), tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config.update(architectures=["MistralForCausalLM"], model_type="mistral")
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError, match="unsupported architecture"):
        load_model(tmp_path, device="cpu")


def test_unknown_architecture_gguf(tmp_path):
    import gguf

    w = gguf.GGUFWriter(str(tmp_path / "gpt2.gguf"), "gpt2")
    w.add_block_count(1)
    w.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(ModelError, match="unsupported GGUF architecture 'gpt2'"):
        load_model(tmp_path / "gpt2.gguf", device="cpu")


def test_missing_tensor(tiny, tmp_path):
    tiny.save(tiny.llama4(), tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    del state["model.layers.2.feed_forward.experts.down_proj"]
    save_file(state, tmp_path / "model.safetensors")
    with pytest.raises(ModelError, match=r"missing tensor.*layers\.2\.ffn\.experts_down"):
        load_model(tmp_path, device="cpu")


def test_missing_path_and_bad_dtype(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        load_model(tmp_path / "nope.gguf", device="cpu")
    with pytest.raises(UsageError, match="unknown dtype"):  # a bad option: exit 2
        load_model(tmp_path, dtype="int3", device="cpu")


_HEADER = b"GGUF" + struct.pack("<IQQ", 3, 0, 1)  # version 3, no tensors, one key
_KEY = struct.pack("<Q", 1) + b"k"


@pytest.mark.parametrize("data", [
    b"",
    b"XXXX" + bytes(20),
    _HEADER + struct.pack("<Q", 1 << 40) + b"k",  # a 1 TiB key
    _HEADER + _KEY + struct.pack("<IIQ", 9, 8, 1 << 50),  # 2**50 strings
    _HEADER + _KEY + struct.pack("<IIQ", 9, 6, 1 << 50),  # 2**50 floats
    _HEADER + _KEY + struct.pack("<I", 9) + struct.pack("<IQ", 9, 1) * 10_000 + bytes(8),  # arrays in arrays
    _HEADER + _KEY + struct.pack("<I", 4),  # a value cut off
], ids=["empty", "magic", "huge-key", "huge-strings", "huge-floats", "nested", "cut"])
def test_a_damaged_gguf_header_is_a_model_error_not_a_crash(tmp_path, data):
    path = tmp_path / "damaged.gguf"
    path.write_bytes(data)
    with pytest.raises(ModelError, match=r"damaged\.gguf.*download it again"):
        read_gguf_metadata(path, tensors=True)
