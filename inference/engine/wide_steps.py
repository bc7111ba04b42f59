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

Where wide steps start is timed too (int4_rows): the int4 kernels handle rows in groups of four, each group
costing about as much again, while a dense matmul's cost grows slowly with its rows, so the row count where dense
overtakes them depends on the CPU. The engine times the model's own layers both ways at start-up and keeps the
largest of INT4_ROWS where the int4 products take no longer (16 otherwise). On the benchmark machine, over
eight layers, int4 took 0.90-0.99 of the float32 copies' time at 24 rows and 1.03-1.11 at 32: it chose 24, and a
decode step of 20 sequences took 74.6 against 99.1 ms, of 24 86.1 against 102.0 ms with the limit at 16
(bench/decode_steps.py --rows 20,24).

Both are timed once per machine and remembered (remembered_choice, remembered_int4_rows: machine_timings.py): a
later start whose timings came out the other way would compile the decode graphs again for a different limit.
"""

from __future__ import annotations

import logging
import statistics
import time

import torch
import torch.nn.functional as F

from . import machine_timings
from .linear import INT4_GROUP

log = logging.getLogger(__name__)

ROWS = (32, 512)  # a large decode batch and a prefill chunk
MARGIN = 0.85  # float32 must take at most this share of the model dtype's time
# A model whose matmuls at ROWS take less than this in its own dtype has nothing worth the memory to gain (and its
# timing would be noise): the default model's take ~25 ms in bf16 on 2 cores.
MIN_STEP_S = 5e-3
REPEAT = 3
INT4_ROWS = (16, 24, 32)  # row limits of the int4 kernels to choose from, the first untimed
# The int4 products must take at most this share of the dense copies' time. Even: the steps that gain run as compiled
# graphs, which also save the eager step's overhead (a 24-row decode step: 86.1 against 102.0 ms at near-even products).
INT4_MARGIN = 1.0
INT4_LAYERS = 8  # the decoder's first layers timed (their weights too many for the CPU's caches, as in a step)


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


def remembered_choice(shapes: list[tuple[int, int]], dtype: torch.dtype, setting: str = "auto") -> torch.dtype | None:
    """choose(), timed once per machine (machine_timings.py)."""
    if setting != "auto" or dtype == torch.float32:
        return choose(shapes, dtype, setting)
    key = {"shapes": shapes, "dtype": str(dtype), "rows": ROWS, "margin": MARGIN, "min_step_s": MIN_STEP_S}
    chosen = machine_timings.remembered("wide_dtype", key, lambda: _name(choose(shapes, dtype, setting)))
    return None if chosen is None else getattr(torch, chosen)


def _name(dtype: torch.dtype | None) -> str | None:
    return None if dtype is None else str(dtype).removeprefix("torch.")


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


def int4_rows(decoder) -> int:
    """How many rows a step may have and still multiply by the int4 kernels of this decoder's layers (past it,
    by their dense copies: wide steps): the largest of INT4_ROWS whose timing, and every smaller one's, finds
    the int4 products within INT4_MARGIN of the dense ones' time. Decoders without int4 layers, and models too
    small to time, keep INT4_ROWS[0]."""
    layers = _int4_layers(decoder)
    if not layers:
        return INT4_ROWS[0]
    chosen, timings = INT4_ROWS[0], []
    for rows in INT4_ROWS[1:]:
        int4, dense = int4_times(layers, rows, decoder.dtype)
        timings.append(f"{int4 * 1e3:.1f} against {dense * 1e3:.1f} ms at {rows} rows")
        if dense < MIN_STEP_S / 4 or int4 > INT4_MARGIN * dense:
            break
        chosen = rows
    log.info("int4 kernels for steps of up to %d rows (dense copies past it): %d layers' int4 products took %s "
             "for their %s dense copies", chosen, len(layers), ", ".join(timings),
             str(layers[0].dense.dtype).removeprefix("torch."))
    return chosen


def remembered_int4_rows(decoder) -> int:
    """int4_rows(), timed once per machine (machine_timings.py): a start that timed differently from the last would
    compile its decode graphs again."""
    layers = _int4_layers(decoder)
    if not layers:
        return INT4_ROWS[0]
    key = {"layers": [list(layer.dense.shape) for layer in layers], "dtype": str(decoder.dtype),
           "dense": str(layers[0].dense.dtype), "rows": INT4_ROWS, "margin": INT4_MARGIN, "min_step_s": MIN_STEP_S}
    return int(machine_timings.remembered("int4_rows", key, lambda: int4_rows(decoder)))


def _int4_layers(decoder) -> list:
    """The Int4Linear layers with dense copies among the decoder's first INT4_LAYERS layers."""
    return [linear for layer in decoder.layers[:INT4_LAYERS] for linear in (layer.qkv, layer.o, layer.gate_up,
                                                                            layer.down)
            if getattr(linear, "packed", None) is not None and linear.dense is not None]


def int4_times(layers, rows: int, dtype: torch.dtype) -> tuple[float, float]:
    """Seconds for one pass of these Int4Linear layers at `rows` rows through the int4 kernel and through the dense
    copy (median of REPEAT, after a warm-up)."""
    generator = torch.Generator().manual_seed(0)
    inputs = {k: torch.randn(rows, k, generator=generator).to(dtype) for k in {layer.dense.shape[1]
                                                                              for layer in layers}}

    def one_pass(dense: bool) -> float:
        started = time.perf_counter()
        for layer in layers:
            x = inputs[layer.dense.shape[1]]
            if dense:
                F.linear(x.to(layer.dense.dtype), layer.dense)
            else:
                torch._weight_int4pack_mm_for_cpu(x, layer.packed, INT4_GROUP, layer.scales_zeros)
        return time.perf_counter() - started

    with torch.inference_mode():
        one_pass(False), one_pass(True)
        return (statistics.median(one_pass(False) for _ in range(REPEAT)),
                statistics.median(one_pass(True) for _ in range(REPEAT)))
