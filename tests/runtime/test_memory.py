"""The planner against bytes computed by hand for the tiny config and for Scout's published config."""

import json

import pytest

from scoutdoc.errors import MemoryPlanError
from scoutdoc.runtime.config import ModelConfig, parameter_count
from scoutdoc.runtime.memory import activation_bytes, cache_budgets, plan_memory, require_fit


# Llama-4-Scout-17B-16E-Instruct text config (llama4.md §1)
SCOUT = {
    "architectures": ["Llama4ForConditionalGeneration"],
    "model_type": "llama4",
    "text_config": {
        "model_type": "llama4_text", "hidden_size": 5120, "intermediate_size": 8192,
        "intermediate_size_mlp": 16384, "num_hidden_layers": 48, "num_attention_heads": 40,
        "num_key_value_heads": 8, "head_dim": 128, "vocab_size": 202048, "num_local_experts": 16,
        "num_experts_per_tok": 1, "interleave_moe_layer_step": 1, "no_rope_layers": [1, 1, 1, 0] * 12,
        "attention_chunk_size": 8192, "use_qk_norm": True, "attn_temperature_tuning": 4,
        "floor_scale": 8192, "attn_scale": 0.1, "rope_theta": 500000.0,
        "rope_scaling": {"rope_type": "llama3", "factor": 16.0, "low_freq_factor": 1.0,
                         "high_freq_factor": 1.0, "original_max_position_embeddings": 8192},
        "max_position_embeddings": 10485760, "rms_norm_eps": 1e-5, "tie_word_embeddings": False,
        "bos_token_id": 200000, "eos_token_id": [200001, 200007, 200008],
    },
}
GIB = 1 << 30


@pytest.fixture
def scout() -> ModelConfig:
    return ModelConfig.from_hf(SCOUT)


def test_scout_published_numbers(scout):
    plan = plan_memory(scout, 10_000_000, detect=False)
    assert plan.kv_global_bytes_per_token == 48 * 1024
    assert plan.kv_global_bytes == 10_000_000 * 49152
    assert plan.kv_local_bytes == 36 * 8192 * 4096  # 1.125 GiB, constant
    assert round(plan.params / 1e9, 2) == 107.77
    assert plan.weights_bytes == 2 * plan.params
    assert plan.total_bytes == plan.weights_bytes + plan.kv_global_bytes + plan.kv_local_bytes + plan.activation_bytes
    text = plan.text()
    assert "48.00 KiB/token" in text and "1.12 GiB" in text
    fp8 = plan_memory(scout, 10_000_000, kv_dtype="float8", detect=False)
    assert fp8.kv_global_bytes_per_token == 24 * 1024 and fp8.kv_local_bytes == plan.kv_local_bytes // 2
    # local KV stays the same from one chunk to ten million tokens
    assert plan_memory(scout, 8192, detect=False).kv_local_bytes == plan.kv_local_bytes


def test_tiny_by_hand(tiny):
    config = ModelConfig.from_hf(tiny.LLAMA4)
    # embed+head 2*128*64, final norm 64; per layer attention 64*16*(2*4+2*2) + norms 2*64;
    # dense layers 0,3: 3*64*96; MoE layers 1,2: router 64*4 + (4+1) experts * 3*64*32
    attention = 64 * 16 * 12 + 128
    by_hand = 2 * 128 * 64 + 64 + 4 * attention + 2 * 3 * 64 * 96 + 2 * (64 * 4 + 5 * 3 * 64 * 32)
    assert parameter_count(config) == by_hand
    plan = plan_memory(config, 100, weights_dtype="float32", detect=False)
    assert plan.kv_global_bytes == 2 * 100 * (2 * 2 * 16 * 4)
    assert plan.kv_local_bytes == 2 * 8 * (2 * 2 * 16 * 4)
    assert plan.weights_bytes == 4 * by_hand
    # prefill runs pieces of 512 tokens (a multiple of the 8-token chunk), so all 100 tokens at once
    assert plan.prefill_chunk == 100
    assert plan.activation_bytes == activation_bytes(config, 100, "float32", "float32", False)
    assert plan.fits
    assert plan_memory(config, 100, weights_bytes=12345, detect=False).weights_bytes == 12345


def test_tiers_and_refusal(scout, tmp_path):
    gpu = dict(device="cuda", device_capacity=80 * GIB, host_capacity=128 * GIB, detect=False)
    plan = plan_memory(scout, 1_000_000, weights_bytes=57 * GIB, **gpu)
    assert plan.kv_device_bytes + plan.kv_host_bytes == plan.kv_global_bytes and plan.kv_host_bytes > 0
    assert plan.fits
    assert cache_budgets(plan)["device_budget"] == plan.kv_device_bytes
    too_long = plan_memory(scout, 10_000_000, weights_bytes=57 * GIB, **gpu)
    assert not too_long.fits and too_long.kv_unplaced_bytes > 0
    with pytest.raises(MemoryPlanError) as err:
        require_fit(too_long)
    message = str(err.value)
    assert "--kv-dtype float8" in message and "--kv-disk" in message and "fewer or shorter sources" in message
    assert "slower" not in message  # a GPU converts the cache at full speed
    assert "--context" not in message  # the commands that run a model have no --context option
    assert "--context" in too_long.text()  # `models info` has
    with_disk = plan_memory(
        scout, 2_000_000, weights_bytes=57 * GIB, kv_host_budget=8 * GIB, kv_disk=tmp_path,
        disk_capacity=1 << 50, **{k: v for k, v in gpu.items() if k != "detect"}, detect=False,
    )
    assert with_disk.kv_disk_bytes > 0 and with_disk.fits
    weights_alone = plan_memory(scout, 1000, weights_dtype="bfloat16", **gpu)
    assert not weights_alone.fits and "cuda needs" in weights_alone.problems[0]


def test_json_fields(scout):
    data = json.loads(json.dumps(plan_memory(scout, 1_000_000, detect=False).to_dict()))
    for key in ("weights_bytes", "kv_global_bytes", "kv_local_bytes", "activation_bytes", "total_bytes", "context_tokens"):
        assert isinstance(data[key], int)
    assert data["kv_dtype"] == "bfloat16"


def test_cli_models_info_context_json(tmp_path):
    from typer.testing import CliRunner

    from scoutdoc.cli import app

    path = tmp_path / "config.json"
    path.write_text(json.dumps(SCOUT))
    result = CliRunner().invoke(app, ["models", "info", str(path), "--context", "10M", "--json", "--device", "cpu", "--dtype", "bfloat16"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["context_tokens"] == 10 * 2**20 == SCOUT["text_config"]["max_position_embeddings"]  # "10M" as Meta counts it
    assert data["kv_dtype"] == "bfloat16"
    assert data["kv_global_bytes"] == 10 * 2**20 * 49152 and data["kv_local_bytes"] == 36 * 8192 * 4096
    text = CliRunner().invoke(app, ["models", "info", str(path), "--context", "10M", "--kv-dtype", "float8"])
    assert text.exit_code == 0 and "24.00 KiB/token" in text.output


@pytest.mark.slow
@pytest.mark.parametrize("quantize", ["none", "auto"])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_cli_plan_counts_gguf_weights_as_loaded(smollm2_gguf, dtype, quantize):
    """With --quantize none the default model's 4-bit matrices are dequantized on load and only its
    Q8_0 token table stays 8-bit; with auto they stay 4-bit, and decode steps get a 4-bit
    copy of the table (`qlinear.TiedQ8Head`). Either way the plan counts the bytes the loaded model
    holds, not the file's 94 MiB."""
    from typer.testing import CliRunner

    from scoutdoc.cli import app
    from scoutdoc.runtime import load_model

    args = ["models", "info", str(smollm2_gguf), "--context", "7000", "--json", "--device", "cpu", "--dtype", dtype,
            "--quantize", quantize]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    planned = json.loads(result.output)["weights_bytes"]
    module = load_model(smollm2_gguf, dtype=dtype, device="cpu", quantize=quantize).module
    loaded = sum(p.nbytes for p in module.parameters())
    loaded += sum(b.nbytes for name, b in module.named_buffers() if name != "inv_freq")
    assert planned == loaded
    if quantize == "none":
        assert planned > 2 * smollm2_gguf.stat().st_size
    else:
        head = module.lm_head.decode.nbytes + module.lm_head.rank.nbytes  # the decode head's int8 and 4-bit copies
        assert head < 0.5 * smollm2_gguf.stat().st_size and planned < 1.1 * smollm2_gguf.stat().st_size + head


def test_quantized_weights_by_hand(scout):
    """int4 decoder matrices: half a byte per value plus a bf16 scale and zero per 64 values; routers,
    norms, the token table and the LM head stay bf16."""
    from scoutdoc.runtime.memory import weight_bytes

    dense = weight_bytes(scout, "bfloat16")
    assert dense == parameter_count(scout) * 2
    h, f, e = 5120, 8192, 16
    matrices = 48 * (7168 * h + h * 5120 + (e + 1) * 3 * h * f)  # q|k|v, o, experts + shared expert
    rest = parameter_count(scout) - matrices
    assert weight_bytes(scout, "bfloat16", "int4") == rest * 2 + matrices // 64 * (32 + 4)
    int8 = weight_bytes(scout, "bfloat16", "int8")
    rows = 48 * (7168 + h + (e + 1) * (2 * f + h))
    assert int8 == rest * 2 + matrices + rows * 4
    assert weight_bytes(scout, "bfloat16", "fp8") == int8


def test_cli_scout_int4_fits_one_80gb_gpu(tmp_path):
    """The issue's check: Scout with int4 weights at a 1M-token context on one 80 GB GPU and a host
    with 128 GiB: weights on the device, global KV split between device and host, and both counted."""
    from typer.testing import CliRunner

    from scoutdoc.cli import app

    path = tmp_path / "config.json"
    path.write_text(json.dumps(SCOUT))
    args = ["models", "info", str(path), "--context", "1M", "--device", "cuda", "--dtype", "bfloat16",
            "--device-memory", "80GB", "--host-memory", "128GiB"]
    result = CliRunner().invoke(app, [*args, "--quantize", "int4", "--json"])
    assert result.exit_code == 0, result.output
    plan = json.loads(result.output)
    assert plan["fits"] and plan["quantize"] == "int4" and plan["weights_bytes"] < 64e9
    assert plan["kv_device_tokens"] > 200_000 and plan["kv_host_tokens"] > 0
    assert plan["kv_device_tokens"] + plan["kv_host_tokens"] >= 1_000_000 - 1
    text = CliRunner().invoke(app, [*args, "--quantize", "int4"]).output
    assert "decoder matrices int4" in text and "fits: yes" in text and f"{plan['kv_device_tokens']:,} tokens" in text
    dense = json.loads(CliRunner().invoke(app, [*args, "--quantize", "none", "--json"]).output)
    assert not dense["fits"] and any("--quantize int4" in s for s in dense["suggestions"])
