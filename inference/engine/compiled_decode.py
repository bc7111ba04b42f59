"""Decode steps on the CPU as one compiled graph: the whole forward and the logits, for up to MAX_ROWS sequences.

Besides its 121 matrix-vector products, a decode step of the default model runs
some 30 small ops a layer (norms, rotary, residuals, the cache write, the
attention kernel's call), 30 layers over, and eager each costs its dispatch.
Compiled by inductor with its C++ wrapper, the step is one call: the small ops
fused into a few loops per layer, the int4 products called from C++. On the
benchmark machine's 2 cores (`bench/engine.py --sides ours,ours-eager`), one
request: 74.7 against 54.4 tokens/s, 11.5 against 16.1 ms between tokens; 2, 4
and 8 requests: 12.7-13.3, 17.1 and 30.1-35.2 ms between tokens, against
16.7-17.7, 20.4-29.1 and 35.8-40.9 with only the one-row step compiled.

The graph is the lean decoder's own forward (decoder.py), traced with the fused
RMSNorm and an attention that writes the step's keys and values through
`engine::write_kv`: an opaque in-place op, where a plain index_copy_ into the
cache would be functionalized into a copy of the whole cache every step. Two
graphs, any table width and any KV cache size each (one compile cached for
every INFERENCE_KV_CACHE_MB): one row, 2..8 rows and 9..16 rows (dynamic
batches: the output layer multiplies densely past 8 rows, GRAPH_ROWS; up to 32 rows
where the int4 kernels are timed no slower there, wide_steps.int4_rows); steps that
mix in prefill chunks, or decode more rows, run eager. With the third graph a
decode step of 12 rows took 47.0 against 56.6 ms eager, of 16 rows 59.8 against
69.7 ms (bench/decode_steps.py, 2 cores). Compiling them takes about 6 minutes on
2 cores the first time (an engine compiling them before serving was ready after
387 s, against 267 s with the first two graphs alone: bench/cold_start.py),
seconds once cached: at start-up, or for a serving engine with nothing cached yet,
in a child process while decode steps run eager (background_compile.py). CPU only, in reduced precision (float32 stays
transformers' arithmetic op for op), off with enforce_eager.
"""

from __future__ import annotations

from functools import partial

import torch
from torch._dynamo import maybe_mark_dynamic

from .attention import StepMetadata, decode_math
from .decoder import LeanDecoder, fused_rms_norm
from .kv_cache import KVCache, store
from .linear import RefinedHead


@torch.library.custom_op("engine::write_kv", mutates_args=("storage",))
def write_kv(storage: torch.Tensor, layer: int, kv: torch.Tensor, slots: torch.Tensor) -> None:
    """KVCache.write as an op the compiler keeps whole: kv [T, 2, Hkv, D] at slots [T] of the cache's storage."""
    store(storage, layer, kv, slots)


def _graph_attention(storage: torch.Tensor, block_size: int, q, kv, layer: int, meta: StepMetadata,
                     scale: float) -> torch.Tensor:
    """The inductor backend's decode, with its cache write inside the graph."""
    write_kv(storage, layer, kv, meta.slot_mapping)
    # The cache read from the storage the write mutated (a separate view would be a separate input, which the
    # compiler may read before the write).
    return decode_math(q, storage[0, layer], storage[1, layer], meta.decode_tables, meta.decode_lens, scale,
                       block_size)


def applies(device: torch.device, dtype: torch.dtype, backend: str, decoder: LeanDecoder | None,
            enforce_eager: bool) -> bool:
    return (device.type == "cpu" and dtype != torch.float32 and backend == "inductor" and decoder is not None
            and not enforce_eager)


# Decode steps of up to this many sequences run compiled: where the quantized layers switch to their dense copies
# (the decoder's dense_above: model_runner.QUANTIZED_DENSE_ABOVE, or for int4 up to 32 where start-up timing says
# the int4 kernels are still faster there, wide_steps.int4_rows). The output layer switches past
# RefinedHead.DENSE_ABOVE (8) rows. Each switch is a branch on the row count that a graph is specialised on, so the
# graphs are: one row, 2..8 rows, 9..dense_above rows (GRAPH_ROWS: the first row count of each, what start-up
# compiles), and a larger step would compile another graph mid-serving (over a minute on 2 cores): it runs eager.
MAX_ROWS = 16  # where the decoder has no dense copies
GRAPH_ROWS = (1, 2, RefinedHead.DENSE_ABOVE + 1)


class CompiledDecode:
    def __init__(self, decoder: LeanDecoder, cache: KVCache):
        self._decoder = decoder
        self._storage = cache._storage
        self._block_size = cache.block_size
        self._step = torch.compile(self._forward, fullgraph=True, options={"cpp_wrapper": True})
        self.calls = 0
        self.max_rows = decoder.dense_above or MAX_ROWS

    def _forward(self, storage, input_ids, positions, slots, tables, lens) -> torch.Tensor:
        meta = StepMetadata(slot_mapping=slots, num_decode=input_ids.shape[0], decode_tables=tables, decode_lens=lens)
        attention = partial(_graph_attention, storage, self._block_size)
        hidden = self._decoder.forward(input_ids, positions, meta, attention=attention, norm=fused_rms_norm)
        return self._decoder.logits(hidden).float()

    def fits(self, meta: StepMetadata, tokens: int, rows: list[int] | None = None) -> bool:
        """A step of decodes alone, every one sampled, at most max_rows of them."""
        return tokens == meta.num_decode and 1 <= tokens <= self.max_rows and (rows is None or len(rows) == tokens)

    def __call__(self, input_ids: torch.Tensor, positions: torch.Tensor, meta: StepMetadata) -> torch.Tensor:
        """Logits [B, V] of a decode step of B sequences."""
        maybe_mark_dynamic(meta.decode_tables, 1)  # the table's width grows with the sequences
        maybe_mark_dynamic(self._storage, 3)  # one compile (and one cache entry) for every KV cache size
        if input_ids.shape[0] > 1:  # dynamic batches of 2..8 and 9..max_rows rows (one row is a graph of its own)
            for tensor in (input_ids, positions, meta.slot_mapping, meta.decode_tables, meta.decode_lens):
                maybe_mark_dynamic(tensor, 0)
        self.calls += 1
        return self._step(self._storage, input_ids, positions, meta.slot_mapping, meta.decode_tables,
                          meta.decode_lens)
