"""Paged KV-cache bookkeeping: which fixed-size cache blocks each sequence owns.

Only numbers live here; the runner owns the actual tensors and indexes them by
the block numbers in `seq.block_table` (position p of a sequence lives in
block `block_table[p // block_size]`, slot `p % block_size`).

Blocks are refcounted so forked choices (n > 1) can share their parent's
prompt cache.  Only blocks whose every slot is already computed are shared;
a sequence writes only at positions >= its num_computed_tokens, which always
fall in blocks it owns alone, so a shared block is never written.
"""

from __future__ import annotations

from collections import Counter, deque

from .sequence import Sequence


class NoFreeBlocksError(RuntimeError):
    """Raised when an allocation is attempted without checking can_allocate first."""


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


class BlockManager:
    def __init__(self, num_blocks: int, block_size: int) -> None:
        if num_blocks < 1:
            raise ValueError("num_blocks must be >= 1")
        if block_size < 1:
            raise ValueError("block_size must be >= 1")
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.ref_counts = [0] * num_blocks
        # FIFO reuse: a just-freed block is handed out last, which keeps stale
        # data around longest (handy when debugging the runner).
        self._free: deque[int] = deque(range(num_blocks))

    @property
    def num_free_blocks(self) -> int:
        return len(self._free)

    @property
    def num_used_blocks(self) -> int:
        return self.num_blocks - len(self._free)

    def blocks_for(self, num_tokens: int) -> int:
        """Blocks a table needs to cover num_tokens positions."""
        return _cdiv(max(num_tokens, 0), self.block_size)

    def blocks_needed(self, seq: Sequence, num_tokens: int) -> int:
        return max(0, self.blocks_for(num_tokens) - len(seq.block_table))

    def can_allocate(self, seq: Sequence, num_tokens: int) -> bool:
        return self.blocks_needed(seq, num_tokens) <= len(self._free)

    def allocate(self, seq: Sequence, num_tokens: int) -> None:
        needed = self.blocks_needed(seq, num_tokens)
        if needed > len(self._free):
            raise NoFreeBlocksError(
                f"sequence {seq.seq_id} needs {needed} more blocks for {num_tokens} tokens, "
                f"only {len(self._free)} free"
            )
        seq.block_table.extend(self._take() for _ in range(needed))

    def free(self, seq: Sequence) -> None:
        counts = Counter(seq.block_table)
        # Validate everything before touching any count so a bad table leaves
        # the manager consistent.
        for block, n in counts.items():
            if not 0 <= block < self.num_blocks:
                raise ValueError(f"sequence {seq.seq_id} holds block {block}, which does not exist")
            if self.ref_counts[block] < n:
                raise ValueError(f"double free: block {block} of sequence {seq.seq_id} is not allocated")
        for block in seq.block_table:
            self.ref_counts[block] -= 1
            if self.ref_counts[block] == 0:
                self._free.append(block)
        # A new list rather than clear(): a batch built from the old table
        # (e.g. by the runner) must not change under it.
        seq.block_table = []

    def can_fork(self, parent: Sequence) -> bool:
        return self._fork_blocks_needed(parent) <= len(self._free)

    def fork(self, parent: Sequence, child: Sequence) -> list[tuple[int, int]]:
        """Give child the parent's cache; return (src, dst) block copies to run before the next forward."""
        if child is parent:
            raise ValueError("cannot fork a sequence into itself")
        if child.block_table:
            raise ValueError(f"fork child {child.seq_id} already holds blocks")
        computed = parent.num_computed_tokens
        if self.blocks_for(computed) > len(parent.block_table):
            raise ValueError(f"parent {parent.seq_id} has {computed} computed tokens but too few blocks")
        needed = self._fork_blocks_needed(parent)
        if needed > len(self._free):
            raise NoFreeBlocksError(f"fork of sequence {parent.seq_id} needs a free block for its partial last block")
        num_full = computed // self.block_size
        table = parent.block_table[:num_full]
        for block in table:
            self.ref_counts[block] += 1
        copies: list[tuple[int, int]] = []
        if needed:
            # The parent keeps writing into its partially filled block, so the
            # child gets its own copy of the slots computed so far.
            src = parent.block_table[num_full]
            dst = self._take()
            table.append(dst)
            copies.append((src, dst))
        child.block_table = table
        child.num_computed_tokens = computed
        return copies

    def _fork_blocks_needed(self, parent: Sequence) -> int:
        return 1 if parent.num_computed_tokens % self.block_size else 0

    def _take(self) -> int:
        block = self._free.popleft()
        if self.ref_counts[block] != 0:  # would mean the free list is corrupt
            raise RuntimeError(f"block {block} on the free list has refcount {self.ref_counts[block]}")
        self.ref_counts[block] = 1
        return block
