"""Which dtype and weight format a model runs in on a device.

`auto` resolves to what measured fastest (bench/engine.py, bench/linear.py):
  CUDA  bfloat16 where the GPU supports it, float16 on older GPUs; dense weights.
  CPU   bfloat16 with int4 weights (groups of 32) where the CPU has bf16 instructions
        (AVX512-BF16, AMX): a one-sequence decode step reads an eighth of float32's
        bytes; float32 and dense weights elsewhere.
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


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16 if device.type == "cpu" and cpu_has_bf16() else torch.float32
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
