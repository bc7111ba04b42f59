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
every INFERENCE_KV_CACHE_MB): one row, 2..8 rows and 9..MAX_ROWS rows (dynamic
batches: the output layer multiplies densely past 8 rows, GRAPH_ROWS); steps that
mix in prefill chunks, or decode more rows, run eager. The third graph took a
decode step of 12 rows from 64 to 40 ms, 16 rows from 73 to 51 ms (2 cores).
Compiling them takes about 4 minutes on 2 cores the first time (1.5 for the one-row graph
alone), seconds once cached: at start-up, or for a serving engine with nothing
cached yet, in a child process while decode steps run eager
(background_compile.py). CPU only, in reduced precision (float32 stays
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


# Decode steps of up to this many sequences run compiled: model_runner.QUANTIZED_DENSE_ABOVE, past which the int4
# layers switch to their dense copies. The output layer switches past RefinedHead.DENSE_ABOVE (8) rows. Each switch is
# a branch on the row count that a graph is specialised on, so the graphs are: one row, 2..8 rows, 9..16 rows
# (GRAPH_ROWS: the first row count of each, what start-up compiles), and a larger step would compile another graph
# mid-serving (over a minute on 2 cores): it runs eager.
MAX_ROWS = 16
GRAPH_ROWS = (1, 2, RefinedHead.DENSE_ABOVE + 1)


class CompiledDecode:
    def __init__(self, decoder: LeanDecoder, cache: KVCache):
        self._decoder = decoder
        self._storage = cache._storage
        self._block_size = cache.block_size
        self._step = torch.compile(self._forward, fullgraph=True, options={"cpp_wrapper": True})
        self.calls = 0

    def _forward(self, storage, input_ids, positions, slots, tables, lens) -> torch.Tensor:
        meta = StepMetadata(slot_mapping=slots, num_decode=input_ids.shape[0], decode_tables=tables, decode_lens=lens)
        attention = partial(_graph_attention, storage, self._block_size)
        hidden = self._decoder.forward(input_ids, positions, meta, attention=attention, norm=fused_rms_norm)
        return self._decoder.logits(hidden).float()

    def fits(self, meta: StepMetadata, tokens: int, rows: list[int] | None = None) -> bool:
        """A step of decodes alone, every one sampled, at most MAX_ROWS of them."""
        return tokens == meta.num_decode and 1 <= tokens <= MAX_ROWS and (rows is None or len(rows) == tokens)

    def __call__(self, input_ids: torch.Tensor, positions: torch.Tensor, meta: StepMetadata) -> torch.Tensor:
        """Logits [B, V] of a decode step of B sequences."""
        maybe_mark_dynamic(meta.decode_tables, 1)  # the table's width grows with the sequences
        maybe_mark_dynamic(self._storage, 3)  # one compile (and one cache entry) for every KV cache size
        if input_ids.shape[0] > 1:  # dynamic batches of 2..8 and 9..MAX_ROWS rows (one row is a graph of its own)
            for tensor in (input_ids, positions, meta.slot_mapping, meta.decode_tables, meta.decode_lens):
                maybe_mark_dynamic(tensor, 0)
        self.calls += 1
        return self._step(self._storage, input_ids, positions, meta.slot_mapping, meta.decode_tables,
                          meta.decode_lens)
