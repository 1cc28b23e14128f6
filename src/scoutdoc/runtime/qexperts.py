"""Quantized MoE expert banks, and turning a dense model's decoder matrices into quantized ones.

A bank [E, out, in] is held as one `QuantLinear` per expert: the MoE runs only the selected
experts, one matrix product each, so a per-expert layer is the unit the kernels work on anyway,
and each expert's packed layout stays independent of the others (no padding across experts).
"""

import torch
import torch.nn.functional as F
from torch import nn

from .qlinear import QuantLinear
from .quant import INT4_GROUP, QUANT_KINDS, Quantized, quantize


class QuantExperts(nn.Module):
    """An expert bank [E, out, in] with each expert's matrix quantized."""

    def __init__(self, experts: list[Quantized], device: torch.device, dtype: torch.dtype):
        super().__init__()
        self.experts = nn.ModuleList(QuantLinear(q, device, dtype) for q in experts)
        self.out_features, self.in_features = experts[0].shape

    @property
    def shape(self) -> tuple[int, int, int]:
        return len(self.experts), self.out_features, self.in_features

    def forward(self, e: int, x: torch.Tensor) -> torch.Tensor:
        return self.experts[e](x)

    def dequantize(self, dtype: torch.dtype) -> torch.Tensor:
        return torch.stack([layer.dequantize(dtype) for layer in self.experts])


def expert_linear(bank: torch.Tensor | QuantExperts, e: int, x: torch.Tensor) -> torch.Tensor:
    """x times expert e's matrix, for a dense bank (a tensor) or a quantized one."""
    if isinstance(bank, QuantExperts):
        return bank(e, x)
    return F.linear(x, bank[e])


def check_kind(kind: str) -> str:
    if kind not in QUANT_KINDS:
        raise ValueError(f"unknown quantization {kind!r}; use one of {', '.join(QUANT_KINDS)}")
    return kind


def quantize_model(model: nn.Module, kind: str, group: int = INT4_GROUP) -> None:
    """Quantize, in place, every decoder matrix of a dense model: attention q|k|v and output,
    feed-forward gate|up and down, shared experts and expert banks. Routers stay dense (their
    logits pick the experts; a rounding there would change which expert runs), and so do the token
    table and LM head (looked up / run once per token; a GGUF's Q8_0 table is kept 8-bit anyway)."""
    check_kind(kind)
    for block in model.layers:
        for parent in list(block.modules()):
            for name, child in list(parent.named_children()):
                if isinstance(child, nn.Linear) and child.bias is None and name != "router":
                    w = child.weight
                    setattr(parent, name, QuantLinear(quantize(w, kind, group), w.device, w.dtype))
            for name in ("experts_gate_up", "experts_down"):
                bank = getattr(parent, name, None)
                if isinstance(bank, torch.Tensor):
                    quantized = [quantize(bank[e], kind, group) for e in range(bank.shape[0])]
                    delattr(parent, name)
                    setattr(parent, name, QuantExperts(quantized, bank.device, bank.dtype))
