"""Refcounted paged-cache block allocation."""

from collections import Counter

import pytest

from inference.engine.block_manager import BlockManager, NoFreeBlocksError
from inference.engine.sequence import Sequence
from inference.engine.types import SamplingParams


def make_seq(num_tokens=1):
    return Sequence("r", list(range(1, num_tokens + 1)), SamplingParams())


def check(bm, seqs):
    """Refcounts equal the number of tables holding each block; free list is exactly the zero-ref blocks."""
    held = Counter(b for s in seqs for b in s.block_table)
    assert bm.ref_counts == [held[b] for b in range(bm.num_blocks)]
    free = list(bm._free)
    assert len(free) == len(set(free)) == bm.num_free_blocks
    assert set(free) == {b for b in range(bm.num_blocks) if bm.ref_counts[b] == 0}
    assert bm.num_free_blocks + bm.num_used_blocks == bm.num_blocks


def test_blocks_needed_rounds_up_and_counts_existing():
    bm = BlockManager(10, 4)
    seq = make_seq()
    assert bm.blocks_needed(seq, 0) == 0
    assert bm.blocks_needed(seq, 1) == 1
    assert bm.blocks_needed(seq, 4) == 1
    assert bm.blocks_needed(seq, 5) == 2
    bm.allocate(seq, 5)
    assert len(seq.block_table) == 2
    assert bm.blocks_needed(seq, 8) == 0
    assert bm.blocks_needed(seq, 9) == 1
    assert bm.blocks_needed(seq, 3) == 0  # never negative
    check(bm, [seq])


def test_allocate_grows_and_free_returns_everything():
    bm = BlockManager(6, 4)
    a, b = make_seq(), make_seq()
    bm.allocate(a, 7)
    bm.allocate(b, 4)
    assert len(a.block_table) == 2 and len(b.block_table) == 1
    assert not set(a.block_table) & set(b.block_table)
    assert bm.num_free_blocks == 3
    bm.allocate(a, 9)  # grows by one, keeps its existing blocks in order
    assert len(a.block_table) == 3
    check(bm, [a, b])
    old_table = a.block_table
    bm.free(a)
    assert a.block_table == [] and len(old_table) == 3  # the old list is left alone
    assert bm.num_free_blocks == 5
    check(bm, [a, b])
    bm.free(b)
    assert bm.num_free_blocks == 6
    check(bm, [a, b])


def test_allocate_without_room_raises_and_changes_nothing():
    bm = BlockManager(3, 4)
    seq = make_seq()
    assert bm.can_allocate(seq, 12)
    assert not bm.can_allocate(seq, 13)
    with pytest.raises(NoFreeBlocksError):
        bm.allocate(seq, 13)
    assert seq.block_table == [] and bm.num_free_blocks == 3
    check(bm, [seq])


def test_free_of_empty_table_is_a_noop():
    bm = BlockManager(2, 4)
    seq = make_seq()
    bm.free(seq)
    bm.free(seq)
    assert bm.num_free_blocks == 2


def test_double_free_is_detected_and_leaves_counts_intact():
    bm = BlockManager(4, 4)
    a = make_seq()
    bm.allocate(a, 8)
    stale = list(a.block_table)
    bm.free(a)
    a.block_table = stale  # a corrupt caller re-using a freed table
    with pytest.raises(ValueError, match="double free"):
        bm.free(a)
    assert bm.num_free_blocks == 4 and bm.ref_counts == [0, 0, 0, 0]


def test_free_of_unknown_block_is_rejected():
    bm = BlockManager(2, 4)
    seq = make_seq()
    seq.block_table = [7]
    with pytest.raises(ValueError, match="does not exist"):
        bm.free(seq)


def test_invalid_sizes_rejected():
    with pytest.raises(ValueError):
        BlockManager(0, 16)
    with pytest.raises(ValueError):
        BlockManager(4, 0)


def test_fork_shares_full_blocks_and_copies_the_partial_one():
    bm = BlockManager(8, 4)
    parent = make_seq(10)
    bm.allocate(parent, 10)
    parent.num_computed_tokens = 10  # blocks 0,1 full, block 2 holds 2 of 4 slots
    child = make_seq(10)
    copies = bm.fork(parent, child)
    assert child.block_table[:2] == parent.block_table[:2]
    assert child.block_table[2] != parent.block_table[2]
    assert copies == [(parent.block_table[2], child.block_table[2])]
    assert child.num_computed_tokens == 10
    assert [bm.ref_counts[b] for b in parent.block_table] == [2, 2, 1]
    assert bm.ref_counts[child.block_table[2]] == 1
    check(bm, [parent, child])
    # Shared blocks return to the free list only when the last holder lets go.
    bm.free(parent)
    check(bm, [parent, child])
    assert bm.num_free_blocks == 8 - 3
    bm.free(child)
    assert bm.num_free_blocks == 8
    check(bm, [parent, child])


def test_fork_at_block_boundary_needs_no_copy():
    bm = BlockManager(4, 4)
    parent = make_seq(8)
    bm.allocate(parent, 8)
    parent.num_computed_tokens = 8
    child = make_seq(8)
    assert bm.fork(parent, child) == []
    assert child.block_table == parent.block_table
    assert child.block_table is not parent.block_table
    assert bm.num_free_blocks == 2
    check(bm, [parent, child])


def test_fork_shares_only_computed_blocks():
    # Mid-prefill parent: its later blocks hold no KV yet, so the child gets none of them.
    bm = BlockManager(8, 4)
    parent = make_seq(16)
    bm.allocate(parent, 16)
    parent.num_computed_tokens = 4
    child = make_seq(16)
    assert bm.fork(parent, child) == []
    assert child.block_table == parent.block_table[:1]
    check(bm, [parent, child])


def test_fork_without_free_block_raises_and_changes_nothing():
    bm = BlockManager(2, 4)
    parent = make_seq(6)
    bm.allocate(parent, 6)
    parent.num_computed_tokens = 6
    assert not bm.can_fork(parent)
    child = make_seq(6)
    with pytest.raises(NoFreeBlocksError):
        bm.fork(parent, child)
    assert child.block_table == [] and child.num_computed_tokens == 0
    check(bm, [parent, child])


def test_fork_misuse_rejected():
    bm = BlockManager(4, 4)
    parent = make_seq(4)
    bm.allocate(parent, 4)
    parent.num_computed_tokens = 4
    with pytest.raises(ValueError):
        bm.fork(parent, parent)
    child = make_seq(4)
    bm.allocate(child, 4)
    with pytest.raises(ValueError, match="already holds"):
        bm.fork(parent, child)
    liar = make_seq(9)
    liar.num_computed_tokens = 9  # claims more KV than its table can hold
    liar.block_table = list(parent.block_table)
    with pytest.raises(ValueError, match="too few blocks"):
        bm.fork(liar, make_seq(9))


def test_grandchild_fork_refcounts():
    bm = BlockManager(8, 4)
    a = make_seq(8)
    bm.allocate(a, 8)
    a.num_computed_tokens = 8
    b, c = make_seq(8), make_seq(8)
    bm.fork(a, b)
    bm.fork(b, c)
    assert [bm.ref_counts[x] for x in a.block_table] == [3, 3]
    for s in (a, c, b):
        bm.free(s)
        check(bm, [a, b, c])
    assert bm.num_free_blocks == 8
