"""Continuous-batching policy: budgets, admission, chunking, preemption, forks.

The property-style tests drive the scheduler with a fake model that keeps a
real (list-backed) paged KV cache: every scheduled position is written into
its block, every sample reads the whole context back through the block table
and must see exactly the sequence's tokens.  The sampled token is a hash of
what was read, so any cache mix-up changes the outputs.
"""

import random
from collections import Counter

import pytest

from inference.engine.config import EngineConfig
from inference.engine.scheduler import Scheduler
from inference.engine.sequence import Sequence, SequenceStatus
from inference.engine.types import SamplingParams

P = SamplingParams()


def make_sched(**kw):
    kw.setdefault("block_size", 4)
    kw.setdefault("num_blocks", 64)
    kw.setdefault("max_model_len", 256)
    return Scheduler(EngineConfig(**kw))


def make_seq(n, params=P, rid="r"):
    return Sequence(rid, [100 + i for i in range(n)], params)


def step(sched, sample_token=7):
    """schedule + update, appending a token to every sampled sequence."""
    out = sched.schedule()
    check_output(sched, out)
    sched.update(out)
    for item in out.scheduled:
        if item.samples:
            item.seq.append_token(sample_token)
    check_state(sched)
    return out


def check_output(sched, out):
    cfg = sched.config
    seqs = [item.seq for item in out.scheduled]
    assert len(seqs) == len({s.seq_id for s in seqs}), "a sequence appears twice in one step"
    assert sum(item.num_new_tokens for item in out.scheduled) <= cfg.max_num_batched_tokens
    assert not {s.seq_id for s in seqs} & {s.seq_id for s in out.preempted}
    assert len(sched.running) <= cfg.max_num_seqs
    running = {s.seq_id for s in sched.running}
    for item in out.scheduled:
        seq = item.seq
        assert seq.seq_id in running and seq.status is SequenceStatus.RUNNING
        assert item.start == seq.num_computed_tokens
        assert item.num_new_tokens >= 1
        assert item.start + item.num_new_tokens <= seq.num_tokens
        assert item.samples == (item.start + item.num_new_tokens == seq.num_tokens)
        assert len(seq.block_table) * cfg.block_size >= item.start + item.num_new_tokens
    for seq in out.preempted:
        assert seq.status is SequenceStatus.WAITING and seq.block_table == [] and seq.num_computed_tokens == 0


def check_state(sched):
    bm = sched.block_manager
    live = list(sched.waiting) + sched.running
    assert len(live) == len({s.seq_id for s in live}), "a sequence is queued twice"
    held = Counter(b for s in live for b in s.block_table)
    assert bm.ref_counts == [held[b] for b in range(bm.num_blocks)]
    assert bm.num_free_blocks == sum(1 for r in bm.ref_counts if r == 0)
    assert bm.num_free_blocks + bm.num_used_blocks == bm.num_blocks
    for seq in sched.waiting:
        assert seq.status is SequenceStatus.WAITING and seq.block_table == [] and seq.num_computed_tokens == 0
    for seq in sched.running:
        assert seq.status is SequenceStatus.RUNNING
        assert seq.num_computed_tokens <= seq.num_tokens
        assert len(seq.block_table) * bm.block_size >= seq.num_computed_tokens


# -- basic flow ---------------------------------------------------------------


def test_prefill_then_decode():
    sched = make_sched()
    seq = make_seq(6)
    sched.add(seq)
    assert sched.has_unfinished and sched.num_waiting == 1
    out = step(sched)
    assert [(i.start, i.num_new_tokens, i.samples) for i in out.scheduled] == [(0, 6, True)]
    assert sched.num_running == 1 and sched.num_waiting == 0
    assert len(seq.block_table) == 2  # 6 tokens, block_size 4
    assert seq.num_computed_tokens == 6 and seq.num_tokens == 7
    out = step(sched)
    assert [(i.start, i.num_new_tokens, i.samples) for i in out.scheduled] == [(6, 1, True)]
    assert len(seq.block_table) == 2  # position 6 still fits block 1
    step(sched)  # position 7
    out = step(sched)  # position 8 starts a new block
    assert out.scheduled[0].start == 8 and len(seq.block_table) == 3
    sched.finish(seq)
    assert seq.is_finished and not sched.has_unfinished
    assert sched.block_manager.num_free_blocks == 64
    assert sched.schedule().is_empty


def test_scheduler_requires_sized_cache():
    with pytest.raises(ValueError):
        Scheduler(EngineConfig())  # num_blocks == 0: the runner has not sized it


def test_chunked_prefill_respects_budget_and_samples_only_at_the_end():
    sched = make_sched(max_num_batched_tokens=8)
    seq = make_seq(20)
    sched.add(seq)
    out = step(sched)
    assert [(i.start, i.num_new_tokens, i.samples) for i in out.scheduled] == [(0, 8, False)]
    assert len(seq.block_table) == 5  # blocks for the whole prompt at admission
    out = step(sched)
    assert [(i.start, i.num_new_tokens, i.samples) for i in out.scheduled] == [(8, 8, False)]
    out = step(sched)
    assert [(i.start, i.num_new_tokens, i.samples) for i in out.scheduled] == [(16, 4, True)]
    assert seq.num_tokens == 21


def test_decodes_first_then_prefill_chunks_share_the_budget():
    sched = make_sched(max_num_batched_tokens=10)
    a, b = make_seq(3), make_seq(3)
    sched.add(a)
    sched.add(b)
    step(sched)  # both prefilled (6 tokens)
    c = make_seq(30)
    sched.add(c)
    out = step(sched)
    assert [(i.seq, i.num_new_tokens) for i in out.scheduled] == [(a, 1), (b, 1), (c, 8)]
    out = step(sched)
    assert [(i.seq, i.start, i.num_new_tokens) for i in out.scheduled] == [(a, 4, 1), (b, 4, 1), (c, 8, 8)]


def test_budget_caps_decodes():
    sched = make_sched(max_num_batched_tokens=3)
    seqs = [make_seq(1) for _ in range(5)]
    for s in seqs:
        sched.add(s)
    step(sched)
    step(sched)
    out = sched.schedule()
    assert sum(i.num_new_tokens for i in out.scheduled) <= 3


def test_max_num_seqs_limits_admission():
    sched = make_sched(max_num_seqs=2)
    seqs = [make_seq(2) for _ in range(4)]
    for s in seqs:
        sched.add(s)
    out = step(sched)
    assert [i.seq for i in out.scheduled] == seqs[:2]
    assert sched.num_running == 2 and sched.num_waiting == 2
    sched.finish(seqs[0])
    out = step(sched)
    assert [i.seq for i in out.scheduled] == [seqs[1], seqs[2]]


def test_admission_needs_blocks_for_all_tokens_and_never_overtakes():
    sched = make_sched(num_blocks=6, max_num_batched_tokens=4)
    big = make_seq(16)  # 4 blocks
    sched.add(big)
    step(sched)
    assert big.num_computed_tokens == 4 and len(big.block_table) == 4
    huge, small = make_seq(12), make_seq(1)  # huge needs 3 blocks, only 2 free
    sched.add(huge)
    sched.add(small)
    out = step(sched)
    assert [i.seq for i in out.scheduled] == [big]  # small waits behind huge
    assert list(sched.waiting) == [huge, small]


def test_add_rejects_what_can_never_run():
    sched = make_sched(num_blocks=4, max_model_len=100)
    assert sched.can_ever_fit(16) and not sched.can_ever_fit(17)
    with pytest.raises(ValueError):
        sched.add(make_seq(17))
    with pytest.raises(ValueError):
        make_sched(max_model_len=8).add(make_seq(9))
    with pytest.raises(ValueError):
        sched.add(Sequence("r", [], P))
    seq = make_seq(2)
    sched.add(seq)
    with pytest.raises(ValueError):
        sched.add(seq)


# -- preemption ----------------------------------------------------------------


@pytest.mark.parametrize("prefix_caching", [False, True])
def test_decode_preempts_newest_which_resumes_first_with_same_tokens(prefix_caching):
    sched = make_sched(num_blocks=4, enable_prefix_caching=prefix_caching)
    old, new = make_seq(4), make_seq(4)
    sched.add(old)
    sched.add(new)
    step(sched, sample_token=1)  # each holds 1 full block and has 5 tokens
    assert sched.block_manager.num_free_blocks == 2
    step(sched, sample_token=2)  # both take their second block
    for _ in range(3):
        step(sched, sample_token=3)
    assert sched.block_manager.num_free_blocks == 0
    assert old.num_tokens == new.num_tokens == 9
    tokens_before = list(new.token_ids)
    late = make_seq(1)
    sched.add(late)
    out = sched.schedule()  # old needs a third block: new is preempted
    check_output(sched, out)
    assert out.preempted == [new]
    assert [i.seq for i in out.scheduled] == [old]
    assert list(sched.waiting) == [new, late]  # resumes before later arrivals
    assert new.token_ids == tokens_before
    sched.update(out)
    old.append_token(4)
    sched.finish(old)
    out = step(sched)
    if prefix_caching:
        # Both its full blocks are still cached: only the last token is computed again.
        assert [(i.seq, i.start, i.num_new_tokens, i.samples) for i in out.scheduled][0] == (new, 8, 1, True)
    else:
        # It recomputes prompt + generated tokens as one prefill, then samples.
        assert [(i.seq, i.start, i.num_new_tokens, i.samples) for i in out.scheduled][0] == (new, 0, 9, True)
    assert new.num_cached_tokens == 0  # what its client is told: nothing was cached at first admission
    assert new.token_ids[:9] == tokens_before


def test_a_sequence_preempts_itself_when_it_is_the_newest():
    sched = make_sched(num_blocks=2)
    old, new = make_seq(3), make_seq(4)
    sched.add(old)
    sched.add(new)
    step(sched)  # old: block 0 (4 tokens, 3 computed); new: block 1 (5 tokens, 4 computed)
    out = sched.schedule()  # old fits position 3; new needs a block for position 4
    check_output(sched, out)
    assert out.preempted == [new] and [i.seq for i in out.scheduled] == [old]
    assert list(sched.waiting) == [new]
    check_state(sched)


def test_preempting_an_already_scheduled_sequence_unschedules_it():
    sched = make_sched(num_blocks=3)
    a, b = make_seq(4), make_seq(4)
    sched.add(a)
    sched.add(b)
    step(sched)  # both prefilled: 5 tokens, 4 computed, one block each
    assert a.num_computed_tokens == b.num_computed_tokens == 4
    sched.running.reverse()  # b (newest) now decodes first
    out = sched.schedule()
    check_output(sched, out)
    # b took the free block; then a needed one and preempted b, already scheduled.
    assert out.preempted == [b]
    assert [(i.seq, i.start) for i in out.scheduled] == [(a, 4)]
    assert len(a.block_table) == 2
    check_state(sched)


def test_finish_frees_waiting_and_running_sequences_at_once():
    sched = make_sched(num_blocks=8, max_num_batched_tokens=4)
    run, wait = make_seq(12), make_seq(4)
    sched.add(run)
    sched.add(wait)
    out = step(sched)  # run is mid-prefill and holds 3 blocks; wait is queued
    assert sched.block_manager.num_free_blocks == 5
    sched.finish(wait)
    assert wait.is_finished and sched.num_waiting == 0
    sched.finish(run)
    assert run.is_finished and run.block_table == [] and sched.num_running == 0
    assert sched.block_manager.num_free_blocks == 8
    sched.finish(run)  # idempotent (cancel racing a natural finish)
    # update() after a cancel during the forward skips the finished sequence.
    sched.update(out)
    assert run.num_computed_tokens == 4
    check_state(sched)


def test_update_twice_is_an_error():
    sched = make_sched()
    sched.add(make_seq(3))
    out = sched.schedule()
    sched.update(out)
    with pytest.raises(RuntimeError):
        sched.update(out)


# -- forks (n > 1) ---------------------------------------------------------------


def test_fork_joins_running_after_parent_and_queues_the_copy():
    sched = make_sched()
    parent, other = make_seq(6), make_seq(2)
    sched.add(parent)
    sched.add(other)
    step(sched)
    child = make_seq(6)
    sched.fork(parent, child)
    child.append_token(8)
    assert sched.running == [parent, child, other]
    assert child.status is SequenceStatus.RUNNING and child.num_computed_tokens == 6
    assert child.block_table[0] == parent.block_table[0]
    out = step(sched)
    assert out.block_copies == [(parent.block_table[1], child.block_table[1])]
    assert [i.seq for i in out.scheduled] == [parent, child, other]
    assert sched.schedule().block_copies == []  # delivered once


def test_fork_child_finished_before_next_step_drops_its_copy():
    sched = make_sched()
    parent = make_seq(6)
    sched.add(parent)
    step(sched)
    child = make_seq(6)
    sched.fork(parent, child)
    sched.finish(child)
    out = step(sched)
    assert out.block_copies == []


def test_fork_without_room_queues_the_child_for_recompute():
    sched = make_sched(num_blocks=2, max_num_seqs=4)
    parent = make_seq(6)
    sched.add(parent)
    step(sched)  # 2 blocks, the second half full: the child would need a copy block
    child = make_seq(6)
    sched.fork(parent, child)
    assert child.status is SequenceStatus.WAITING and list(sched.waiting) == [child]
    assert child.block_table == [] and child.num_computed_tokens == 0
    assert sched.running == [parent]
    check_state(sched)


def test_fork_beyond_max_num_seqs_queues_the_child():
    sched = make_sched(max_num_seqs=1)
    parent = make_seq(8)
    sched.add(parent)
    step(sched)
    child = make_seq(8)
    sched.fork(parent, child)
    assert sched.running == [parent] and list(sched.waiting) == [child]
    check_state(sched)


def test_fork_misuse_rejected():
    sched = make_sched()
    parent = make_seq(4)
    with pytest.raises(ValueError):
        sched.fork(parent, make_seq(4))  # parent not running
    sched.add(parent)
    step(sched)
    with pytest.raises(ValueError):
        sched.fork(parent, Sequence("r", [1, 2, 3, 4], P))  # different prefix
    child = make_seq(4)
    sched.fork(parent, child)
    with pytest.raises(ValueError):
        sched.fork(parent, child)


# -- property-style simulation -----------------------------------------------------


class FakeEngine:
    """Drives a Scheduler like the real engine does, over a list-backed paged KV cache."""

    def __init__(self, config, seed=0, cancel_prob=0.0):
        self.sched = Scheduler(config)
        self.bs = config.block_size
        self.cache = [[None] * self.bs for _ in range(config.num_blocks)]
        self.rng = random.Random(seed)
        self.cancel_prob = cancel_prob
        self.targets = {}  # (request_id, index) -> output length at which it finishes
        self.results = {}  # (request_id, index) -> final token ids
        self.steps = self.preemptions = self.copies = self.chunks = self.cancelled = 0
        self.seqs = []  # every sequence ever created, forks included

    def add_request(self, rid, prompt, max_len, n=1):
        params = SamplingParams(n=n, max_tokens=max_len - len(prompt))
        for i in range(n):
            # Output length fixed per choice up front, so runs under different
            # cache sizes must produce identical results.
            self.targets[(rid, i)] = random.Random(f"{rid}/{i}").randint(1, max_len - len(prompt))
        seq = Sequence(rid, prompt, params)
        self.seqs.append(seq)
        self.sched.add(seq)

    @staticmethod
    def model(context, index):
        return hash((tuple(context), index)) % 50_000

    def step(self):
        sched, bs, cache = self.sched, self.bs, self.cache
        decoding = {s.seq_id for s in sched.running if s.num_tokens - s.num_computed_tokens == 1}
        out = sched.schedule()
        self.steps += 1
        self.preemptions += len(out.preempted)
        self.copies += len(out.block_copies)
        self.chunks += sum(not item.samples for item in out.scheduled)
        check_output(sched, out)
        is_decode = [item.seq.seq_id in decoding for item in out.scheduled]
        assert is_decode == sorted(is_decode, reverse=True), "decodes must come before prefill chunks"
        for src, dst in out.block_copies:
            cache[dst] = list(cache[src])
        for item in out.scheduled:
            seq = item.seq
            for pos in range(item.start, item.start + item.num_new_tokens):
                block = seq.block_table[pos // bs]
                assert sched.block_manager.ref_counts[block] == 1, "write into a shared block"
                cache[block][pos % bs] = seq.token_ids[pos]
        sched.update(out)
        for item in out.scheduled:
            seq = item.seq
            assert seq.num_computed_tokens == item.start + item.num_new_tokens
            if not item.samples:
                continue
            context = [cache[seq.block_table[p // bs]][p % bs] for p in range(seq.num_tokens)]
            assert context == seq.token_ids, "attention would read the wrong KV"
            if seq.params.n > 1 and seq.index == 0 and seq.num_output_tokens == 0:
                for i in range(1, seq.params.n):
                    child = Sequence(seq.request_id, seq.prompt_token_ids, seq.params, index=i)
                    self.seqs.append(child)
                    sched.fork(seq, child)
                    self._emit(child, self.model(context, i))
            self._emit(seq, self.model(context, seq.index))
        if self.cancel_prob:
            for seq in list(sched.waiting) + list(sched.running):
                if self.rng.random() < self.cancel_prob:
                    sched.finish(seq)
                    self.cancelled += 1
                    assert seq.block_table == []
        check_state(sched)
        return out

    def _emit(self, seq, token):
        seq.append_token(token)
        key = (seq.request_id, seq.index)
        if seq.num_output_tokens >= self.targets[key]:
            self.results[key] = list(seq.token_ids)
            self.sched.finish(seq)

    def run(self, requests, arrivals_per_step=1, max_steps=20_000):
        pending = list(requests)
        while pending or self.sched.has_unfinished:
            for _ in range(arrivals_per_step):
                if pending:
                    self.add_request(*pending.pop(0))
            self.step()
            assert self.steps < max_steps, "no progress: starvation or deadlock"
        assert self.sched.block_manager.num_free_blocks == self.sched.block_manager.num_blocks


def make_requests(seed, count, max_len, max_n=1):
    rng = random.Random(seed)
    reqs = []
    for r in range(count):
        prompt = [rng.randrange(1, 1000) for _ in range(rng.randint(1, max_len - 1))]
        reqs.append((f"req{r}", prompt, max_len, rng.randint(1, max_n)))
    return reqs


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_tiny_cache_many_requests_all_finish_with_same_outputs(seed):
    max_len, bs = 64, 8
    reqs = make_requests(seed, 20, max_len, max_n=3)
    roomy = FakeEngine(EngineConfig(block_size=bs, num_blocks=512, max_model_len=max_len, max_num_batched_tokens=4096))
    roomy.run(reqs, arrivals_per_step=20)
    assert roomy.preemptions == 0
    # Cache for just two max-length sequences, small budget: chunking and preemption galore.
    tight = FakeEngine(
        EngineConfig(block_size=bs, num_blocks=2 * max_len // bs, max_model_len=max_len, max_num_batched_tokens=24),
        seed=seed,
    )
    tight.run(reqs, arrivals_per_step=3)
    assert tight.preemptions > 0 and tight.copies > 0 and tight.chunks > 0
    assert len(tight.results) == sum(n for *_, n in reqs)
    assert tight.results == roomy.results


def test_random_cycles_with_cancels_keep_invariants():
    max_len, bs = 48, 4
    cfg = EngineConfig(block_size=bs, num_blocks=30, max_model_len=max_len, max_num_seqs=6, max_num_batched_tokens=16)
    eng = FakeEngine(cfg, seed=42, cancel_prob=0.002)
    rng = random.Random(42)
    for r in range(3000):
        if rng.random() < 0.08:
            prompt = [rng.randrange(1, 1000) for _ in range(rng.randint(1, max_len - 1))]
            eng.add_request(f"q{r}", prompt, max_len, rng.choice([1, 1, 1, 2, 4]))
        eng.step()
    while eng.sched.has_unfinished:
        eng.step()
        assert eng.steps < 20_000, "no progress: starvation or deadlock"
    assert eng.preemptions > 0 and eng.copies > 0 and eng.chunks > 0 and eng.cancelled > 0
    assert all(seq.is_finished and seq.block_table == [] for seq in eng.seqs)
    assert len(eng.results) + eng.cancelled == len(eng.seqs)
    assert eng.sched.block_manager.num_free_blocks == cfg.num_blocks


def make_shared_prefix_requests(seed, count, max_len, prefixes=3):
    """Prompts that share leading tokens: a few system prompts, each followed by a different question."""
    rng = random.Random(seed)
    heads = [[rng.randrange(1, 1000) for _ in range(rng.randint(8, max_len // 2))] for _ in range(prefixes)]
    reqs = []
    for r in range(count):
        head = heads[r % prefixes]
        tail = [rng.randrange(1, 1000) for _ in range(rng.randint(1, max_len - len(head) - 1))]
        reqs.append((f"s{r}", head + tail, max_len, rng.choice([1, 1, 2])))
    return reqs


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_prefix_cache_changes_no_output_and_saves_prefill_work(seed):
    max_len, bs = 64, 4
    reqs = make_shared_prefix_requests(seed, 24, max_len)

    def run(prefix_caching, num_blocks, budget):
        cfg = EngineConfig(block_size=bs, num_blocks=num_blocks, max_model_len=max_len,
                           max_num_batched_tokens=budget, enable_prefix_caching=prefix_caching)
        eng = FakeEngine(cfg, seed=seed)
        eng.run(reqs, arrivals_per_step=2)
        computed = sum(s.num_prompt_tokens - (s.num_cached_tokens or 0) for s in eng.seqs if s.index == 0)
        return eng, computed

    plain, computed_plain = run(False, 512, 4096)
    cached, computed_cached = run(True, 512, 4096)
    # A cache for two max-length sequences: evictions and preemptions while blocks are shared.
    tight, _ = run(True, 2 * max_len // bs + 2, 24)
    assert cached.results == plain.results == tight.results
    assert computed_cached < computed_plain
    assert cached.sched.block_manager.hit_tokens > 0 and tight.preemptions > 0
