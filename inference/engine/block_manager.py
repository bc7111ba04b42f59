"""Paged KV-cache bookkeeping: which fixed-size cache blocks each sequence owns.

Only numbers live here; the runner owns the actual tensors and indexes them by
the block numbers in `seq.block_table` (position p of a sequence lives in
block `block_table[p // block_size]`, slot `p % block_size`).

Blocks are refcounted so forked choices (n > 1) and requests that share a
prefix share their cache. Only blocks whose every slot is already computed are
shared; a sequence writes only at positions >= its num_computed_tokens, which
always fall in blocks it owns alone, so a shared block is never written.

Prefix cache: once a block is full and computed it is keyed by a hash chain
of the token ids up to its end (and the request's cache salt, so tenants never
share). A new sequence starts with every leading block found under its own
chain, computed already. Blocks nobody holds go back on the free list with
their content; the free list is least recently freed first, so taking a block
evicts the least recently used content.
"""

from __future__ import annotations

from collections import Counter, OrderedDict

from .sequence import Sequence


class NoFreeBlocksError(RuntimeError):
    """Raised when an allocation is attempted without checking can_allocate first."""


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


class BlockManager:
    def __init__(self, num_blocks: int, block_size: int, *, enable_prefix_caching: bool = False) -> None:
        if num_blocks < 1:
            raise ValueError("num_blocks must be >= 1")
        if block_size < 1:
            raise ValueError("block_size must be >= 1")
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.prefix_caching = enable_prefix_caching
        self.ref_counts = [0] * num_blocks
        # Blocks with refcount 0, least recently freed first: _take() evicts from the front.
        self._free: OrderedDict[int, None] = OrderedDict.fromkeys(range(num_blocks))
        self._hash_of: list[bytes | None] = [None] * num_blocks  # the chain hash a cached block holds
        self._cached: dict[bytes, int] = {}  # chain hash -> block holding it
        # Prompt tokens looked up and found at first admission (the hit rate's terms).
        self.queried_tokens = 0
        self.hit_tokens = 0

    @property
    def num_free_blocks(self) -> int:
        return len(self._free)

    @property
    def num_used_blocks(self) -> int:
        return self.num_blocks - len(self._free)

    @property
    def num_cached_blocks(self) -> int:
        return len(self._cached)

    def blocks_for(self, num_tokens: int) -> int:
        """Blocks a table needs to cover num_tokens positions."""
        return _cdiv(max(num_tokens, 0), self.block_size)

    def blocks_needed(self, seq: Sequence, num_tokens: int) -> int:
        return max(0, self.blocks_for(num_tokens) - len(seq.block_table))

    # -- allocation ---------------------------------------------------------

    def can_allocate(self, seq: Sequence, num_tokens: int) -> bool:
        return self._free_blocks_needed(seq, num_tokens, self._matches(seq)) <= len(self._free)

    def allocate(self, seq: Sequence, num_tokens: int) -> None:
        """Cover num_tokens positions; a fresh sequence first takes its cached prefix."""
        hits = self._matches(seq)
        needed = self._free_blocks_needed(seq, num_tokens, hits)
        if needed > len(self._free):
            raise NoFreeBlocksError(
                f"sequence {seq.seq_id} needs {needed} more blocks for {num_tokens} tokens, "
                f"only {len(self._free)} free"
            )
        if self._is_fresh(seq):
            for block in hits:
                if self.ref_counts[block] == 0:
                    del self._free[block]
                self.ref_counts[block] += 1
            seq.block_table = list(hits)
            seq.num_registered_blocks = len(hits)
            seq.num_computed_tokens = len(hits) * self.block_size
            if seq.num_cached_tokens is None:  # what the client is told: the first admission's hit
                seq.num_cached_tokens = seq.num_computed_tokens
                if self.prefix_caching:
                    self.queried_tokens += seq.num_prompt_tokens
                    self.hit_tokens += seq.num_computed_tokens
        seq.block_table.extend(self._take() for _ in range(self.blocks_needed(seq, num_tokens)))

    def _is_fresh(self, seq: Sequence) -> bool:
        return not seq.block_table and seq.num_computed_tokens == 0

    def _matches(self, seq: Sequence) -> list[int]:
        """The cached blocks a fresh sequence can start from: its longest cached prefix.

        The last prompt token is always computed (its logits are sampled), so the
        block holding it is never taken from the cache.
        """
        if not self.prefix_caching or not self._is_fresh(seq) or seq.scores_prompt:
            return []  # a prompt's logprobs need its every position computed
        hits = []
        for digest in seq.block_hashes((seq.num_tokens - 1) // self.block_size, self.block_size):
            block = self._cached.get(digest)
            if block is None:
                break
            hits.append(block)
        return hits

    def _free_blocks_needed(self, seq: Sequence, num_tokens: int, hits: list[int]) -> int:
        # A hit on a block nobody holds takes it off the free list too.
        reclaimed = sum(1 for b in hits if self.ref_counts[b] == 0)
        return max(0, self.blocks_for(num_tokens) - len(seq.block_table) - len(hits)) + reclaimed

    def cache_computed(self, seq: Sequence) -> None:
        """Key the sequence's newly full and computed blocks by their chain hash (after a step)."""
        if not self.prefix_caching:
            return
        full = min(seq.num_computed_tokens // self.block_size, len(seq.block_table))
        if full <= seq.num_registered_blocks:
            return
        digests = seq.block_hashes(full, self.block_size)
        for i in range(seq.num_registered_blocks, full):
            block, digest = seq.block_table[i], digests[i]
            # A block computed twice at once (two requests, one prefix) is kept once.
            if self._hash_of[block] is None and digest not in self._cached:
                self._cached[digest] = block
                self._hash_of[block] = digest
        seq.num_registered_blocks = full

    # -- release ------------------------------------------------------------

    def free(self, seq: Sequence) -> None:
        counts = Counter(seq.block_table)
        # Validate everything before touching any count so a bad table leaves
        # the manager consistent.
        for block, n in counts.items():
            if not 0 <= block < self.num_blocks:
                raise ValueError(f"sequence {seq.seq_id} holds block {block}, which does not exist")
            if self.ref_counts[block] < n:
                raise ValueError(f"double free: block {block} of sequence {seq.seq_id} is not allocated")
        # Last block first: a chain's tail is evicted before the prefix it depends on.
        for block in reversed(seq.block_table):
            self.ref_counts[block] -= 1
            if self.ref_counts[block] == 0:
                self._free[block] = None
                if self._hash_of[block] is None:
                    self._free.move_to_end(block, last=False)  # nothing worth keeping: reuse it first
        # A new list rather than clear(): a batch built from the old table
        # (e.g. by the runner) must not change under it.
        seq.block_table = []
        seq.num_registered_blocks = 0

    def reset_prefix_cache(self) -> None:
        """Forget every cached block that nobody holds."""
        for block in self._free:
            digest = self._hash_of[block]
            if digest is not None:
                del self._cached[digest]
                self._hash_of[block] = None

    # -- forks ----------------------------------------------------------------

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
        child.num_registered_blocks = min(num_full, parent.num_registered_blocks)
        if child.num_cached_tokens is None:
            child.num_cached_tokens = parent.num_cached_tokens
        return copies

    def _fork_blocks_needed(self, parent: Sequence) -> int:
        return 1 if parent.num_computed_tokens % self.block_size else 0

    def _take(self) -> int:
        block, _ = self._free.popitem(last=False)
        if self.ref_counts[block] != 0:  # would mean the free list is corrupt
            raise RuntimeError(f"block {block} on the free list has refcount {self.ref_counts[block]}")
        digest = self._hash_of[block]
        if digest is not None:  # evict the least recently used content
            del self._cached[digest]
            self._hash_of[block] = None
        self.ref_counts[block] = 1
        return block
