"""Which dtype and weight format a model runs in on a device.

`auto` resolves to what measured fastest (bench/engine.py, bench/linear.py):
  CUDA  bfloat16 where the GPU supports it, float16 on older GPUs; dense weights.
  CPU   bfloat16 with int4 weights (groups of 32) where torch's int4 kernel is vectorised:
        x86 with AVX2 or AVX-512, and CPUs with bf16 instructions (AVX512-BF16, AMX). A
        one-sequence decode step reads an eighth of float32's bytes. The kernel converts
        bf16 activations in its loops, so bf16 instructions are not needed: on an AVX2 CPU
        without them a step's linear layers took 11.0 ms at one row against 48.7 ms in
        float32 (bench/linear.py --dtype bfloat16 / --dtype float32), while float32
        activations through it took 305 ms (it has no vectorised float32 path). Wide steps
        (prefills) still multiply in float32 where that times faster (wide_steps.py).
        float32 and dense weights elsewhere.
"""

from __future__ import annotations

import torch

DTYPE_CHOICES = ("auto", "bfloat16", "float16", "float32")
_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16,
           "half": torch.float16, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}


def cpu_has_bf16() -> bool:
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def cpu_runs_int4() -> bool:
    """Whether torch's int4 CPU kernel has a vectorised path on this CPU for bf16 activations."""
    return torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512") or cpu_has_bf16()


def dense_copy_dtype(device: torch.device, dtype: torch.dtype) -> torch.dtype:
    """What dense bf16 arithmetic runs in on this device: float32 on a CPU without bf16 instructions (where bf16
    matmuls and conversions are emulated), else the model's dtype.

    The KV cache: decode attention reads every cached key and value of every sequence in each step, and converting
    bf16 ones without the instructions took 3.2x as long: 183 against 57 ms for 16 sequences of 300 tokens over the
    default model's 30 layers (AVX2, 2 cores; the whole step 322 against 188 ms). The cost is memory: half the
    tokens in INFERENCE_KV_CACHE_MB. The int4 output layer's dense copy, which steps of more than 8 sequences
    multiply by (linear.RefinedHead): 121 against 31 ms at 16 rows on one core (113 MB more for the default
    model's 49,152 x 576 layer)."""
    if device.type == "cpu" and dtype == torch.bfloat16 and not cpu_has_bf16():
        return torch.float32
    return dtype


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16 if device.type == "cpu" and cpu_runs_int4() else torch.float32
    if name not in _DTYPES:
        raise ValueError(f"unsupported dtype {name!r}; expected one of {', '.join(DTYPE_CHOICES)}")
    return _DTYPES[name]


def resolve_quantization(name: str, device: torch.device, dtype: torch.dtype) -> str:
    from .linear import QUANTIZATIONS

    if name not in QUANTIZATIONS:
        raise ValueError(f"unsupported quantization {name!r}; expected one of {', '.join(QUANTIZATIONS)}")
    if name == "auto":
        return "int4" if device.type == "cpu" and dtype == torch.bfloat16 else "none"
    if name == "int4" and device.type != "cpu":
        raise ValueError("int4 weights run on the CPU only; use none or int8 on a GPU")
    return name
