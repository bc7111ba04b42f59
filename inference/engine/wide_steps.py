"""Which dtype a CPU engine in reduced precision runs its wide steps in: prefills and large decode batches.

Steps of more rows than the int4 kernels take (model_runner.QUANTIZED_DENSE_ABOVE) multiply by
a dense copy of the quantized weights. In bf16 that copy is half the memory, but whether a CPU
multiplies bf16 faster than float32 depends on the CPU: with AMX, bf16 is several times faster;
on this project's 2-core benchmark machine (avx512_bf16, no AMX) oneDNN's bf16 matmuls took
1.4-1.8x as long as float32 ones at 256 rows (the gate/up projection 8.3 against 4.8 ms, q/k/v
3.0 against 1.8 ms), and SDPA's CPU kernel was slower in bf16 too; a 1,000-token prompt's first
token came after 1.24-1.30 s in float32 against 2.02-2.29 s in bf16. So the engine times one step's matmuls
at start-up, both ways, and runs wide steps in float32 where that is faster by a margin: the
hidden states, norms, rotary tables, matmuls and prefill attention in float32, the KV cache
still in the model's dtype (keys and values are rounded as they are stored, as before).
Decode steps the int4 kernels run (and the compiled decode graph) are unchanged.

The cost is memory: the dense copies in float32 (twice the bf16 copies' size).
"""

from __future__ import annotations

import logging
import statistics
import time

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

ROWS = (32, 512)  # a large decode batch and a prefill chunk
MARGIN = 0.85  # float32 must take at most this share of the model dtype's time
# A model whose matmuls at ROWS take less than this in its own dtype has nothing worth the memory to gain (and its
# timing would be noise): the default model's take ~25 ms in bf16 on 2 cores.
MIN_STEP_S = 5e-3
REPEAT = 3


def choose(shapes: list[tuple[int, int]], dtype: torch.dtype, setting: str = "auto") -> torch.dtype | None:
    """float32, or None (wide steps stay in `dtype`), for a model whose linear layers have these [out, in]
    shapes. setting: "auto" (time both), "float32" or "off"."""
    if setting == "off" or dtype == torch.float32:
        return None
    if setting == "float32":
        return torch.float32
    mine = step_time(shapes, dtype)
    if mine < MIN_STEP_S:
        return None
    wide = step_time(shapes, torch.float32)
    chosen = torch.float32 if wide <= MARGIN * mine else None
    log.info("wide steps (more rows than the int4 kernels take) in %s: one step's matmuls at %s rows took %.1f ms "
             "in float32 against %.1f ms in %s", "float32" if chosen else str(dtype).removeprefix("torch."),
             " and ".join(map(str, ROWS)), wide * 1e3, mine * 1e3, str(dtype).removeprefix("torch."))
    return chosen


def step_time(shapes: list[tuple[int, int]], dtype: torch.dtype) -> float:
    """Seconds for one pass of every shape at each of ROWS rows (median of REPEAT, after a warm-up)."""
    generator = torch.Generator().manual_seed(0)
    weights = [torch.randn(n, k, generator=generator).to(dtype) for n, k in shapes]
    inputs = {rows: {k: torch.randn(rows, k, generator=generator).to(dtype) for _, k in shapes} for rows in ROWS}

    def one_pass() -> float:
        started = time.perf_counter()
        for rows in ROWS:
            for weight in weights:
                F.linear(inputs[rows][weight.shape[1]], weight)
        return time.perf_counter() - started

    one_pass()
    return statistics.median(one_pass() for _ in range(REPEAT))
