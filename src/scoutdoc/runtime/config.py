"""One configuration for Llama 4 text models and dense Llama models.

Dense Llama (Llama 3.x, SmolLM2) is the special case with no experts and no NoPE layers, so the
model code has a single path. The per-layer plan (`layer_uses_rope`, `layer_is_moe`) is resolved
here once, from whichever of the published spellings a checkpoint uses.
"""

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ModelError

LLAMA4_ARCHS = {"Llama4ForCausalLM", "Llama4ForConditionalGeneration"}
DENSE_ARCHS = {"LlamaForCausalLM"}


@dataclass
class ModelConfig:
    arch: str  # "llama4" or "llama"
    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int  # dense MLP width (llama) / each expert's and the shared expert's width (llama4)
    intermediate_size_mlp: int  # width of llama4's dense (non-MoE) layers
    rms_norm_eps: float
    rope_theta: float
    rope_scaling: dict[str, Any] | None  # llama3 frequency scaling parameters, or None
    max_position_embeddings: int
    tie_word_embeddings: bool
    layer_uses_rope: list[bool]  # False: NoPE layer with global attention
    layer_is_moe: list[bool]
    num_experts: int = 0
    experts_per_token: int = 1
    attention_chunk_size: int | None = None  # chunked local attention on RoPE layers (llama4)
    use_qk_norm: bool = False
    attn_temperature_tuning: bool = False
    floor_scale: float = 8192.0
    attn_scale: float = 0.1
    bos_token_id: int | None = None
    eos_token_ids: list[int] = field(default_factory=list)
    name: str = ""

    def layer_is_chunked(self, i: int) -> bool:
        """RoPE layers attend within their chunk when the model has a chunk size; NoPE layers see everything."""
        return self.attention_chunk_size is not None and self.layer_uses_rope[i]

    @property
    def num_global_layers(self) -> int:
        return sum(not self.layer_is_chunked(i) for i in range(self.num_layers))

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)

    @classmethod
    def from_hf(cls, raw: dict[str, Any]) -> "ModelConfig":
        """Build from a transformers `config.json` dict (text config of multimodal Llama 4 included)."""
        archs = set(raw.get("architectures") or [])
        model_type = raw.get("model_type", "")
        if archs & LLAMA4_ARCHS or model_type in ("llama4", "llama4_text"):
            text = raw.get("text_config", raw)
            return _llama4_from_hf(text)
        if archs & DENSE_ARCHS or model_type == "llama":
            return _llama_from_hf(raw)
        raise ModelError(
            f"unsupported architecture {sorted(archs) or model_type!r}: scoutdoc runs Llama 4 text models "
            "and dense Llama models (Llama 3.x, SmolLM2); use --engine remote for others"
        )

    @classmethod
    def from_file(cls, path: Path) -> "ModelConfig":
        try:
            raw = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ModelError(f"cannot read model config {path}: {exc}; point --model at a complete model directory") from exc
        return cls.from_hf(raw)


def _rope_params(raw: dict[str, Any]) -> tuple[float, dict[str, Any] | None]:
    """transformers 5.x writes `rope_parameters`; 4.x and published checkpoints write `rope_theta` + `rope_scaling`."""
    params = raw.get("rope_parameters")
    if params:
        theta = float(params.get("rope_theta", raw.get("rope_theta", 10000.0)))
        scaling = {k: v for k, v in params.items() if k != "rope_theta"}
    else:
        theta = float(raw.get("rope_theta", 10000.0))
        scaling = dict(raw.get("rope_scaling") or {})
    rope_type = scaling.get("rope_type", scaling.get("type"))
    if rope_type in (None, "default"):
        return theta, None
    if rope_type != "llama3":
        raise ModelError(f"unsupported rope scaling type {rope_type!r}: scoutdoc supports llama3 scaling or none")
    return theta, scaling


def _eos_ids(value: Any) -> list[int]:
    if value is None:
        return []
    return [int(v) for v in value] if isinstance(value, list) else [int(value)]


def _llama4_from_hf(raw: dict[str, Any]) -> ModelConfig:
    n = int(raw.get("num_hidden_layers", 48))
    hidden = int(raw.get("hidden_size", 5120))
    heads = int(raw.get("num_attention_heads", 40))
    # `no_rope_layers[i] == 1` means layer i USES RoPE (the published name is inverted).
    no_rope = raw.get("no_rope_layers")
    if not no_rope:
        interval = int(raw.get("no_rope_layer_interval", 4))
        no_rope = [int((i + 1) % interval != 0) for i in range(n)]
    moe_layers = raw.get("moe_layers")
    if moe_layers is None:
        step = int(raw.get("interleave_moe_layer_step", 1))
        moe_layers = list(range(step - 1, n, step)) if step > 0 else []
    theta, scaling = _rope_params(raw)
    return ModelConfig(
        arch="llama4",
        vocab_size=int(raw.get("vocab_size", 202048)),
        hidden_size=hidden,
        num_layers=n,
        num_heads=heads,
        num_kv_heads=int(raw.get("num_key_value_heads", 8)),
        head_dim=int(raw.get("head_dim") or hidden // heads),
        intermediate_size=int(raw.get("intermediate_size", 8192)),
        intermediate_size_mlp=int(raw.get("intermediate_size_mlp", 16384)),
        rms_norm_eps=float(raw.get("rms_norm_eps", 1e-5)),
        rope_theta=theta,
        rope_scaling=scaling,
        max_position_embeddings=int(raw.get("max_position_embeddings", 131072)),
        tie_word_embeddings=bool(raw.get("tie_word_embeddings", False)),
        layer_uses_rope=[bool(v) for v in no_rope],
        layer_is_moe=[i in set(moe_layers) for i in range(n)],
        num_experts=int(raw.get("num_local_experts", 16)),
        experts_per_token=int(raw.get("num_experts_per_tok", 1)),
        attention_chunk_size=raw.get("attention_chunk_size", 8192),
        use_qk_norm=bool(raw.get("use_qk_norm", True)),
        # Published Scout configs say `4` here; any truthy value means on.
        attn_temperature_tuning=bool(raw.get("attn_temperature_tuning", True)),
        floor_scale=float(raw.get("floor_scale", 8192)),
        attn_scale=float(raw.get("attn_scale", 0.1)),
        bos_token_id=raw.get("bos_token_id"),
        eos_token_ids=_eos_ids(raw.get("eos_token_id")),
        name=raw.get("_name_or_path", ""),
    )


def _llama_from_hf(raw: dict[str, Any]) -> ModelConfig:
    n = int(raw["num_hidden_layers"])
    hidden = int(raw["hidden_size"])
    heads = int(raw["num_attention_heads"])
    theta, scaling = _rope_params(raw)
    return ModelConfig(
        arch="llama",
        vocab_size=int(raw["vocab_size"]),
        hidden_size=hidden,
        num_layers=n,
        num_heads=heads,
        num_kv_heads=int(raw.get("num_key_value_heads") or heads),
        head_dim=int(raw.get("head_dim") or hidden // heads),
        intermediate_size=int(raw["intermediate_size"]),
        intermediate_size_mlp=int(raw["intermediate_size"]),
        rms_norm_eps=float(raw.get("rms_norm_eps", 1e-6)),
        rope_theta=theta,
        rope_scaling=scaling,
        max_position_embeddings=int(raw.get("max_position_embeddings", 2048)),
        tie_word_embeddings=bool(raw.get("tie_word_embeddings", False)),
        layer_uses_rope=[True] * n,
        layer_is_moe=[False] * n,
        bos_token_id=raw.get("bos_token_id"),
        eos_token_ids=_eos_ids(raw.get("eos_token_id")),
        name=raw.get("_name_or_path", ""),
    )


def from_gguf_metadata(fields: dict[str, Any]) -> ModelConfig:
    """Build from GGUF key/value metadata (already decoded to Python values)."""
    arch = fields.get("general.architecture")
    if arch not in ("llama", "llama4"):
        raise ModelError(
            f"unsupported GGUF architecture {arch!r}: scoutdoc runs llama and llama4 GGUF files"
        )

    def get(key: str, default: Any = None) -> Any:
        return fields.get(f"{arch}.{key}", default)

    n = int(get("block_count"))
    hidden = int(get("embedding_length"))
    heads = int(get("attention.head_count"))
    kv_heads = get("attention.head_count_kv", heads)
    head_dim = int(get("attention.key_length") or hidden // heads)
    vocab = get("vocab_size") or len(fields.get("tokenizer.ggml.tokens", []))
    scaling = None
    if get("rope.scaling.type") == "llama3" or get("rope.scaling.factor"):
        scaling = {
            "rope_type": "llama3",
            "factor": float(get("rope.scaling.factor", 8.0)),
            "low_freq_factor": float(get("rope.scaling.low_freq_factor", 1.0)),
            "high_freq_factor": float(get("rope.scaling.high_freq_factor", 4.0)),
            "original_max_position_embeddings": int(get("rope.scaling.original_context_length", 8192)),
        }
    eos = fields.get("tokenizer.ggml.eos_token_id")
    common = dict(
        vocab_size=int(vocab),
        hidden_size=hidden,
        num_layers=n,
        num_heads=heads,
        num_kv_heads=int(kv_heads),
        head_dim=head_dim,
        rms_norm_eps=float(get("attention.layer_norm_rms_epsilon", 1e-5)),
        rope_theta=float(get("rope.freq_base", 10000.0)),
        rope_scaling=scaling,
        max_position_embeddings=int(get("context_length", 2048)),
        bos_token_id=fields.get("tokenizer.ggml.bos_token_id"),
        eos_token_ids=_eos_ids(eos),
        name=fields.get("general.name", ""),
    )
    if arch == "llama":
        ff = int(get("feed_forward_length"))
        return ModelConfig(
            arch="llama",
            intermediate_size=ff,
            intermediate_size_mlp=ff,
            tie_word_embeddings=False,  # decided by the loader: no output.weight tensor means tied
            layer_uses_rope=[True] * n,
            layer_is_moe=[False] * n,
            **common,
        )
    step = int(get("interleave_moe_layer_step", 1))
    # llama.cpp's Llama 4 converter hard-codes NoPE on every 4th layer and a chunk of 8192.
    return ModelConfig(
        arch="llama4",
        intermediate_size=int(get("expert_feed_forward_length")),
        intermediate_size_mlp=int(get("feed_forward_length")),
        tie_word_embeddings=False,
        layer_uses_rope=[(i + 1) % 4 != 0 for i in range(n)],
        layer_is_moe=[(i + 1) % step == 0 for i in range(n)],
        num_experts=int(get("expert_count")),
        experts_per_token=int(get("expert_used_count", 1)),
        attention_chunk_size=8192,
        use_qk_norm=int(get("expert_count")) != 128,
        attn_temperature_tuning=True,
        floor_scale=8192.0,
        attn_scale=0.1,
        **common,
    )


def parameter_count(config: ModelConfig) -> int:
    """Parameters of the text model, from the config alone (Scout: 107.77 B): for the memory plan, and
    for `scoutdoc models info` on a bare config.json."""
    h, d = config.hidden_size, config.head_dim
    attention = h * d * (2 * config.num_heads + 2 * config.num_kv_heads)  # q, o, k, v
    total = config.vocab_size * h * (1 if config.tie_word_embeddings else 2) + h  # embed, head, final norm
    for i in range(config.num_layers):
        total += attention + 2 * h
        if config.layer_is_moe[i]:
            f = config.intermediate_size
            total += h * config.num_experts + (config.num_experts + 1) * 3 * h * f  # router, experts, shared
        else:
            total += 3 * h * config.intermediate_size_mlp
    return total
