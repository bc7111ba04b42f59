"""flex_attention block masks that read the paged KV cache in place.

The key sequence flex_attention sees is the whole cache of one layer
(`[1, Hkv, slots, D]`); a block mask tells it, per tile of queries, which
cache blocks to visit: "full" blocks every query of the tile attends to whole,
and "partial" blocks where `mask_mod` decides per (query, slot). Nothing is
gathered or copied, and no dense mask exists.

Decode (one query per sequence, batch dimension = sequences): every block of
the sequence but its last is full; in the last, slots past the sequence's
length are masked.

Prefill (the chunks of any number of sequences packed into one query
sequence, each attending causally to its own cached prefix and itself): a
tile of `q_block` packed rows visits the blocks of every sequence it holds,
up to the tile's last position. Blocks that every row of a one-sequence tile
sees whole are full; the rest go through `mask_mod`, which checks that the
block belongs to the row's sequence (its table holds it at the block's
logical index) and that the slot is not in the row's future.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.nn.attention.flex_attention import BlockMask


@dataclass
class PrefillSegment:
    """One sequence's chunk in a prefill: rows [row, row + num) of the packed chunks."""

    table: list[int]  # the sequence's block table
    start: int  # positions already in the cache before this chunk
    num: int


# One query per sequence sits in one query tile of this size; the GPU kernels want tiles of 16 or more.
DECODE_Q_BLOCK = 128


def decode_block_mask(tables: torch.Tensor, lens: torch.Tensor, *, block_size: int, num_slots: int,
                      pad_width: bool) -> BlockMask:
    """tables [B, W] (long, padded), lens [B] (long, >= 1) -> a mask for queries [B, H, 1, D].

    Tensor ops only, so it can be built inside a captured CUDA graph.
    pad_width: the CPU kernel wants index rows as wide as the whole cache.
    """
    batch, width = tables.shape
    num_blocks = (lens + block_size - 1) // block_size  # [B]
    last = (num_blocks - 1).unsqueeze(1)  # [B, 1]
    last_len = lens - last.squeeze(1) * block_size  # [B], 1..block_size
    full_indices = tables.to(torch.int32)  # only the first num_blocks - 1 entries are read
    partial_indices = tables.gather(1, last).to(torch.int32)  # [B, 1]
    if pad_width:
        total = num_slots // block_size
        full_indices = torch.nn.functional.pad(full_indices, (0, total - width))
        partial_indices = torch.nn.functional.pad(partial_indices, (0, total - 1))

    def mask_mod(b, h, q_idx, kv_idx):
        return kv_idx % block_size < last_len[b]

    ones = torch.ones(batch, 1, 1, dtype=torch.int32, device=tables.device)
    return BlockMask.from_kv_blocks(
        ones, partial_indices.view(batch, 1, 1, -1),
        (num_blocks - 1).to(torch.int32).view(batch, 1, 1), full_indices.view(batch, 1, 1, -1),
        BLOCK_SIZE=(DECODE_Q_BLOCK, block_size), mask_mod=mask_mod, seq_lengths=(1, num_slots),
        compute_q_blocks=False)


def bucket(n: int, smallest: int) -> int:
    """The padded size for n: the next power of two, at least `smallest`."""
    return max(smallest, 1 << max(0, n - 1).bit_length())


class PrefillMaskBuilder:
    """Builds the packed-prefill block mask of each step; owns the block -> logical index map.

    Every tensor the mask reads has one fixed shape: the packed rows are padded to the step's
    token budget (rounded up to a power of two). flex_attention then compiles once, with static
    shapes (inductor's CPU template miscompiles some dynamic ones), and padding rows cost
    nothing but their share of the query copy: their tiles visit no block.
    """

    def __init__(self, *, num_blocks: int, block_size: int, num_slots: int, q_block: int, max_tokens: int,
                 max_seqs: int, max_table: int, device: torch.device, pad_width: bool):
        self.block_size = block_size
        self.num_slots = num_slots
        self.q_block = q_block
        self.device = device
        self.pad_width = pad_width
        self.sink = num_blocks
        self.capacity = bucket(max_tokens, q_block)
        # Where each physical block sits in the tables that hold it. A block shared by
        # several sequences (a common prefix, a fork) sits at the same index in all of them.
        self.logical = torch.zeros(num_slots // block_size, dtype=torch.long, device=device)
        self.doc = torch.zeros(self.capacity, dtype=torch.long, device=device)  # each row's segment
        self.qpos = torch.zeros(self.capacity, dtype=torch.long, device=device)  # each row's position
        self.tables = torch.zeros(max_seqs + 1, max_table, dtype=torch.long, device=device)

    def build(self, segments: list[PrefillSegment]) -> tuple[BlockMask, int]:
        """The mask for the packed chunks of `segments`, and the row count the queries are padded to."""
        bs, qb = self.block_size, self.q_block
        counts = np.array([s.num for s in segments])
        total = int(counts.sum())
        padded = self.capacity
        if total > padded:
            raise ValueError(f"{total} prefill rows exceed the step's budget of {padded}")
        row_start = np.concatenate(([0], np.cumsum(counts)[:-1]))
        doc = np.zeros(padded, dtype=np.int64)
        doc[:total] = np.repeat(np.arange(len(segments)), counts)
        qpos = np.full(padded, -1, dtype=np.int64)  # padding rows see nothing
        qpos[:total] = np.concatenate([np.arange(s.start, s.start + s.num) for s in segments])
        width = max(len(s.table) for s in segments)
        tables = np.full((len(segments), width), self.sink, dtype=np.int64)
        for d, seg in enumerate(segments):
            tables[d, :len(seg.table)] = seg.table

        num_tiles = padded // qb
        partial_lists: list[list[int]] = [[] for _ in range(num_tiles)]
        full_lists: list[list[int]] = [[] for _ in range(num_tiles)]
        d = 0
        for tile in range(-(-total // qb)):
            lo, hi = tile * qb, min(tile * qb + qb, total)  # packed rows [lo, hi)
            while row_start[d] + counts[d] <= lo:
                d += 1
            members = []
            e = d
            while e < len(segments) and row_start[e] < hi:
                members.append(e)
                e += 1
            partial, full = [], []
            for m in members:
                seg = segments[m]
                first = seg.start + max(lo, row_start[m]) - row_start[m]  # the tile's first position of m
                last = seg.start + min(hi, row_start[m] + counts[m]) - 1 - row_start[m]
                whole = (first + 1) // bs if len(members) == 1 else 0  # blocks every row sees whole
                full.extend(seg.table[:whole])
                partial.extend(seg.table[whole:last // bs + 1])
            partial_lists[tile] = list(dict.fromkeys(partial))  # a shared prefix block once
            full_lists[tile] = full

        widest = max(map(len, partial_lists + full_lists))
        columns = self.num_slots // bs if self.pad_width else bucket(widest, 16)
        kv_num, kv_idx = _padded(partial_lists, columns)
        full_num, full_idx = _padded(full_lists, columns)

        def upload(a):
            return torch.from_numpy(a).to(self.device, non_blocking=True)

        self.doc[:padded].copy_(upload(doc), non_blocking=True)
        self.qpos[:padded].copy_(upload(qpos), non_blocking=True)
        tables_t = upload(tables)
        self.tables[:len(segments), :width].copy_(tables_t, non_blocking=True)
        self.logical.index_put_((tables_t.view(-1),), torch.arange(width, device=self.device).repeat(len(segments)))
        doc_t, qpos_t, table_t, logical = self.doc[:padded], self.qpos[:padded], self.tables, self.logical
        last_col = self.tables.shape[1] - 1

        def mask_mod(b, h, q_idx, kv_idx):
            block = kv_idx // bs
            index = logical[block]
            mine = table_t[doc_t[q_idx], index.clamp(max=last_col)] == block
            return mine & (index * bs + kv_idx % bs <= qpos_t[q_idx])

        mask = BlockMask.from_kv_blocks(
            upload(kv_num).view(1, 1, num_tiles), upload(kv_idx).view(1, 1, num_tiles, columns),
            upload(full_num).view(1, 1, num_tiles), upload(full_idx).view(1, 1, num_tiles, columns),
            BLOCK_SIZE=(qb, bs), mask_mod=mask_mod, seq_lengths=(padded, self.num_slots), compute_q_blocks=False)
        return mask, padded


def _padded(lists: list[list[int]], columns: int) -> tuple[np.ndarray, np.ndarray]:
    counts = np.array([len(x) for x in lists], dtype=np.int32)
    out = np.zeros((len(lists), columns), dtype=np.int32)
    for i, items in enumerate(lists):
        out[i, :len(items)] = items
    return counts, out
