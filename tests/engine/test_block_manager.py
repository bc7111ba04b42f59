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


# -- prefix cache ------------------------------------------------------------------


def cached_bm(num_blocks=16, block_size=4):
    return BlockManager(num_blocks, block_size, enable_prefix_caching=True)


def seq_of(tokens, salt="org-a"):
    return Sequence("r", list(tokens), SamplingParams(), cache_salt=salt)


def compute(bm, seq, upto=None):
    """Allocate, then mark positions computed up to `upto` (all but the last token by default)."""
    bm.allocate(seq, seq.num_tokens)
    seq.num_computed_tokens = seq.num_tokens - 1 if upto is None else upto
    bm.cache_computed(seq)
    return seq


def test_a_repeated_prompt_starts_from_its_cached_full_blocks_but_recomputes_the_last_token():
    bm = cached_bm()
    first = compute(bm, seq_of(range(1, 11)))  # 10 tokens: blocks 0 and 1 full and computed
    second = seq_of(range(1, 11))
    assert bm.can_allocate(second, 10)
    bm.allocate(second, 10)
    assert second.block_table[:2] == first.block_table[:2] and second.block_table[2] != first.block_table[2]
    assert (second.num_computed_tokens, second.num_cached_tokens) == (8, 8)
    assert [bm.ref_counts[b] for b in second.block_table] == [2, 2, 1]
    check(bm, [first, second])
    # A prompt of exactly two blocks: its last token sits in block 1, which is computed again, not shared.
    exact = seq_of(range(1, 9))
    bm.allocate(exact, 8)
    assert exact.num_cached_tokens == 4 and exact.block_table[0] == first.block_table[0]
    assert exact.block_table[1] not in first.block_table
    assert (bm.hit_tokens, bm.queried_tokens) == (12, 28)


def test_only_the_common_prefix_is_shared_and_a_different_salt_shares_nothing():
    bm = cached_bm()
    base = compute(bm, seq_of([1, 2, 3, 4, 5, 6, 7, 8, 9]))
    diverging = seq_of([1, 2, 3, 4, 5, 6, 0, 8, 9])  # the second block differs
    bm.allocate(diverging, 9)
    assert diverging.num_cached_tokens == 4 and diverging.block_table[0] == base.block_table[0]
    other_tenant = seq_of([1, 2, 3, 4, 5, 6, 7, 8, 9], salt="org-b")
    bm.allocate(other_tenant, 9)
    assert other_tenant.num_cached_tokens == 0
    assert not set(other_tenant.block_table) & set(base.block_table)
    check(bm, [base, diverging, other_tenant])


def test_blocks_are_cached_only_once_full_and_computed():
    bm = cached_bm()
    seq = seq_of(range(1, 11))
    bm.allocate(seq, 10)
    seq.num_computed_tokens = 6  # block 0 computed, block 1 half
    bm.cache_computed(seq)
    assert bm.num_cached_blocks == 1
    probe = seq_of(range(1, 11))
    bm.allocate(probe, 10)
    assert probe.num_cached_tokens == 4
    seq.num_computed_tokens = 9
    bm.cache_computed(seq)
    assert bm.num_cached_blocks == 2


def test_freed_blocks_keep_their_content_until_evicted_least_recently_used_first():
    bm = cached_bm(num_blocks=6, block_size=4)
    old = compute(bm, seq_of(range(100, 109)))  # blocks a0 a1 (+ a partial)
    new = compute(bm, seq_of(range(200, 209)))  # blocks b0 b1 (+ a partial)
    bm.free(old)
    bm.free(new)
    assert bm.num_free_blocks == 6 and bm.num_cached_blocks == 4
    # The partial blocks held nothing worth keeping: they are reused first, then old's content,
    # its tail before its head.
    taker = seq_of(range(300, 303))
    bm.allocate(taker, 3)
    assert bm.num_cached_blocks == 4
    second = seq_of(range(400, 403))
    bm.allocate(second, 3)
    third = seq_of(range(500, 503))
    bm.allocate(third, 3)
    assert bm.num_cached_blocks == 3  # old's tail block went first, its head is still there
    again_new = seq_of(range(200, 209))
    bm.allocate(again_new, 9)
    assert again_new.num_cached_tokens == 8  # new's content, freed last, is all there
    bm.free(again_new)
    again_old = seq_of(range(100, 109))
    bm.allocate(again_old, 9)
    assert again_old.num_cached_tokens == 0  # making room for new's third block evicted old's head
    check(bm, [taker, second, third, again_old])


def test_a_cached_block_nobody_holds_counts_against_free_space_when_reused():
    bm = cached_bm(num_blocks=3, block_size=4)
    first = compute(bm, seq_of(range(1, 10)))  # 3 blocks, 2 cached
    bm.free(first)
    reuse = seq_of(range(1, 10))
    assert bm.can_allocate(reuse, 9)  # two cached blocks plus one new: exactly the three free ones
    bm.allocate(reuse, 9)
    assert reuse.num_cached_tokens == 8 and bm.num_free_blocks == 0
    assert not bm.can_allocate(seq_of(range(50, 55)), 5)
    check(bm, [reuse])


def test_reset_forgets_cached_content_nobody_holds():
    bm = cached_bm()
    held = compute(bm, seq_of(range(1, 10)))
    gone = compute(bm, seq_of(range(20, 29)))
    bm.free(gone)
    bm.reset_prefix_cache()
    assert bm.num_cached_blocks == 2  # held's blocks stay cached while it runs
    probe = seq_of(range(20, 29))
    bm.allocate(probe, 9)
    assert probe.num_cached_tokens == 0
    check(bm, [held, probe])


def test_without_prefix_caching_nothing_is_shared():
    bm = BlockManager(16, 4)
    compute(bm, seq_of(range(1, 11)))
    again = seq_of(range(1, 11))
    bm.allocate(again, 10)
    assert (again.num_cached_tokens, again.num_computed_tokens, bm.num_cached_blocks) == (0, 0, 0)
