"""Checkpoints (HF safetensors, GGUF) into the model's parameters, tensor by tensor.

Both formats are first mapped to one neutral naming (`embed`, `3.q`, `3.exp_gate`, ...) in
[out, in] layout; `_Assembler` then casts each tensor to the target dtype as it arrives,
reorders q/k rows of adjacent-pair checkpoints to rotate-half (one RoPE kernel in the model) and
fuses q|k|v and gate|up as soon as all parts of a layer are in. Files are memory-mapped and only
one source tensor is materialised at a time, so peak memory stays near the model's own size.
"""

import hashlib
import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import torch

from ..errors import ModelError, UsageError
from .config import ModelConfig
from .dtypes import DTYPES, WEIGHT_DTYPES, auto_dtype
from .gguf import gguf_config, read_gguf_metadata
from .heap import release_freed_heap
from .model import Transformer
from .packed import pack_linears, packs_linears
from .qexperts import QuantExperts
from .qlinear import shortlist_decode_head
from .qload import DECODER_MATRICES, QuantParts, fp8_matrix, from_gguf_rows, gguf_target, install
from .quant import INT4_GROUP, Q8_BLOCK, QUANT_KINDS, Q8Table, Quantized, quantize
from .rope import inverse_frequencies, pairs_to_halves

GGUF_TYPES = {"F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q4_K", "Q5_K", "Q6_K"}


@dataclass
class Checkpoint:
    """Where a model's weights live and how they are laid out."""

    config: ModelConfig
    kind: str  # "safetensors" or "gguf"
    files: list[Path]
    pair_rope: bool  # q/k rows in adjacent-pair RoPE order (Llama 4 HF, every GGUF)
    gguf_tensors: list[Any] = field(default_factory=list, repr=False)  # gguf.GGUFTensorInfo rows
    gguf_data_offset: int = 0  # where tensor data starts in the file

    @property
    def path(self) -> Path:
        return self.files[0] if self.kind == "gguf" else self.files[0].parent


def resolve_dtype(dtype: str | torch.dtype, device: torch.device | str = "cpu") -> torch.dtype:
    """The torch dtype for a `--dtype` name; `auto` is `dtypes.auto_dtype` on `device`."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        dtype = auto_dtype(device)
    if dtype not in WEIGHT_DTYPES:
        raise UsageError(f"unknown dtype {dtype!r}: use auto or one of {', '.join(WEIGHT_DTYPES)}")
    return DTYPES[dtype]


def resolve_device(device: str | torch.device) -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:  # PyTorch lists its 20-odd device types in a paragraph
        raise UsageError(f"unknown --device {device!r}; use auto, cpu, cuda or cuda:N") from None
    if dev.type not in ("cpu", "cuda"):
        raise UsageError(f"--device {device!r} is not supported; use auto, cpu, cuda or cuda:N")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ModelError("--device cuda was requested but PyTorch sees no CUDA GPU; use --device cpu or auto")
    return dev


def open_checkpoint(path: Path | str) -> Checkpoint:
    """Read the configuration and list the weight files of a GGUF file or an HF model directory."""
    path = Path(path)
    if not path.exists():
        raise ModelError(f"model path {path} does not exist; pass a .gguf file, an HF model directory or a catalog name")
    if path.is_file() and path.suffix == ".gguf":
        return _open_gguf(path)
    if path.is_file() and path.suffix == ".safetensors":
        path = path.parent
    if path.is_dir():
        return _open_hf_dir(path)
    raise ModelError(f"{path} is neither a .gguf file nor a directory with config.json and .safetensors files")


def _open_hf_dir(path: Path) -> Checkpoint:
    config_file = path / "config.json"
    if not config_file.exists():
        raise ModelError(f"{path} has no config.json; point --model at a complete Hugging Face model directory")
    config = ModelConfig.from_file(config_file)
    index = path / "model.safetensors.index.json"
    if index.exists():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError) as exc:
            raise ModelError(f"{index} is not a valid safetensors index ({exc}); re-download the model") from exc
        files = [path / name for name in sorted(set(weight_map.values()))]
        absent = [f.name for f in files if not f.exists()]
        if absent:
            raise ModelError(f"{path} lacks shard(s) {', '.join(absent)} listed in its index; re-download the model")
    else:
        files = sorted(path.glob("*.safetensors"))
        if not files:
            raise ModelError(f"{path} has no .safetensors files; download the weights or use a GGUF file")
    return Checkpoint(config=config, kind="safetensors", files=files, pair_rope=config.arch == "llama4")


def _open_gguf(path: Path) -> Checkpoint:
    """Parse the header with `gguf.read_gguf_metadata` (fast, unlike `gguf.GGUFReader` on a large
    vocabulary); tensor data is then read tensor by tensor and dequantized with `gguf.quants`."""
    fields = read_gguf_metadata(path, tensors=True)
    tensors = fields.pop("__tensors__")
    data_offset = fields.pop("__data_offset__")
    config = gguf_config(fields, tensors)
    return Checkpoint(
        config=config, kind="gguf", files=[path], pair_rope=True, gguf_tensors=tensors, gguf_data_offset=data_offset,
    )


# --- neutral names ---------------------------------------------------------------------------

_HF_LAYER = {
    "input_layernorm.weight": "attn_norm",
    "post_attention_layernorm.weight": "ffn_norm",
    "self_attn.q_proj.weight": "q",
    "self_attn.k_proj.weight": "k",
    "self_attn.v_proj.weight": "v",
    "self_attn.o_proj.weight": "o",
    "mlp.gate_proj.weight": "gate",
    "mlp.up_proj.weight": "up",
    "mlp.down_proj.weight": "down",
    "feed_forward.gate_proj.weight": "gate",
    "feed_forward.up_proj.weight": "up",
    "feed_forward.down_proj.weight": "down",
    "feed_forward.router.weight": "router",
    "feed_forward.experts.gate_up_proj": "exp_gate_up",  # [E, H, 2F], used as x @ W
    "feed_forward.experts.down_proj": "exp_down",  # [E, F, H]
    "feed_forward.shared_expert.gate_proj.weight": "sh_gate",
    "feed_forward.shared_expert.up_proj.weight": "sh_up",
    "feed_forward.shared_expert.down_proj.weight": "sh_down",
}
_HF_TOP = {"embed_tokens.weight": "embed", "norm.weight": "norm", "lm_head.weight": "lm_head"}
_GGUF_LAYER = {
    "attn_norm": "attn_norm",
    "ffn_norm": "ffn_norm",
    "attn_q": "q",
    "attn_k": "k",
    "attn_v": "v",
    "attn_output": "o",
    "ffn_gate": "gate",
    "ffn_up": "up",
    "ffn_down": "down",
    "ffn_gate_inp": "router",
    "ffn_gate_exps": "exp_gate",  # [E, F, H]
    "ffn_up_exps": "exp_up",
    "ffn_down_exps": "exp_down",  # [E, H, F]
    "ffn_gate_shexp": "sh_gate",
    "ffn_up_shexp": "sh_up",
    "ffn_down_shexp": "sh_down",
}
_GGUF_TOP = {"token_embd": "embed", "output_norm": "norm", "output": "lm_head", "rope_freqs": "rope_freqs"}
_SKIP_PREFIXES = ("vision_model.", "multi_modal_projector.", "v.", "mm.")
_LAYER_RE = re.compile(r"^layers\.(\d+)\.(.+)$")
# per-expert matrices as FP8 repos publish Llama 4 ([out, in] each, with a `weight_scale` beside)
_EXPERT_RE = re.compile(r"^feed_forward\.experts\.(\d+)\.(gate|up|down)_proj\.weight$")
_BLK_RE = re.compile(r"^blk\.(\d+)\.([a-z_]+)\.weight$")


def _hf_name(name: str) -> str | None:
    if name.startswith(_SKIP_PREFIXES) or name.endswith("rotary_emb.inv_freq"):
        return None
    name = name.removeprefix("language_model.").removeprefix("model.")
    if name in _HF_TOP:
        return _HF_TOP[name]
    m = _LAYER_RE.match(name)
    if m and m.group(2) in _HF_LAYER:
        return f"{m.group(1)}.{_HF_LAYER[m.group(2)]}"
    expert = _EXPERT_RE.match(m.group(2)) if m else None
    if expert:
        return f"{m.group(1)}.exp_{expert.group(2)}#{expert.group(1)}"
    return None


def _gguf_name(name: str) -> str | None:
    m = _BLK_RE.match(name)
    if m:
        part = _GGUF_LAYER.get(m.group(2))
        return f"{m.group(1)}.{part}" if part else None
    return _GGUF_TOP.get(name.removesuffix(".weight"))


def _iter_safetensors(ckpt: Checkpoint) -> Iterator[tuple[str, torch.Tensor]]:
    from safetensors import SafetensorError, safe_open

    for file in ckpt.files:
        try:
            with safe_open(file, framework="pt") as f:
                names = set(f.keys())
                for name in f.keys():
                    neutral = _hf_name(name)
                    if neutral is None:
                        continue
                    tensor = f.get_tensor(name)
                    if neutral.endswith(("exp_gate_up", "exp_down")):
                        tensor = tensor.transpose(1, 2)  # x @ W layout -> [E, out, in]
                    if tensor.dtype == torch.float8_e4m3fn:
                        scale = f.get_tensor(name + "_scale") if name + "_scale" in names else torch.ones(1)
                        tensor = fp8_matrix(tensor, scale)
                    yield neutral, tensor
        except (SafetensorError, OSError, RuntimeError) as exc:
            raise ModelError(
                f"cannot read {file} ({exc}); the file is truncated or damaged, download the model again"
            ) from exc


# fp32 elements dequantized at once: bounds the transient memory of loading to a few MiB per step
# instead of several fp32 copies of the largest tensor (the 49152 x 576 embedding of the default model).
_DEQUANT_BLOCK = 1 << 21


def _iter_gguf(
    ckpt: Checkpoint, dtype: torch.dtype, keep_q8: bool = False, quantize_as: str = "none", device_type: str = "cpu"
) -> Iterator[tuple[str, torch.Tensor | Q8Table | Quantized]]:
    """Neutral name and tensor in `dtype` (fp32 for rope_freqs), dequantized in bounded row blocks;
    with `keep_q8` a Q8_0 token table comes as a `Q8Table` instead, and a decoder matrix that
    `qload.gguf_target` keeps quantized comes as a `Quantized`."""
    path = ckpt.files[0]
    with open(path, "rb") as f:  # plain reads, not a memory map: mapped file pages would count as our RSS
        yield from _read_gguf_tensors(ckpt, f, dtype, keep_q8, quantize_as, device_type)


def _read_gguf_tensors(
    ckpt: Checkpoint, f: BinaryIO, dtype: torch.dtype, keep_q8: bool, quantize_as: str, device_type: str
) -> Iterator[tuple[str, torch.Tensor | Q8Table | Quantized]]:
    import gguf
    import numpy as np

    path = ckpt.files[0]
    file_size = path.stat().st_size
    for t in ckpt.gguf_tensors:
        neutral = _gguf_name(t.name)
        if neutral is None:
            continue
        try:
            qtype = gguf.GGMLQuantizationType(t.type)
        except ValueError:
            qtype = None
        if qtype is None or qtype.name not in GGUF_TYPES:
            raise ModelError(
                f"{path}: tensor {t.name} uses ggml type {qtype.name if qtype else t.type}, which scoutdoc does not "
                f"read; use a GGUF quantised as one of {', '.join(sorted(GGUF_TYPES))}"
            )
        block, block_bytes = gguf.GGML_QUANT_SIZES[qtype]
        row_bytes = t.shape[0] // block * block_bytes  # GGUF shapes list the fastest-varying dimension first
        rows = math.prod(t.shape[1:])
        start = ckpt.gguf_data_offset + t.offset
        if start + rows * row_bytes > file_size:
            raise ModelError(f"{path} ends inside tensor {t.name}: the file is truncated, download it again")
        step = max(1, _DEQUANT_BLOCK // max(1, t.shape[0]))
        f.seek(start)
        if neutral == "embed" and keep_q8 and qtype == gguf.GGMLQuantizationType.Q8_0:
            yield neutral, _read_q8_0(f, rows, t.shape[0], step, dtype)
            continue
        target = gguf_target(qtype.name, quantize_as, device_type) if neutral.split(".")[-1] in DECODER_MATRICES else None
        if target:  # the whole tensor's blocks at once: at most a fraction of its dense size
            raw = np.frombuffer(f.read(rows * row_bytes), dtype=np.uint8).reshape(rows, row_bytes)
            q = from_gguf_rows(raw, qtype.name, t.shape[0], target)
            if q is None:
                dense = torch.from_numpy(np.require(gguf.quants.dequantize(raw, qtype), np.float32, ("C", "W")))
                q = quantize(dense, target, INT4_GROUP if qtype.name in ("F32", "F16", "BF16") else 32)
            yield neutral, q
            continue
        out = torch.empty((rows, t.shape[0]), dtype=torch.float32 if neutral == "rope_freqs" else dtype)
        for r in range(0, rows, step):
            n = min(step, rows - r)
            raw = np.frombuffer(f.read(n * row_bytes), dtype=np.uint8).reshape(n, row_bytes)
            values = gguf.quants.dequantize(raw, qtype)
            out[r : r + n] = torch.from_numpy(np.require(values, np.float32, ("C", "W")))
        yield neutral, out.view(*reversed(t.shape))


def _read_q8_0(f: BinaryIO, rows: int, width: int, step: int, dtype: torch.dtype) -> Q8Table:
    """A Q8_0 tensor [rows, width] as a Q8Table, read in row blocks. GGUF's Q8_0 block is an fp16
    scale followed by 32 int8 values; `gguf.quants` only returns their products, hence this split."""
    import numpy as np

    blocks = width // Q8_BLOCK
    values = torch.empty((blocks, rows, Q8_BLOCK), dtype=torch.int8)
    scales = torch.empty((blocks, rows), dtype=torch.float32)
    for r in range(0, rows, step):
        n = min(step, rows - r)
        raw = np.frombuffer(f.read(n * blocks * (2 + Q8_BLOCK)), dtype=np.uint8).reshape(n, blocks, 2 + Q8_BLOCK)
        scale = np.ascontiguousarray(raw[:, :, :2]).view(np.float16)[:, :, 0].astype(np.float32)
        scales[:, r : r + n] = torch.from_numpy(scale).t()
        values[:, r : r + n] = torch.from_numpy(np.ascontiguousarray(raw[:, :, 2:]).view(np.int8)).transpose(0, 1)
    return Q8Table(values, scales, dtype)


def keeps_q8_table(config: ModelConfig, dtype: torch.dtype, device: torch.device) -> bool:
    """Whether a GGUF's Q8_0 token table stays quantized in memory: always as a plain embedding
    (a lookup dequantizes exactly), and as a tied LM head where PyTorch's int8 matmul runs (CPU,
    fp32 or bf16 activations)."""
    return not config.tie_word_embeddings or (device.type == "cpu" and dtype in (torch.float32, torch.bfloat16))


# --- assembly --------------------------------------------------------------------------------

# neutral part -> (our parameter suffix, slot, number of slots)
_PARTS = {
    "attn_norm": ("attn_norm.weight", 0, 1),
    "ffn_norm": ("ffn_norm.weight", 0, 1),
    "q": ("attn.qkv.weight", 0, 3),
    "k": ("attn.qkv.weight", 1, 3),
    "v": ("attn.qkv.weight", 2, 3),
    "o": ("attn.o.weight", 0, 1),
    "gate": ("ffn.gate_up.weight", 0, 2),
    "up": ("ffn.gate_up.weight", 1, 2),
    "down": ("ffn.down.weight", 0, 1),
    "router": ("ffn.router.weight", 0, 1),
    "exp_gate_up": ("ffn.experts_gate_up", 0, 1),
    "exp_gate": ("ffn.experts_gate_up", 0, 2),
    "exp_up": ("ffn.experts_gate_up", 1, 2),
    "exp_down": ("ffn.experts_down", 0, 1),
    "sh_gate": ("ffn.shared.gate_up.weight", 0, 2),
    "sh_up": ("ffn.shared.gate_up.weight", 1, 2),
    "sh_down": ("ffn.shared.down.weight", 0, 1),
}
_TOP = {"embed": "embed.weight", "norm": "norm.weight", "lm_head": "lm_head.weight"}


class _Assembler:
    """Collects neutral tensors into the model's state dict, fusing multi-part parameters when
    complete; decoder matrices that are (or are to be) quantized go to `quant` instead."""

    def __init__(self, ckpt: Checkpoint, dtype: torch.dtype, device: torch.device, quant: QuantParts):
        self.ckpt, self.dtype, self.device, self.quant = ckpt, dtype, device, quant
        self.state: dict[str, torch.Tensor] = {}
        self.pending: dict[str, dict[int, torch.Tensor]] = {}
        self.rope_freqs: torch.Tensor | None = None
        self.q8_embed: Q8Table | None = None

    def add(self, neutral: str, tensor: torch.Tensor | Q8Table | Quantized) -> None:
        if isinstance(tensor, Q8Table):
            self.q8_embed = tensor.to(self.device)
            return
        if neutral == "rope_freqs":
            self.rope_freqs = tensor.float()
            return
        if neutral in _TOP:
            self.state[_TOP[neutral]] = self._cast(tensor)
            return
        layer, part = neutral.split(".", 1)
        part, _, expert = part.partition("#")  # "exp_gate#3": expert 3's own matrix
        suffix, slot, slots = _PARTS[part]
        if part in ("q", "k") and self.ckpt.pair_rope:
            heads = self.ckpt.config.num_heads if part == "q" else self.ckpt.config.num_kv_heads
            if isinstance(tensor, Quantized):
                tensor = tensor.map_rows(lambda t: pairs_to_halves(t, heads))
            else:
                tensor = pairs_to_halves(tensor, heads)
        target = f"layers.{layer}.{suffix}"
        if self.quant.wants(part, tensor):
            on_device = tensor if isinstance(tensor, Quantized) else tensor.to(self.device)
            self.quant.add(target, slot, slots, on_device, int(expert) if expert else None)
            return
        tensor = self._cast(tensor)
        experts = self.ckpt.config.num_experts if expert else 1
        if slots * experts == 1:
            self.state[target] = tensor.contiguous()
            return
        parts = self.pending.setdefault(target, {})
        parts[int(expert or 0) * slots + slot] = tensor
        if len(parts) == slots * experts:
            fused = [torch.cat([parts[e * slots + i] for i in range(slots)], dim=-2) for e in range(experts)]
            self.state[target] = torch.stack(fused) if expert else fused[0]
            del self.pending[target]

    def _cast(self, tensor: torch.Tensor | Quantized) -> torch.Tensor:
        if isinstance(tensor, Quantized):
            tensor = tensor.dequantize(self.dtype)
        return tensor.to(device=self.device, dtype=self.dtype)


def build_model(ckpt: Checkpoint, dtype: torch.dtype, device: torch.device, quantize_as: str = "none") -> Transformer:
    """Instantiate the model without allocating weights, then assign the checkpoint's tensors;
    `quantize_as` (see `qload`) says which decoder matrices are held quantized."""
    config = ckpt.config
    with torch.device("meta"):
        model = Transformer(config)
    kind = quantize_as if quantize_as in QUANT_KINDS else None
    quant = QuantParts(kind, config.num_experts, device, dtype, enabled=quantize_as != "none")
    assembler = _Assembler(ckpt, dtype, device, quant)
    keep_q8 = keeps_q8_table(config, dtype, device)
    if ckpt.kind == "gguf":
        tensors = _iter_gguf(ckpt, dtype, keep_q8, quantize_as, device.type)
    else:
        tensors = _iter_safetensors(ckpt)
    for neutral, tensor in tensors:
        try:
            assembler.add(neutral, tensor)
        except (RuntimeError, IndexError) as exc:
            raise ModelError(
                f"{ckpt.path}: tensor {neutral} does not fit the configuration ({exc}); "
                "the weights and config.json/metadata disagree"
            ) from exc
    state = assembler.state
    expected = set(model.state_dict().keys())
    q8 = assembler.q8_embed
    if q8 is not None:
        expected.discard("embed.weight")
        if q8.shape != (config.vocab_size, config.hidden_size):
            raise ModelError(
                f"{ckpt.path}: tensor embed.weight has shape {q8.shape}, the configuration expects "
                f"{(config.vocab_size, config.hidden_size)}; the weights and config.json/metadata disagree"
            )
    if config.tie_word_embeddings:
        expected.discard("lm_head.weight")
        state.pop("lm_head.weight", None)
    missing = sorted(expected - set(state) - set(quant.done)) + sorted(assembler.pending) + sorted(quant.pending)
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise ModelError(
            f"{ckpt.path}: missing tensor(s) {shown}; the checkpoint is incomplete or does not match its "
            "configuration, download the model again"
        )
    shapes = model.state_dict()
    held = {name: tuple(t.shape) for name, t in state.items()}
    for name, module in quant.done.items():
        held[name] = module.shape if isinstance(module, QuantExperts) else (module.out_features, module.in_features)
    for name, shape in held.items():
        if name in shapes and tuple(shapes[name].shape) != shape:
            raise ModelError(
                f"{ckpt.path}: tensor {name} has shape {shape}, the configuration expects "
                f"{tuple(shapes[name].shape)}; the weights and config.json/metadata disagree"
            )
    model.load_state_dict(state, strict=False, assign=True)
    state.clear()  # the model holds the tensors now; packing below frees the dense ones it replaces
    install(model, quant.done)
    quant.done.clear()
    if q8 is not None:
        model.use_q8_table(q8, fast_decode=shortlist_decode_head(quantize_as, device.type))
    elif config.tie_word_embeddings:
        model.tie_weights()
    inv_freq = inverse_frequencies(config.head_dim, config.rope_theta, config.rope_scaling)
    if assembler.rope_freqs is not None:  # llama.cpp stores llama3 scaling as per-frequency divisors
        inv_freq = inverse_frequencies(config.head_dim, config.rope_theta, None) / assembler.rope_freqs
    model.inv_freq = inv_freq.to(device)
    if packs_linears(dtype, device.type):
        pack_linears(model)
    release_freed_heap()  # dequantizing leaves freed blocks in the middle of the heap
    return model.eval()


def fingerprint(ckpt: Checkpoint, dtype: torch.dtype, quantize_as: str = "none") -> str:
    """Stable id of the model as run: its configuration, the dtype, and each weight file's name, size
    and first/last MiB.

    Cheap to compute for multi-GB files yet changes whenever a file is replaced; KV snapshots are
    only valid for the exact weights, configuration and dtype that produced them.
    """
    h = hashlib.sha256(str(dtype).encode())
    if quantize_as != "none":  # dense runs keep the fingerprints their snapshots were saved under
        h.update(quantize_as.encode())
    h.update(json.dumps(ckpt.config.to_dict(), sort_keys=True, default=str).encode())
    for file in ckpt.files:
        size = file.stat().st_size
        h.update(f"{file.name}:{size}".encode())
        with open(file, "rb") as f:
            h.update(f.read(1 << 20))
            f.seek(max(0, size - (1 << 20)))
            h.update(f.read(1 << 20))
    return h.hexdigest()[:16]
