"""Linear layers of the lean decoder: dense, or weight-only int8 or int4 with per-channel/group scales.

Weight-only: activations stay in the model's dtype; the weights are stored in
fewer bits and expanded inside torch's own CPU kernels (`_weight_int8pack_mm`,
`_weight_int4pack_mm_for_cpu`, the ones torchao and gpt-fast use). A
one-sequence decode step streams every weight once, so bytes are time:
on this project's 2-core benchmark machine a step's linear layers take 32.5 ms
in bf16, 14.5 ms in int8 and 8.9 ms in int4 (bench/linear.py). (torchao 0.18's
Int8WeightOnlyConfig on torch 2.13 dequantized on every CPU call: 2.1 ms
against 30 us for a 576x1536 layer, so the kernels are called directly.)

int4 is asymmetric with a scale and a minimum per group of 32 weights along
the input: the same grid as GGUF's Q4_1, so the default model, which ships as
Q4_1, gets its own weights back exactly (up to bf16 scales). The output layer
is not on such a grid (Q4 GGUFs keep it in 6 or 8 bits) and its rounding decides
the argmax directly: `RefinedHead` scores the whole vocabulary in int4, then the
64 best candidates again with the dense weights (bf16 agreement at int4 speed).

Those kernels are matrix-vector kernels: past a few rows a bf16 matmul wins
(64 rows: 69 ms dense against 122 ms int4; the output layer, with its
refinement, already past 8 rows), so with `dense_above` set, steps
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
    __slots__ = ("qweight", "scale", "bias", "dense", "dense_bias", "dense_above")

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None, *, dense_above: int | None = None,
                 dense_dtype: torch.dtype | None = None):
        w = weight.detach().float()
        scale = w.abs().amax(dim=1).clamp(min=1e-12) / 127  # [N]
        self.qweight = torch.round(w / scale.unsqueeze(1)).clamp_(-127, 127).to(torch.int8).contiguous()  # [N, K]
        self.scale = scale.to(weight.dtype)
        self.bias = bias
        self.dense_above = dense_above
        # What many-row steps multiply by: the int8 weights' own values, so every path
        # computes with the same weights.
        self.dense = self.dense_bias = None
        if dense_above is not None:
            dtype = dense_dtype or weight.dtype
            self.dense = self.qweight.to(dtype) * self.scale.to(dtype).unsqueeze(1)
            self.dense_bias = None if bias is None else bias.to(dtype)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.dense is not None and x.shape[0] > self.dense_above:
            return F.linear(x.to(self.dense.dtype), self.dense, self.dense_bias)
        out = torch._weight_int8pack_mm(x, self.qweight, self.scale)
        return out if self.bias is None else out + self.bias


class Int4Linear:
    __slots__ = ("packed", "scales_zeros", "bias", "dense", "dense_bias", "dense_above")

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None, *, dense_above: int | None = None,
                 dense_dtype: torch.dtype | None = None):
        n, k = weight.shape
        groups = weight.detach().float().view(n, k // INT4_GROUP, INT4_GROUP)
        low, scale = _grid(groups)  # [N, K/g] each
        q = torch.round((groups - low.unsqueeze(-1)) / scale.unsqueeze(-1)).clamp_(0, 15)
        self.packed = torch._convert_weight_to_int4pack_for_cpu(q.view(n, k).to(torch.int32), 1)
        # The kernel computes (q - 8) * scale + zero: zero = low + 8 * scale gives q * scale + low.
        self.scales_zeros = torch.stack([scale, low + 8 * scale], -1).transpose(0, 1).contiguous().to(weight.dtype)
        self.bias = bias
        self.dense_above = dense_above
        self.dense = self.dense_bias = None
        if dense_above is not None:
            dtype = dense_dtype or weight.dtype
            if dtype == weight.dtype:
                self.dense = (q * scale.unsqueeze(-1) + low.unsqueeze(-1)).view(n, k).to(dtype)
            else:  # wider: exactly what the kernel multiplies by, from its own (rounded) scales and zeros
                step, zero = self.scales_zeros.to(dtype).unbind(-1)  # [K/g, N] each
                self.dense = ((q.to(dtype) - 8) * step.t().unsqueeze(-1) + zero.t().unsqueeze(-1)).view(n, k)
            self.dense_bias = None if bias is None else bias.to(dtype)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.dense is not None and x.shape[0] > self.dense_above:
            return F.linear(x.to(self.dense.dtype), self.dense, self.dense_bias)
        out = torch._weight_int4pack_mm_for_cpu(x, self.packed, INT4_GROUP, self.scales_zeros)
        return out if self.bias is None else out + self.bias


class RefinedHead:
    """An output layer: int4 logits for the vocabulary, exact ones for its CANDIDATES most likely tokens.

    Greedy picks and the top logprobs are those of the dense layer (unless the dense argmax is not
    among int4's 64 best, which takes a far larger error than int4's); the tail keeps int4 values.

    Steps of more than DENSE_ABOVE rows multiply by the dense weights, or by a copy of them in dense_dtype
    (float32 on a CPU without bf16 instructions, where a bf16 matmul is emulated: at 16 rows 121 against 31 ms
    on one core of an AVX2 CPU, bench/linear.py --head-dtype).
    """

    CANDIDATES = 64
    # Past this many rows the dense layer is faster than int4 and the refinement together (bench/linear.py: at
    # 16 rows 9.3 against 13.4 ms on 2 cores, while the other layers still gain from int4 there).
    DENSE_ABOVE = 8

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None, *, dense_above: int | None = None,
                 dense_dtype: torch.dtype | None = None):
        self.coarse = Int4Linear(weight, bias, dense_above=None)
        self.weight, self.bias = weight, bias  # [V, H]
        self.dense_above = min(dense_above, self.DENSE_ABOVE) if dense_above is not None else 0
        self.dense, self.dense_bias = weight, bias
        if dense_dtype is not None and dense_dtype != weight.dtype:
            self.dense = weight.to(dense_dtype)
            self.dense_bias = None if bias is None else bias.to(dense_dtype)

    def exact(self, x: torch.Tensor) -> torch.Tensor:
        """Every logit from the dense weights."""
        return F.linear(x.to(self.dense.dtype), self.dense, self.dense_bias)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] > self.dense_above:
            return self.exact(x)
        logits = self.coarse(x)  # [M, V]
        top = logits.topk(min(self.CANDIDATES, logits.shape[1]), dim=-1).indices  # [M, K]
        exact = torch.bmm(self.weight[top], x.unsqueeze(2)).squeeze(2)  # [M, K, H] @ [M, H, 1] -> [M, K]
        if self.bias is not None:
            exact = exact + self.bias[top]
        return logits.scatter_(1, top, exact.to(logits.dtype))


def _grid(groups: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Minimum and step of each group's 16-level grid: [N, G, 32] -> [N, G], [N, G].

    Weights that already lie on a 4-bit grid (a Q4 GGUF's, dequantized) keep theirs exactly, even
    when a group leaves its top or bottom levels unused; others get (max - min) / 15.
    """
    low, high = groups.amin(-1), groups.amax(-1)
    ordered = groups.sort(-1).values
    steps = ordered.diff(dim=-1)
    step = torch.where(steps > (high - low).unsqueeze(-1) * 1e-4, steps, torch.inf).amin(-1)  # smallest gap
    levels = (groups - low.unsqueeze(-1)) / step.unsqueeze(-1)
    on_grid = ((levels - levels.round()).abs().amax(-1) < 1e-3) & (levels.amax(-1).round() <= 15)
    scale = torch.where(on_grid & torch.isfinite(step), step, (high - low) / 15)
    return low, scale.clamp(min=1e-12)


def make_linear(weight: torch.Tensor, bias: torch.Tensor | None, quantization: str,
                dense_above: int | None = None, *, output: bool = False, dense_dtype: torch.dtype | None = None,
                head_dtype: torch.dtype | None = None):
    """output: the layer that makes the logits (int4 becomes a RefinedHead, which keeps the model's dtype);
    dense_dtype: that of the dense copy many-row steps multiply by (default the weight's); head_dtype: the same for
    a RefinedHead."""
    if quantization == "int4" and output and _int4_fits(weight):
        return RefinedHead(weight, bias, dense_above=dense_above, dense_dtype=head_dtype)
    if quantization == "int4":
        if _int4_fits(weight):
            return Int4Linear(weight, bias, dense_above=dense_above, dense_dtype=dense_dtype)
        quantization = "int8"  # a layer the int4 kernel cannot take
    if quantization == "int8":
        return Int8Linear(weight, bias, dense_above=dense_above, dense_dtype=dense_dtype)
    return DenseLinear(weight, bias)


def _int4_fits(weight: torch.Tensor) -> bool:
    n, k = weight.shape
    return k % INT4_GROUP == 0 and n % 16 == 0 and weight.device.type == "cpu"  # what the packing takes
