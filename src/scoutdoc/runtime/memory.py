"""The memory planner: what a run at a given context will need, decided before any work starts.

Everything is computed from the model config alone (parameter count, KV layout), so a plan can be
shown for a bare `config.json` and a run that cannot fit is refused with the numbers and the
options that would make it fit, instead of dying of an out-of-memory kill halfway through.

Global-layer KV grows with the context and is placed in tiers (device, then host, then disk) the
same way `HybridCache` places it; chunked-layer KV is bounded by the attention chunk.
"""

import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..errors import MemoryPlanError, UsageError
from ..units import format_bytes
from .config import ModelConfig, parameter_count
from .dtypes import DTYPES
from .generate import default_prefill_chunk
from .model import FFN_ROWS
from .qload import quantized_bytes
from .quant import QUANT_KINDS, int4_group

DTYPE_BYTES = {name: dtype.itemsize for name, dtype in DTYPES.items()}
STREAM_TOKENS = 16384  # must match CacheOptions.stream_tokens: offloaded KV staging on the device

def decoder_matrices(config: ModelConfig) -> list[tuple[int, int, int]]:
    """(out, in, how many) of every matrix `--quantize` quantizes: attention q|k|v and output,
    feed-forward gate|up and down, shared experts and every routed expert (not routers, norms,
    the token table or the LM head)."""
    h, d = config.hidden_size, config.head_dim
    qkv, o = (config.num_heads + 2 * config.num_kv_heads) * d, config.num_heads * d
    rows: dict[tuple[int, int], int] = {}
    for i in range(config.num_layers):
        shapes = [(qkv, h), (h, o)]
        if config.layer_is_moe[i]:
            f, copies = config.intermediate_size, config.num_experts + 1  # routed experts + the shared one
        else:
            f, copies = config.intermediate_size_mlp, 1
        shapes += [(2 * f, h)] * copies + [(h, f)] * copies
        for shape in shapes:
            rows[shape] = rows.get(shape, 0) + 1
    return [(out, inp, n) for (out, inp), n in rows.items()]


def weight_bytes(config: ModelConfig, dtype: str, quantize: str = "none") -> int:
    """Bytes of the loaded weights: everything in `dtype`, or with `quantize` int8/int4/fp8 the
    decoder matrices packed in that format (`qload.quantized_bytes`) and the rest in `dtype`."""
    total = parameter_count(config) * DTYPE_BYTES[dtype]
    if quantize not in QUANT_KINDS:
        return total
    for out, inp, n in decoder_matrices(config):
        total += n * (quantized_bytes(out, inp, quantize, int4_group(inp)) - out * inp * DTYPE_BYTES[dtype])
    return total


def kv_bytes_per_token_layer(config: ModelConfig, kv_dtype: str) -> int:
    return 2 * config.num_kv_heads * config.head_dim * DTYPE_BYTES[kv_dtype]


def activation_bytes(config: ModelConfig, piece: int, act_dtype: str, kv_dtype: str, offloaded: bool) -> int:
    """Peak working memory of one prefill piece, independent of the context length.

    Hidden states and their norms, q/k/v, the fp32 attention accumulators of split attention,
    the widest FFN intermediate, the grouped-query K/V copy of the causal part, the last token's
    logits, and the staging buffers for offloaded KV.
    """
    a = DTYPE_BYTES[act_dtype]
    h, d = config.hidden_size, config.head_dim
    ffn = max(config.intermediate_size, config.intermediate_size_mlp)
    hidden = 4 * piece * h * a
    qkv = piece * (config.num_heads + 2 * config.num_kv_heads) * d * a
    merge = 3 * piece * config.num_heads * (d + 1) * 4
    ffn_bytes = 3 * min(piece, FFN_ROWS) * ffn * a  # the feed-forward runs in row blocks
    gqa = 2 * piece * config.num_heads * d * a  # K/V expanded to every query head for the causal part
    logits = config.vocab_size * 4
    staging = 2 * STREAM_TOKENS * config.num_kv_heads * d * DTYPE_BYTES[kv_dtype] if offloaded else 0
    return hidden + qkv + merge + ffn_bytes + gqa + logits + staging


@dataclass
class MemoryPlan:
    context_tokens: int
    kv_dtype: str
    weights_dtype: str
    device: str
    params: int
    weights_bytes: int
    kv_global_bytes: int
    kv_local_bytes: int
    activation_bytes: int
    total_bytes: int
    kv_global_bytes_per_token: int
    kv_local_tokens_per_layer: int
    global_layers: int
    local_layers: int
    prefill_chunk: int
    kv_device_bytes: int
    kv_host_bytes: int
    kv_disk_bytes: int
    kv_unplaced_bytes: int
    device_capacity: int | None
    host_capacity: int | None
    disk_capacity: int | None
    context_fit: int = 0  # tokens of context that would fit as things are, when it is the context that does not
    problems: list[str] = field(default_factory=list)
    suggestions: list[str] = field(default_factory=list)
    quantize: str = "none"  # how the decoder matrices are held (`qload`): none, auto, int8, int4, fp8
    quantize_detail: str = ""  # for a GGUF: which of its matrix types are held how

    @property
    def fits(self) -> bool:
        return not self.problems

    @property
    def device_known(self) -> bool:
        """Whether the device's free memory was known, so that "fits" was checked against it."""
        return self.device_capacity is not None

    def tokens(self, kv_bytes: int) -> int:
        """How many tokens of global KV `kv_bytes` hold."""
        return kv_bytes // self.kv_global_bytes_per_token if self.kv_global_bytes_per_token else 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready; "fits" is null when nothing failed but the device's memory was unknown."""
        return {
            **asdict(self), "fits": self.fits if self.fits is False or self.device_known else None,
            "kv_device_tokens": self.tokens(self.kv_device_bytes),
            "kv_host_tokens": self.tokens(self.kv_host_bytes), "kv_disk_tokens": self.tokens(self.kv_disk_bytes),
        }

    def text(self) -> str:
        """The plan as a few aligned lines for `scoutdoc models info NAME --context N`."""
        fb = format_bytes
        chunk_note = (
            f"{self.local_layers} chunked layers x {self.kv_local_tokens_per_layer:,} tokens (bounded)"
            if self.local_layers
            else "none (no chunked layers)"
        )
        rows = [
            ("context", f"{self.context_tokens:,} tokens, prefill in pieces of {self.prefill_chunk:,}"),
            ("parameters", f"{self.params / 1e9:.2f} B"),
            ("weights", f"{fb(self.weights_bytes)} ({self._weights_form()})"),
            (
                "KV global",
                f"{fb(self.kv_global_bytes)} = {self.global_layers} layers, "
                f"{fb(self.kv_global_bytes_per_token)}/token ({self.kv_dtype})",
            ),
            ("  on device", f"{fb(self.kv_device_bytes)} ({self.tokens(self.kv_device_bytes):,} tokens)"),
            ("  in host memory", f"{fb(self.kv_host_bytes)} ({self.tokens(self.kv_host_bytes):,} tokens)"),
            ("  on disk", f"{fb(self.kv_disk_bytes)} ({self.tokens(self.kv_disk_bytes):,} tokens)"),
            ("KV local", f"{fb(self.kv_local_bytes)} = {chunk_note}"),
            ("activations", fb(self.activation_bytes)),
            ("total", fb(self.total_bytes)),
        ]
        if self.kv_unplaced_bytes:
            rows.insert(7, ("  unplaced", fb(self.kv_unplaced_bytes)))
        if self.quantize_detail:
            rows.insert(3, ("  matrices", self.quantize_detail))
        rows.append(("device memory", f"{fb(self.device_capacity)} free" if self.device_known else _unknown_device(self.device)))
        width = max(len(k) for k, _ in rows)
        lines = [f"{k.ljust(width)}  {v}" for k, v in rows]
        if self.fits and not self.device_known:
            lines.append(f"fits: unknown - {self.device}'s memory is unknown, so the plan could not be checked against it")
        elif self.fits:
            lines.append("fits: yes")
        else:
            lines.append("fits: NO - " + "; ".join(self.problems))
            shorter = [f"--context {self.context_fit} (what fits now)"] if self.context_fit else []
            lines.append("try: " + "; or ".join(shorter + self.suggestions))
        return "\n".join(lines)

    def _weights_form(self) -> str:
        if self.quantize in QUANT_KINDS:
            return f"decoder matrices {self.quantize}, the rest {self.weights_dtype}"
        return self.weights_dtype + (" or as the file keeps them" if self.quantize == "auto" else "")


def _available_ram() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _available_device(device: str) -> int | None:
    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.mem_get_info(torch.device(device))[0]
    if device == "cpu":
        return _available_ram()
    return None


def plan_memory(
    config: ModelConfig,
    context_tokens: int,
    *,
    weights_dtype: str = "bfloat16",
    quantize: str = "none",
    kv_dtype: str | None = None,
    weights_bytes: int | None = None,
    device: str = "cpu",
    kv_device_budget: int | None = None,
    kv_host_budget: int | None = None,
    kv_disk: Path | str | None = None,
    prefill_chunk: int | None = None,
    device_capacity: int | None = None,
    host_capacity: int | None = None,
    disk_capacity: int | None = None,
    detect: bool = True,
) -> MemoryPlan:
    """Bytes for weights, KV (global per tier, local) and activations, and whether they fit.

    `weights_bytes` overrides the estimate from the parameter count (`footprint.loaded_weight_bytes` for a
    checkpoint whose token table stays quantized; 0 for a model already loaded).
    Capacities not given are detected (free device memory, available RAM, free disk) unless
    `detect` is False, in which case an unknown capacity is not checked. Budgets left at None
    mean "as much as the tier has free".
    """
    kv_dtype = kv_dtype or weights_dtype
    if kv_dtype == "model":
        kv_dtype = weights_dtype
    for name in (kv_dtype, weights_dtype):
        if name not in DTYPE_BYTES:
            raise UsageError(f"unknown dtype {name!r}; choose one of {', '.join(DTYPE_BYTES)}")
    if context_tokens <= 0:
        raise UsageError(f"context must be a positive number of tokens, not {context_tokens}")
    chunk = config.attention_chunk_size
    n_local = sum(config.layer_is_chunked(i) for i in range(config.num_layers))
    n_global = config.num_layers - n_local
    per_layer = kv_bytes_per_token_layer(config, kv_dtype)
    params = parameter_count(config)
    weights = weights_bytes if weights_bytes is not None else weight_bytes(config, weights_dtype, quantize)
    local_tokens = min(context_tokens, chunk) if chunk and n_local else 0
    kv_local = n_local * local_tokens * per_layer
    kv_global = n_global * context_tokens * per_layer
    piece = min(prefill_chunk or default_prefill_chunk(config), context_tokens)  # what prefill will use

    if detect:
        device_capacity = device_capacity if device_capacity is not None else _available_device(device)
        host_capacity = host_capacity if host_capacity is not None else _available_ram()
        if kv_disk is not None and disk_capacity is None:
            probe = Path(kv_disk)
            while not probe.exists() and probe != probe.parent:
                probe = probe.parent
            disk_capacity = shutil.disk_usage(probe).free
    on_cpu = device == "cpu"

    def place(offloaded: bool) -> tuple[int, int, int, int, int]:
        acts = activation_bytes(config, piece, weights_dtype, kv_dtype, offloaded)
        fixed = weights + kv_local + acts
        dev_room = None if device_capacity is None else max(0, device_capacity - fixed)
        dev_budget = kv_device_budget if kv_device_budget is not None else dev_room
        dev = kv_global if dev_budget is None else min(kv_global, dev_budget)
        rest = kv_global - dev
        if on_cpu and kv_host_budget is None:
            host_budget = 0  # the device tier already is host memory
        elif kv_host_budget is not None:
            host_budget = kv_host_budget
        else:
            host_budget = host_capacity
        host = rest if host_budget is None else min(rest, host_budget)
        rest -= host
        disk = rest if kv_disk is not None else 0
        return acts, dev, host, disk, rest - disk

    acts, dev, host, disk, unplaced = place(False)
    if host or disk:
        acts, dev, host, disk, unplaced = place(True)
    plan = MemoryPlan(
        context_tokens=context_tokens,
        kv_dtype=kv_dtype,
        weights_dtype=weights_dtype,
        quantize=quantize,
        device=device,
        params=params,
        weights_bytes=weights,
        kv_global_bytes=kv_global,
        kv_local_bytes=kv_local,
        activation_bytes=acts,
        total_bytes=weights + kv_global + kv_local + acts,
        kv_global_bytes_per_token=n_global * per_layer,
        kv_local_tokens_per_layer=local_tokens,
        global_layers=n_global,
        local_layers=n_local,
        prefill_chunk=piece,
        kv_device_bytes=dev,
        kv_host_bytes=host,
        kv_disk_bytes=disk,
        kv_unplaced_bytes=unplaced,
        device_capacity=device_capacity,
        host_capacity=host_capacity,
        disk_capacity=disk_capacity,
    )
    _check(plan, on_cpu)
    return plan


def _check(plan: MemoryPlan, on_cpu: bool) -> None:
    fb = format_bytes
    device_need = plan.weights_bytes + plan.kv_local_bytes + plan.activation_bytes + plan.kv_device_bytes
    host_need = plan.kv_host_bytes + (device_need if on_cpu else 0)
    if plan.device_capacity is not None and device_need > plan.device_capacity:
        plan.problems.append(
            f"{plan.device} needs {fb(device_need)} (weights {fb(plan.weights_bytes)}, local KV "
            f"{fb(plan.kv_local_bytes)}, activations {fb(plan.activation_bytes)}, global KV "
            f"{fb(plan.kv_device_bytes)}) but has {fb(plan.device_capacity)} free"
        )
    if not on_cpu and plan.host_capacity is not None and host_need > plan.host_capacity:
        plan.problems.append(f"host memory needs {fb(host_need)} of global KV but has {fb(plan.host_capacity)} available")
    if plan.disk_capacity is not None and plan.kv_disk_bytes > plan.disk_capacity:
        plan.problems.append(f"--kv-disk needs {fb(plan.kv_disk_bytes)} but the disk has {fb(plan.disk_capacity)} free")
    if plan.kv_unplaced_bytes:
        plan.problems.append(f"{fb(plan.kv_unplaced_bytes)} of global KV fit in no tier")
    if not plan.problems:
        return
    per_token = plan.kv_global_bytes_per_token
    room = plan.kv_global_bytes - plan.kv_unplaced_bytes
    fixed = plan.weights_bytes + plan.kv_local_bytes + plan.activation_bytes
    if plan.device_capacity is not None and fixed > plan.device_capacity:
        quantize = "" if plan.quantize == "int4" else "--quantize int4, "
        plan.suggestions.append(
            f"{quantize}a quantized model file or a device with more memory (weights alone need {fb(plan.weights_bytes)})"
        )
    elif plan.kv_unplaced_bytes and per_token and room // per_token > 0:
        plan.context_fit = room // per_token  # worded by the caller: only `models info` has --context
    if DTYPE_BYTES[plan.kv_dtype] > 1:
        slower = "; on a CPU decoding is several times slower, since each step converts it back" if on_cpu else ""
        plan.suggestions.append(f"--kv-dtype float8 (global KV in {fb(plan.kv_global_bytes // DTYPE_BYTES[plan.kv_dtype])}{slower})")
    if plan.kv_unplaced_bytes:
        if not on_cpu:
            plan.suggestions.append(f"--kv-host-budget {fb(plan.kv_host_bytes + plan.kv_unplaced_bytes)}")
        plan.suggestions.append(f"--kv-disk DIR with {fb(plan.kv_disk_bytes + plan.kv_unplaced_bytes)} free")
    if plan.device_capacity is not None and plan.kv_device_bytes and not plan.kv_unplaced_bytes:
        plan.suggestions.append("a smaller --kv-device-budget (the rest goes to host memory)")


def require_fit(plan: MemoryPlan) -> None:
    """Raise MemoryPlanError, with the numbers and the options that would help, if the plan does not fit.

    It is raised for a run (ask, chat, summarize, batch), whose commands have the --kv-* options but
    no --context: a context that does not fit is answered by fewer or shorter sources.
    """
    if plan.fits:
        return
    shorter = [f"fewer or shorter sources (about {plan.context_fit:,} tokens fit)"] if plan.context_fit * 10 >= plan.context_tokens else []
    options = "; or ".join(shorter + plan.suggestions) or "a smaller model or fewer or shorter sources"
    raise MemoryPlanError(
        f"a {plan.context_tokens:,}-token context does not fit: {'; '.join(plan.problems)}. Try {options}"
    )


def _unknown_device(device: str) -> str:
    if device.startswith("cuda") and not torch.cuda.is_available():
        return "unknown (PyTorch sees no CUDA GPU on this machine)"
    return "unknown"


def cache_budgets(plan: MemoryPlan) -> dict[str, int | None]:
    """The byte budgets a HybridCache should get for this plan (CacheOptions keyword arguments)."""
    offloaded = plan.kv_host_bytes or plan.kv_disk_bytes
    return {
        "device_budget": plan.kv_device_bytes if offloaded else None,
        "host_budget": plan.kv_host_bytes if plan.kv_disk_bytes else None,
    }
