"""Linear layers of the lean decoder: dense, or int8 weights with a per-channel scale.

Int8 is weight-only (activations stay in the model's dtype) through torch's own
`_weight_int8pack_mm` kernel, the one torchao and gpt-fast use on the CPU: a
decode step reads half the bytes of bf16. (torchao 0.18's Int8WeightOnlyConfig
on torch 2.13 dequantized on every CPU call here: 2.1 ms against 30 us for a
576x1536 layer, so the kernel is called directly.)

That kernel is a matrix-vector kernel: past a few rows a bf16 matmul over the
dequantized weights wins (bench/linear.py), so steps with many rows (prefills,
large decode batches) use a bf16 copy when `dense_above` rows is set.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

QUANTIZATIONS = ("auto", "none", "int8")


class DenseLinear:
    __slots__ = ("weight", "bias")

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None):
        self.weight = weight  # [N, K]
        self.bias = bias

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)  # [M, K] -> [M, N]


class Int8Linear:
    __slots__ = ("qweight", "scale", "bias", "dense", "dense_above")

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None, *, dense_above: int | None = None):
        w = weight.detach().float()
        scale = w.abs().amax(dim=1).clamp(min=1e-12) / 127  # [N]
        self.qweight = torch.round(w / scale.unsqueeze(1)).clamp_(-127, 127).to(torch.int8).contiguous()  # [N, K]
        self.scale = scale.to(weight.dtype)
        self.bias = bias
        self.dense_above = dense_above
        # What many-row steps multiply by: the int8 weights' own values, so every path
        # computes with the same weights.
        self.dense = (self.qweight.to(weight.dtype) * self.scale.unsqueeze(1)) if dense_above is not None else None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.dense is not None and x.shape[0] > self.dense_above:
            return F.linear(x, self.dense, self.bias)
        out = torch._weight_int8pack_mm(x, self.qweight, self.scale)
        return out if self.bias is None else out + self.bias


def make_linear(weight: torch.Tensor, bias: torch.Tensor | None, quantization: str,
                dense_above: int | None = None):
    if quantization == "int8":
        return Int8Linear(weight, bias, dense_above=dense_above)
    return DenseLinear(weight, bias)
