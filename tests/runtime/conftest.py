"""Tiny random checkpoints written by transformers itself, shared by the runtime tests as fixtures.

The Llama 4 config is the verified one from the reference notes: 4 layers cover dense+RoPE,
MoE+NoPE, MoE+RoPE and dense+NoPE; chunk 8 so 40+ tokens span 5+ chunks; floor_scale 4 so
temperature tuning changes every few positions; init std 0.2 so every feature moves the logits.
"""

from pathlib import Path

import pytest
import torch

LLAMA4 = {
    "model_type": "llama4_text", "vocab_size": 128, "hidden_size": 64,
    "intermediate_size": 32, "intermediate_size_mlp": 96,
    "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16,
    "num_local_experts": 4, "num_experts_per_tok": 1,
    "moe_layers": [1, 2], "no_rope_layers": [1, 0, 1, 0],
    "attention_chunk_size": 8, "attn_temperature_tuning": True, "floor_scale": 4, "attn_scale": 0.5,
    "use_qk_norm": True, "rms_norm_eps": 1e-05, "hidden_act": "silu", "max_position_embeddings": 256,
    "initializer_range": 0.2,
    "rope_parameters": {"rope_type": "llama3", "rope_theta": 10000.0, "factor": 16.0,
                        "low_freq_factor": 1.0, "high_freq_factor": 1.0,
                        "original_max_position_embeddings": 64},
    "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0, "tie_word_embeddings": False,
    "attention_bias": False,
}

LLAMA = {
    "model_type": "llama", "vocab_size": 300, "hidden_size": 64, "intermediate_size": 96,
    "num_hidden_layers": 3, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16,
    "rms_norm_eps": 1e-05, "hidden_act": "silu", "max_position_embeddings": 256, "initializer_range": 0.2,
    "rope_parameters": {"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0,
                        "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                        "original_max_position_embeddings": 64},
    "bos_token_id": 1, "eos_token_id": 2, "tie_word_embeddings": True, "attention_bias": False,
}


def hf_llama4(seed: int = 0, **overrides):
    from transformers import Llama4ForCausalLM, Llama4TextConfig

    torch.manual_seed(seed)
    return Llama4ForCausalLM(Llama4TextConfig(**{**LLAMA4, **overrides})).eval()


def hf_llama(seed: int = 0, **overrides):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(**{**LLAMA, **overrides})).eval()


def save(model, path: Path, **kwargs) -> Path:
    model.save_pretrained(path, **kwargs)
    return path


@pytest.fixture(scope="session")
def tiny():
    """Factories for tiny HF models: `tiny.llama4()`, `tiny.llama()`, `tiny.save(model, path)`."""

    class Tiny:
        llama4 = staticmethod(hf_llama4)
        llama = staticmethod(hf_llama)
        save = staticmethod(save)
        LLAMA4 = LLAMA4
        LLAMA = LLAMA

    return Tiny


class ByteTokenizer:
    """The simplest byte-level tokenizer (id = byte value, 256 = end): every multi-byte UTF-8
    character spans several tokens, which is what the streaming tests need. Pairs with a tiny
    model of vocabulary 257."""

    eos_ids = [256]

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode_bytes(self, ids: list[int]) -> bytes:
        return bytes(i for i in ids if i < 256)

    def decode(self, ids: list[int]) -> str:
        return self.decode_bytes(ids).decode("utf-8", errors="replace")


@pytest.fixture(scope="session")
def byte_tokenizer():
    return ByteTokenizer()
