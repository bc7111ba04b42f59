"""Continuous-batching scheduler: which sequences compute which positions each step.

One step mixes decodes (one token per running sequence) with chunks of
prefills under a shared token budget.  Memory is managed by preemption by
recomputation: when a decode needs a block and none is free, the newest
running sequence loses its cache and goes back to the front of the queue;
it later re-prefills prompt + generated tokens, so its output is unchanged.

Call order per step: schedule() -> forward -> update() -> append sampled
tokens / fork / finish.  No torch here; the runner turns the output into
tensors.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from .block_manager import BlockManager
from .config import EngineConfig
from .sequence import Sequence, SequenceStatus


@dataclass
class ScheduledSeq:
    seq: Sequence
    start: int  # == seq.num_computed_tokens when scheduled: first position computed this step
    num_new_tokens: int  # positions [start, start + num_new_tokens) are computed this step
    samples: bool  # all of seq.token_ids are computed after this step: sample its last logits


@dataclass
class SchedulerOutput:
    scheduled: list[ScheduledSeq] = field(default_factory=list)  # decodes first, then prefill chunks
    block_copies: list[tuple[int, int]] = field(default_factory=list)  # run in order, before the forward
    preempted: list[Sequence] = field(default_factory=list)  # pushed back to waiting; cache freed

    @property
    def is_empty(self) -> bool:
        return not self.scheduled

    @property
    def num_batched_tokens(self) -> int:
        return sum(s.num_new_tokens for s in self.scheduled)


def _age(seq: Sequence) -> tuple[float, int]:
    # seq_id breaks ties between sequences created within one clock tick.
    return (seq.arrival, seq.seq_id)


class Scheduler:
    def __init__(self, config: EngineConfig) -> None:
        if config.num_blocks < 1:
            raise ValueError("config.num_blocks must be > 0 (the runner sizes it before building the scheduler)")
        self.config = config
        self.block_manager = BlockManager(config.num_blocks, config.block_size,
                                          enable_prefix_caching=config.enable_prefix_caching)
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        # Copies from forks, delivered with the next non-empty output (the
        # runner only performs them alongside a forward).
        self._pending_copies: list[tuple[int, int]] = []
        self.num_preemptions = 0  # sequences pushed back to waiting to free memory, since start

    @property
    def num_waiting(self) -> int:
        return len(self.waiting)

    @property
    def num_running(self) -> int:
        return len(self.running)

    @property
    def has_unfinished(self) -> bool:
        return bool(self.waiting or self.running)

    def can_ever_fit(self, num_tokens: int) -> bool:
        return self.block_manager.blocks_for(num_tokens) <= self.block_manager.num_blocks

    def add(self, seq: Sequence) -> None:
        if seq.status is not SequenceStatus.WAITING or seq.block_table or seq.num_computed_tokens:
            raise ValueError(f"only fresh sequences can be added: {seq!r}")
        if seq in self.waiting:
            raise ValueError(f"sequence {seq.seq_id} is already queued")
        if seq.num_tokens == 0:
            raise ValueError("a sequence needs at least one prompt token")
        if seq.num_tokens > self.config.max_model_len or not self.can_ever_fit(seq.num_tokens):
            # Admission would wait for it forever and, FCFS, block everyone behind it.
            raise ValueError(f"sequence of {seq.num_tokens} tokens can never be scheduled")
        self.waiting.append(seq)

    def fork(self, parent: Sequence, child: Sequence) -> None:
        if parent.status is not SequenceStatus.RUNNING or parent not in self.running:
            raise ValueError(f"fork parent must be running: {parent!r}")
        if child.status is not SequenceStatus.WAITING or child.block_table or child.num_computed_tokens:
            raise ValueError(f"fork child must be a fresh sequence: {child!r}")
        if child in self.waiting:
            raise ValueError(f"fork child {child.seq_id} is already queued")
        n = parent.num_computed_tokens
        if child.token_ids[:n] != parent.token_ids[:n]:
            raise ValueError("fork child does not start with the parent's computed tokens")
        bm = self.block_manager
        if len(self.running) >= self.config.max_num_seqs or not bm.can_fork(parent):
            # No room now: the child behaves as if forked and instantly
            # preempted (it is the newest sequence), recomputing its prefix later.
            self.waiting.appendleft(child)
            return
        self._pending_copies.extend(bm.fork(parent, child))
        child.status = SequenceStatus.RUNNING
        self.running.insert(self.running.index(parent) + 1, child)

    def finish(self, seq: Sequence) -> None:
        if seq in self.running:
            self.running.remove(seq)
        elif seq in self.waiting:
            self.waiting.remove(seq)
        self._release(seq)
        seq.status = SequenceStatus.FINISHED

    def schedule(self) -> SchedulerOutput:
        cfg = self.config
        out = SchedulerOutput()
        budget = cfg.max_num_batched_tokens

        # 1. Decodes, in running order.  The list may shrink under us through
        # preemption, hence the snapshot and the status check.
        for seq in list(self.running):
            if budget == 0:
                break
            if seq.status is not SequenceStatus.RUNNING or seq.num_tokens - seq.num_computed_tokens != 1:
                continue
            budget = self._make_room(seq, out, budget)
            if seq.status is SequenceStatus.RUNNING:
                out.scheduled.append(ScheduledSeq(seq, seq.num_computed_tokens, 1, True))
                budget -= 1

        # 2a. Running sequences still mid-prefill continue their chunks.
        for seq in list(self.running):
            if budget == 0:
                break
            if seq.status is not SequenceStatus.RUNNING or seq.num_tokens - seq.num_computed_tokens < 2:
                continue
            # Normally a no-op: blocks for the whole prompt came with admission.
            budget = self._make_room(seq, out, budget)
            if seq.status is SequenceStatus.RUNNING:
                budget -= self._schedule_chunk(seq, out, budget)

        # 2b. Admit waiting sequences, FCFS without overtaking.  A sequence is
        # admitted only with blocks for all its tokens, so its own prefill can
        # never run out of memory halfway.  It starts past its cached prefix.
        bm = self.block_manager
        preempted_now = {s.seq_id for s in out.preempted}
        while self.waiting and budget > 0 and len(self.running) < cfg.max_num_seqs:
            seq = self.waiting[0]
            if seq.seq_id in preempted_now or not bm.can_allocate(seq, seq.num_tokens):
                break
            self.waiting.popleft()
            bm.allocate(seq, seq.num_tokens)
            seq.status = SequenceStatus.RUNNING
            self.running.append(seq)
            budget -= self._schedule_chunk(seq, out, budget)

        if out.scheduled:
            out.block_copies, self._pending_copies = self._pending_copies, []
        return out

    def update(self, output: SchedulerOutput) -> None:
        for item in output.scheduled:
            seq = item.seq
            if seq.status is not SequenceStatus.RUNNING:
                continue  # finished (e.g. cancelled) while the step ran
            if seq.num_computed_tokens != item.start:
                raise RuntimeError(f"sequence {seq.seq_id} was updated twice or changed since it was scheduled")
            seq.num_computed_tokens += item.num_new_tokens
            self.block_manager.cache_computed(seq)

    # -- internals ----------------------------------------------------------

    def _schedule_chunk(self, seq: Sequence, out: SchedulerOutput, budget: int) -> int:
        start = seq.num_computed_tokens
        n = min(seq.num_tokens - start, budget)
        out.scheduled.append(ScheduledSeq(seq, start, n, start + n == seq.num_tokens))
        return n

    def _make_room(self, seq: Sequence, out: SchedulerOutput, budget: int) -> int:
        """Give seq blocks for all its tokens, preempting the newest running sequences.

        Returns the budget, grown by whatever preempted sequences had already
        been granted this step.  seq itself may be the one preempted.
        """
        bm = self.block_manager
        while not bm.can_allocate(seq, seq.num_tokens):
            victim = max(self.running, key=_age)
            budget += self._preempt(victim, out)
            if victim is seq:
                return budget
        bm.allocate(seq, seq.num_tokens)
        return budget

    def _preempt(self, seq: Sequence, out: SchedulerOutput) -> int:
        self.num_preemptions += 1
        self.running.remove(seq)
        self._release(seq)
        seq.num_computed_tokens = 0
        seq.status = SequenceStatus.WAITING
        # Front of the queue: it was admitted before everything still waiting.
        # Victims go newest first, so the oldest ends up first.
        self.waiting.appendleft(seq)
        out.preempted.append(seq)
        refund = 0
        for i, item in enumerate(out.scheduled):
            if item.seq is seq:
                refund = item.num_new_tokens
                del out.scheduled[i]
                break
        return refund

    def _release(self, seq: Sequence) -> None:
        if seq.block_table:
            # A copy into a block this sequence no longer owns would scribble
            # on whoever gets that block next.
            mine = set(seq.block_table)
            self._pending_copies = [c for c in self._pending_copies if c[1] not in mine]
        self.block_manager.free(seq)
