"""Linear layers of the lean decoder: dense, or weight-only int8 or int4 with per-channel/group scales.

Weight-only: activations stay in the model's dtype; the weights are stored in
fewer bits and expanded inside torch's own CPU kernels (`_weight_int8pack_mm`,
`_weight_int4pack_mm_for_cpu`, the ones torchao and gpt-fast use). A
one-sequence decode step streams every weight once, so bytes are time:
on this project's 2-core benchmark machine a step's linear layers took 18.8 ms
in bf16, 10.5 ms in int8 and 4.3 ms in int4 (bench/linear.py). (torchao 0.18's
Int8WeightOnlyConfig on torch 2.13 dequantized on every CPU call: 2.1 ms
against 30 us for a 576x1536 layer, so the kernels are called directly.)

int4 is asymmetric with a scale and a minimum per group of 32 weights along
the input: the same grid as GGUF's Q4_1, so the default model, which ships as
Q4_1, gets its own weights back exactly (up to bf16 scales).

Those kernels are matrix-vector kernels: past a few rows a bf16 matmul wins
(64 rows: 61 ms dense against 134 ms int4), so with `dense_above` set, steps
with more rows (prefills, large decode batches) multiply by a dense copy of
the same quantized weights.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

QUANTIZATIONS = ("auto", "none", "int8", "int4")
INT4_GROUP = 32


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


class Int4Linear:
    __slots__ = ("packed", "scales_zeros", "bias", "dense", "dense_above")

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None, *, dense_above: int | None = None):
        n, k = weight.shape
        groups = weight.detach().float().view(n, k // INT4_GROUP, INT4_GROUP)
        low, high = groups.amin(-1), groups.amax(-1)  # [N, K/g]
        scale = ((high - low) / 15).clamp(min=1e-12)
        q = torch.round((groups - low.unsqueeze(-1)) / scale.unsqueeze(-1)).clamp_(0, 15)
        self.packed = torch._convert_weight_to_int4pack_for_cpu(q.view(n, k).to(torch.int32), 1)
        # The kernel computes (q - 8) * scale + zero: zero = low + 8 * scale gives q * scale + low.
        self.scales_zeros = torch.stack([scale, low + 8 * scale], -1).transpose(0, 1).contiguous().to(weight.dtype)
        self.bias = bias
        self.dense_above = dense_above
        self.dense = None
        if dense_above is not None:
            self.dense = (q * scale.unsqueeze(-1) + low.unsqueeze(-1)).view(n, k).to(weight.dtype)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.dense is not None and x.shape[0] > self.dense_above:
            return F.linear(x, self.dense, self.bias)
        out = torch._weight_int4pack_mm_for_cpu(x, self.packed, INT4_GROUP, self.scales_zeros)
        return out if self.bias is None else out + self.bias


def make_linear(weight: torch.Tensor, bias: torch.Tensor | None, quantization: str,
                dense_above: int | None = None):
    if quantization == "int4":
        n, k = weight.shape
        if k % INT4_GROUP == 0 and n % 16 == 0 and weight.device.type == "cpu":  # what the packing takes
            return Int4Linear(weight, bias, dense_above=dense_above)
        quantization = "int8"  # a layer the int4 kernel cannot take
    if quantization == "int8":
        return Int8Linear(weight, bias, dense_above=dense_above)
    return DenseLinear(weight, bias)
