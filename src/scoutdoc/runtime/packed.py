"""fp32 linear weights kept in oneDNN's packed layout for matrix products on the CPU.

An fp32 `F.linear` on the CPU goes to MKL. Reordered once at load into oneDNN's blocked layout
(`torch.ops.mkldnn._reorder_linear_weight`, as torch.compile's CPU backend does when it freezes
weights), the default model's products run much faster on this project's AVX-512 machine (2
threads): a 2048-row prompt's GEMMs 1.1-2.2x, a decode step's matrix-vector products 1.2-2x with the
weights streaming from memory. The packed weight replaces the dense one, so memory stays the same.

bfloat16 stays dense: its prompt products already go to oneDNN (packing gains only 5-10 % there),
and its one-row products stream dense weights from memory faster on PyTorch's native kernels
(1.2-2x) than on packed ones, so a decode step would lose more than a prompt gains.

These are PyTorch-internal operators, so `packs_linears` tries them on a small matrix first and
the model keeps dense weights wherever they are missing or disagree with `F.linear`.
"""

from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import nn


class PackedLinear(nn.Module):
    """`nn.Linear` without bias whose weight is held packed (`packed` is an opaque oneDNN tensor)."""

    def __init__(self, weight: torch.Tensor):
        super().__init__()
        self.out_features, self.in_features = weight.shape
        self.register_buffer("packed", torch.ops.mkldnn._reorder_linear_weight(weight.detach()), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(x, self.packed, None, "none", [], "")


@lru_cache(maxsize=None)
def packs_linears(dtype: torch.dtype, device_type: str) -> bool:
    """Whether to pack: fp32 on a CPU where this PyTorch build runs packed products, checked on a
    small matrix."""
    if device_type != "cpu" or dtype != torch.float32 or not torch.backends.mkldnn.is_available():
        return False
    try:
        generator = torch.Generator().manual_seed(0)
        weight = torch.randn(48, 64, generator=generator)
        x = torch.randn(5, 64, generator=generator)
        got = PackedLinear(weight)(x)
    except (RuntimeError, AttributeError):
        return False
    return torch.allclose(got, F.linear(x, weight), rtol=1e-4, atol=1e-4)


def pack_linears(model: nn.Module) -> None:
    """Swap every bias-free `nn.Linear` inside the decoder layers for a `PackedLinear` (attention q|k|v
    and output, feed-forward gate|up and down, shared experts). Expert tensors are not `nn.Linear`s;
    routers stay dense (their logits pick the experts, so they keep the kernel the parity tests
    hold); the LM head runs for one row per step and is often tied."""
    for block in model.layers:
        for parent in list(block.modules()):
            for name, child in list(parent.named_children()):
                if isinstance(child, nn.Linear) and child.bias is None and name != "router":
                    setattr(parent, name, PackedLinear(child.weight))
