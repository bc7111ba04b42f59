"""Decode steps replayed from CUDA graphs captured at start-up, one per batch-size bucket.

A decode step launches a few hundred small kernels; replaying them as one graph
removes the launch overhead that dominates small batches. A batch runs in the
smallest bucket that holds it; the extra rows decode a dummy sequence whose
keys and values go to the cache's sink block. Every input lives in the
runner's persistent buffers, which the graph reads by address.
"""

from __future__ import annotations

import bisect
import logging

import torch

from .block_masks import decode_block_mask
from .attention import StepMetadata

log = logging.getLogger(__name__)


def buckets_for(max_batch: int) -> list[int]:
    sizes = [b for b in (1, 2, 4, 8) if b < max_batch] + list(range(16, max_batch, 16)) + [max_batch]
    return sorted(set(sizes))


class DecodeGraphs:
    def __init__(self, runner, max_batch: int):
        self.runner = runner
        self.buckets = buckets_for(max_batch)
        self._graphs: dict[int, tuple[torch.cuda.CUDAGraph, torch.Tensor]] = {}
        self._pool = None

    def fits(self, batch: int) -> bool:
        return bool(self._graphs) and batch <= self.buckets[-1]

    def capture(self) -> None:
        runner = self.runner
        try:
            for size in reversed(self.buckets):  # largest first: the smaller ones reuse its memory pool
                self._pad(0, size)
                runner._buf[:, :size].copy_(runner._host[:, :size])
                runner._tables[:size].copy_(runner._host_tables[:size])
                runner._forward(*self._inputs(size))  # compile for this shape outside the capture
                torch.cuda.synchronize(runner.device)
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph, pool=self._pool):
                    out = runner._forward(*self._inputs(size))
                self._pool = graph.pool()
                self._graphs[size] = (graph, out)
        except Exception:
            log.exception("CUDA graph capture failed: decode steps run eagerly")
            self._graphs.clear()
            return
        log.info("CUDA graphs captured for decode batches of %s", ", ".join(map(str, self.buckets)))

    def replay(self, batch: int) -> torch.Tensor:
        """Logits [batch, V]; the runner has staged the batch's inputs in its host buffers."""
        size = self.buckets[bisect.bisect_left(self.buckets, batch)]
        self._pad(batch, size)
        runner = self.runner
        runner._buf[:, :size].copy_(runner._host[:, :size], non_blocking=True)
        runner._tables[:size].copy_(runner._host_tables[:size], non_blocking=True)
        graph, out = self._graphs[size]
        graph.replay()
        return out[:batch]

    def _pad(self, start: int, end: int) -> None:
        """Rows [start, end) decode a dummy one-token sequence that lives in the sink block."""
        runner = self.runner
        if end <= start:
            return
        sink = runner.cache.sink_block
        host = runner._host
        host[0, start:end] = 0
        host[1, start:end] = 0
        host[2, start:end] = sink * runner.block_size
        host[3, start:end] = 1
        runner._host_tables[start:end] = sink

    def _inputs(self, size: int):
        runner = self.runner
        buf, tables = runner._buf, runner._tables
        meta = StepMetadata(slot_mapping=buf[2, :size], num_decode=size, decode_tables=tables[:size],
                            decode_lens=buf[3, :size])
        if runner.attention.backend == "flex":
            meta.decode_mask = decode_block_mask(meta.decode_tables, meta.decode_lens, block_size=runner.block_size,
                                                 num_slots=runner.cache.num_slots, pad_width=False)
        return buf[0, :size], buf[1, :size], meta
