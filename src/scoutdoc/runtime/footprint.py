"""What a checkpoint's weights occupy once loaded, for the memory planner (`models info`, the engine).

Kept apart from `weights.py` (which loads) and `memory.py` (which plans from a config alone): this
needs both the checkpoint's tensor table and the planner's per-format arithmetic.
"""

import math

import torch

from .qlinear import shortlist_decode_head
from .qload import DECODER_MATRICES, gguf_target, quantized_bytes
from .quant import Q8_BLOCK
from .weights import Checkpoint, _gguf_name, keeps_q8_table


def loaded_weight_bytes(ckpt: Checkpoint, dtype: torch.dtype, device: torch.device, quantize_as: str = "none") -> int:
    """What the loaded weights occupy: every parameter in `dtype`, decoder matrices as `quantize_as`
    holds them (`qload`), and a Q8_0 token table kept 8-bit (`keeps_q8_table`), with a quantized
    model's decode head beside it (`qlinear.TiedQ8Head`). A quantized GGUF's
    file size is no guide: with `--quantize none` its matrices are dequantized on load."""
    import gguf

    from .memory import weight_bytes

    config, itemsize = ckpt.config, dtype.itemsize
    total = weight_bytes(config, str(dtype).removeprefix("torch."), quantize_as)
    for t in ckpt.gguf_tensors if quantize_as == "auto" else []:
        neutral = _gguf_name(t.name)
        if neutral is None or neutral.split(".")[-1] not in DECODER_MATRICES:
            continue
        target = gguf_target(gguf.GGMLQuantizationType(t.type).name, quantize_as, device.type)
        if target:
            rows, width = math.prod(t.shape[1:]), t.shape[0]
            total += quantized_bytes(rows, width, target, 32) - rows * width * itemsize
    embed = next((t for t in ckpt.gguf_tensors if _gguf_name(t.name) == "embed"), None)
    if embed is not None and embed.type == gguf.GGMLQuantizationType.Q8_0 and keeps_q8_table(config, dtype, device):
        table = config.vocab_size * config.hidden_size
        q8 = table + table // Q8_BLOCK * 4 + config.vocab_size * itemsize  # values, fp32 scales, unit row
        total += q8 - table * itemsize
        if config.tie_word_embeddings and shortlist_decode_head(quantize_as, device.type):
            # the decode head's 4-bit copy, and its per-row int8 copy with bf16 scales (`qlinear.TiedQ8Head`)
            total += quantized_bytes(config.vocab_size, config.hidden_size, "int4", 32) + table + config.vocab_size * 2
    return total


def gguf_matrix_types(ckpt: Checkpoint) -> dict[str, int]:
    """How many decoder matrices of a GGUF file have each ggml type (for `models info`)."""
    import gguf

    counts: dict[str, int] = {}
    for t in ckpt.gguf_tensors:
        neutral = _gguf_name(t.name)
        if neutral is not None and neutral.split(".")[-1] in DECODER_MATRICES:
            name = gguf.GGMLQuantizationType(t.type).name
            counts[name] = counts.get(name, 0) + 1
    return counts
